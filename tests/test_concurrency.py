"""Three partition runs at once, each its own process, on one DuckDB file, while a user queries
it with ``kimi-dagster sql`` in a loop: no process fails on the file's lock, nothing is lost,
every item is sent and stored exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter

import duckdb
import orjson
from conftest import SIM_KEY, item_lines

from kimi_dagster.ingest import ingest_file

CHUNK = 120

# One partition run, as a Dagster run process does it: the engine on one chunk partition.
RUN_PARTITION = """
import asyncio, os, sys
from kimi_dagster.engine import Settings, process_partitions
from kimi_dagster.limits import resolve_limits
from kimi_dagster.runner import RunOptions

db, key = sys.argv[1], sys.argv[2]
settings = Settings(
    api_key=os.environ["MOONSHOT_API_KEY"], limits=resolve_limits(5, concurrency=4),
    base_url=os.environ["MOONSHOT_BASE_URL"], timeout=10,
    options=RunOptions(merge_interval=0.5, sync_interval=0.1),
)
stats = asyncio.run(process_partitions(db, [key], settings, run_id=f"run-{key}"))
print(stats.succeeded, stats.failed, stats.unmerged)
"""


def test_three_runs_and_a_reader_share_one_file(sim, tmp_path, write_jsonl) -> None:
    db = tmp_path / "kimi.duckdb"
    report = ingest_file(db, write_jsonl("c.jsonl", item_lines(3 * CHUNK)), chunk_size=CHUNK)
    assert len(report.partitions) == 3
    env = dict(os.environ, MOONSHOT_BASE_URL=sim.base_url, MOONSHOT_API_KEY=SIM_KEY)
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", RUN_PARTITION, str(db), key],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for key in report.partitions
    ]
    reads: list[int] = []
    query = "SELECT count(*) AS n FROM results WHERE status = 'succeeded'"
    while any(run.poll() is None for run in runs) or not reads:
        read = subprocess.run(
            [sys.executable, "-m", "kimi_dagster.cli", "sql", query, "--json", "--db", str(db)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert read.returncode == 0 and "lock" not in read.stderr.lower(), read.stderr
        reads.append(orjson.loads(read.stdout)[0]["n"])

    for run in runs:
        out, err = run.communicate(timeout=60)
        assert run.returncode == 0, err.decode()
        assert "lock" not in err.decode().lower()
        assert out.decode().split() == [str(CHUNK), "0", "False"]  # all merged before exit
    assert reads == sorted(reads)  # the reader saw results arrive, never lose any
    assert len(reads) >= 2, reads

    with duckdb.connect(str(db), read_only=True) as con:
        results = dict(con.execute("SELECT item_id, status FROM results").fetchall())
        ok = Counter(
            i
            for (i,) in con.execute("SELECT item_id FROM attempts WHERE outcome = 'ok'").fetchall()
        )
    assert len(results) == 3 * CHUNK and set(results.values()) == {"succeeded"}
    assert set(ok.values()) == {1} and len(ok) == 3 * CHUNK
    billed = Counter(line["request_id"].split(":")[1] for line in sim.bill())
    assert len(billed) == 3 * CHUNK and set(billed.values()) == {1}


def test_a_second_batch_on_a_busy_chunk_stops_with_a_clear_error(sim, tmp_path, write_jsonl):
    sim.configure(latency=0.2)
    source = write_jsonl("busy.jsonl", item_lines(60, max_tokens=32))
    db, env = tmp_path / "kimi.duckdb", dict(os.environ, MOONSHOT_API_KEY=SIM_KEY)
    env["MOONSHOT_BASE_URL"] = sim.base_url

    def batch(out: str) -> subprocess.Popen[str]:
        argv = [sys.executable, "-m", "kimi_dagster.cli", "batch", "-i", str(source)]
        argv += ["-o", str(tmp_path / out), "-c", "1", "--tier", "5", "--db", str(db)]
        return subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)

    first = batch("first.json")  # 60 requests one at a time: 12 s
    while not sim.requests():
        assert first.poll() is None
        time.sleep(0.02)
    second = batch("second.json")
    _, err = second.communicate(timeout=60)
    assert first.poll() is None, "the first run ended before the second could collide"
    assert second.returncode == 1
    assert "error: chunk busy-00000 is being processed by another run" in err
    assert "Traceback" not in err
    _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    billed = Counter(line["request_id"].split(":")[1] for line in sim.bill())
    assert len(billed) == 60 and set(billed.values()) == {1}
