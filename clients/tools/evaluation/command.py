"""`labelprob eval`: arguments, exit codes, output files."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from pathlib import Path

from labelprob.client.client import CALIBRATIONS, DEFAULT_TARGET, MODES
from labelprob.tools.evaluation.configs import DEFAULT_CONFIGS, NORMALIZATIONS, parse_configs
from labelprob.tools.evaluation.datasets import load_dataset, unique_names
from labelprob.tools.evaluation.report import (
    EXIT_RPC_ERRORS,
    EXIT_USAGE,
    EvalReport,
    format_fits,
    format_markdown,
)
from labelprob.tools.evaluation.runner import (
    DEFAULT_TIMEOUT_S,
    EvalSettings,
    ServerUnreachable,
    evaluate,
)
from labelprob.tools.reports import write_json

DESCRIPTION = (
    "Accuracy, macro-F1 and calibration (ECE) of scoring configurations on labeled JSONL "
    'files ({"text": ..., "label": ...} a line), against the peer method first_token:none. '
    "Prints a Markdown table. Exit 0 when every text was answered, 1 when some RPC failed "
    "or the server is unreachable, 2 on bad arguments or input."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", type=Path, metavar="FILE.jsonl")
    parser.add_argument(
        "--target",
        action="append",
        metavar="HOST:PORT",
        help=f"server address (default {DEFAULT_TARGET}); repeat it to evaluate several "
        "servers, e.g. two models, in one run: one table each, headed by the server's model",
    )
    parser.add_argument(
        "--configs",
        default=DEFAULT_CONFIGS,
        help="comma list of [method/]mode:calibration[:normalization][@template][~N][^O]"
        "[%%T][+prior][*K] "
        f"(modes {', '.join(sorted(MODES))}; calibrations {', '.join(sorted(CALIBRATIONS))}; "
        f"normalizations {', '.join(sorted(NORMALIZATIONS))}; *K: ClassifyBatch requests of "
        "K texts; %%T: sent with temperature T; +prior: the file's label shares as "
        "label_prior); "
        f"peer is always the first row (default {DEFAULT_CONFIGS})",
    )
    parser.add_argument(
        "--labels", "-l", nargs="+", help="label set (default: each file's sorted labels)"
    )
    parser.add_argument(
        "--limit", type=int, metavar="N", help="rows per file: a seeded random sample"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample and row order")
    parser.add_argument(
        "--skip",
        type=int,
        default=0,
        metavar="N",
        help="leave out the first N rows of the seeded order (rows to choose settings on, "
        "disjoint from a --limit N sample)",
    )
    parser.add_argument(
        "--max-chars",
        type=int,
        metavar="C",
        help="cut each text to C characters, for speed (the server truncates to its context "
        "anyway)",
    )
    parser.add_argument("--instruction", "-i", default="", help="task instruction")
    parser.add_argument("--template", default="", help="server prompt template name")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="deadline per request (s)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1,
        metavar="K",
        help="texts per request; K > 1 uses ClassifyBatch (needed by batch calibration)",
    )
    parser.add_argument(
        "--fit-temperature",
        action="store_true",
        help="after the table, each config's temperature of lowest log-loss on these rows "
        "(send it as %%T or options.temperature on other rows)",
    )
    parser.add_argument("--report", type=Path, metavar="FILE.json", help="write a JSON report")
    parser.add_argument("--plots", type=Path, metavar="DIR", help="write PNG plots")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")


def _error(message: str) -> None:
    print(f"labelprob eval: error: {message}", file=sys.stderr)


def run_eval(args: argparse.Namespace) -> int:
    targets = args.target or [DEFAULT_TARGET]
    several = len(targets) > 1
    try:
        if args.limit is not None and args.limit < 1:
            raise ValueError("--limit must be >= 1")
        if args.max_chars is not None and args.max_chars < 1:
            raise ValueError("--max-chars must be >= 1")
        settings = [
            EvalSettings(
                target=target,
                configs=parse_configs(args.configs, args.batch_size),
                instruction=args.instruction,
                template=args.template,
                concurrency=args.concurrency,
                timeout_s=args.timeout,
                batch_size=args.batch_size,
                progress=not args.quiet,
            )
            for target in targets
        ]
        for one in settings:
            one.validate()
        datasets = [
            load_dataset(
                path,
                name=name,
                labels=args.labels,
                limit=args.limit,
                seed=args.seed,
                skip=args.skip,
                max_chars=args.max_chars,
            )
            for path, name in zip(args.inputs, unique_names(args.inputs), strict=True)
        ]
    except (OSError, ValueError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    reports, failed = [], None
    for one in settings:
        try:
            report = asyncio.run(evaluate(datasets, one))
        except ValueError as exc:
            _error(str(exc))
            failed = EXIT_USAGE
            break
        except ServerUnreachable as exc:
            _error(str(exc))
            failed = EXIT_RPC_ERRORS
            break
        if several:
            print(f"**{(report.server or {}).get('model', '')}** ({one.target})\n")
        print(format_markdown(report))
        if args.fit_temperature:
            print("\n" + format_fits(report))
        if several:
            print()
        reports.append(report)
    # The servers evaluated before a failing one keep their results.
    if reports:
        write_outputs(args, reports, several=several)
    for report in reports:
        report_errors(report)
    if failed is not None:
        return failed
    return max(report.exit_code for report in reports)


def write_outputs(args: argparse.Namespace, reports: list[EvalReport], *, several: bool) -> None:
    """The JSON report (one server's, or {"runs": [...]} when several were asked for) and
    the plots (one folder per server then)."""
    if args.report is not None:
        if not several:
            write_json(args.report, reports[0].to_dict())
        else:
            write_json(args.report, {"runs": [r.to_dict() for r in reports]})
    if args.plots is not None:
        from labelprob.tools.evaluation.plots import write_plots  # matplotlib, when asked

        for i, report in enumerate(reports):
            write_plots(report, args.plots / str(i + 1) if several else args.plots)


def report_errors(report: EvalReport) -> None:
    if report.errors:
        codes = Counter[str]()
        for r in report.results:
            codes.update(r.error_codes)
        _error(
            f"{report.errors} classifications got no answer ("
            + ", ".join(f"{k} {v}" for k, v in codes.most_common())
            + "); accuracy is over the answered ones"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labelprob eval", description=DESCRIPTION)
    add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`labelprob eval`; argv are the command's arguments."""
    return run_eval(build_parser().parse_args(argv))
