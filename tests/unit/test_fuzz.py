"""Property-based fuzz of Classify through the real servicer in process: any request gets OK
(a distribution over its labels) or INVALID_ARGUMENT naming a field, never anything else."""

from __future__ import annotations

import hashlib

import grpc
from hypothesis import HealthCheck, given, settings

from labelprob.v1 import classifier_pb2 as pb
from tests.test_errors import check_fuzz_request, fuzz_requests
from tests.unit.fake_engine import FakeEngine
from tests.unit.harness import run, serving


def hashed(context: str, token: str) -> float:
    """A log-probability in [-10, 0) that depends on the prompt's end and the token."""
    digest = hashlib.blake2b(f"{context[-40:]}|{token}".encode(), digest_size=4).digest()
    return -10.0 * (int.from_bytes(digest) + 1) / 2**32


class AsyncStubClient:
    """check_fuzz_request's client: ``stub.Classify`` as a blocking call, through the
    in-process server's asyncio stub."""

    def __init__(self, call) -> None:
        self.stub = self
        self._call = call

    def Classify(self, request: pb.ClassifyRequest, timeout: float) -> pb.ClassifyResponse:
        return self._call(request)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=fuzz_requests)
def test_fuzzed_requests_never_crash(request: pb.ClassifyRequest) -> None:
    async def scenario() -> pb.ClassifyResponse | grpc.aio.AioRpcError:
        async with serving(FakeEngine(hashed, max_model_len=256)) as server:
            try:
                return await server.stub.Classify(request)
            except grpc.aio.AioRpcError as err:
                return err

    outcome = run(scenario)

    def replay(_: pb.ClassifyRequest) -> pb.ClassifyResponse:
        if isinstance(outcome, grpc.aio.AioRpcError):
            raise outcome
        return outcome

    check_fuzz_request(AsyncStubClient(replay), request)  # type: ignore[arg-type]
