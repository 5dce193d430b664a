"""Python clients of labelprob.v1.ClassifierService: synchronous and asyncio, with deadlines."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import grpc

from labelprob.v1 import classifier_pb2 as pb
from labelprob.v1 import classifier_pb2_grpc as pb_grpc

DEFAULT_TARGET = "localhost:50051"
DEFAULT_TIMEOUT_S = 30.0

LabelLike = str | tuple[str, str] | pb.Label
MODES = {
    "auto": pb.SCORING_MODE_AUTO,
    "first_token": pb.SCORING_MODE_FIRST_TOKEN,
    "full": pb.SCORING_MODE_FULL,
    "pruned": pb.SCORING_MODE_PRUNED,
}
CALIBRATIONS = {
    "default": pb.CALIBRATION_UNSPECIFIED,
    "none": pb.CALIBRATION_NONE,
    "contextual": pb.CALIBRATION_CONTEXTUAL,
    "domain_pmi": pb.CALIBRATION_DOMAIN_PMI,
    "batch": pb.CALIBRATION_BATCH,
    "auto": pb.CALIBRATION_AUTO,
}


def to_label(label: LabelLike) -> pb.Label:
    """A label from a name, a (name, description) pair, or a pb.Label."""
    if isinstance(label, pb.Label):
        return label
    if isinstance(label, tuple):
        return pb.Label(name=label[0], description=label[1])
    return pb.Label(name=label)


@dataclass
class ClassifyParams:
    """Everything of a request but its text(s)."""

    labels: Sequence[LabelLike]
    instruction: str = ""
    examples: Sequence[tuple[str, str]] = ()
    options: pb.ScoringOptions = field(default_factory=pb.ScoringOptions)

    def request(self, text: str) -> pb.ClassifyRequest:
        return pb.ClassifyRequest(
            text=text,
            labels=[to_label(lb) for lb in self.labels],
            instruction=self.instruction,
            examples=[pb.Example(text=t, label=lb) for t, lb in self.examples],
            options=self.options,
        )

    def batch_request(self, texts: Iterable[str]) -> pb.ClassifyBatchRequest:
        return pb.ClassifyBatchRequest(
            texts=list(texts),
            labels=[to_label(lb) for lb in self.labels],
            instruction=self.instruction,
            examples=[pb.Example(text=t, label=lb) for t, lb in self.examples],
            options=self.options,
        )


# gRPC's own retries: an overloaded (RESOURCE_EXHAUSTED) or briefly unreachable server is
# tried again with backoff; the server's pushback (grpc-retry-pushback-ms) sets the wait.
RETRY_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "labelprob.v1.ClassifierService"}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
                },
            }
        ]
    }
)


def channel_options(
    max_message_bytes: int = 16 * 1024 * 1024, retries: bool = True
) -> list[tuple[str, int | str]]:
    options: list[tuple[str, int | str]] = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.enable_retries", int(retries)),
    ]
    if retries:
        options.append(("grpc.service_config", RETRY_SERVICE_CONFIG))
    return options


class Client:
    """Blocking client. Every call has a deadline (``timeout`` seconds)."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        credentials: grpc.ChannelCredentials | None = None,
        retries: bool = True,
    ) -> None:
        self.timeout = timeout
        options = channel_options(retries=retries)
        if credentials is None:
            self.channel = grpc.insecure_channel(target, options=options)
        else:
            self.channel = grpc.secure_channel(target, credentials, options=options)
        self.stub = pb_grpc.ClassifierServiceStub(self.channel)

    def classify(
        self, text: str, params: ClassifyParams, timeout: float | None = None
    ) -> pb.Classification:
        response = self.stub.Classify(params.request(text), timeout=timeout or self.timeout)
        return response.result

    def classify_batch(
        self, texts: Sequence[str], params: ClassifyParams, timeout: float | None = None
    ) -> pb.ClassifyBatchResponse:
        return self.stub.ClassifyBatch(params.batch_request(texts), timeout=timeout or self.timeout)

    def model_info(self, timeout: float | None = None) -> pb.GetModelInfoResponse:
        return self.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=timeout or self.timeout)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """asyncio client. Every call has a deadline (``timeout`` seconds)."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        credentials: grpc.ChannelCredentials | None = None,
        retries: bool = True,
    ) -> None:
        self.timeout = timeout
        options = channel_options(retries=retries)
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(target, options=options)
        else:
            self.channel = grpc.aio.secure_channel(target, credentials, options=options)
        self.stub = pb_grpc.ClassifierServiceStub(self.channel)

    async def classify(
        self, text: str, params: ClassifyParams, timeout: float | None = None
    ) -> pb.Classification:
        response = await self.stub.Classify(params.request(text), timeout=timeout or self.timeout)
        return response.result

    async def classify_batch(
        self, texts: Sequence[str], params: ClassifyParams, timeout: float | None = None
    ) -> pb.ClassifyBatchResponse:
        return await self.stub.ClassifyBatch(
            params.batch_request(texts), timeout=timeout or self.timeout
        )

    async def model_info(self, timeout: float | None = None) -> pb.GetModelInfoResponse:
        return await self.stub.GetModelInfo(
            pb.GetModelInfoRequest(), timeout=timeout or self.timeout
        )

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
