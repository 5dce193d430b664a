"""The evaluation report and the Markdown table the README quotes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from labelprob.tools.evaluation.metrics import mean_of_all, points_delta
from labelprob.tools.evaluation.results import ConfigResult

EXIT_OK = 0
EXIT_RPC_ERRORS = 1  # the run finished, but some texts got no answer (or no server)
EXIT_USAGE = 2  # as argparse: bad arguments, configs or input files


@dataclass
class EvalReport:
    configs: list[str]  # peer first
    datasets: list[dict[str, Any]]
    results: list[ConfigResult]
    settings: dict[str, Any] = field(default_factory=dict)
    server: dict[str, Any] | None = None
    started_at: str = ""

    @property
    def peer(self) -> str:
        return self.configs[0]

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.results)

    @property
    def exit_code(self) -> int:
        return EXIT_RPC_ERRORS if self.errors else EXIT_OK

    def result(self, dataset: str, config: str) -> ConfigResult | None:
        return next((r for r in self.results if r.dataset == dataset and r.config == config), None)

    def fill_deltas(self) -> None:
        for r in self.results:
            peer = self.result(r.dataset, self.peer)
            r.delta_vs_peer_pts = points_delta(r.accuracy, peer.accuracy if peer else None)

    def summary(self) -> list[dict[str, Any]]:
        """Per config: unweighted means over the datasets (each dataset counts once, however
        many rows it has), None when a dataset has no answer for the config."""
        rows = []
        for config in self.configs:
            mine = [r for r in self.results if r.config == config]
            rows.append(
                {
                    "config": config,
                    "datasets": len(mine),
                    "rows": sum(r.rows for r in mine),
                    "errors": sum(r.errors for r in mine),
                    "mean_accuracy": mean_of_all([r.accuracy for r in mine]),
                    "mean_macro_f1": mean_of_all([r.macro_f1 for r in mine]),
                    "mean_ece": mean_of_all([r.ece for r in mine]),
                    "mean_ece_floor": mean_of_all([r.ece_floor for r in mine]),
                    "mean_confidence_auroc": mean_of_all([r.confidence_auroc for r in mine]),
                    "mean_accuracy_at_half": mean_of_all([r.accuracy_at_half for r in mine]),
                }
            )
        peer_accuracy = rows[0]["mean_accuracy"] if rows else None
        for row in rows:
            row["delta_vs_peer_pts"] = points_delta(row["mean_accuracy"], peer_accuracy)
        return rows

    def best_config(self, dataset: str) -> ConfigResult | None:
        """Highest accuracy on the dataset; the earlier config wins a tie."""
        scored = [r for r in self.results if r.dataset == dataset and r.accuracy is not None]
        return max(scored, key=lambda r: r.accuracy or 0.0, default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "server": self.server,
            "settings": self.settings,
            "peer": self.peer,
            "configs": self.configs,
            "datasets": self.datasets,
            "results": [r.to_dict() for r in self.results],
            "summary": self.summary(),
            "errors": self.errors,
            "exit_code": self.exit_code,
        }


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}"


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _delta(value: float | None, is_peer: bool) -> str:
    if is_peer:
        return "peer"
    # `or 0.0` turns a rounded -0.0 into +0.0: equal accuracies must not read as a loss.
    return "-" if value is None else f"{round(value, 1) or 0.0:+.1f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


TABLE_COLUMNS = [
    "dataset", "config", "texts", "accuracy %", "Δ vs peer (pts)", "macro-F1 %", "ECE",
    "ECE floor", "AUROC", "accuracy % at half", "label mass", "entropy (nats)", "errors",
    "texts/s",
]  # fmt: skip


def _table_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def format_markdown(report: EvalReport) -> str:
    """One row per dataset x config (peer first within each dataset), then, with two or more
    datasets, one mean row per config. Accuracy is over the answered texts at full coverage
    (no abstention); `errors` counts the texts whose RPC failed; `ECE floor` is the ECE a
    perfectly calibrated model would show with the same confidences on as many texts;
    `AUROC` how well the confidences rank right answers above wrong ones, and `accuracy % at
    half` the accuracy on the more confident half of the texts (selective.py)."""
    lines = [_table_row(TABLE_COLUMNS), _table_row(["---"] * len(TABLE_COLUMNS))]
    for info in report.datasets:
        for config in report.configs:
            r = report.result(info["name"], config)
            if r is None:
                continue
            cells = [
                _cell(r.dataset), _cell(r.config), str(r.rows), percent(r.accuracy),
                _delta(r.delta_vs_peer_pts, config == report.peer), percent(r.macro_f1),
                _num(r.ece), _num(r.ece_floor), _num(r.confidence_auroc),
                percent(r.accuracy_at_half), _num(r.mean_label_mass), _num(r.mean_entropy),
                str(r.errors),
                f"{r.texts_per_s:.1f}",
            ]  # fmt: skip
            lines.append(_table_row(cells))
    if len(report.datasets) >= 2:
        for row in report.summary():
            cells = [
                f"**mean of {row['datasets']}**", _cell(row["config"]), str(row["rows"]),
                percent(row["mean_accuracy"]),
                _delta(row["delta_vs_peer_pts"], row["config"] == report.peer),
                percent(row["mean_macro_f1"]), _num(row["mean_ece"]),
                _num(row["mean_ece_floor"]), _num(row["mean_confidence_auroc"]),
                percent(row["mean_accuracy_at_half"]), "", "",
                str(row["errors"]), "",
            ]  # fmt: skip
            lines.append(_table_row(cells))
    return "\n".join(lines)


FIT_COLUMNS = [
    "dataset", "config", "texts", "fitted T", "log-loss", "at fitted T", "ECE", "at fitted T",
]  # fmt: skip


def format_fits(report: EvalReport) -> str:
    """Each (dataset, config)'s temperature of lowest log-loss on its rows, with its log-loss
    and ECE before and after: in sample, so send the T on other rows (``%T``) to judge it."""
    lines = [_table_row(FIT_COLUMNS), _table_row(["---"] * len(FIT_COLUMNS))]
    for r in report.results:
        fit = r.temperature_fit
        if fit is None:
            continue
        cells = [
            _cell(r.dataset), _cell(r.config), str(fit.texts), f"{fit.temperature:.2f}",
            _num(fit.log_loss), _num(fit.fitted_log_loss), _num(fit.ece), _num(fit.fitted_ece),
        ]  # fmt: skip
        lines.append(_table_row(cells))
    return "\n".join(lines)
