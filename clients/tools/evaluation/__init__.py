"""`labelprob eval`: accuracy and calibration of scoring configurations on labeled JSONL files.

Every file is classified once per configuration (`mode:calibration[:normalization]`), and
each (file, configuration) gets accuracy, macro-F1, expected calibration error, mean label
mass and entropy, a confusion matrix, RPC error counts and throughput. The first row is
always the peer method, `first_token:none` (read the labels' first tokens, no calibration:
what a plain logprob classifier does), so every other row reads as a delta against it.

Configs run one after another on the same texts, so the server's prefix cache, filled by
the first config, serves most of the prompt to the later ones: their texts/s is higher
than a cold run's, and compares configs only roughly. On CPU, cached and recomputed
prompts can also differ in the last bits of a bf16 model, which may flip near-ties.

Modules: `configs` (what is compared), `datasets` (labeled files, seeded samples),
`metrics` (pure functions), `results` (one config on one dataset), `report` (the report
and its Markdown table), `runner` (`evaluate(...)`, the async API), `plots`, `command`.
"""

from labelprob.tools.evaluation.command import main

__all__ = ["main"]
