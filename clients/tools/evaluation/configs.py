"""Scoring configurations, the peer method first.

A config is `[method/]mode:calibration[:normalization][@template][~N][^O][%T][+prior][*K]`,
e.g.
`direct/first_token:none`, `combined/auto:default`, `full:contextual:mean@plain`,
`auto:default~16` (the channel read for the direct read's 16 best labels only),
`auto:default^1` (the direct read in one label order: the labels as sent),
`auto:default%1.8` (sent with `temperature` 1.8: one fitted on other rows, the `fitted T`
column), `auto:default+prior` (the data file's label shares sent as `label_prior`),
`auto:default*8` (ClassifyBatch requests of 8 texts, whatever `--batch-size` says); or `peer`:
the plain prompt a vLLM user writes (the built-in `minimal` template), labels' first tokens
read at the start of the answer, no calibration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from labelprob.client.params import CALIBRATIONS, METHODS, MODES
from labelprob.v1 import classifier_pb2 as pb

PEER_TEMPLATE = "minimal"

NORMALIZATIONS = {
    "default": pb.LENGTH_NORMALIZATION_UNSPECIFIED,
    "sum": pb.LENGTH_NORMALIZATION_SUM,
    "mean": pb.LENGTH_NORMALIZATION_MEAN,
}
DEFAULT_CONFIGS = "peer,direct/first_token:none,auto:default"


@dataclass(frozen=True)
class ScoringConfig:
    """One way of scoring: mode, calibration and (optional) length normalization.

    `calibration="default"` sends CALIBRATION_UNSPECIFIED: whatever the server defaults to.
    """

    mode: str
    calibration: str
    normalization: str | None = None
    method: str = "default"
    template: str | None = None  # None: --template's (or the server default)
    batch_size: int | None = None  # None: --batch-size's
    channel_shortlist: int = 0  # 0: the server's default
    label_orders: int = 0  # 0: the server's choice
    # Send the data set's label shares (of its whole file) as options.label_prior: the base
    # rates a caller who knows its traffic would send.
    label_prior: bool = False
    temperature: float | None = None  # None: unset (1)

    @property
    def name(self) -> str:
        if self.is_peer:
            return "peer"
        parts = [self.mode, self.calibration]
        if self.normalization is not None:
            parts.append(self.normalization)
        name = ":".join(parts)
        if self.method != "default":
            name = f"{self.method}/{name}"
        if self.template is not None:
            name = f"{name}@{self.template}"
        if self.channel_shortlist:
            name = f"{name}~{self.channel_shortlist}"
        if self.label_orders:
            name = f"{name}^{self.label_orders}"
        if self.temperature is not None:
            name = f"{name}%{self.temperature:g}"
        if self.label_prior:
            name = f"{name}+prior"
        return name if self.batch_size is None else f"{name}*{self.batch_size}"

    def texts_per_request(self, default: int) -> int:
        return default if self.batch_size is None else self.batch_size

    @property
    def is_peer(self) -> bool:
        # A first-token read has one token per label, so the normalization cannot matter.
        return (
            self.mode == "first_token"
            and self.calibration == "none"
            and self.method == "direct"
            and self.template == PEER_TEMPLATE
            and self.batch_size is None
        )

    def options(self, template: str = "") -> pb.ScoringOptions:
        return pb.ScoringOptions(
            mode=MODES[self.mode],
            calibration=CALIBRATIONS[self.calibration],
            length_normalization=NORMALIZATIONS[self.normalization or "default"],
            template=template if self.template is None else self.template,
            method=METHODS[self.method],
            channel_shortlist=self.channel_shortlist,
            label_orders=self.label_orders,
            temperature=self.temperature,
        )


PEER = ScoringConfig("first_token", "none", method="direct", template=PEER_TEMPLATE)


def parse_config(text: str) -> ScoringConfig:
    """`[method/]mode:calibration[:normalization][@template][~N][^O][%T][+prior][*K]`, or
    `peer`."""
    spec = text.strip()
    if spec.lower() == "peer":
        return PEER
    spec, star, size = spec.partition("*")
    batch_size = None
    if star:
        if not size.strip().isdigit() or int(size) < 1:
            raise ValueError(f"config {text!r}: *K needs a whole number of texts K >= 1")
        batch_size = int(size)
    spec, plus, flag = spec.partition("+")
    if plus and flag.strip().lower() != "prior":
        raise ValueError(f"config {text!r}: the only + suffix is +prior")
    spec, percent, temperature = spec.partition("%")
    if percent and not positive_finite(temperature):
        raise ValueError(f"config {text!r}: %T needs a temperature T > 0")
    spec, caret, orders = spec.partition("^")
    if caret and orders.strip() not in ("1", "2"):
        raise ValueError(f"config {text!r}: ^O needs 1 or 2 label orders")
    spec, tilde, shortlist = spec.partition("~")
    if tilde and (not shortlist.strip().isdigit() or int(shortlist) < 1):
        raise ValueError(f"config {text!r}: ~N needs a whole number of labels N >= 1")
    spec, _, template = spec.partition("@")
    method, _, spec = spec.rpartition("/")
    method = method.strip().lower() or "default"
    if method not in METHODS:
        raise ValueError(f"config {text!r}: method must be one of {', '.join(sorted(METHODS))}")
    parts = [p.strip().lower() for p in spec.strip().split(":")]
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"config {text!r}: expected mode:calibration[:normalization]")
    mode, calibration = parts[0], parts[1]
    normalization = parts[2] if len(parts) == 3 else None
    if mode not in MODES:
        raise ValueError(f"config {text!r}: mode must be one of {', '.join(sorted(MODES))}")
    if calibration not in CALIBRATIONS:
        raise ValueError(
            f"config {text!r}: calibration must be one of {', '.join(sorted(CALIBRATIONS))}"
        )
    if normalization is not None and normalization not in NORMALIZATIONS:
        raise ValueError(
            f"config {text!r}: normalization must be one of {', '.join(sorted(NORMALIZATIONS))}"
        )
    return ScoringConfig(
        mode,
        calibration,
        normalization,
        method,
        template.strip() or None,
        batch_size,
        int(shortlist) if tilde else 0,
        int(orders) if caret else 0,
        bool(plus),
        float(temperature) if percent else None,
    )


def positive_finite(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and value > 0


def parse_configs(spec: str | Sequence[str], batch_size: int = 1) -> list[ScoringConfig]:
    """A comma list (or a sequence) of configs, duplicates removed, the peer method first:
    moved to the front when given, prepended when not."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    configs: list[ScoringConfig] = []
    for item in items:
        if not item.strip():
            continue
        config = parse_config(item)
        if config not in configs:
            configs.append(config)
    peers = [c for c in configs if c.is_peer]
    peer = peers[0] if peers else PEER
    configs = [peer, *(c for c in configs if c != peer)]
    for config in configs:
        # The server answers Classify with BATCH calibration by INVALID_ARGUMENT: a batch
        # is what it calibrates against.
        if config.calibration == "batch" and config.texts_per_request(batch_size) <= 1:
            raise ValueError(
                f"config {config.name!r}: batch calibration needs --batch-size > 1 (or *K)"
            )
    return configs
