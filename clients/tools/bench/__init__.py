"""`labelprob bench`: throughput of labelprob beside vLLM's offline engine, vLLM's HTTP route
and transformers, on the same prompts and reads (see README.md beside this file).

Modules: `settings` (fixed settings), `plan` (the prompt ids and reads every contender
computes), `processes` (servers and workers in their own process groups), `cpu`,
`contenders` (how each is measured), `workers` (measurements in their own interpreter),
`results`, `accounting` (prompt tokens per scoring mode), `rounds` (the interleaved run),
`command`.
"""

from labelprob.tools.bench.command import main

__all__ = ["main"]
