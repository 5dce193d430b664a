"""The real gRPC servicer in process: a grpc.aio server on loopback over a fake engine,
reached through the generated asyncio stubs."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from labelprob.server.app import Running, create_server
from labelprob.server.classify import Classifier
from labelprob.server.config import ClassifySettings, ServerSettings
from labelprob.server.prompts import load_templates
from labelprob.server.scoring import Method
from labelprob.server.service import ClassifierService
from labelprob.v1 import classifier_pb2_grpc as pb_grpc
from tests.conftest import TEST_TEMPLATES
from tests.unit.fake_engine import FakeEngine

T = TypeVar("T")
# Most fast tests check how the direct reads work, so DIRECT is their default method; the
# tests of the channel and of the server's own default ask for theirs by name.
TEST_SETTINGS = ServerSettings(
    host="127.0.0.1",
    port=0,
    metrics_port=0,
    classify=ClassifySettings(default_method=Method.DIRECT),
)


@dataclass
class InProcess:
    engine: FakeEngine
    service: ClassifierService
    running: Running
    channel: grpc.aio.Channel
    stub: pb_grpc.ClassifierServiceStub


def classifier_for(
    engine: FakeEngine, settings: ServerSettings = TEST_SETTINGS, align_block: int = 0
) -> Classifier:
    return Classifier(
        engine, load_templates(TEST_TEMPLATES), settings.classify, align_block=align_block
    )


@contextlib.asynccontextmanager
async def serving(
    engine: FakeEngine | None = None,
    settings: ServerSettings = TEST_SETTINGS,
    *,
    ready: bool = True,
) -> AsyncIterator[InProcess]:
    """The app's own server (create_server) with the real servicer, started on a free port."""
    engine = engine or FakeEngine()
    classifier = classifier_for(engine, settings) if ready else None
    service = ClassifierService(classifier, settings, "fake-model", "fake-engine")
    running = create_server(settings, service)
    await running.server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield InProcess(engine, service, running, channel, pb_grpc.ClassifierServiceStub(channel))
    finally:
        await channel.close()
        await running.server.stop(None)


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(scenario())


def with_limits(**changes: object) -> ServerSettings:
    """Test settings with some server fields changed."""
    return dataclasses.replace(TEST_SETTINGS, **changes)


def with_classify(**changes: object) -> ServerSettings:
    return dataclasses.replace(
        TEST_SETTINGS, classify=dataclasses.replace(TEST_SETTINGS.classify, **changes)
    )
