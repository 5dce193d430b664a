"""The gRPC servicer: proto to domain objects (validation.py), errors to rich statuses."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc
import structlog
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry import trace

from labelprob.server import __version__
from labelprob.server import metrics as m
from labelprob.server import validation as v
from labelprob.server.classify import (
    Classification,
    Classifier,
    CompletionRequest,
    Options,
    ScoredCompletion,
    Task,
    TokenScore,
)
from labelprob.server.config import ServerSettings
from labelprob.server.errors import EngineUnavailable, InvalidArgument, Overloaded
from labelprob.server.labels import Mode
from labelprob.server.scoring import Calibration, Decision
from labelprob.v1 import classifier_pb2 as pb
from labelprob.v1 import classifier_pb2_grpc as pb_grpc

log = structlog.get_logger(__name__)
tracer = trace.get_tracer("labelprob.server")

ERROR_DOMAIN = "labelprob.v1"
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ClassifierService"].full_name
# Items of one ClassifyStream in flight at once; past it the server stops reading the
# stream, and gRPC flow control pushes back on the caller.
STREAM_WINDOW = 64
CHAT_ROLES = {"system", "user", "assistant"}

MODES_OUT = {
    Mode.AUTO: pb.SCORING_MODE_AUTO,
    Mode.FIRST_TOKEN: pb.SCORING_MODE_FIRST_TOKEN,
    Mode.FULL: pb.SCORING_MODE_FULL,
    Mode.PRUNED: pb.SCORING_MODE_PRUNED,
}
CALIBRATIONS_OUT = {c: k for k, c in v.CALIBRATIONS.items() if c is not None}
DECISIONS_OUT = {
    Decision.NONE: pb.DECISION_UNSPECIFIED,
    Decision.ACCEPT: pb.DECISION_ACCEPT,
    Decision.ABSTAIN: pb.DECISION_ABSTAIN,
}

T = TypeVar("T")


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
                estimated=lb.estimated,
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
        selected_labels=list(c.selected_labels),
    )


def completion_to_proto(s: ScoredCompletion) -> pb.ScoreCompletionResponse:
    return pb.ScoreCompletionResponse(
        tokens=[
            pb.ScoredToken(token=_token(t), alternatives=[_token(a) for a in alts])
            for t, alts in zip(s.tokens, s.alternatives, strict=True)
        ],
        sum_logprob=s.sum_logprob,
        mean_logprob=s.mean_logprob,
        usage=pb.Usage(
            prompt_tokens=s.usage.prompt_tokens,
            cached_prompt_tokens=s.usage.cached_tokens,
            engine_reads=s.usage.reads,
        ),
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
        info = error_details_pb2.ErrorInfo(
            reason="INVALID_FIELD", domain=ERROR_DOMAIN, metadata={"field": exc.field}
        )
        return status_pb2.Status(
            code=code_pb2.INVALID_ARGUMENT,
            message=str(exc),
            details=[
                _packed(error_details_pb2.BadRequest(field_violations=[violation])),
                _packed(info),
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
        info = error_details_pb2.ErrorInfo(reason="ENGINE_UNAVAILABLE", domain=ERROR_DOMAIN)
        return status_pb2.Status(
            code=code_pb2.UNAVAILABLE, message=str(exc), details=[_packed(info)]
        )
    return status_pb2.Status(
        code=code_pb2.INTERNAL, message=f"internal error: {type(exc).__name__}"
    )


def grpc_status(status: status_pb2.Status, exc: Exception) -> grpc.Status:
    """The status for abort, with gRPC's retry pushback when the server is overloaded:
    clients with a retry policy then wait as long as the RetryInfo detail says."""
    converted = rpc_status.to_status(status)
    if isinstance(exc, Overloaded):
        pushback = (("grpc-retry-pushback-ms", str(int(exc.retry_after_s * 1000))),)
        converted = converted._replace(trailing_metadata=converted.trailing_metadata + pushback)
    return converted


def grpc_code(value: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN


def limits_from(settings: ServerSettings) -> v.Limits:
    return v.Limits(
        max_labels=settings.max_labels,
        max_text_chars=settings.max_text_chars,
        max_batch_texts=settings.max_batch_texts,
        max_request_bytes=settings.max_message_bytes,
    )


def cache_salt(tenant: str | None, secret: str) -> str | None:
    """A tenant's own prefix-cache namespace: requests of other tenants never hit its blocks."""
    if not tenant:
        return None
    return hashlib.sha256(f"{secret}\0{tenant}".encode()).hexdigest()


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
        self.limits = limits_from(settings)
        self.model_name = model_name
        self.engine_version = engine_version
        # Set while draining or after the engine died: new RPCs fail fast.
        self.unavailable_reason: str | None = None

    def _classifier(self) -> Classifier:
        if self.unavailable_reason is not None:
            raise EngineUnavailable(self.unavailable_reason)
        if self.classifier is None:
            raise EngineUnavailable("the model is loading")
        return self.classifier

    def _salt(self, context: grpc.aio.ServicerContext) -> str | None:
        header = self.settings.tenant_header
        if not header:
            return None
        metadata = dict(context.invocation_metadata() or ())
        return cache_salt(metadata.get(header), self.settings.cache_salt_secret)

    async def _handle(
        self, method: str, context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[T]]
    ) -> T:
        """Runs an RPC body: trace span, metrics, logs, and errors turned into rich statuses."""
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        metadata = dict(context.invocation_metadata() or ())
        structlog.contextvars.bind_contextvars(
            request_id=metadata.get("x-request-id") or uuid.uuid4().hex[:16], method=method
        )
        with tracer.start_as_current_span(f"{SERVICE_NAME}/{method}") as span:
            try:
                return await call()
            except (InvalidArgument, Overloaded, EngineUnavailable) as exc:
                status = status_for(exc)
                code = grpc_code(status.code)
                log.info("request rejected", code=code.name, error=str(exc))
                await context.abort_with_status(grpc_status(status, exc))
                raise  # unreachable: abort raises
            except asyncio.CancelledError:
                # Deadline or client cancel: the awaiting engine reads were aborted.
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                code = grpc.StatusCode.INTERNAL
                log.exception("request failed")
                await context.abort_with_status(rpc_status.to_status(status_for(exc)))
                raise
            finally:
                elapsed = time.perf_counter() - start
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                m.observe_request(method, code.name, elapsed)
                log.info("request done", code=code.name, seconds=round(elapsed, 4))
                structlog.contextvars.clear_contextvars()

    def _task_and_options(
        self, request: pb.ClassifyRequest | pb.ClassifyBatchRequest, salt: str | None
    ) -> tuple[Task, Options]:
        task = v.task_from_proto(
            request.labels, request.instruction, request.examples, request.options, self.limits
        )
        options = v.options_from_proto(request.options, self.limits)
        m.LABELS_PER_REQUEST.observe(len(task.labels))
        return task, options.with_salt(salt)

    async def _classify_one(
        self, request: pb.ClassifyRequest, salt: str | None
    ) -> pb.Classification:
        v.check_size(request, self.limits)
        text = v.check_text(request.text, "text", self.limits)
        task, options = self._task_and_options(request, salt)
        if options.calibration is Calibration.BATCH:
            raise InvalidArgument("options.calibration", "BATCH needs ClassifyBatch")
        if self.settings.log_text:
            log.info("request text", text=text)
        (result,) = await self._classifier().classify(task, [text], options)
        m.observe_usage(result.usage)
        return classification_to_proto(result)

    async def Classify(
        self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClassifyResponse:
        async def call() -> pb.ClassifyResponse:
            result = await self._classify_one(request, self._salt(context))
            return pb.ClassifyResponse(result=result)

        return await self._handle("Classify", context, call)

    async def ClassifyBatch(
        self, request: pb.ClassifyBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClassifyBatchResponse:
        async def call() -> pb.ClassifyBatchResponse:
            v.check_size(request, self.limits)
            texts = v.check_texts(request.texts, self.limits)
            task, options = self._task_and_options(request, self._salt(context))
            if self.settings.log_text:
                log.info("request texts", texts=texts)
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

    async def ClassifyStream(
        self,
        request_iterator: AsyncIterator[pb.ClassifyStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ClassifyStreamResponse]:
        """Results in completion order, each tagged with its request's id; errors per item."""
        salt = self._salt(context)
        results: asyncio.Queue[pb.ClassifyStreamResponse | None] = asyncio.Queue()
        window = asyncio.Semaphore(STREAM_WINDOW)
        in_flight: set[str] = set()
        tasks: set[asyncio.Task[None]] = set()

        async def run(item: pb.ClassifyStreamRequest) -> None:
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                result = await self._classify_one(item.request, salt)
                await results.put(pb.ClassifyStreamResponse(id=item.id, result=result))
            except (InvalidArgument, Overloaded, EngineUnavailable) as exc:
                status = status_for(exc)
                code = grpc_code(status.code)
                await results.put(
                    pb.ClassifyStreamResponse(
                        id=item.id, status_code=status.code, error_message=status.message
                    )
                )
            except Exception as exc:
                code = grpc.StatusCode.INTERNAL
                log.exception("stream item failed", item_id=item.id)
                status = status_for(exc)
                await results.put(
                    pb.ClassifyStreamResponse(
                        id=item.id, status_code=status.code, error_message=status.message
                    )
                )
            finally:
                in_flight.discard(item.id)
                window.release()
                m.observe_request("ClassifyStream.item", code.name, time.perf_counter() - start)

        async def read_requests() -> None:
            try:
                async for item in request_iterator:
                    await window.acquire()
                    if not item.id or item.id in in_flight:
                        window.release()
                        reason = "id is empty" if not item.id else "id is already in flight"
                        await results.put(
                            pb.ClassifyStreamResponse(
                                id=item.id,
                                status_code=code_pb2.INVALID_ARGUMENT,
                                error_message=f"id: {reason}",
                            )
                        )
                        continue
                    in_flight.add(item.id)
                    task = asyncio.create_task(run(item))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.gather(*list(tasks))
            finally:
                await results.put(None)

        reader = asyncio.create_task(read_requests())
        try:
            while (response := await results.get()) is not None:
                yield response
            await reader
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()

    async def ScoreCompletion(
        self, request: pb.ScoreCompletionRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScoreCompletionResponse:
        async def call() -> pb.ScoreCompletionResponse:
            v.check_size(request, self.limits)
            if bool(request.prompt) == bool(request.messages):
                raise InvalidArgument("prompt", "set exactly one of prompt and messages")
            for i, msg in enumerate(request.messages):
                if msg.role not in CHAT_ROLES:
                    raise InvalidArgument(
                        f"messages[{i}].role", f"must be one of {sorted(CHAT_ROLES)}"
                    )
            if not request.completion:
                raise InvalidArgument("completion", "completion is empty")
            if not 0 <= request.top_alternatives <= v.MAX_TOP_ALTERNATIVES:
                raise InvalidArgument(
                    "top_alternatives", f"must be in [0, {v.MAX_TOP_ALTERNATIVES}]"
                )
            messages = tuple({"role": x.role, "content": x.content} for x in request.messages)
            scored = await self._classifier().score_completion(
                CompletionRequest(
                    completion=request.completion,
                    prompt=request.prompt,
                    messages=messages,
                    top_alternatives=request.top_alternatives,
                    cache_salt=self._salt(context),
                )
            )
            m.observe_usage(scored.usage)
            return completion_to_proto(scored)

        return await self._handle("ScoreCompletion", context, call)

    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelInfoResponse:
        async def call() -> pb.GetModelInfoResponse:
            c = self._classifier()
            return pb.GetModelInfoResponse(
                model=self.model_name,
                max_context_tokens=c.engine.max_model_len,
                max_labels=self.limits.max_labels,
                max_batch_texts=self.limits.max_batch_texts,
                server_version=__version__,
                engine_version=self.engine_version,
                chat_template=c.engine.chat_renderer() is not None,
                templates=sorted(c.templates),
                vocab_size=getattr(c.engine, "vocab_size", 0),
                default_calibration=CALIBRATIONS_OUT[c.default_calibration],
            )

        return await self._handle("GetModelInfo", context, call)
