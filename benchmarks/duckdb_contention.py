"""Why runs spool their results and merge them in short transactions: measured.

DuckDB lets one process at a time open a file read-write, and while it does no other process
may open it at all. This measures the design that follows from that, at Tier 5's full rate
(10,000 RPM shared by three partition runs, 0.2 s answers):

- three writer processes (the engine on one chunk each) and one reader process querying
  in a loop, all on one DuckDB file: how long each waited for the file, how long each held it
  (a merge), how long after a reply arrived it was queryable, and whether anything failed;
- the alternatives: what a read-write open costs per transaction (one transaction per result
  would pay it 167 times a second), and what a second process sees while one holds the file.

Run: ``.venv/bin/python benchmarks/duckdb_contention.py [ITEMS_PER_RUN]``. Not a test.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import orjson

SIM_KEY = "sk-benchmark-not-a-real-key"


def percentiles(values: list[float]) -> str:
    if not values:
        return "n=0"
    ms = sorted(v * 1000 for v in values)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return f"n={len(ms)} p50={statistics.median(ms):.1f} p95={p95:.1f} max={ms[-1]:.1f} ms"


def joined(reports: list[dict], key: str) -> list[float]:
    return list(itertools.chain.from_iterable(r[key] for r in reports))


def timed_connect(samples: dict[str, list[float]]):  # a twin of store.connect
    """``store.connect`` that records how long the caller waited for the file and held it."""
    from kimi_dagster import store

    real = store.connect

    @contextmanager
    def connect(path: str, **kwargs: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        t0 = time.perf_counter()
        with real(path, **kwargs) as con:
            t1 = time.perf_counter()
            yield con
        samples["wait"].append(t1 - t0)
        samples["hold"].append(time.perf_counter() - t1)

    return connect


def writer(db: str, key: str) -> None:
    """One partition run, timed: every open of the file, every fsync of the spool."""
    from kimi_dagster import engine
    from kimi_dagster.limits import resolve_limits
    from kimi_dagster.spool import SpoolWriter

    samples: dict[str, list[float]] = {"wait": [], "hold": [], "fsync": []}
    engine.connect = timed_connect(samples)
    real_sync = SpoolWriter.sync

    def sync(self: SpoolWriter) -> None:
        t0 = time.perf_counter()
        real_sync(self)
        samples["fsync"].append(time.perf_counter() - t0)

    SpoolWriter.sync = sync  # type: ignore[method-assign]
    settings = engine.Settings(
        api_key=os.environ["MOONSHOT_API_KEY"],
        limits=resolve_limits(5).share(3),
        base_url=os.environ["MOONSHOT_BASE_URL"],
        timeout=30,
    )
    stats = asyncio.run(engine.process_partitions(db, [key], settings, run_id=f"bench-{key}"))
    result = {"succeeded": stats.succeeded, "failed": stats.failed, "unmerged": stats.unmerged}
    print(orjson.dumps({**result, **samples}).decode())


def reader(db: str, stop_file: str) -> None:
    """A user querying in a loop: wait for the file, and how stale the answers are."""
    from kimi_dagster.store import connect

    waits: list[float] = []
    lags: list[float] = []
    seen: set[str] = set()
    queries = errors = 0
    while not Path(stop_file).exists():
        t0 = time.perf_counter()
        try:
            with connect(db, read_only=True) as con:
                waits.append(time.perf_counter() - t0)
                rows = con.execute("SELECT attempt_id, epoch(finished_at) FROM attempts").fetchall()
        except duckdb.Error:
            errors += 1
            continue
        queries += 1
        now = time.time()
        for attempt_id, finished in rows:
            if attempt_id not in seen:
                seen.add(attempt_id)
                lags.append(now - finished)
        time.sleep(0.05)
    print(orjson.dumps({"queries": queries, "errors": errors, "wait": waits, "lag": lags}).decode())


def open_cost(directory: Path, rounds: int = 100) -> float:
    """Seconds per open + one-row insert + close: the price of one transaction per result."""
    path = directory / "open_cost.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE t (n INTEGER)")
    t0 = time.perf_counter()
    for n in range(rounds):
        with duckdb.connect(str(path)) as con:
            con.execute("INSERT INTO t VALUES (?)", [n])
    return (time.perf_counter() - t0) / rounds


def second_open_while_held(directory: Path) -> str:
    """What another process gets while one holds the file read-write."""
    path = directory / "held.duckdb"
    code = "import duckdb, sys\ntry:\n    duckdb.connect(sys.argv[1], read_only=True)\n"
    code += "    print('opened')\nexcept duckdb.Error as e:\n    print(str(e).splitlines()[0])"
    with duckdb.connect(str(path)):
        probe = [sys.executable, "-c", code, str(path)]
        return subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()


def main(items: int) -> None:
    from kimi_dagster.ingest import ingest_file
    from kimi_dagster.simulator import start_simulator

    with tempfile.TemporaryDirectory() as tmp, start_simulator(tier=5, latency=0.2) as sim:
        work = Path(tmp)
        db = work / "kimi.duckdb"
        source = work / "bench.jsonl"
        with source.open("wb") as out:
            for i in range(3 * items):
                line = {"id": f"q{i:06d}", "message": f"Summarize ticket {i}.", "max_tokens": 64}
                out.write(orjson.dumps(line) + b"\n")
        report = ingest_file(db, source, chunk_size=items)
        env = dict(os.environ, MOONSHOT_BASE_URL=sim.base_url, MOONSHOT_API_KEY=SIM_KEY)
        me = [sys.executable, __file__]
        stop = work / "stop"
        pipe = {"env": env, "stdout": subprocess.PIPE, "text": True}
        started = time.perf_counter()
        read = subprocess.Popen([*me, "--reader", str(db), str(stop)], **pipe)
        runs = [subprocess.Popen([*me, "--writer", str(db), k], **pipe) for k in report.partitions]
        written = [orjson.loads(run.communicate()[0]) for run in runs]
        elapsed = time.perf_counter() - started
        stop.touch()
        seen = orjson.loads(read.communicate()[0])
        codes = [run.returncode for run in runs] + [read.returncode]

        done = sum(w["succeeded"] for w in written)
        print(
            f"3 writers + 1 reader, {3 * items} items at Tier 5 (0.2 s answers): {elapsed:.1f} s,"
        )
        print(
            f"  {done} succeeded, {sum(w['failed'] for w in written)} failed, exit codes {codes},"
        )
        print(f"  billed {len(sim.bill())}, reader errors {seen['errors']}")
        print(f"writers' wait for the file: {percentiles(joined(written, 'wait'))}")
        print(f"writers' hold (merge etc.): {percentiles(joined(written, 'hold'))}")
        print(f"spool fsync (every 0.5 s):  {percentiles(joined(written, 'fsync'))}")
        print(
            f"reader's wait for the file: {percentiles(seen['wait'])} ({seen['queries']} queries)"
        )
        print(f"reply arrival -> queryable: {percentiles(seen['lag'])}")
        cost = open_cost(work)
        print(f"one read-write open + insert + close: {cost * 1000:.1f} ms (a transaction per")
        print(f"  result would cap all processes together at {1 / cost:.0f} results/s)")
        print(f"a second process opening a held file: {second_open_while_held(work)!r}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--writer"]:
        writer(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["--reader"]:
        reader(sys.argv[2], sys.argv[3])
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 1500)
