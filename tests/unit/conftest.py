"""The fast layer: every test under tests/unit runs in process, without vLLM, in seconds.

Its tests are marked ``unit``: `python -m pytest -m unit` runs them alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.fspath).resolve().parents:
            item.add_marker(pytest.mark.unit)


# -- recorders of what the server emits: spans and log events -----------------------

_SPANS = InMemorySpanExporter()


def _install_tracer() -> None:
    """One in-memory tracer provider for the process (OpenTelemetry allows one global)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_SPANS))
        trace.set_tracer_provider(provider)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _install_tracer()
    _SPANS.clear()
    yield _SPANS
    _SPANS.clear()


@pytest.fixture
def log_events() -> Iterator[list[dict]]:
    """Every log event as a dict, with the request's bound context merged in."""
    capture = structlog.testing.LogCapture()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    try:
        yield capture.entries
    finally:
        structlog.reset_defaults()
