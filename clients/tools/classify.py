"""`labelprob classify`: one text, or JSONL in and JSONL out with bounded concurrency."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from pathlib import Path

import grpc
from google.protobuf import json_format

from labelprob.client.client import (
    CALIBRATIONS,
    DEFAULT_TARGET,
    MODES,
    AsyncClient,
    ClassifyParams,
    Client,
)
from labelprob.client.params import METHODS
from labelprob.tools.jsonl import read_text_rows
from labelprob.v1 import classifier_pb2 as pb

DESCRIPTION = (
    'Classify TEXT against --labels; or --input JSONL ({"text": ...} a line, optionally '
    '"labels") to --output JSONL.'
)


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def label_shares(text: str) -> list[float]:
    """An argparse type: comma-separated positive shares, one per label in their order."""
    try:
        shares = [float(part) for part in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"comma-separated numbers, got {text!r}") from exc
    if not all(share > 0 for share in shares):  # NaN fails this too
        raise argparse.ArgumentTypeError(f"every share must be > 0, got {text!r}")
    return shares


def positive_number(text: str) -> float:
    """An argparse type: a finite number > 0."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labelprob classify", description=DESCRIPTION)
    parser.add_argument("text", nargs="?", help="text to classify (omit with --input)")
    parser.add_argument(
        "--labels", "-l", nargs="+", help="candidate labels (name or name=description)"
    )
    parser.add_argument("--instruction", "-i", default="", help="task instruction")
    parser.add_argument("--mode", choices=sorted(MODES), default="auto")
    parser.add_argument("--calibration", choices=sorted(CALIBRATIONS), default="default")
    parser.add_argument(
        "--method",
        choices=sorted(METHODS),
        default="default",
        help="direct, channel, combined; default: the server's",
    )
    parser.add_argument("--template", default="", help="server prompt template name")
    parser.add_argument(
        "--prior-scope",
        default="",
        help="online calibration: requests of one scope share a task's prior (default: one "
        "per task)",
    )
    parser.add_argument(
        "--channel-shortlist",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="combined method: read the channel for the direct read's N best labels only",
    )
    parser.add_argument(
        "--label-prior",
        type=label_shares,
        default=[],
        metavar="SHARES",
        help="each label's expected share of the texts, in --labels order (e.g. 0.87,0.13)",
    )
    parser.add_argument(
        "--temperature",
        type=positive_number,
        metavar="T",
        help="divide the final log-scores by T (fitted on labelled rows: labelprob eval "
        "--fit-temperature); unset: 1",
    )
    parser.add_argument("--top-alternatives", type=int, default=0)
    parser.add_argument("--input", type=Path, help="JSONL file of texts ('-' for stdin)")
    parser.add_argument("--output", type=Path, help="JSONL results file (default stdout)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (JSONL)")
    parser.add_argument("--target", default=DEFAULT_TARGET, help="server address host:port")
    parser.add_argument("--timeout", type=float, default=60.0, help="deadline per request (s)")
    parser.add_argument("--full", action="store_true", help="print the whole response as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    """`labelprob classify`; argv are the command's arguments."""
    return run_classify(build_parser().parse_args(argv))


def parse_label(raw: str) -> tuple[str, str]:
    name, _, description = raw.partition("=")
    return name, description


def params_from_args(args: argparse.Namespace, labels: list[str] | None = None) -> ClassifyParams:
    names = labels if labels is not None else args.labels
    if not names:
        raise SystemExit("labelprob classify: --labels is required")
    options = pb.ScoringOptions(
        mode=MODES[args.mode],
        calibration=CALIBRATIONS[args.calibration],
        method=METHODS[args.method],
        template=args.template,
        top_alternatives=args.top_alternatives,
        prior_scope=args.prior_scope,
        channel_shortlist=args.channel_shortlist,
        label_prior=args.label_prior,
        temperature=args.temperature,
    )
    return ClassifyParams(
        labels=[parse_label(x) for x in names], instruction=args.instruction, options=options
    )


def summary(result: pb.Classification) -> dict[str, object]:
    """The fields most callers want, probabilities rounded for reading."""
    return {
        "label": result.top_label,
        "probabilities": {lb.name: round(lb.probability, 4) for lb in result.labels},
        "logprobs": {lb.name: round(lb.logprob, 4) for lb in result.labels},
        "label_mass": round(result.label_mass, 4),
        "entropy": round(result.entropy, 4),
        "margin": round(result.margin, 4),
    }


def run_classify(args: argparse.Namespace) -> int:
    try:
        if args.input is not None:
            return asyncio.run(classify_jsonl(args))
        if not args.text:
            raise SystemExit("labelprob classify: give a TEXT or --input FILE")
        with Client(args.target, timeout=args.timeout) as client:
            result = client.classify(args.text, params_from_args(args))
        if args.full:
            print(json_format.MessageToJson(result, preserving_proto_field_name=True))
        else:
            print(json.dumps(summary(result), indent=2))
        return 0
    except grpc.RpcError as err:
        print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1


async def classify_jsonl(args: argparse.Namespace) -> int:
    """Classifies each line with bounded concurrency; output keeps input order."""
    source = sys.stdin if str(args.input) == "-" else args.input.open()
    try:
        rows = [row for _, row in read_text_rows(source, str(args.input))]
    except ValueError as exc:
        raise SystemExit(f"labelprob classify: {exc}") from exc
    sink = sys.stdout if args.output is None else args.output.open("w")
    from tqdm import tqdm  # only files get a progress bar

    semaphore = asyncio.Semaphore(max(args.concurrency, 1))
    failures = 0
    async with AsyncClient(args.target, timeout=args.timeout) as client:

        async def one(row: dict) -> dict:
            nonlocal failures
            params = params_from_args(args, row.get("labels"))
            async with semaphore:
                try:
                    result = await client.classify(row["text"], params)
                except grpc.aio.AioRpcError as err:
                    failures += 1
                    return {**row, "error": f"{err.code().name}: {err.details()}"}
            out = {**row, **summary(result)}
            out.pop("labels", None)
            return out

        tasks = [asyncio.ensure_future(one(row)) for row in rows]
        with tqdm(total=len(tasks), unit="text", file=sys.stderr, disable=None) as bar:
            for task in tasks:
                out = await task
                sink.write(json.dumps(out) + "\n")
                bar.update(1)
    if sink is not sys.stdout:
        sink.close()
    return 1 if failures else 0
