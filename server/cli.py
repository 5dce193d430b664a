"""The `labelprob` command: `serve` and `prepare-model`, and the client tools, each loaded
only when its command runs (so `serve` imports none of them)."""

from __future__ import annotations

import argparse
import importlib
import sys

from labelprob.server.config import add_serve_arguments, settings_from_args

# Command -> (module with `main(argv) -> int`, help). The tools need the `tools` extra.
TOOLS = {
    "classify": ("labelprob.tools.classify", "classify a text (or a JSONL file) against labels"),
    "eval": (
        "labelprob.tools.evaluation",
        "accuracy and calibration of scoring configs on labeled JSONL files",
    ),
    "loadtest": (
        "labelprob.tools.loadtest",
        "load-test a server: latency percentiles, throughput, SLO exit code",
    ),
    "bench": (
        "labelprob.tools.bench",
        "throughput beside vLLM offline, vLLM's HTTP route and transformers",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="labelprob", description="Zero-shot classification from label log-probabilities."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="start the gRPC server")
    add_serve_arguments(serve)
    serve.set_defaults(run=run_serve)

    prepare = commands.add_parser(
        "prepare-model", help="convert the embedded model into the cache (image builds)"
    )
    prepare.add_argument("--cache-dir", default=None, help="target cache folder")
    prepare.set_defaults(run=run_prepare_model)

    for name, (_, help_text) in TOOLS.items():
        # Listed for `labelprob --help`; `main` hands their arguments to the tool itself.
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


def run_serve(args: argparse.Namespace) -> int:
    from labelprob.server import app

    return app.main(settings_from_args(args))


def run_prepare_model(args: argparse.Namespace) -> int:
    from pathlib import Path

    from labelprob.server.model_source import default_cache_dir, ensure_embedded_model

    folder = ensure_embedded_model(Path(args.cache_dir) if args.cache_dir else default_cache_dir())
    print(folder)
    return 0


def run_tool(name: str, argv: list[str]) -> int:
    module_name, _ = TOOLS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.startswith("labelprob"):
            raise
        print(
            f"labelprob {name}: needs {exc.name}, from the tools extra: "
            "pip install 'labelprob[tools]'",
            file=sys.stderr,
        )
        return 1
    return int(module.main(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in TOOLS:
        return run_tool(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
