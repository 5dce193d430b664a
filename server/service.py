"""The gRPC servicer: short handlers over the wire boundary (wire/) and the classifier."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import grpc
import structlog

from labelprob.server import __version__
from labelprob.server import metrics as m
from labelprob.server.classify import Classification, Classifier
from labelprob.server.config import ServerSettings
from labelprob.server.errors import EngineUnavailable
from labelprob.server.rpc import SERVICE_NAME, failure_status, rpc_scope, unary
from labelprob.server.stream import classify_stream
from labelprob.server.wire import inbound, outbound
from labelprob.server.wire.enums import CALIBRATIONS_OUT, METHODS_OUT
from labelprob.server.wire.inbound import ClassifyCall, Limits
from labelprob.server.wire.status import grpc_status
from labelprob.v1 import classifier_pb2 as pb
from labelprob.v1 import classifier_pb2_grpc as pb_grpc

log = structlog.get_logger(__name__)

__all__ = ["SERVICE_NAME", "ClassifierService", "cache_salt"]


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
        self.limits = Limits.from_settings(settings)
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

    async def _classify(self, call: ClassifyCall) -> list[Classification]:
        m.LABELS_PER_REQUEST.observe(len(call.task.labels))
        if self.settings.log_text:
            log.info("request texts", texts=list(call.texts))
        results = await self._classifier().classify(call.task, call.texts, call.options)
        for r in results:
            m.observe_usage(r.usage)
        return results

    async def _classify_one(
        self, request: pb.ClassifyRequest, salt: str | None
    ) -> pb.Classification:
        (result,) = await self._classify(inbound.classify_call(request, self.limits, salt))
        return outbound.classification(result)

    async def Classify(
        self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClassifyResponse:
        async def call() -> pb.ClassifyResponse:
            result = await self._classify_one(request, self._salt(context))
            return pb.ClassifyResponse(result=result)

        return await unary("Classify", context, call)

    async def ClassifyBatch(
        self, request: pb.ClassifyBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClassifyBatchResponse:
        async def call() -> pb.ClassifyBatchResponse:
            batch = inbound.batch_call(request, self.limits, self._salt(context))
            return outbound.batch_response(await self._classify(batch))

        return await unary("ClassifyBatch", context, call)

    async def ClassifyStream(
        self,
        request_iterator: AsyncIterator[pb.ClassifyStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ClassifyStreamResponse]:
        """Results in completion order, each tagged with its request's id; errors per item."""
        with rpc_scope("ClassifyStream", context) as outcome:
            salt = self._salt(context)
            try:
                async for response in classify_stream(
                    request_iterator, lambda request: self._classify_one(request, salt)
                ):
                    yield response
            except Exception as exc:
                status = failure_status(exc, outcome)
                await context.abort_with_status(grpc_status(status, exc))

    async def ScoreCompletion(
        self, request: pb.ScoreCompletionRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScoreCompletionResponse:
        async def call() -> pb.ScoreCompletionResponse:
            scoring = inbound.completion_request(request, self.limits, self._salt(context))
            scored = await self._classifier().score_completion(scoring)
            m.observe_usage(scored.usage)
            return outbound.completion(scored)

        return await unary("ScoreCompletion", context, call)

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
                default_method=METHODS_OUT[c.default_method],
            )

        return await unary("GetModelInfo", context, call)
