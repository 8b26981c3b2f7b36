"""Every error class of kimi-api.md, through the engine against the simulator over HTTP, counted
against the simulator's own request log: limit-429s wait and retry, transient faults retry with
bounded exponential backoff, account errors stop the run at once, item errors fail one item."""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from pathlib import Path

import duckdb
import pytest
from conftest import SIM_KEY, item_lines, sim_settings
from test_cli import cli

from kimi_dagster.engine import process_partitions
from kimi_dagster.ingest import ingest_file
from kimi_dagster.limits import resolve_limits
from kimi_dagster.runner import RunAborted
from kimi_dagster.stats import RunStats

BACKOFF = 0.1  # seconds: the first retry waits 0.05-0.1 s, the second 0.1-0.2 s
MAX_ATTEMPTS = 3


def run(sim, db: Path, source: Path, *, rpm: int | None = None, timeout: float = 10.0) -> RunStats:
    """Ingest ``source`` as one chunk and process it with fast backoff (tier 5 unless ``rpm``)."""
    report = ingest_file(db, source, chunk_size=1_000)
    settings = sim_settings(
        sim,
        limits=resolve_limits(5, rpm=rpm),
        timeout=timeout,
        max_attempts=MAX_ATTEMPTS,
        backoff_base=BACKOFF,
        backoff_max=1.0,
    )
    return asyncio.run(process_partitions(db, report.partitions, settings, run_id="retries"))


def log_by_item(sim) -> dict[str, list[dict]]:
    """The simulator's request log grouped by item (request ids are run:item:attempt)."""
    grouped: dict[str, list[dict]] = defaultdict(list)
    for entry in sim.requests():
        grouped[entry["request_id"].split(":")[1]].append(entry)
    return grouped


def final_states(db: Path) -> dict[str, tuple[str, str | None, int]]:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT item_id, status, error_type, attempts FROM item_results"
        ).fetchall()
    return {item: (status, error, attempts) for item, status, error, attempts in rows}


def marked(count: int, index: int, marker: str) -> list[dict]:
    lines = item_lines(count, max_tokens=64)
    lines[index]["message"] += f" {marker}"
    return lines


def test_limit_429_waits_the_named_time_slows_down_and_retries(sim, db, write_jsonl) -> None:
    source = write_jsonl("t.jsonl", marked(12, 3, "[[sim:fail=rate_limit:2]]"))
    stats = run(sim, db, source)

    log = log_by_item(sim)
    tries = log["item0003"]
    assert [(e["status"], e["error"]) for e in tries] == [
        (429, "rate_limit_reached_error"),
        (429, "rate_limit_reached_error"),
        (200, None),
    ]
    # "please try again after 1 seconds": the item waits that long, and the whole run pauses
    # (after the few requests already on their way when the 429 came back).
    assert tries[1]["ts"] - tries[0]["ts"] >= 1.0 and tries[2]["ts"] - tries[1]["ts"] >= 1.0
    every = [e["ts"] for e in sim.requests()]
    for limited in tries[:2]:
        assert not [ts for ts in every if limited["ts"] + 0.3 < ts < limited["ts"] + 0.95]
    assert all(len(log[f"item{i:04d}"]) == 1 for i in range(12) if i != 3)
    assert stats.succeeded == 12 and stats.failed == 0
    assert stats.metadata()["rate_limited_429s"] == 2
    assert final_states(db)["item0003"] == ("succeeded", None, 3)


RETRYABLE = {  # marker kind -> the error type the item records
    "overload": "engine_overloaded_error",
    "server_error": "server_error",
    "reset": "connection_error",
    "hang": "timeout",
    "malformed": "malformed_response",
}


@pytest.mark.parametrize("kind", sorted(RETRYABLE))
def test_transient_errors_retry_with_backoff_then_succeed(sim, db, write_jsonl, kind) -> None:
    sim.configure(hang_seconds=3.0)  # longer than the client's timeout: a hang times out
    lines = marked(8, 2, f"[[sim:fail={kind}:{MAX_ATTEMPTS - 1}]]")
    stats = run(sim, db, write_jsonl("t.jsonl", lines), timeout=0.5)

    tries = log_by_item(sim)["item0002"]
    assert len(tries) == MAX_ATTEMPTS
    assert tries[-1]["status"] == 200 and tries[-1]["error"] is None
    assert all(e["error"] is not None for e in tries[:-1])
    gaps = [b["ts"] - a["ts"] for a, b in itertools.pairwise(tries)]
    assert gaps[0] >= BACKOFF / 2 and gaps[1] >= BACKOFF  # exponential, with jitter
    assert stats.succeeded == 8 and stats.errors[RETRYABLE[kind]] == MAX_ATTEMPTS - 1
    assert final_states(db)["item0002"] == ("succeeded", None, MAX_ATTEMPTS)


@pytest.mark.parametrize("kind", sorted(RETRYABLE))
def test_transient_errors_give_up_after_max_attempts_with_the_reason(
    sim, db, write_jsonl, kind
) -> None:
    sim.configure(hang_seconds=3.0)
    lines = marked(8, 5, f"[[sim:fail={kind}:99]]")
    stats = run(sim, db, write_jsonl("t.jsonl", lines), timeout=0.5)

    log = log_by_item(sim)
    assert len(log["item0005"]) == MAX_ATTEMPTS  # bounded: no request after the last attempt
    assert sum(len(v) for v in log.values()) == 7 + MAX_ATTEMPTS
    assert stats.succeeded == 7 and stats.failed == 1
    assert final_states(db)["item0005"] == ("failed", RETRYABLE[kind], MAX_ATTEMPTS)


FATAL = {  # marker kind -> (HTTP status, error type)
    "quota": (429, "exceeded_current_quota_error"),
    "unauthorized": (401, "invalid_authentication_error"),
    "permission": (403, "permission_denied_error"),
    "not_found": (404, "resource_not_found_error"),
}


@pytest.mark.parametrize("kind", sorted(FATAL))
def test_account_errors_stop_the_whole_run_at_once(sim, db, write_jsonl, kind) -> None:
    status, error_type = FATAL[kind]
    source = write_jsonl("t.jsonl", marked(40, 0, f"[[sim:fail={kind}:99]]"))
    # 600 RPM paces admissions 0.1 s apart: the error is back long before many more go (10
    # allows a full second for it on a loaded machine; the 40 items would all go in 4 s).
    with pytest.raises(RunAborted) as caught:
        run(sim, db, source, rpm=600)

    message = str(caught.value)
    assert error_type in message and f"HTTP {status}" in message and "pending" in message
    assert SIM_KEY not in message and SIM_KEY[3:] not in message
    log = sim.requests()
    assert len(log) <= 10, log
    assert (log[0]["status"], log[0]["error"]) == (status, error_type)
    assert len(log_by_item(sim)["item0000"]) == 1  # never retried
    states = final_states(db)
    assert sum(state == "pending" for state, _, _ in states.values()) >= 30
    assert states["item0000"][0] == "pending"  # the next run (after the fix) resumes it


def test_account_error_on_the_cli_is_one_clear_line_without_the_key(
    sim, tmp_path, write_jsonl
) -> None:
    source = write_jsonl("t.jsonl", marked(30, 0, "[[sim:fail=unauthorized:99]]"))
    argv = ["batch", "-i", str(source), "-o", str(tmp_path / "o.json")]
    argv += ["--db", str(tmp_path / "k.duckdb"), "--rpm", "600"]
    done = cli(*argv, sim=sim)
    assert done.returncode == 2
    error_lines = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and "invalid_authentication_error" in error_lines[0]
    assert "check MOONSHOT_API_KEY" in error_lines[0]
    assert SIM_KEY not in done.stderr + done.stdout
    assert len(sim.requests()) <= 10


@pytest.mark.parametrize(
    ("marker", "error_type"),
    [
        ("[[sim:content_filter]]", "content_filter"),
        ("[[sim:fail=no_such_kind:1]]", "invalid_request_error"),  # the simulator's 400
    ],
)
def test_a_400_fails_that_item_only(sim, db, write_jsonl, marker, error_type) -> None:
    stats = run(sim, db, write_jsonl("t.jsonl", marked(10, 4, marker)))

    log = log_by_item(sim)
    assert [(e["status"], e["error"]) for e in log["item0004"]] == [(400, error_type)]
    assert all(len(log[f"item{i:04d}"]) == 1 for i in range(10))
    assert stats.succeeded == 9 and stats.failed == 1
    states = final_states(db)
    assert states["item0004"] == ("failed", error_type, 1)
    assert sum(state == "succeeded" for state, _, _ in states.values()) == 9
