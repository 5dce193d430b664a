"""The gRPC servicer: proto to domain objects, validation to status codes, domain to proto."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
import structlog
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from labelprob.server import __version__
from labelprob.server import metrics as m
from labelprob.server.classifier import Classification, Classifier, Options, Task, TokenScore
from labelprob.server.config import ServerSettings
from labelprob.server.errors import EngineUnavailable, InvalidArgument, Overloaded
from labelprob.server.labels import Mode
from labelprob.server.prompts import ExampleSpec, LabelSpec
from labelprob.server.scoring import Calibration, Decision, LengthNorm, Thresholds
from labelprob.v1 import classifier_pb2 as pb
from labelprob.v1 import classifier_pb2_grpc as pb_grpc

log = structlog.get_logger(__name__)

ERROR_DOMAIN = "labelprob.v1"
MAX_TOP_ALTERNATIVES = 20
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ClassifierService"].full_name

MODES = {
    pb.SCORING_MODE_UNSPECIFIED: Mode.AUTO,
    pb.SCORING_MODE_AUTO: Mode.AUTO,
    pb.SCORING_MODE_FIRST_TOKEN: Mode.FIRST_TOKEN,
    pb.SCORING_MODE_FULL: Mode.FULL,
}
MODES_OUT = {
    Mode.AUTO: pb.SCORING_MODE_AUTO,
    Mode.FIRST_TOKEN: pb.SCORING_MODE_FIRST_TOKEN,
    Mode.FULL: pb.SCORING_MODE_FULL,
}
NORMS = {
    pb.LENGTH_NORMALIZATION_UNSPECIFIED: LengthNorm.SUM,
    pb.LENGTH_NORMALIZATION_SUM: LengthNorm.SUM,
    pb.LENGTH_NORMALIZATION_MEAN: LengthNorm.MEAN,
}
CALIBRATIONS = {
    pb.CALIBRATION_UNSPECIFIED: None,
    pb.CALIBRATION_NONE: Calibration.NONE,
    pb.CALIBRATION_CONTEXTUAL: Calibration.CONTEXTUAL,
    pb.CALIBRATION_DOMAIN_PMI: Calibration.DOMAIN_PMI,
    pb.CALIBRATION_BATCH: Calibration.BATCH,
}
CALIBRATIONS_OUT = {v: k for k, v in CALIBRATIONS.items() if v is not None}
TRUNCATION = {
    pb.TRUNCATION_POLICY_UNSPECIFIED: None,
    pb.TRUNCATION_POLICY_TRUNCATE: True,
    pb.TRUNCATION_POLICY_REJECT: False,
}
DECISIONS_OUT = {
    Decision.NONE: pb.DECISION_UNSPECIFIED,
    Decision.ACCEPT: pb.DECISION_ACCEPT,
    Decision.ABSTAIN: pb.DECISION_ABSTAIN,
}

T = TypeVar("T")


# -- proto -> domain, with validation -----------------------------------------------


def _enum(value: int, table: dict, field: str) -> object:
    if value not in table:
        raise InvalidArgument(field, f"unknown enum value {value}")
    return table[value]


def _fraction(value: float, field: str) -> float:
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidArgument(field, f"must be in [0, 1], got {value}")
    return value


def task_from_proto(
    labels: list[pb.Label],
    instruction: str,
    examples: list[pb.Example],
    options: pb.ScoringOptions,
    settings: ServerSettings,
) -> Task:
    if len(labels) < 2:
        raise InvalidArgument("labels", f"at least two labels are needed, got {len(labels)}")
    if len(labels) > settings.max_labels:
        raise InvalidArgument("labels", f"at most {settings.max_labels} labels, got {len(labels)}")
    seen: set[str] = set()
    specs = []
    for i, label in enumerate(labels):
        if not label.name.strip():
            raise InvalidArgument(f"labels[{i}].name", "label name is empty")
        if label.name in seen:
            raise InvalidArgument(f"labels[{i}].name", f"duplicate label {label.name!r}")
        seen.add(label.name)
        specs.append(LabelSpec(label.name, label.description))
    example_specs = []
    for i, ex in enumerate(examples):
        if ex.label not in seen:
            raise InvalidArgument(f"examples[{i}].label", f"{ex.label!r} is not one of the labels")
        if not ex.text.strip():
            raise InvalidArgument(f"examples[{i}].text", "example text is empty")
        example_specs.append(ExampleSpec(ex.text, ex.label))
    return Task(tuple(specs), instruction, tuple(example_specs), options.template)


def options_from_proto(options: pb.ScoringOptions) -> Options:
    top_k = options.top_alternatives
    if not 0 <= top_k <= MAX_TOP_ALTERNATIVES:
        raise InvalidArgument(
            "options.top_alternatives", f"must be in [0, {MAX_TOP_ALTERNATIVES}], got {top_k}"
        )
    th = options.thresholds
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
    )


def check_text(text: str, field: str, settings: ServerSettings) -> str:
    if not text.strip():
        raise InvalidArgument(field, "text is empty")
    if len(text) > settings.max_text_chars:
        raise InvalidArgument(
            field, f"text has {len(text)} characters; limit {settings.max_text_chars}"
        )
    return text


# -- domain -> proto ------------------------------------------------------------------


def _token(t: TokenScore) -> pb.TokenLogprob:
    return pb.TokenLogprob(token_id=t.token_id, token=t.token, logprob=t.logprob)


def classification_to_proto(c: Classification) -> pb.Classification:
    return pb.Classification(
        top_label=c.top_label,
        labels=[
            pb.LabelScore(
                name=lb.name,
                probability=lb.probability,
                logprob=lb.logprob,
                tokens=[_token(t) for t in lb.tokens],
                uncalibrated_probability=lb.uncalibrated_probability,
                score=lb.score,
            )
            for lb in c.labels
        ],
        label_mass=c.label_mass,
        entropy=c.entropy,
        margin=c.margin,
        top_alternatives=[_token(t) for t in c.top_alternatives],
        decision=DECISIONS_OUT[c.decision],
        usage=pb.Usage(
            prompt_tokens=c.usage.prompt_tokens,
            cached_prompt_tokens=c.usage.cached_tokens,
            engine_reads=c.usage.reads,
        ),
        mode=MODES_OUT[c.mode],
        calibration=CALIBRATIONS_OUT[c.calibration],
        truncated=c.truncated,
    )


# -- errors -> rich status --------------------------------------------------------------


def _packed(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def status_for(exc: Exception) -> status_pb2.Status:
    """google.rpc.Status with details (BadRequest, ErrorInfo, RetryInfo) for a request error."""
    if isinstance(exc, InvalidArgument):
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=exc.field, description=exc.description
        )
        return status_pb2.Status(
            code=code_pb2.INVALID_ARGUMENT,
            message=str(exc),
            details=[
                _packed(error_details_pb2.BadRequest(field_violations=[violation])),
                _packed(
                    error_details_pb2.ErrorInfo(
                        reason="INVALID_FIELD", domain=ERROR_DOMAIN, metadata={"field": exc.field}
                    )
                ),
            ],
        )
    if isinstance(exc, Overloaded):
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(exc.retry_after_s * 1000))
        return status_pb2.Status(
            code=code_pb2.RESOURCE_EXHAUSTED,
            message=str(exc),
            details=[
                _packed(error_details_pb2.RetryInfo(retry_delay=delay)),
                _packed(error_details_pb2.ErrorInfo(reason="OVERLOADED", domain=ERROR_DOMAIN)),
            ],
        )
    if isinstance(exc, EngineUnavailable):
        return status_pb2.Status(
            code=code_pb2.UNAVAILABLE,
            message=str(exc),
            details=[
                _packed(
                    error_details_pb2.ErrorInfo(reason="ENGINE_UNAVAILABLE", domain=ERROR_DOMAIN)
                )
            ],
        )
    return status_pb2.Status(
        code=code_pb2.INTERNAL, message=f"internal error: {type(exc).__name__}"
    )


class ClassifierService(pb_grpc.ClassifierServiceServicer):
    """Implements labelprob.v1.ClassifierService on a Classifier."""

    def __init__(
        self,
        classifier: Classifier | None,
        settings: ServerSettings,
        model_name: str,
        engine_version: str,
    ) -> None:
        # None while the engine starts: RPCs answer UNAVAILABLE until the app sets it.
        self.classifier: Classifier | None = classifier
        self.settings = settings
        self.model_name = model_name
        self.engine_version = engine_version

    def _classifier(self) -> Classifier:
        if self.classifier is None:
            raise EngineUnavailable("the model is loading")
        return self.classifier

    async def _handle(
        self, method: str, context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[T]]
    ) -> T:
        """Runs an RPC body: metrics, logs, and errors turned into rich statuses."""
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        metadata = dict(context.invocation_metadata() or ())
        structlog.contextvars.bind_contextvars(
            request_id=metadata.get("x-request-id") or uuid.uuid4().hex[:16], method=method
        )
        try:
            return await call()
        except (InvalidArgument, Overloaded, EngineUnavailable) as exc:
            status = status_for(exc)
            code = _code(status.code)
            log.info("request rejected", code=code.name, error=str(exc))
            await context.abort_with_status(rpc_status.to_status(status))
            raise  # unreachable: abort raises
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            if context.code() is not None and context.code() != grpc.StatusCode.OK:
                code = context.code()
                raise
            code = grpc.StatusCode.INTERNAL
            log.exception("request failed")
            await context.abort_with_status(rpc_status.to_status(status_for(exc)))
            raise
        finally:
            elapsed = time.perf_counter() - start
            m.observe_request(method, code.name, elapsed)
            log.debug("request done", code=code.name, seconds=round(elapsed, 4))
            structlog.contextvars.clear_contextvars()

    async def Classify(
        self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClassifyResponse:
        async def call() -> pb.ClassifyResponse:
            text = check_text(request.text, "text", self.settings)
            task = task_from_proto(
                list(request.labels),
                request.instruction,
                list(request.examples),
                request.options,
                self.settings,
            )
            options = options_from_proto(request.options)
            if options.calibration is Calibration.BATCH:
                raise InvalidArgument("options.calibration", "BATCH needs ClassifyBatch")
            m.LABELS_PER_REQUEST.observe(len(task.labels))
            (result,) = await self._classifier().classify(task, [text], options)
            m.observe_usage(result.usage)
            return pb.ClassifyResponse(result=classification_to_proto(result))

        return await self._handle("Classify", context, call)

    async def ClassifyBatch(
        self, request: pb.ClassifyBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClassifyBatchResponse:
        async def call() -> pb.ClassifyBatchResponse:
            if not request.texts:
                raise InvalidArgument("texts", "at least one text is needed")
            if len(request.texts) > self.settings.max_batch_texts:
                raise InvalidArgument(
                    "texts",
                    f"at most {self.settings.max_batch_texts} texts, got {len(request.texts)}",
                )
            texts = [
                check_text(t, f"texts[{i}]", self.settings) for i, t in enumerate(request.texts)
            ]
            task = task_from_proto(
                list(request.labels),
                request.instruction,
                list(request.examples),
                request.options,
                self.settings,
            )
            options = options_from_proto(request.options)
            m.LABELS_PER_REQUEST.observe(len(task.labels))
            results = await self._classifier().classify(task, texts, options)
            response = pb.ClassifyBatchResponse(
                results=[classification_to_proto(r) for r in results]
            )
            for r in results:
                m.observe_usage(r.usage)
                response.usage.prompt_tokens += r.usage.prompt_tokens
                response.usage.cached_prompt_tokens += r.usage.cached_tokens
                response.usage.engine_reads += r.usage.reads
            return response

        return await self._handle("ClassifyBatch", context, call)

    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelInfoResponse:
        async def call() -> pb.GetModelInfoResponse:
            c = self._classifier()
            return pb.GetModelInfoResponse(
                model=self.model_name,
                max_context_tokens=c.engine.max_model_len,
                max_labels=self.settings.max_labels,
                max_batch_texts=self.settings.max_batch_texts,
                server_version=__version__,
                engine_version=self.engine_version,
                chat_template=c.engine.chat_renderer() is not None,
                templates=sorted(c.templates),
                vocab_size=getattr(c.engine, "vocab_size", 0),
                default_calibration=CALIBRATIONS_OUT[c.default_calibration],
            )

        return await self._handle("GetModelInfo", context, call)


def _code(value: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN
