"""Budget caps through the real CLI against the simulator: a cap hit mid-run stops the run
cleanly (exit code 3), the rest stays pending, the overshoot is bounded by the calls in flight
(checked against the simulator's bill), and a higher cap resumes to completion."""

from __future__ import annotations

import os
import subprocess
import sys

import duckdb
import orjson
import pytest
from conftest import SIM_KEY, item_lines
from test_cli import cli

from kimi_dagster.budgets import set_budget
from kimi_dagster.ingest import ingest_file

CONCURRENCY = 20


def run_batch(sim, source, db, out, *extra: str):
    return cli(
        "batch", "-i", str(source), "-o", str(out), "-c", str(CONCURRENCY), "-t", "10",
        "--tier", "5", "--db", str(db), "--chunk-size", "100", *extra, sim=sim,
    )  # fmt: skip


def states(db) -> dict[str, int]:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT status, count(*) FROM item_results GROUP BY ALL").fetchall()
        ledger = con.execute("SELECT coalesce(sum(cost_usd), 0)::DOUBLE FROM attempts").fetchone()
    return dict(rows) | {"ledger": ledger[0]}


def worst_case_per_call(db) -> float:
    """The most one call of this dataset can cost: every input token uncached (estimate + 20 %
    slack for the estimate's error), every max_tokens token generated, at kimi-k2.5's prices."""
    with duckdb.connect(str(db), read_only=True) as con:
        query = "SELECT max(est_input_tokens), max(max_tokens) FROM items"
        est, max_tokens = con.execute(query).fetchone()
    return (est * 1.2 * 0.60 + max_tokens * 3.00) / 1e6


def check_stop(sim, db, cap: float) -> dict[str, int]:
    """After a budget stop: nothing failed, every paid answer stored, spend within the cap
    plus what the calls in flight could add."""
    now = states(db)
    bill = sim.bill()
    billed = sum(line["cost_usd"] for line in bill)
    assert now.get("failed", 0) == 0 and now["pending"] > 0
    assert now["succeeded"] == len(bill)
    assert now["ledger"] == pytest.approx(billed, abs=1e-6)
    in_flight_bound = CONCURRENCY * worst_case_per_call(db)
    overshoot = billed - cap
    figures = f"cap {cap} billed {billed:.6f} overshoot {overshoot:+.6f}"
    print(f"{figures} (in-flight bound {in_flight_bound:.6f})", file=sys.stderr)
    assert overshoot <= in_flight_bound
    # and it did not stop early: only the calls in flight (and the one refused) were unspent
    assert billed >= cap - (CONCURRENCY + 1) * worst_case_per_call(db)
    return now


def test_run_budget_stops_cleanly_and_a_higher_one_finishes(sim, tmp_path, write_jsonl) -> None:
    source = write_jsonl("tickets.jsonl", item_lines(300))
    db, out = tmp_path / "k.duckdb", tmp_path / "out.json"

    stopped = run_batch(sim, source, db, out, "--budget", "0.05")
    assert stopped.returncode == 3, stopped.stderr
    assert "budget reached" in stopped.stderr and "left pending" in stopped.stderr
    first = check_stop(sim, db, 0.05)
    summary = orjson.loads(out.read_bytes())["summary"]
    assert summary["pending"] == first["pending"] and summary["failed"] == 0

    # a run's budget is the run's: the next run may spend its own again
    again = run_batch(sim, source, db, out, "--budget", "1")
    assert again.returncode == 0, again.stderr
    assert states(db)["succeeded"] == 300
    assert len(sim.bill()) == 300  # nothing paid twice


def test_dataset_budget_counts_earlier_runs_and_resumes(sim, tmp_path, write_jsonl) -> None:
    source = write_jsonl("tickets.jsonl", item_lines(300))
    db, out = tmp_path / "k.duckdb", tmp_path / "out.json"
    setting = cli("budget", "tickets", "0.06", "--db", str(db), "--json", sim=sim)
    assert setting.returncode == 0, setting.stderr
    assert orjson.loads(setting.stdout)[0]["budget_usd"] == 0.06

    stopped = run_batch(sim, source, db, out)
    assert stopped.returncode == 3, stopped.stderr
    first = check_stop(sim, db, 0.06)

    # A bigger run budget does not lift the dataset's cap: earlier spend counts.
    capped = run_batch(sim, source, db, out, "--budget", "100")
    assert capped.returncode == 3, capped.stderr
    second = check_stop(sim, db, 0.06)
    assert second["succeeded"] - first["succeeded"] <= CONCURRENCY

    shown = orjson.loads(cli("budget", "tickets", "--db", str(db), "--json", sim=sim).stdout)[0]
    assert shown["spent_usd"] == pytest.approx(second["ledger"], abs=1e-6)
    assert shown["left_usd"] == pytest.approx(0.06 - second["ledger"], abs=1e-6)

    assert cli("budget", "tickets", "1", "--db", str(db), sim=sim).returncode == 0
    done = run_batch(sim, source, db, out)
    assert done.returncode == 0, done.stderr
    final = states(db)
    assert final["succeeded"] == 300 and len(sim.bill()) == 300
    assert final["ledger"] == pytest.approx(sum(b["cost_usd"] for b in sim.bill()), abs=1e-6)


# One partition run in its own process, as a Dagster run does it (the engine on one chunk).
RUN_PARTITION = """
import asyncio, os, sys
from kimi_dagster.engine import Settings, process_partitions
from kimi_dagster.limits import resolve_limits
from kimi_dagster.runner import RunOptions

db, key = sys.argv[1], sys.argv[2]
settings = Settings(
    api_key=os.environ["MOONSHOT_API_KEY"], limits=resolve_limits(5, concurrency=10, rpm=1200),
    base_url=os.environ["MOONSHOT_BASE_URL"], timeout=10,
    options=RunOptions(merge_interval=0.5, sync_interval=0.1),
)
stats = asyncio.run(process_partitions(db, [key], settings, run_id=f"run-{key}"))
print(stats.succeeded, stats.budget_exhausted)
"""


def test_concurrent_runs_of_one_dataset_see_each_others_spend(sim, tmp_path, write_jsonl):
    """Two runs of one dataset at once (a backfill): each re-reads the other's merged spend
    after every merge, so together they stop near the dataset's cap instead of each spending
    it (which would bill about twice the cap)."""
    db = tmp_path / "k.duckdb"
    report = ingest_file(db, write_jsonl("tickets.jsonl", item_lines(400)), chunk_size=200)
    set_budget(db, "tickets", 0.06)
    env = dict(os.environ, MOONSHOT_BASE_URL=sim.base_url, MOONSHOT_API_KEY=SIM_KEY)
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", RUN_PARTITION, str(db), key],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for key in report.partitions
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    assert [out.split()[1] for out, _ in outputs] == ["True", "True"]
    billed = sum(line["cost_usd"] for line in sim.bill())
    answered = [int(out.split()[0]) for out, _ in outputs]
    print(f"two runs, dataset cap 0.06: billed {billed:.6f}, answers {answered}", file=sys.stderr)
    assert min(answered) > 0  # both ran
    assert billed <= 0.06 * 1.5  # each alone would have spent up to the whole cap
    assert states(db).get("failed", 0) == 0
