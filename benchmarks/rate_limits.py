"""Does a run spend the account's rate budget at the limit, never over it? Issue 3's scenarios,
through the real path against a simulator subprocess, each printing achieved / binding limit,
limit-429s, client CPU per request and peak RSS (how they are counted: ``ratebench.py``).

    .venv/bin/python benchmarks/rate_limits.py all          # every scenario, ~25 min
    .venv/bin/python benchmarks/rate_limits.py rpm [--seconds 180]

Scenarios (Tier 3: 200 concurrent, 5,000 RPM, 3M TPM):

- ``rpm``: ~100-token prompts, max_tokens 64, 1 s latency, ``kimi-dagster batch``.
  Floor: >= 0.97 of 5,000 RPM, 0 limit-429s, client CPU <= 1 ms per request.
- ``tpm``: ~2,000-token prompts, max_tokens 500 (charged ~2,300 each), 1 s latency, CLI.
  Floor: >= 0.97 of 3M TPM as the gateway charges it, 0 limit-429s.
- ``concurrency``: 10 s latency, CLI. Floor: >= 0.95 of 200 / 10 s.
- ``halve``: as ``rpm``, and after 70 s the simulator's RPM is halved live. Floor: limit-429s
  stop within 30 s of the change and the rate recovers to >= 0.9 of 2,500 RPM.
- ``pool``: 3 Dagster runs at once, one chunk each, through the shipped instance settings
  (pool ``kimi_api`` limit 3: each run takes a third). Floor: aggregate >= 0.9 of the account
  limit, 0 limit-429s.
- ``policy``: a 12-chunk backfill with 3 pool slots, as runs of 4 chunks (the shipped
  ``chunks_per_run``) vs one run per chunk: which keeps the aggregate rate higher.

Not a test: the machine's 2 cores are shared, so figures vary; a missed floor is printed
as MISSED and the exit status is 1.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
from ratebench import (
    Child,
    Log,
    cli_batch,
    client_cost,
    dagster_home,
    dagster_run,
    print_result,
    simulator,
    wait_until,
    workdir,
    write_items,
)

from kimi_dagster.ingest import ingest_file

TIER3_RPM, TIER3_TPM, TIER3_CONCURRENCY = 5_000, 3_000_000, 200
SHORT, LONG = 42, 990  # words: ~100 and ~2,000 tokens
CLI_FLAGS = ("--tier", "3", "-t", "60", "--chunk-size", "2000")


def _items_for(seconds: float, per_second: float) -> int:
    return math.ceil(per_second * (seconds + 15))


def rpm(seconds: float) -> bool:
    with simulator(tier=3, latency=1.0) as sim, workdir("rpm") as work:
        items = write_items(work / "q.jsonl", _items_for(seconds, TIER3_RPM / 60), SHORT, 64)
        child = cli_batch(sim, work, items, *CLI_FLAGS).wait()
        log = Log.of(sim)
    w = log.windows(*log.steady())
    peak = log.max_window()
    ratio = w.mean_requests / TIER3_RPM
    cpu_ms = 1000 * child.cpu_s / len(log.admitted)
    return print_result(
        "RPM-bound: Tier 3, ~100-token prompts, max_tokens 64, 1 s latency (kimi-dagster batch)",
        [
            f"achieved {w.mean_requests:,.0f} RPM = {ratio:.3f} of 5,000 (mean of {w.starts} "
            f"sliding 60 s windows; fullest window of the run {peak[0]:,})",
            f"limit-429s {len(log.limited)}; other errors {log.other_errors or 0}",
            client_cost([child], len(log.admitted)),
            f"last progress line: {child.last_progress}",
        ],
        [
            ("achieved >= 0.97 of 5,000 RPM", ratio >= 0.97),
            ("0 limit-429s", not log.limited),
            ("no 60 s window over 5,000 requests", peak[0] <= TIER3_RPM),
            ("client CPU <= 1 ms per request", cpu_ms <= 1.0),
        ],
    )


def tpm(seconds: float) -> bool:
    with simulator(tier=3, latency=1.0) as sim, workdir("tpm") as work:
        per_second = TIER3_TPM / 60 / 2_300
        items = write_items(work / "q.jsonl", _items_for(seconds, per_second), LONG, 500)
        child = cli_batch(sim, work, items, *CLI_FLAGS).wait()
        log = Log.of(sim)
    w = log.windows(*log.steady())
    peak = log.max_window()
    ratio = w.mean_tokens / TIER3_TPM
    return print_result(
        "TPM-bound: Tier 3, ~2,000-token prompts, max_tokens 500, 1 s latency (kimi-dagster batch)",
        [
            f"achieved {w.mean_tokens:,.0f} TPM as the gateway charges (prompt + max_tokens) = "
            f"{ratio:.3f} of 3,000,000 ({w.mean_requests:,.0f} RPM; fullest window "
            f"{peak[1]:,} tokens)",
            f"limit-429s {len(log.limited)}; other errors {log.other_errors or 0}",
            client_cost([child], len(log.admitted)),
            f"last progress line: {child.last_progress}",
        ],
        [
            ("achieved >= 0.97 of 3M TPM", ratio >= 0.97),
            ("0 limit-429s", not log.limited),
            ("no 60 s window over 3M tokens", peak[1] <= TIER3_TPM),
        ],
    )


def concurrency(seconds: float) -> bool:
    latency = 10.0
    bound = TIER3_CONCURRENCY / latency  # requests per second
    with simulator(tier=3, latency=latency) as sim, workdir("conc") as work:
        items = write_items(work / "q.jsonl", _items_for(seconds + latency, bound), SHORT, 64)
        child = cli_batch(sim, work, items, *CLI_FLAGS).wait()
        log = Log.of(sim)
        max_in_flight = sim.stats()["max_in_flight"]
    start, end = log.steady()
    w = log.windows(start + latency, end - latency)  # in flight fills over the first latency
    ratio = w.mean_requests / 60 / bound
    return print_result(
        "concurrency-bound: Tier 3, 10 s latency (kimi-dagster batch)",
        [
            f"achieved {w.mean_requests / 60:.2f} requests/s = {ratio:.3f} of 200 / 10 s "
            f"({w.starts} sliding 60 s windows); most in flight at the gateway {max_in_flight}",
            f"limit-429s {len(log.limited)}; other errors {log.other_errors or 0}",
            client_cost([child], len(log.admitted)),
            f"last progress line: {child.last_progress}",
        ],
        [
            ("achieved >= 0.95 of 200 / latency", ratio >= 0.95),
            ("0 limit-429s", not log.limited),
            ("never over 200 in flight", max_in_flight <= TIER3_CONCURRENCY),
        ],
    )


def halve(seconds: float) -> bool:
    before, new_rpm = 70.0, TIER3_RPM // 2
    after = max(seconds - before, 150.0)
    count = math.ceil(TIER3_RPM / 60 * (before + 10) + new_rpm / 60 * after)
    with simulator(tier=3, latency=1.0) as sim, workdir("halve") as work:
        items = write_items(work / "q.jsonl", count, SHORT, 64)
        child = cli_batch(sim, work, items, *CLI_FLAGS)
        if not wait_until(lambda: sim.stats()["requests"] > 0, timeout=120):
            raise RuntimeError("the client sent nothing within 2 minutes")
        time.sleep(before)
        halved_at = time.time()
        sim.configure(rpm=new_rpm)
        child.wait()
        log = Log.of(sim)
    after_change = [t for t in log.limited if t >= halved_at]
    stopped = (after_change[-1] - halved_at) if after_change else 0.0
    start = halved_at + 30.0
    w = log.windows(start, log.admitted[-1] - 2.0)
    ratio = w.mean_requests / new_rpm
    return print_result(
        "provider halves RPM mid-run: Tier 3, 5,000 -> 2,500 RPM after 70 s (kimi-dagster batch)",
        [
            f"limit-429s {len(log.limited)} (after the change: {len(after_change)}), the last "
            f"{stopped:.1f} s after it",
            f"from 30 s after the change: {w.mean_requests:,.0f} RPM = {ratio:.3f} of 2,500 "
            f"(mean of {w.starts} sliding 60 s windows)",
            client_cost([child], len(log.admitted)),
            f"last progress line: {child.last_progress}",
        ],
        [
            ("429s stop within 30 s", stopped <= 30.0),
            ("recovers to >= 0.9 of the new limit", ratio >= 0.9),
        ],
    )


def _ingest_chunks(work, home, chunks: int, per_chunk: int) -> list[str]:
    """Ingest ``chunks`` chunks of short prompts and register them as Dagster partitions."""
    items = write_items(work / "q.jsonl", chunks * per_chunk, SHORT, 64)
    report = ingest_file(work / "kimi.duckdb", items, chunk_size=per_chunk)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("kimi_chunks", report.partitions)
    return report.partitions


def _run_all(runs: Sequence[Callable[[], Child]], slots: int) -> list[Child]:
    """Start the runs ``slots`` at a time (the run queue's job), each as soon as one ends."""
    with ThreadPoolExecutor(max_workers=slots) as pool:
        return list(pool.map(lambda start: start().wait(), runs))


def pool(seconds: float) -> bool:
    share = TIER3_RPM / 3 / 60
    with simulator(tier=3, latency=1.0) as sim, workdir("pool") as work:
        home = dagster_home(work, pool_limit=3)
        keys = _ingest_chunks(work, home, 3, _items_for(seconds, share))
        children = _run_all(
            [lambda k=k: dagster_run(sim, work, home, [k], f"run-{k}") for k in keys], slots=3
        )
        log = Log.of(sim)
    spans = log.runs
    start = max(first for first, _ in spans.values()) + 10.0
    end = min(last for _, last in spans.values()) - 2.0
    w = log.windows(start, end)
    peak = log.max_window()
    ratio = w.mean_requests / TIER3_RPM
    return print_result(
        "3 Dagster runs at once through the kimi_api pool (limit 3, each run a third of Tier 3)",
        [
            f"aggregate {w.mean_requests:,.0f} RPM = {ratio:.3f} of the account's 5,000 "
            f"({w.starts} sliding 60 s windows while all 3 ran; fullest {peak[0]:,})",
            f"limit-429s {len(log.limited)}; other errors {log.other_errors or 0}",
            client_cost(children, len(log.admitted)) + " (3 processes; RSS of the largest)",
        ],
        [
            ("aggregate >= 0.9 of the account limit", ratio >= 0.9),
            ("0 limit-429s", not log.limited),
            ("no 60 s window over 5,000 requests", peak[0] <= TIER3_RPM),
        ],
    )


def policy(seconds: float) -> bool:
    chunks, per_chunk, per_run = 12, 600, 4
    figures = {}
    for name, group in (("4 chunks per run", per_run), ("1 chunk per run", 1)):
        with simulator(tier=3, latency=1.0) as sim, workdir("policy") as work:
            home = dagster_home(work, pool_limit=3)
            keys = _ingest_chunks(work, home, chunks, per_chunk)
            batches = [keys[i : i + group] for i in range(0, chunks, group)]
            _run_all(
                [
                    lambda b=b, h=home: dagster_run(sim, work, h, b, f"run-{b[0]}-{len(b)}")
                    for b in batches
                ],
                slots=3,
            )
            log = Log.of(sim)
        span = log.admitted[-1] - log.admitted[0]
        figures[name] = (len(log.admitted) / span * 60, span, len(batches), len(log.limited))
    lines = [
        f"{name}: {runs} runs, {rate:,.0f} RPM over the backfill = {rate / TIER3_RPM:.3f} of "
        f"5,000 ({span:.0f} s from first to last request), limit-429s {limited}"
        for name, (rate, span, runs, limited) in figures.items()
    ]
    better = max(figures, key=lambda name: figures[name][0])
    return print_result(
        f"backfill policy: {chunks} chunks of {per_chunk} items, 3 pool slots",
        [*lines, f"higher rate: {better}"],
        [("0 limit-429s", all(f[3] == 0 for f in figures.values()))],
    )


SCENARIOS: dict[str, Callable[[float], bool]] = {
    "rpm": rpm,
    "tpm": tpm,
    "concurrency": concurrency,
    "halve": halve,
    "pool": pool,
    "policy": policy,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenario", choices=[*SCENARIOS, "all"])
    parser.add_argument(
        "--seconds", type=float, default=180.0, help="steady run length (default 180)"
    )
    args = parser.parse_args(argv)
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    results = [SCENARIOS[name](args.seconds) for name in names]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
