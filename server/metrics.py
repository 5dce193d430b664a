"""Prometheus metrics of the service (served over HTTP by the app)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

if TYPE_CHECKING:
    from labelprob.server.classify import Usage

REQUESTS = Counter(
    "labelprob_requests_total", "RPCs handled, by method and gRPC status code", ["method", "code"]
)
LATENCY = Histogram(
    "labelprob_request_latency_seconds",
    "RPC latency by method",
    ["method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
LABELS_PER_REQUEST = Histogram(
    "labelprob_labels_per_request",
    "Candidate labels per request",
    buckets=(2, 3, 5, 10, 20, 50, 100, 200, 500),
)
PROMPT_TOKENS = Counter(
    "labelprob_prompt_tokens_total",
    "Prompt tokens sent to the engine, by whether the prefix cache served them",
    ["source"],
)
ENGINE_READS = Counter("labelprob_engine_reads_total", "Engine reads (one-token forward passes)")
INFLIGHT_READS = Gauge("labelprob_inflight_reads", "Engine reads admitted and not yet finished")
ENGINE_REQUESTS = Gauge(
    "labelprob_engine_requests", "Requests inside the vLLM engine (waiting or running)"
)
ENGINE_UP = Gauge("labelprob_engine_up", "1 while the engine is running and serving")


def observe_request(method: str, code: str, seconds: float) -> None:
    REQUESTS.labels(method, code).inc()
    LATENCY.labels(method).observe(seconds)


def observe_usage(usage: Usage) -> None:
    PROMPT_TOKENS.labels("cache").inc(usage.cached_tokens)
    PROMPT_TOKENS.labels("computed").inc(usage.prompt_tokens - usage.cached_tokens)
    ENGINE_READS.inc(usage.reads)
