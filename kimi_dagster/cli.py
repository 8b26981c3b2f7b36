"""``kimi-dagster``: the seed's batch workflow and the day-to-day commands, on the same engine
as the Dagster assets (ingest -> chunks -> rate-limited calls -> DuckDB)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from kimi_dagster import batches
from kimi_dagster.budgets import set_budget
from kimi_dagster.catalogue import UnknownModel
from kimi_dagster.claims import ChunkBusy
from kimi_dagster.client import ApiError, env_base_url
from kimi_dagster.engine import Settings, platform_currency, process_partitions
from kimi_dagster.estimate import (
    DEFAULT_FILL,
    DEFAULT_LATENCY_S,
    Plan,
    estimate_file,
    parse_duration,
)
from kimi_dagster.exports import export_results
from kimi_dagster.ingest import DEFAULT_CHUNK_SIZE, IngestReport, ingest_file
from kimi_dagster.inputs import DEFAULT_MAX_TOKENS, DEFAULT_MODEL, ItemDefaults
from kimi_dagster.limits import configured_limits
from kimi_dagster.reports import named, query
from kimi_dagster.runner import RunAborted, RunOptions
from kimi_dagster.spool import SpoolError
from kimi_dagster.stats import RunStats
from kimi_dagster.store import DatabaseBusy, default_db_path

EXIT_ABORTED = 2
EXIT_BUDGET = 3


class CliError(Exception):
    """A problem the user can fix; printed without a traceback."""


def _db(args: argparse.Namespace) -> Path:
    return Path(args.db) if args.db else default_db_path()


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", help="DuckDB file (default: $KIMI_DAGSTER_DB or .kimi_dagster/kimi.duckdb)"
    )


def _add_run_flags(parser: argparse.ArgumentParser, *, missing_only: bool = True) -> None:
    """The account, retry and budget flags; ``--missing-only`` where skipping failed items
    means something (not for ``retry-failed``, which sends exactly those)."""
    parser.add_argument(
        "-c", "--concurrency", type=int, help="requests in flight (default: the tier's)"
    )
    parser.add_argument(
        "-t",
        "--timeout",
        type=float,
        default=120.0,
        help="seconds to wait for one reply (default 120)",
    )
    parser.add_argument(
        "--tier",
        type=int,
        default=3,
        choices=range(6),
        help="account tier 0-5: preset limits (default 3)",
    )
    parser.add_argument("--rpm", type=int, help="override requests per minute")
    parser.add_argument("--tpm", type=int, help="override tokens per minute")
    parser.add_argument("--tpd", type=int, help="override tokens per day")
    parser.add_argument(
        "--max-attempts",
        type=int,
        default=5,
        help="attempts per item for retryable errors (default 5)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        help="stop before this run could spend more than this (in the platform's currency: USD, "
        "CNY on .cn); the rest stays pending",
    )
    if missing_only:
        parser.add_argument(
            "--missing-only",
            action="store_true",
            help="send only items never finished; do not retry failed ones",
        )
    else:
        parser.set_defaults(missing_only=False)
    _add_db(parser)


def _add_item_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", help="dataset name (default: from the file name)")
    parser.add_argument(
        "--chunk-size",
        type=int,
        help=f"items per chunk partition of a new dataset (default {DEFAULT_CHUNK_SIZE}); an "
        "existing dataset keeps its own",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"model for lines without one (default {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=DEFAULT_MAX_TOKENS,
        help="max_tokens for lines without one (default "
        f"{DEFAULT_MAX_TOKENS}); a small honest value raises throughput",
    )
    parser.add_argument(
        "--mode",
        choices=batches.MODES,
        help="realtime, or batch: the provider's Batch API at 60%% of the price, answers within "
        "the completion window; stored with the dataset (default: as stored, else realtime)",
    )


def _api_key() -> str:
    api_key = os.environ.get("MOONSHOT_API_KEY")
    if not api_key:
        raise CliError(
            "set MOONSHOT_API_KEY (and MOONSHOT_BASE_URL for the .cn platform or a simulator)"
        )
    return api_key


def _add_batch_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait", action="store_true", help="batch mode: poll until every batch has finished"
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=30.0,
        help="batch mode: seconds between polls with --wait (default 30)",
    )
    parser.add_argument(
        "--completion-window",
        default="24h",
        help='batch mode: the provider\'s deadline, "12h" to "7d" (default 24h)',
    )


def _settings(args: argparse.Namespace) -> Settings:
    api_key = _api_key()
    try:
        limits = configured_limits(args)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return Settings(
        api_key=api_key,
        limits=limits,
        base_url=env_base_url(),
        timeout=args.timeout,
        options=RunOptions(
            max_attempts=args.max_attempts, budget_usd=args.budget, progress_interval=2.0
        ),
    )


def _progress(stats: RunStats) -> None:
    print(f"\r{stats.progress_line()}", end="", file=sys.stderr, flush=True)


def _run(args: argparse.Namespace, dataset: str, keys: list[str]) -> RunStats:
    settings = _settings(args)
    if waiting := batches.list_batches(_db(args), partition_keys=keys, open_only=True):
        raise CliError(
            f"{len(waiting)} batch(es) of {dataset} are still open (e.g. {waiting[0].batch_id} "
            f"for {waiting[0].partition_key}); a real-time run would pay for their items "
            "twice: wait for them (`kimi-dagster batches`) or `kimi-dagster cancel` them"
        )
    run_id = f"cli-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    print(f"running {len(keys)} chunk(s) of {dataset} at {settings.limits}", file=sys.stderr)
    try:
        stats = asyncio.run(
            process_partitions(
                _db(args),
                keys,
                settings,
                run_id=run_id,
                retry_failed=not args.missing_only,
                on_progress=_progress,
            )
        )
    except RunAborted as exc:
        print(file=sys.stderr)
        raise CliError(str(exc)) from None
    print(f"\r{stats.progress_line()}", file=sys.stderr)
    if stats.budget_exhausted:
        print(
            f"budget reached: {stats.total - stats.done} item(s) left pending; raise the cap "
            f"(--budget for a run, `kimi-dagster budget {dataset} USD` for the dataset) and run "
            "again to finish",
            file=sys.stderr,
        )
    return stats


def cmd_ingest(args: argparse.Namespace) -> int:
    _ingest(args)
    return 0


def _ingest(args: argparse.Namespace) -> IngestReport:
    report = ingest_file(
        _db(args),
        args.input,
        dataset=args.dataset,
        chunk_size=args.chunk_size,
        defaults=ItemDefaults(model=args.model, max_tokens=args.max_tokens),
    )
    print(
        f"{report.dataset}: {report.lines} lines, {report.accepted} new, "
        f"{report.unchanged} already ingested, {report.rejected} rejected, "
        f"{len(report.partitions)} chunk partition(s)",
        file=sys.stderr,
    )
    if report.rejected:
        print(report.describe_rejections(), file=sys.stderr)
    if args.mode:
        batches.set_dataset_mode(_db(args), report.dataset, args.mode)
    return report


def cmd_batch(args: argparse.Namespace) -> int:
    report = _ingest(args)
    report_dataset, keys = report.dataset, report.partitions
    if batches.partition_mode(_db(args), keys) == "batch":
        return _run_batches(args, report_dataset, keys)
    stats = _run(args, report_dataset, keys)
    summary = export_results(
        _db(args), report_dataset, args.output, summary_extra={"run": stats.metadata()}
    )
    print(
        f"wrote {args.output}: {summary['succeeded']} succeeded, {summary['failed']} failed, "
        f"{summary['pending']} pending, ${summary['cost_usd']:.4f}",
        file=sys.stderr,
    )
    return EXIT_BUDGET if stats.budget_exhausted else 0


def _run_batches(args: argparse.Namespace, dataset: str, keys: list[str]) -> int:
    """Batch mode: submit what is pending, load what has finished; ``--wait``: until done."""
    options = batches.BatchOptions(
        completion_window=args.completion_window, poll_interval=args.poll_interval
    )

    def progress(report: batches.SyncReport) -> None:
        done = sum(r.completed + r.failed for r in report.open)
        total = sum(r.items for r in report.open)
        states = ", ".join(sorted({r.state for r in report.open}))
        print(
            f"\r{len(report.open)} batch(es) open ({states}): {done:,}/{total:,} answered",
            end="",
            file=sys.stderr,
            flush=True,
        )

    try:
        report = asyncio.run(
            batches.run_batch_mode(
                _db(args),
                keys,
                _settings(args),
                wait=args.wait,
                retry_failed=not args.missing_only,
                options=options,
                on_progress=progress,
            )
        )
    except ApiError as exc:
        raise CliError(f"Batch API: {exc}") from None
    print(
        f"\r{dataset}: {len(report.submitted)} batch(es) submitted, {len(report.loaded)} "
        f"loaded ({report.loaded_rows:,} lines), {len(report.open)} still open"
        + (
            f" ({len(report.skipped)} chunk(s) not submitted again: their batch is still open)"
            if report.skipped
            else ""
        ),
        file=sys.stderr,
    )
    if args.output:
        summary = export_results(_db(args), dataset, args.output)
        print(
            f"wrote {args.output}: {summary['succeeded']} succeeded, {summary['failed']} "
            f"failed, {summary['pending']} pending, ${summary['cost_usd']:.4f}",
            file=sys.stderr,
        )
    if report.open:
        print(
            "batches still open: run the same command again (or with --wait) to load them; "
            "`kimi-dagster batches` shows their state",
            file=sys.stderr,
        )
    if report.budget_exhausted:
        print(
            "budget reached: items whose worst-case Batch cost did not fit stay pending; "
            "raise --budget or `kimi-dagster budget`, then run again",
            file=sys.stderr,
        )
        return EXIT_BUDGET
    return 0


def cmd_batches(args: argparse.Namespace) -> int:
    rows = [r.as_dict() for r in batches.list_batches(_db(args), dataset=args.dataset)]
    if args.json:
        print(orjson.dumps(rows, default=str, option=orjson.OPT_INDENT_2).decode())
        return 0
    columns = ["batch_id", "partition_key", "model", "items", "state", "completed", "failed"]
    columns += ["loaded", "error", "updated_at"]
    _print_table(columns, [[r[c] for c in columns] for r in rows])
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    try:
        cancelled = asyncio.run(
            batches.cancel(
                _db(args),
                api_key=_api_key(),
                base_url=env_base_url(),
                batch_id=args.batch_id,
                dataset=args.dataset,
            )
        )
    except ApiError as exc:
        raise CliError(f"Batch API: {exc}") from None
    for record in cancelled:
        print(f"{record.batch_id or record.submission_id}: {record.state}", file=sys.stderr)
    if not cancelled:
        print("no open batch to cancel", file=sys.stderr)
    return 0


def cmd_retry_failed(args: argparse.Namespace) -> int:
    rows = named(_db(args), "queries/failed_partitions", {"dataset": args.dataset})
    keys = [row["partition_key"] for row in rows]
    if not keys:
        print(f"{args.dataset}: no failed items", file=sys.stderr)
        return 0
    if batches.partition_mode(_db(args), keys) == "batch":
        return _run_batches(args, args.dataset, keys)
    stats = _run(args, args.dataset, keys)
    if args.output:
        export_results(_db(args), args.dataset, args.output)
    return EXIT_BUDGET if stats.budget_exhausted else 0


def cmd_export(args: argparse.Namespace) -> int:
    summary = export_results(
        _db(args), args.dataset, args.output, first_key=args.first, last_key=args.last
    )
    print(f"wrote {args.output}: {summary['items']} items", file=sys.stderr)
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    try:
        plan = Plan(
            limits=configured_limits(args),
            currency=platform_currency(env_base_url()),
            fill=args.fill,
            latency_s=args.latency,
            deadline_s=parse_duration(args.deadline) if args.deadline else None,
            retry_failed=not args.missing_only,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None
    result = estimate_file(
        args.input,
        plan,
        db_path=_db(args),
        dataset=args.dataset,
        defaults=ItemDefaults(model=args.model, max_tokens=args.max_tokens),
        history=args.history,
    )
    if args.json:
        print(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(result.describe())
    return 0


def cmd_budget(args: argparse.Namespace) -> int:
    if args.clear or args.usd is not None:
        set_budget(_db(args), args.dataset, None if args.clear else args.usd)
    params = {"partition_keys": [], "dataset": args.dataset, "run_id": None}
    rows = [
        {k: v for k, v in row.items() if k != "others_usd"}  # a running run's view only
        for row in named(_db(args), "queries/dataset_budgets", params)
    ]
    if args.json:
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
    else:
        _print_table(list(rows[0]), [tuple(r.values()) for r in rows])
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    rows = named(_db(args), "queries/status", {"dataset": args.dataset})
    if args.json:
        print(orjson.dumps(rows, default=str, option=orjson.OPT_INDENT_2).decode())
    else:
        _print_table(list(rows[0]) if rows else ["dataset"], [tuple(r.values()) for r in rows])
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    columns, rows = query(_db(args), args.query)
    if args.json:
        data = [dict(zip(columns, r, strict=True)) for r in rows]
        print(orjson.dumps(data, default=str, option=orjson.OPT_INDENT_2).decode())
    else:
        _print_table(columns, rows)
    return 0


# The simulator and the demo (which loads Dagster) are imported on use, so `batch` starts fast.
def cmd_simulate(args: argparse.Namespace) -> int:
    from kimi_dagster.simulator import main as simulator_main

    return simulator_main(args.simulator_args)


def cmd_demo(args: argparse.Namespace) -> int:
    from kimi_dagster.demo import run_demo

    return run_demo(items=args.items, workdir=Path(args.workdir))


def _print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(c) for c in columns]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for n, row in enumerate(cells):
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kimi-dagster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("batch", help="ingest a JSONL file, run it, write results (seed CLI)")
    p.add_argument("-i", "--input", required=True, help="JSONL prompts")
    p.add_argument("-o", "--output", required=True, help="results: .json, .jsonl or .parquet")
    _add_item_flags(p)
    _add_run_flags(p)
    _add_batch_flags(p)
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("ingest", help="validate a JSONL file into DuckDB chunk partitions")
    p.add_argument("input", help="JSONL prompts")
    _add_item_flags(p)
    _add_db(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("retry-failed", help="re-run only the failed items of a dataset")
    p.add_argument("--dataset", required=True)
    p.add_argument("-o", "--output", help="write the dataset's results here afterwards")
    _add_run_flags(p, missing_only=False)
    _add_batch_flags(p)
    p.set_defaults(func=cmd_retry_failed)

    p = sub.add_parser("batches", help="Batch API submissions: state, counts, loaded")
    p.add_argument("--dataset")
    p.add_argument("--json", action="store_true")
    _add_db(p)
    p.set_defaults(func=cmd_batches)

    p = sub.add_parser("cancel", help="cancel a provider batch, or every open one of a dataset")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("batch_id", nargs="?", help="a batch id from `kimi-dagster batches`")
    target.add_argument("--dataset")
    _add_db(p)
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("export", help="write a dataset's results (.json, .jsonl, .parquet)")
    p.add_argument("--dataset", required=True)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--from", dest="first", help="first partition key of a range")
    p.add_argument("--to", dest="last", help="last partition key of a range")
    _add_db(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "estimate", help="tokens, cost (real-time and Batch API) and time of a file, unspent"
    )
    p.add_argument("-i", "--input", required=True, help="JSONL prompts (nothing is ingested)")
    p.add_argument("--dataset", help="dataset name (default: from the file name)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model for lines without one")
    p.add_argument(
        "--max-tokens", type=int, default=DEFAULT_MAX_TOKENS, help="for lines without one"
    )
    p.add_argument("--tier", type=int, default=3, choices=range(6), help="account tier 0-5")
    p.add_argument("-c", "--concurrency", type=int, help="override requests in flight")
    p.add_argument("--rpm", type=int, help="override requests per minute")
    p.add_argument("--tpm", type=int, help="override tokens per minute")
    p.add_argument("--tpd", type=int, help="override tokens per day")
    p.add_argument(
        "--deadline", help="when the answers are needed, e.g. 90m, 12h, 3d: says which mode fits"
    )
    p.add_argument(
        "--latency",
        type=float,
        help="seconds per request (default: the dataset's past answers, else "
        f"{DEFAULT_LATENCY_S:g})",
    )
    p.add_argument(
        "--fill",
        type=float,
        default=DEFAULT_FILL,
        help="share of max_tokens an answer uses when the dataset has no answers yet "
        f"(default {DEFAULT_FILL})",
    )
    p.add_argument(
        "--history", help="calibrate from this dataset's answers (default: the dataset's own)"
    )
    p.add_argument("--missing-only", action="store_true", help="failed items will not be re-sent")
    p.add_argument("--json", action="store_true")
    _add_db(p)
    p.set_defaults(func=cmd_estimate)

    p = sub.add_parser(
        "budget",
        help="show or set a dataset's spending cap (the platform's currency: USD, CNY on .cn; "
        "earlier runs' spend counts)",
    )
    p.add_argument("dataset")
    p.add_argument("usd", nargs="?", type=float, help="the new cap; omit to show the current one")
    p.add_argument("--clear", action="store_true", help="remove the dataset's cap")
    p.add_argument("--json", action="store_true")
    _add_db(p)
    p.set_defaults(func=cmd_budget)

    p = sub.add_parser("status", help="progress, tokens, cost, rate and ETA per dataset")
    p.add_argument("--dataset")
    p.add_argument("--json", action="store_true")
    _add_db(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("sql", help="run a read-only SQL query (safe while runs write)")
    p.add_argument("query")
    p.add_argument("--json", action="store_true")
    _add_db(p)
    p.set_defaults(func=cmd_sql)

    p = sub.add_parser(
        "simulate", help="run the Kimi API simulator (see --help after it)", add_help=False
    )
    p.add_argument("simulator_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("demo", help="simulator + Dagster + DuckDB on generated prompts")
    p.add_argument("--items", type=int, default=3000)
    p.add_argument("--workdir", default=".kimi_dagster/demo")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (
        CliError,
        FileNotFoundError,
        ValueError,
        UnknownModel,
        ChunkBusy,
        DatabaseBusy,
        SpoolError,
    ) as exc:
        print(f"kimi-dagster: error: {exc}", file=sys.stderr)
        return EXIT_ABORTED if isinstance(exc, CliError) else 1
    except KeyboardInterrupt:
        print(
            "\ninterrupted: finished results are saved; run the same command to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
