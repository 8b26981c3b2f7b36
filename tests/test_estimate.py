"""`kimi-dagster estimate` against what the run then costs on the simulator (ledger and bill).

The output length of an answer is unknowable before it exists, so the honest estimate of a new
file is a stated assumption bounded by a worst case; once part of the dataset has answers (a
sample chunk), their mean calibrates the rest, and that estimate must be within 10 %.
"""

from __future__ import annotations

import asyncio
import sys

import duckdb
import orjson
import pytest
from conftest import SIM_KEY

from kimi_dagster.budgets import set_budget
from kimi_dagster.cli import main
from kimi_dagster.engine import Settings, process_partitions
from kimi_dagster.estimate import Plan, estimate_file, parse_duration
from kimi_dagster.ingest import ingest_file
from kimi_dagster.limits import resolve_limits

SYSTEM = (
    "You are a support triage assistant for a large online shop. Read the customer's ticket and "
    "answer with the department that should handle it, a priority from one to four, and one "
    "sentence that explains the choice to the agent who picks the ticket up next."
)  # > 64 tokens, shared by every line: the prefix cache serves it after the first answers


def lines(count: int) -> list[dict]:
    return [
        {
            "id": f"t{i:04d}",
            "system": SYSTEM,
            "message": f"Ticket {i}: my parcel {i * 7919 % 10007} arrived damaged, what now?",
            "max_tokens": 256,
        }
        for i in range(count)
    ]


def estimate_json(capsys, *args: str) -> dict:
    assert main(["estimate", *args, "--json"]) == 0
    return orjson.loads(capsys.readouterr().out)


def run(db, keys: list[str], base_url: str) -> None:
    settings = Settings(api_key=SIM_KEY, limits=resolve_limits(5), base_url=base_url, timeout=10)
    asyncio.run(process_partitions(db, keys, settings, run_id=f"test-{keys[0]}"))


def ledger(db, keys: list[str]) -> float:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(
            "SELECT sum(cost_usd)::DOUBLE FROM attempts WHERE list_contains($keys, partition_key)",
            {"keys": keys},
        ).fetchone()[0]


def test_estimate_is_within_ten_percent_of_the_run(sim, db, write_jsonl, capsys) -> None:
    source = write_jsonl("tickets.jsonl", lines(600))
    fresh = estimate_json(capsys, "-i", str(source), "--db", str(db), "--tier", "5")
    assert not db.exists()  # estimating ingests nothing
    assert fresh["pending"] == 600 and fresh["history_answers"] == 0
    assert "assumed 50% of max_tokens" in fresh["output_basis"]

    # A sample chunk first: its answers calibrate the estimate of the rest.
    report = ingest_file(db, source, chunk_size=150)
    sample, rest = report.partitions[:1], report.partitions[1:]
    run(db, sample, sim.base_url)
    sample_bill = sum(line["cost_usd"] for line in sim.bill())

    calibrated = estimate_json(capsys, "-i", str(source), "--db", str(db), "--tier", "5")
    assert calibrated["items"] == 600 and calibrated["pending"] == 450
    assert calibrated["history_answers"] == 150
    assert "mean of 150 answer(s) in tickets" in calibrated["output_basis"]
    assert calibrated["cached_tokens"] > 0.5 * calibrated["input_tokens"]

    run(db, rest, sim.base_url)
    bill = sim.bill()
    assert len(bill) == 600
    billed_rest = sum(line["cost_usd"] for line in bill) - sample_bill
    assert ledger(db, rest) == pytest.approx(billed_rest, abs=1e-6)  # well within a cent
    error = calibrated["cost_realtime"] / billed_rest - 1
    figures = f"estimate {calibrated['cost_realtime']:.6f} vs billed {billed_rest:.6f}"
    print(f"{figures}: {error:+.2%}", file=sys.stderr)
    assert abs(error) <= 0.10
    assert calibrated["cost_batch"] == pytest.approx(0.6 * calibrated["cost_realtime"], rel=1e-4)

    # Without history the figure is an assumption, but the worst case bounds the whole spend.
    total = sum(line["cost_usd"] for line in bill)
    assert total <= fresh["cost_worst_case"]
    # The run used the tokens the calibrated estimate expected (answers, input, cache).
    with duckdb.connect(str(db), read_only=True) as con:
        used = con.execute(
            "SELECT sum(prompt_tokens), sum(completion_tokens) FROM attempts "
            "WHERE partition_key <> $k",
            {"k": sample[0]},
        ).fetchone()
    assert calibrated["input_tokens"] == pytest.approx(used[0], rel=0.10)
    assert calibrated["output_tokens"] == pytest.approx(used[1], rel=0.10)

    done = estimate_json(capsys, "-i", str(source), "--db", str(db))
    assert done["pending"] == 0 and done["cost_realtime"] == 0


def test_time_at_the_tier_and_which_mode_fits_a_deadline(db, write_jsonl) -> None:
    source = write_jsonl("big.jsonl", lines(400))
    slow = Plan(limits=resolve_limits(0), latency_s=2.0, deadline_s=parse_duration("1h"))
    result = estimate_file(source, slow, db_path=db)
    assert result.binding_limit == "rpm"  # Tier 0: 3 requests a minute
    assert result.realtime_seconds == pytest.approx(400 / 3 * 60, rel=1e-3)
    assert (result.fits_realtime, result.fits_batch, result.recommended_mode) == (
        False,
        False,
        None,
    )
    week = Plan(limits=resolve_limits(0), deadline_s=parse_duration("3d"))
    result = estimate_file(source, week, db_path=db)
    assert result.recommended_mode == "batch" and result.batch_completion_window == "72h"

    fast = Plan(limits=resolve_limits(5, concurrency=10), latency_s=3.0, deadline_s=3600.0)
    result = estimate_file(source, fast, db_path=db)
    assert result.binding_limit == "concurrency"
    assert result.realtime_seconds == pytest.approx(400 * 3.0 / 10)
    assert result.recommended_mode == "realtime"  # under 12 h only real time can make it

    assert result.budget_left_usd is None
    set_budget(db, "big", 0.01)
    assert estimate_file(source, fast, db_path=db).budget_left_usd == 0.01

    tpm = Plan(limits=resolve_limits(None, concurrency=1000, rpm=10_000, tpm=20_000))
    result = estimate_file(source, tpm, db_path=db)
    assert result.binding_limit == "tpm"
    assert result.seconds_by_limit["tpm"] == pytest.approx(
        result.gateway_tokens / 20_000 * 60, abs=0.1
    )
    assert result.gateway_tokens == result.input_tokens + 400 * 256


def test_bad_lines_are_counted_not_estimated(db, write_jsonl) -> None:
    source = write_jsonl("x.jsonl", [*lines(3), b"not json", {"id": "t0001", "message": "dup"}])
    result = estimate_file(source, Plan(limits=resolve_limits(3)), db_path=db)
    assert (result.items, result.rejected_lines) == (3, 2)
    assert "(2 line(s) rejected)" in result.describe()


def test_bad_deadline_is_a_clear_error(db, write_jsonl, capsys) -> None:
    source = write_jsonl("x.jsonl", lines(2))
    assert main(["estimate", "-i", str(source), "--db", str(db), "--deadline", "soon"]) == 2
    assert "cannot read the duration 'soon'" in capsys.readouterr().err
