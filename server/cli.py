"""The `labelprob` command: `serve` and `prepare-model`; client commands come from the client."""

from __future__ import annotations

import argparse
import sys

from labelprob.server.config import add_serve_arguments, settings_from_args


def build_parser() -> argparse.ArgumentParser:
    from labelprob.client import cli as client_cli

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

    client_cli.add_commands(commands)
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
