"""Proto to domain: each RPC's request validated into domain objects, or InvalidArgument
naming the field.

Every rule here is a limit a caller can read in the README or GetModelInfo; the
service answers a failed rule with INVALID_ARGUMENT and a BadRequest detail.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace

from labelprob.server.classify import CompletionRequest, Options, Task
from labelprob.server.config import ServerSettings
from labelprob.server.errors import InvalidArgument
from labelprob.server.prompts import ExampleSpec, LabelSpec
from labelprob.server.scoring import Calibration, Method, Thresholds
from labelprob.server.wire.enums import CALIBRATIONS, METHODS, MODES, NORMS, TRUNCATION
from labelprob.v1 import classifier_pb2 as pb

MAX_TOP_ALTERNATIVES = 20
MAX_PRIOR_SCOPE_CHARS = 256
MAX_TEMPERATURE = 100.0  # options.temperature: far past any useful softening
CHAT_ROLES = frozenset({"system", "user", "assistant"})


@dataclass(frozen=True)
class Limits:
    """What one request may hold: the operator's limits (settings) and fixed ones."""

    max_labels: int
    max_text_chars: int
    max_batch_texts: int
    max_request_bytes: int
    max_label_chars: int = 256
    max_description_chars: int = 1024
    max_instruction_chars: int = 4096
    max_examples: int = 64
    max_content_free_inputs: int = 8

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> Limits:
        return cls(
            max_labels=settings.max_labels,
            max_text_chars=settings.max_text_chars,
            max_batch_texts=settings.max_batch_texts,
            max_request_bytes=settings.max_message_bytes,
        )


@dataclass(frozen=True)
class ClassifyCall:
    """A Classify or ClassifyBatch request as the classifier takes it."""

    task: Task
    texts: tuple[str, ...]
    options: Options


def _enum(value: int, table: dict, field: str) -> object:
    if value not in table:
        raise InvalidArgument(field, f"unknown enum value {value}")
    return table[value]


def _fraction(value: float, field: str) -> float:
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidArgument(field, f"must be in [0, 1], got {value}")
    return value


def _has_control_chars(text: str) -> bool:
    return any(unicodedata.category(c) == "Cc" for c in text)


def check_size(request: object, limits: Limits) -> None:
    size = request.ByteSize()  # type: ignore[attr-defined]
    if size > limits.max_request_bytes:
        raise InvalidArgument("request", f"{size} bytes; limit {limits.max_request_bytes}")


def check_text(text: str, field: str, limits: Limits) -> str:
    if not text.strip():
        raise InvalidArgument(field, "text is empty")
    if len(text) > limits.max_text_chars:
        raise InvalidArgument(field, f"{len(text)} characters; limit {limits.max_text_chars}")
    return text


def check_texts(texts: Sequence[str], limits: Limits) -> list[str]:
    if not texts:
        raise InvalidArgument("texts", "at least one text is needed")
    if len(texts) > limits.max_batch_texts:
        raise InvalidArgument("texts", f"{len(texts)} texts; limit {limits.max_batch_texts}")
    return [check_text(t, f"texts[{i}]", limits) for i, t in enumerate(texts)]


def check_label(label: pb.Label, i: int, limits: Limits) -> LabelSpec:
    field = f"labels[{i}].name"
    name = label.name
    if not name.strip():
        raise InvalidArgument(field, "label name is empty")
    if name != name.strip():
        raise InvalidArgument(field, "label name starts or ends with whitespace")
    if _has_control_chars(name):
        raise InvalidArgument(field, "label name has control characters")
    if len(name) > limits.max_label_chars:
        raise InvalidArgument(field, f"{len(name)} characters; limit {limits.max_label_chars}")
    if len(label.description) > limits.max_description_chars:
        raise InvalidArgument(
            f"labels[{i}].description",
            f"{len(label.description)} characters; limit {limits.max_description_chars}",
        )
    return LabelSpec(name, label.description)


def task_from_proto(
    labels: Sequence[pb.Label],
    instruction: str,
    examples: Sequence[pb.Example],
    options: pb.ScoringOptions,
    limits: Limits,
) -> Task:
    minimum = 1 if options.multi_label else 2
    if len(labels) < minimum:
        raise InvalidArgument("labels", f"at least {minimum} labels are needed, got {len(labels)}")
    if len(labels) > limits.max_labels:
        raise InvalidArgument("labels", f"{len(labels)} labels; limit {limits.max_labels}")
    specs = [check_label(label, i, limits) for i, label in enumerate(labels)]
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        if spec.name in seen:
            raise InvalidArgument(f"labels[{i}].name", f"duplicate label {spec.name!r}")
        seen.add(spec.name)
    if len(instruction) > limits.max_instruction_chars:
        raise InvalidArgument(
            "instruction", f"{len(instruction)} characters; limit {limits.max_instruction_chars}"
        )
    if len(examples) > limits.max_examples:
        raise InvalidArgument("examples", f"{len(examples)} examples; limit {limits.max_examples}")
    example_specs = []
    for i, ex in enumerate(examples):
        if ex.label not in seen:
            raise InvalidArgument(f"examples[{i}].label", f"{ex.label!r} is not one of the labels")
        check_text(ex.text, f"examples[{i}].text", limits)
        example_specs.append(ExampleSpec(ex.text, ex.label))
    return Task(tuple(specs), instruction, tuple(example_specs), options.template)


def options_from_proto(options: pb.ScoringOptions, limits: Limits) -> Options:
    top_k = options.top_alternatives
    if not 0 <= top_k <= MAX_TOP_ALTERNATIVES:
        raise InvalidArgument(
            "options.top_alternatives", f"must be in [0, {MAX_TOP_ALTERNATIVES}], got {top_k}"
        )
    if len(options.content_free_inputs) > limits.max_content_free_inputs:
        raise InvalidArgument(
            "options.content_free_inputs",
            f"{len(options.content_free_inputs)} inputs; limit {limits.max_content_free_inputs}",
        )
    for i, text in enumerate(options.content_free_inputs):
        if len(text) > limits.max_label_chars:
            raise InvalidArgument(f"options.content_free_inputs[{i}]", "longer than a label may be")
    method = _enum(options.method, METHODS, "options.method")
    if method is not None and options.multi_label:
        raise InvalidArgument("options.method", "multi_label reads yes/no per label; no method")
    if options.channel_shortlist and (
        options.multi_label or method in (Method.DIRECT, Method.CHANNEL)
    ):
        raise InvalidArgument(
            "options.channel_shortlist", "only the COMBINED method reads a channel shortlist"
        )
    if options.label_orders > 2:
        raise InvalidArgument(
            "options.label_orders", f"1 or 2 (0: the server's choice), got {options.label_orders}"
        )
    if options.label_orders == 2 and (
        options.multi_label or method is Method.CHANNEL or options.mode == pb.SCORING_MODE_PRUNED
    ):
        raise InvalidArgument(
            "options.label_orders",
            "two label orders need two direct reads: not with PRUNED, CHANNEL or multi_label",
        )
    if len(options.prior_scope) > MAX_PRIOR_SCOPE_CHARS:
        raise InvalidArgument(
            "options.prior_scope",
            f"{len(options.prior_scope)} characters; limit {MAX_PRIOR_SCOPE_CHARS}",
        )
    th = options.thresholds
    threshold = options.multi_label_threshold if options.HasField("multi_label_threshold") else 0.5
    return Options(
        mode=_enum(options.mode, MODES, "options.mode"),
        length_norm=_enum(options.length_normalization, NORMS, "options.length_normalization"),
        calibration=_enum(options.calibration, CALIBRATIONS, "options.calibration"),
        top_alternatives=top_k,
        thresholds=Thresholds(
            _fraction(th.min_top_probability, "options.thresholds.min_top_probability"),
            _fraction(th.min_margin, "options.thresholds.min_margin"),
            _fraction(th.min_label_mass, "options.thresholds.min_label_mass"),
        ),
        truncate=_enum(options.truncation, TRUNCATION, "options.truncation"),
        content_free_inputs=tuple(options.content_free_inputs),
        domain_premise=options.domain_premise,
        multi_label=options.multi_label,
        multi_label_threshold=_fraction(threshold, "options.multi_label_threshold"),
        method=method,
        prior_scope=options.prior_scope,
        channel_shortlist=options.channel_shortlist,
        label_orders=options.label_orders,
    )


def temperature_from_proto(options: pb.ScoringOptions) -> float:
    """The request's temperature: 1 when unset."""
    if not options.HasField("temperature"):
        return 1.0
    temperature = options.temperature
    if options.multi_label:
        raise InvalidArgument(
            "options.temperature", "multi_label scores each label alone; no temperature"
        )
    if not (math.isfinite(temperature) and 0.0 < temperature <= MAX_TEMPERATURE):
        raise InvalidArgument(
            "options.temperature", f"must be in (0, {MAX_TEMPERATURE:g}], got {temperature}"
        )
    return temperature


def label_prior_from_proto(options: pb.ScoringOptions, labels: int) -> tuple[float, ...]:
    """The request's label shares, checked against its labels; () when none are sent."""
    shares = tuple(options.label_prior)
    if not shares:
        return ()
    if options.multi_label:
        raise InvalidArgument(
            "options.label_prior", "multi_label scores each label alone; no label prior"
        )
    if len(shares) != labels:
        raise InvalidArgument(
            "options.label_prior", f"{len(shares)} shares for {labels} labels; one per label"
        )
    for i, share in enumerate(shares):
        if not (math.isfinite(share) and share > 0.0):
            raise InvalidArgument(f"options.label_prior[{i}]", f"must be > 0, got {share}")
    if not math.isfinite(sum(shares)):  # normalizing would divide by infinity
        raise InvalidArgument("options.label_prior", "the shares' sum is not a finite number")
    return shares


def _task_and_options(
    request: pb.ClassifyRequest | pb.ClassifyBatchRequest, limits: Limits, cache_salt: str | None
) -> tuple[Task, Options]:
    task = task_from_proto(
        request.labels, request.instruction, request.examples, request.options, limits
    )
    options = options_from_proto(request.options, limits).with_salt(cache_salt)
    prior = label_prior_from_proto(request.options, len(task.labels))
    temperature = temperature_from_proto(request.options)
    return task, replace(options, label_prior=prior, temperature=temperature)


def classify_call(
    request: pb.ClassifyRequest, limits: Limits, cache_salt: str | None = None
) -> ClassifyCall:
    check_size(request, limits)
    text = check_text(request.text, "text", limits)
    task, options = _task_and_options(request, limits, cache_salt)
    if options.calibration is Calibration.BATCH:
        raise InvalidArgument("options.calibration", "BATCH needs ClassifyBatch")
    return ClassifyCall(task, (text,), options)


def batch_call(
    request: pb.ClassifyBatchRequest, limits: Limits, cache_salt: str | None = None
) -> ClassifyCall:
    check_size(request, limits)
    texts = check_texts(request.texts, limits)
    task, options = _task_and_options(request, limits, cache_salt)
    return ClassifyCall(task, tuple(texts), options)


def completion_request(
    request: pb.ScoreCompletionRequest, limits: Limits, cache_salt: str | None = None
) -> CompletionRequest:
    check_size(request, limits)
    if bool(request.prompt) == bool(request.messages):
        raise InvalidArgument("prompt", "set exactly one of prompt and messages")
    for i, msg in enumerate(request.messages):
        if msg.role not in CHAT_ROLES:
            raise InvalidArgument(f"messages[{i}].role", f"must be one of {sorted(CHAT_ROLES)}")
    if not request.completion:
        raise InvalidArgument("completion", "completion is empty")
    if not 0 <= request.top_alternatives <= MAX_TOP_ALTERNATIVES:
        raise InvalidArgument("top_alternatives", f"must be in [0, {MAX_TOP_ALTERNATIVES}]")
    return CompletionRequest(
        completion=request.completion,
        prompt=request.prompt,
        messages=tuple({"role": m.role, "content": m.content} for m in request.messages),
        top_alternatives=request.top_alternatives,
        cache_salt=cache_salt,
    )
