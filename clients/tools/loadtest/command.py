"""`labelprob loadtest`: arguments, exit codes, output files."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import NoReturn

from labelprob.client.client import CALIBRATIONS, DEFAULT_TARGET, MODES
from labelprob.client.params import METHODS
from labelprob.tools.classify import non_negative_int
from labelprob.tools.loadtest.config import LoadConfig
from labelprob.tools.loadtest.report import EXIT_ERROR, format_summary
from labelprob.tools.loadtest.runner import run_load
from labelprob.tools.loadtest.schedule import ARRIVALS
from labelprob.tools.loadtest.workload import generate_workload, load_jsonl_workload, shuffled
from labelprob.tools.reports import write_json

DEFAULT_DURATION_S = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", default=DEFAULT_TARGET, help="server address host:port")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", type=Path, help='JSONL workload: {"text": ..., "label": ...}')
    source.add_argument("--generate", type=int, metavar="N", help="N synthetic texts")
    parser.add_argument(
        "--labels",
        "-l",
        nargs="+",
        help="candidate labels (default with --input: the file's labels)",
    )
    parser.add_argument("--instruction", "-i", default="", help="task instruction")
    parser.add_argument("--template", default="", help="server prompt template name")
    parser.add_argument("--mode", choices=sorted(MODES), default="auto")
    parser.add_argument("--calibration", choices=sorted(CALIBRATIONS), default="default")
    parser.add_argument("--method", choices=sorted(METHODS), default="default")
    parser.add_argument(
        "--channel-shortlist",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="COMBINED: read the channel for the direct read's N best labels (0: server default)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1,
        metavar="K",
        help="texts per request; K > 1 uses ClassifyBatch",
    )
    parser.add_argument("--shuffle", action="store_true", help="shuffle the input file's rows")
    parser.add_argument("--seed", type=int, default=0, help="seed of shuffle/generate/poisson")

    load = parser.add_mutually_exclusive_group()
    load.add_argument(
        "--concurrency",
        type=int,
        default=1,
        metavar="N",
        help="closed loop: N callers, each waits for its answer (default)",
    )
    load.add_argument(
        "--rate",
        type=float,
        metavar="R",
        help="open loop: R requests/s on schedule, whatever the answers",
    )
    parser.add_argument(
        "--arrival", choices=ARRIVALS, default="constant", help="open-loop send times"
    )
    parser.add_argument(
        "--max-outstanding",
        type=int,
        default=1000,
        metavar="M",
        help="open loop: requests in flight before new ones are dropped",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="send but do not record for this long first",
    )
    parser.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help=f"measure this long (default {DEFAULT_DURATION_S:g} s unless --requests)",
    )
    parser.add_argument("--requests", type=int, metavar="N", help="measure N requests")
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline per request (s)")
    parser.add_argument(
        "--channels",
        type=int,
        default=1,
        metavar="C",
        help="spread callers over C channels (connections)",
    )
    parser.add_argument("--report", type=Path, metavar="FILE.json", help="write a JSON report")
    parser.add_argument("--plots", type=Path, metavar="DIR", help="write PNG latency plots")
    parser.add_argument(
        "--progress",
        action="store_true",
        help="live progress on stderr even when it is not a terminal",
    )
    parser.add_argument("--slo-p99-ms", type=float, metavar="X", help="SLO: p99 <= X ms")
    parser.add_argument(
        "--slo-error-rate", type=float, metavar="F", help="SLO: failed+dropped share <= F"
    )


DESCRIPTION = (
    "Closed-loop (--concurrency) or open-loop (--rate) load on a labelprob server. Exit 0 "
    "when the SLOs held, 2 when one failed, 1 on a usage or connection error."
)


def _usage_error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    parser.print_usage(sys.stderr)
    print(f"{parser.prog}: error: {message}", file=sys.stderr)
    sys.exit(EXIT_ERROR)


def config_from_args(args: argparse.Namespace) -> LoadConfig:
    if args.input is not None:
        workload = load_jsonl_workload(args.input, args.labels)
    else:
        if not args.labels:
            raise ValueError("--generate needs --labels")
        workload = generate_workload(args.generate, args.labels, args.seed)
    if args.shuffle:
        workload = shuffled(workload, args.seed)
    duration = args.duration
    if duration is None and args.requests is None:
        duration = DEFAULT_DURATION_S
    return LoadConfig(
        target=args.target,
        workload=workload,
        concurrency=args.concurrency,
        rate=args.rate,
        arrival=args.arrival,
        max_outstanding=args.max_outstanding,
        warmup_s=args.warmup,
        duration_s=duration,
        requests=args.requests,
        batch_size=args.batch_size,
        mode=args.mode,
        calibration=args.calibration,
        method=args.method,
        channel_shortlist=args.channel_shortlist,
        instruction=args.instruction,
        template=args.template,
        timeout_s=args.timeout,
        channels=args.channels,
        seed=args.seed,
        progress=args.progress or sys.stderr.isatty(),
        slo_p99_ms=args.slo_p99_ms,
        slo_error_rate=args.slo_error_rate,
    )


def run_loadtest(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
        config.validate()
    except (OSError, ValueError) as exc:
        print(f"labelprob loadtest: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    report = asyncio.run(run_load(config))
    print(format_summary(report))
    if args.report is not None:
        write_json(args.report, report.to_dict())
    if args.plots is not None:
        from labelprob.tools.loadtest.plots import write_plots  # matplotlib, when asked

        write_plots(report, args.plots)
    if report.ok == 0:
        print("labelprob loadtest: error: no request succeeded", file=sys.stderr)
    return report.exit_code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labelprob loadtest", description=DESCRIPTION)
    add_arguments(parser)
    # argparse exits 2 on a usage error, but 2 means "SLO failed" here.
    parser.error = lambda message: _usage_error(parser, message)  # type: ignore[method-assign]
    return parser


def main(argv: list[str] | None = None) -> int:
    """`labelprob loadtest`; argv are the command's arguments."""
    return run_loadtest(build_parser().parse_args(argv))
