"""kill -9 a real ``kimi-dagster batch`` process again and again, then finish the run: every
item ends with exactly one stored success (the simulator's deterministic reply), and the only
requests billed twice are those in flight at a crash.

Each kill freezes the process first (SIGSTOP) and lets the simulator answer and bill every
request still in flight, like a provider that charges for abandoned requests: the worst case.
While it is frozen the test notes what the process had sent (the simulator's request log) and
what it had recorded (its spool segments); "in flight" is the difference.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import duckdb
import orjson
import pytest
from conftest import SIM_KEY, item_lines

from kimi_dagster.catalogue import Catalogue
from kimi_dagster.client import Reply
from kimi_dagster.ingest import ingest_file
from kimi_dagster.limits import RateLimiter, resolve_limits
from kimi_dagster.runner import Runner, RunOptions, WorkItem
from kimi_dagster.simulator import start_simulator
from kimi_dagster.spool import SpoolWriter, spool_dir
from kimi_dagster.store import migrate

ITEMS = 600
EARLY_KILLS = 2  # at any moment of start-up: ingest, leftover merge, first requests
KILLS = 5  # while requests are in flight


def run_of(attempt_id: str) -> str:
    return attempt_id.rsplit(":", 2)[0]


def spooled(db: Path) -> dict[str, str | None]:
    """attempt_id -> status of every complete line in the spool segments right now."""
    seen: dict[str, str | None] = {}
    for segment in spool_dir(db).glob("*.jsonl"):
        for line in segment.read_bytes().split(b"\n")[:-1]:  # a torn last line was never written
            record = orjson.loads(line)
            seen[record["attempt_id"]] = record.get("status")
    return seen


@pytest.fixture
def slow_sim():
    """Latency 0.2 s (+-50 %), so a kill always finds requests in flight."""
    with start_simulator(tier=5, latency=0.2, latency_jitter=0.5, seed=11) as sim:
        yield sim


def test_kill_9_at_random_moments_loses_nothing_and_repays_only_in_flight(
    slow_sim, tmp_path, write_jsonl
) -> None:
    sim = slow_sim
    source = write_jsonl("crash.jsonl", item_lines(ITEMS, max_tokens=64))
    db, out = tmp_path / "k.duckdb", tmp_path / "results.json"
    argv = [sys.executable, "-m", "kimi_dagster.cli", "batch", "-i", str(source), "-o", str(out)]
    argv += ["-c", "16", "-t", "10", "--tier", "5", "--db", str(db), "--chunk-size", "1000"]
    env = dict(os.environ, MOONSHOT_BASE_URL=sim.base_url, MOONSHOT_API_KEY=SIM_KEY)
    rng = random.Random(20261204)

    kills: list[dict] = []  # per kill: run id, what it had sent, recorded, billed in flight
    while len(kills) < EARLY_KILLS + KILLS:
        log = (tmp_path / f"run{len(kills)}.log").open("wb")
        started = len(sim.requests())
        child = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        if len(kills) < EARLY_KILLS:
            time.sleep(rng.uniform(0.05, 1.5))
        else:
            while len(sim.requests()) == started and child.poll() is None:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.9))
        if child.poll() is not None:  # finished before the kill: the run is too short
            pytest.fail(f"run ended before kill {len(kills) + 1}; raise ITEMS")
        child.send_signal(signal.SIGSTOP)
        gateway_in_flight = sim.stats()["in_flight"]
        time.sleep(0.45)  # the simulator answers (and bills) everything still in flight
        run_id = f"-{child.pid}"
        log_so_far = sim.requests()
        sent = {r["request_id"] for r in log_so_far if run_of(r["request_id"]).endswith(run_id)}
        recorded = {a for a in spooled(db) if run_of(a).endswith(run_id)}
        child.kill()  # SIGKILL by PID
        child.wait()
        log.close()
        assert child.returncode == -signal.SIGKILL
        kills.append(
            {
                "pid": child.pid,
                "sent": sent,
                "recorded": recorded,
                "in_flight": len(sent - recorded),
                "gateway_in_flight": gateway_in_flight,
                "requests_before": len(log_so_far),
            }
        )

    assert sum(k["in_flight"] > 0 for k in kills) >= KILLS
    final = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr

    con = duckdb.connect(str(db), read_only=True)
    requests = dict(con.execute("SELECT item_id, request FROM items").fetchall())
    results = con.execute("SELECT item_id, status, output, attempt_id FROM results").fetchall()
    stored_ok = dict(
        con.execute("SELECT attempt_id, item_id FROM attempts WHERE outcome = 'ok'").fetchall()
    )
    con.close()

    # Every item: exactly one stored success, and it is the simulator's reply to its request.
    assert len(requests) == ITEMS and len(results) == ITEMS
    assert sorted(stored_ok.values()) == sorted(requests)
    for item_id, status, output, attempt_id in results:
        assert status == "succeeded", item_id
        assert output == sim.expected_reply(orjson.loads(requests[item_id])).content
        assert stored_ok[attempt_id] == item_id
    exported = orjson.loads(out.read_bytes())
    assert exported["summary"]["succeeded"] == ITEMS

    # Billing: each item once for its stored success; every other billed request is one the
    # simulator answered for a killed run that never recorded it, at most its in-flight count.
    bill = [line["request_id"] for line in sim.bill()]
    assert set(stored_ok) <= set(bill)
    lost = [rid for rid in bill if rid not in stored_ok]
    assert len(bill) == ITEMS + len(lost)
    for kill in kills:
        kill["billed_twice"] = sum(run_of(rid).endswith(f"-{kill['pid']}") for rid in lost)
        assert kill["billed_twice"] <= kill["in_flight"], kill
    assert sum(k["billed_twice"] for k in kills) == len(lost)

    # Nothing a killed run had recorded as a success was ever sent again.
    order = [r["request_id"] for r in sim.requests()]
    for kill in kills:
        done = {a.rsplit(":", 2)[1] for a in kill["recorded"] if a in stored_ok}
        later = {rid.rsplit(":", 2)[1] for rid in order[kill["requests_before"] :]}
        assert not done & later

    print(
        "kills:",
        [
            (k["in_flight"], k["gateway_in_flight"], k["billed_twice"], len(k["recorded"]))
            for k in kills
        ],
        f"billed {len(bill)} for {ITEMS} items",
    )


# A Dagster run of one chunk partition, in its own process, as a run worker executes it.
MATERIALIZE = """
import sys, warnings
import dagster as dg
from kimi_dagster.assets import kimi_assets
from kimi_dagster.resource import KimiResource, KimiStore

warnings.filterwarnings("ignore", category=dg.BetaWarning)
db, base_url, key = sys.argv[1:4]
kimi = KimiResource(
    api_key=dg.EnvVar("MOONSHOT_API_KEY"), base_url=base_url, tier=5, concurrency=16, timeout=10
)
result = dg.materialize(
    kimi_assets("kimi", chunk_size=1000).assets,
    selection=["kimi_results"],
    partition_key=key,
    instance=dg.DagsterInstance.get(),
    resources={"kimi": kimi, "store": KimiStore(path=db)},
    raise_on_error=False,
)
sys.exit(0 if result.success else 1)
"""


def test_a_terminated_dagster_run_keeps_what_it_received_and_resumes(
    slow_sim, tmp_path, write_jsonl
) -> None:
    sim = slow_sim
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("")
    db = tmp_path / "k.duckdb"
    report = ingest_file(db, write_jsonl("term.jsonl", item_lines(200, max_tokens=64)))
    env = dict(os.environ, MOONSHOT_API_KEY=SIM_KEY, DAGSTER_HOME=str(home), PYTHONUNBUFFERED="1")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("kimi_chunks", report.partitions)
    argv = [sys.executable, "-c", MATERIALIZE, str(db), sim.base_url, report.partitions[0]]

    run = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    while len(sim.bill()) < 40:
        assert run.poll() is None, run.communicate()[0].decode()
        time.sleep(0.02)
    run.send_signal(signal.SIGTERM)  # what terminating a run does to its worker process
    log = run.communicate(timeout=60)[0].decode()
    assert run.returncode == 1, log
    assert "DagsterExecutionInterruptedError" in log or "interrupt" in log.lower(), log

    # What the terminated run received is in DuckDB, the spool merged cleanly, and a new run
    # of the partition sends only the rest.
    while sim.stats()["in_flight"]:  # requests the dead run left are answered or dropped
        time.sleep(0.02)
    billed_before = len(sim.bill())
    with duckdb.connect(str(db), read_only=True) as con:
        kept = con.execute("SELECT count(*) FROM results WHERE status = 'succeeded'").fetchone()
    assert 0 <= billed_before - kept[0] <= 16  # only what was in flight at the stop is lost
    assert not list(spool_dir(db).glob("*.jsonl"))
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(sim.bill()) - billed_before == 200 - kept[0]

    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT i.request, r.status, r.output FROM items i JOIN results r USING (item_id)"
        ).fetchall()
        ok = con.execute("SELECT count(*) FROM attempts WHERE outcome = 'ok'").fetchone()[0]
    assert len(rows) == 200 and ok == 200
    for request, status, output in rows:
        assert (status, output) == ("succeeded", sim.expected_reply(orjson.loads(request)).content)
    assert len(sim.bill()) - 200 <= 16  # re-billed: at most what was in flight at the stop


class Interrupted(BaseException):
    """Like Dagster's DagsterExecutionInterruptedError: not an Exception, not a cancel."""


class InterruptedClient:
    async def chat(self, body: bytes, request_id: str) -> None:
        await asyncio.sleep(0.01)
        raise Interrupted


def test_an_interrupt_during_a_request_leaves_the_item_pending(tmp_path) -> None:
    con = duckdb.connect()
    migrate(con)
    writer = SpoolWriter(tmp_path, "interrupted")
    runner = Runner(
        client=InterruptedClient(),  # type: ignore[arg-type]
        limiter=RateLimiter(resolve_limits(5)),
        catalogue=Catalogue.from_connection(con),
        spool=writer,
        run_id="interrupted",
    )
    item = WorkItem("d", "a", "d-00000", "kimi-k2.6", 64, 10, b"{}")
    with pytest.raises(Interrupted):
        asyncio.run(runner.run([item], 1))
    writer.close()
    (record,) = [
        orjson.loads(line) for line in next(tmp_path.glob("*.jsonl")).read_bytes().splitlines()
    ]
    assert (record["outcome"], record["final"], record.get("status")) == ("cancelled", False, None)


class QuickClient:
    def __init__(self, replies: int) -> None:
        self.left = replies
        self.all_sent = threading.Event()

    async def chat(self, body: bytes, request_id: str) -> Reply:
        await asyncio.sleep(0.01)
        self.left -= 1
        if not self.left:
            self.all_sent.set()
        return Reply("ok", None, "stop", request_id, 10, 2, 0)


def test_fsyncs_go_on_while_a_merge_waits_for_the_database(tmp_path) -> None:
    """A merge can wait seconds for another process to release the file; replies that arrive
    meanwhile must still reach the disk every sync_interval, not after the wait."""
    con = duckdb.connect()
    migrate(con)
    client = QuickClient(60)
    syncs_during_merge = threading.Semaphore(0)
    merging = threading.Event()

    class Writer(SpoolWriter):
        def sync(self) -> None:
            super().sync()
            if merging.is_set():
                syncs_during_merge.release()

    waits: list[bool | None] = []  # per merge: three fsyncs meanwhile? (None: the run ended)

    def slow_merge() -> None:  # holds on like a merge waiting for the file
        merging.set()
        seen, deadline = 0, time.monotonic() + 5
        while seen < 3 and not client.all_sent.is_set() and time.monotonic() < deadline:
            seen += syncs_during_merge.acquire(timeout=0.01)
        waits.append(True if seen == 3 else None if client.all_sent.is_set() else False)
        merging.clear()

    runner = Runner(
        client=client,  # type: ignore[arg-type]
        limiter=RateLimiter(resolve_limits(5, concurrency=2)),
        catalogue=Catalogue.from_connection(con),
        spool=Writer(tmp_path, "slow-merge"),
        run_id="slow-merge",
        options=RunOptions(sync_interval=0.02, merge_interval=0.05),
        merge=slow_merge,
    )
    items = [WorkItem("d", f"i{n}", "d-00000", "kimi-k2.6", 8, 10, b"{}") for n in range(60)]
    stats = asyncio.run(runner.run(items, len(items)))
    assert stats.succeeded == 60
    assert False not in waits and waits.count(True) >= 2, waits
