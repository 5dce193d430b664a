"""Boot: logging, model source, engine, gRPC server with health and reflection, metrics, signals."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from dataclasses import dataclass

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from labelprob.server import metrics as m
from labelprob.server import tls
from labelprob.server.classify import Classifier, Options, Task
from labelprob.server.config import ServerSettings
from labelprob.server.engine import Engine
from labelprob.server.model_source import EMBEDDED_MODEL_NAME, resolve_model
from labelprob.server.prompts import LabelSpec, load_templates
from labelprob.server.scoring import Calibration
from labelprob.server.service import SERVICE_NAME, ClassifierService
from labelprob.v1 import classifier_pb2 as pb
from labelprob.v1 import classifier_pb2_grpc as pb_grpc

log = structlog.get_logger(__name__)

# Exit code when the engine process dies, so an orchestrator restarts the pod.
EXIT_ENGINE_DIED = 3


def configure_logging(level: str) -> None:
    """structlog JSON lines on stderr, one object per event, with the request's context."""
    numeric = logging.getLevelName(level.upper())
    logging.basicConfig(stream=sys.stderr, level=numeric, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


@dataclass
class Running:
    """A started server: what tests and the CLI need to reach and stop it."""

    server: grpc.aio.Server
    port: int
    health: health.HealthServicer
    service: ClassifierService
    engine: Engine | None = None
    exit_code: int = 0

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)
        m.ENGINE_UP.set(1 if serving else 0)


def configure_tracing(endpoint: str) -> None:
    """Exports one span per RPC to an OpenTelemetry collector; without it spans are no-ops."""
    if not endpoint:
        return
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "labelprob"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    if settings.tls_cert is None:
        return None
    if settings.tls_key is None:
        raise SystemExit("--tls-cert needs --tls-key")
    # Re-read on change, so renewed certificates are served without a restart.
    return tls.server_credentials(
        tls.TlsFiles(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    )


def start_metrics(port: int, host: str) -> None:
    """Prometheus on the gRPC host's address ("[::]": every family, IPv4 where IPv6 is off)."""
    try:
        start_http_server(port, addr=host.strip("[]"))
    except OSError:
        if host != "[::]":
            raise
        start_http_server(port)


def create_server(settings: ServerSettings, service: ClassifierService) -> Running:
    """The gRPC server with health (NOT_SERVING), reflection and ``service``, bound to its
    port and not started: tests run it in process with a service of their own."""
    # The transport takes up to twice the request limit, so that a message over the
    # limit reaches validation and gets INVALID_ARGUMENT naming it, not a bare error.
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 2 * settings.max_message_bytes),
            ("grpc.max_send_message_length", 2 * settings.max_message_bytes),
        ]
    )
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    pb_grpc.add_ClassifierServiceServicer_to_server(service, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{settings.host}:{settings.port}"
    credentials = server_credentials(settings)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    running = Running(server, port, health_servicer, service)
    running.set_serving(False)
    return running


async def start_server(settings: ServerSettings, model_name: str) -> Running:
    """Starts gRPC with health (NOT_SERVING), reflection and an unready classifier service."""
    service = ClassifierService(None, settings, model_name, Engine.version())
    running = create_server(settings, service)
    await running.server.start()
    log.info("grpc listening", port=running.port, tls=settings.tls_cert is not None)
    return running


async def warm_up(classifier: Classifier) -> None:
    """One small classification so the first real request does not pay for kernel warm-up."""
    task = Task(labels=(LabelSpec("yes"), LabelSpec("no")))
    await classifier.classify(task, ["warm-up"], Options(calibration=Calibration.NONE))


async def attach_engine(running: Running, settings: ServerSettings) -> Engine:
    """Loads the model, starts the engine, warms it up and turns health to SERVING."""
    engine_settings = settings.engine
    model_path = await asyncio.to_thread(
        resolve_model, engine_settings.model, engine_settings.cache_dir
    )
    model_name = engine_settings.model or EMBEDDED_MODEL_NAME
    engine = await asyncio.to_thread(Engine.start, engine_settings, model_path, model_name)
    running.engine = engine
    classifier = Classifier(
        engine,
        load_templates(settings.templates_file),
        settings.classify,
        align_block=engine.block_size if settings.align_prompts else 0,
    )
    m.INFLIGHT_READS.set_function(lambda: classifier.budget.in_flight)
    m.ENGINE_REQUESTS.set_function(engine.num_unfinished_requests)
    await warm_up(classifier)
    # Everything loaded so far (model config, tokenizer, vLLM's modules) lives as long as
    # the process: moved out of the collector's reach, full collections stop rescanning it,
    # which would otherwise pause the event loop for every request in flight.
    gc.collect()
    gc.freeze()
    running.service.classifier = classifier
    running.set_serving(True)
    log.info(
        "serving",
        model=model_name,
        max_model_len=engine.max_model_len,
        block_size=engine.block_size,
    )
    return engine


async def serve(settings: ServerSettings) -> int:
    """Runs the server until SIGTERM/SIGINT (exit 0) or engine death (exit non-zero)."""
    configure_tracing(settings.otlp_endpoint)
    if settings.metrics_port:
        start_metrics(settings.metrics_port, settings.host)
    running = await start_server(settings, settings.engine.model or EMBEDDED_MODEL_NAME)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def on_engine_death() -> None:
        running.exit_code = EXIT_ENGINE_DIED
        running.service.unavailable_reason = "the engine process died; the server is restarting"
        running.set_serving(False)
        stop.set()

    startup = asyncio.create_task(attach_engine(running, settings))
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({startup, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if startup in done and startup.exception() is None:
        watchdog = asyncio.create_task(startup.result().watch(on_engine_death))
        await stop.wait()
        watchdog.cancel()
    elif startup in done:
        log.error("engine failed to start", error=repr(startup.exception()))
        running.exit_code = 1
    else:
        startup.cancel()
        await shutdown(running, settings.grace_period_s)
        # The engine is still loading in a worker thread, which cannot be cancelled and
        # which interpreter exit would wait for; its processes end with ours.
        os._exit(running.exit_code)
    await shutdown(running, settings.grace_period_s)
    return running.exit_code


async def shutdown(running: Running, grace_s: float) -> None:
    """NOT_SERVING first (balancers stop sending), drain in-flight RPCs, then stop the engine."""
    running.set_serving(False)
    running.health.enter_graceful_shutdown()
    log.info("draining", grace_seconds=grace_s, exit_code=running.exit_code)
    # In-flight RPCs finish; new ones are refused by the transport (UNAVAILABLE).
    await running.server.stop(grace_s if running.exit_code == 0 else 0)
    if running.engine is not None:
        running.engine.shutdown()
    log.info("stopped", exit_code=running.exit_code)


def main(settings: ServerSettings) -> int:
    configure_logging(settings.log_level)
    return asyncio.run(serve(settings))


__all__ = ["Running", "attach_engine", "create_server", "main", "pb", "serve", "start_server"]
