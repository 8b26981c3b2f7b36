"""The fault battery: with the simulator injecting 2 % 5xx, 1 % resets, 0.5 % hangs, 1 %
overloads and 0.5 % malformed bodies, every item ends succeeded or failed with its reason, none
is dropped or left in progress, no item is tried more than ``max_attempts`` times, and the
DuckDB ledger equals the simulator's bill."""

from __future__ import annotations

import asyncio
from collections import Counter

import duckdb
import pytest
from conftest import item_lines, sim_settings

from kimi_dagster.engine import process_partitions
from kimi_dagster.ingest import ingest_file
from kimi_dagster.limits import resolve_limits

MAX_ATTEMPTS = 3
FAULTS = {
    "fail_5xx": 0.02,
    "fail_reset": 0.01,
    "fail_hang": 0.005,
    "fail_overload": 0.01,
    "fail_malformed": 0.005,
}
DOOMED = {  # items whose every attempt meets one fault: they must fail, with this reason
    "reset": "connection_error",
    "hang": "timeout",
    "malformed": "malformed_response",
}


def test_every_item_ends_with_a_reason_and_the_ledger_equals_the_bill(sim, db, write_jsonl):
    sim.configure(seed=404, hang_seconds=1.0, **FAULTS)
    lines = item_lines(300, max_tokens=64)
    for n, kind in enumerate(DOOMED):
        lines[50 * n + 7]["message"] += f" [[sim:fail={kind}:99]]"
    report = ingest_file(db, write_jsonl("faults.jsonl", lines), chunk_size=100)
    settings = sim_settings(
        sim,
        limits=resolve_limits(5, concurrency=32),
        timeout=0.5,  # a hang (1 s) times out
        max_attempts=MAX_ATTEMPTS,
        backoff_base=0.05,
        backoff_max=0.2,
    )
    stats = asyncio.run(process_partitions(db, report.partitions, settings, run_id="faults"))

    log = sim.requests()
    injected = Counter(r["error"] for r in log if r["error"] is not None)
    # a hang shows as "client_disconnected": the client gave up at its timeout and hung up
    assert {"reset", "client_disconnected", "malformed", "engine_overloaded_error"} <= set(injected)
    assert any(e == "server_error" or e.startswith("http_5") for e in injected)

    with duckdb.connect(str(db), read_only=True) as con:
        states = {
            item: (status, error_type, attempts)
            for item, status, error_type, attempts in con.execute(
                "SELECT item_id, status, error_type, attempts FROM item_results"
            ).fetchall()
        }
        ledger = con.execute(
            "SELECT attempt_id, cost_usd::DOUBLE FROM attempts WHERE outcome = 'ok'"
        ).fetchall()
        errors = dict(
            con.execute(
                "SELECT attempt_id, error_type FROM attempts WHERE outcome <> 'ok'"
            ).fetchall()
        )

    # Every item ended: succeeded, or failed with the reason of its last attempt.
    assert len(states) == 300
    doomed = {lines[50 * n + 7]["id"]: reason for n, reason in enumerate(DOOMED.values())}
    for item, (status, error_type, attempts) in states.items():
        if item in doomed:
            assert (status, error_type, attempts) == ("failed", doomed[item], MAX_ATTEMPTS)
        else:
            assert status == "succeeded" or (status == "failed" and error_type), item
    assert stats.succeeded + stats.failed == 300

    # Bounded: no item was sent more than max_attempts times (the simulator's own log).
    per_item = Counter(r["request_id"].split(":")[1] for r in log)
    assert max(per_item.values()) == MAX_ATTEMPTS and set(per_item) == set(states)
    # Every request the simulator saw is in the ledger, with the fault it met.
    assert {r["request_id"] for r in log} == {a for a, _ in ledger} | set(errors)

    # The ledger equals the bill: the same requests, the same money.
    bill = sim.bill()
    assert sorted(b["request_id"] for b in bill) == sorted(a for a, _ in ledger)
    assert sum(c for _, c in ledger) == pytest.approx(sum(b["cost_usd"] for b in bill), abs=1e-9)
    print("injected", dict(injected), "outcomes", Counter(s for s, _, _ in states.values()))
