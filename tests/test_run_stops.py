"""How a run stops when something other than the provider stops it: whatever the provider
already answered (and billed) is in the spool before the run returns, and one item that can never
fit the limits fails alone with a reason instead of ending every run of its chunk."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import duckdb
import orjson
import pytest
from conftest import SIM_KEY, item_lines

from kimi_dagster import batches
from kimi_dagster.budgets import set_budget
from kimi_dagster.catalogue import Catalogue
from kimi_dagster.client import KimiClient
from kimi_dagster.engine import Settings, process_partitions
from kimi_dagster.ingest import ingest_file
from kimi_dagster.limits import RateLimiter, resolve_limits
from kimi_dagster.runner import Runner, RunOptions, WorkItem
from kimi_dagster.spool import SpoolWriter
from kimi_dagster.store import migrate


def _item(n: int, max_tokens: int = 64, est: int = 20) -> WorkItem:
    body = {
        "model": "kimi-k2.6",
        "messages": [{"role": "user", "content": f"Say hello number {n}."}],
        "max_tokens": max_tokens,
    }
    return WorkItem("d", f"i{n}", "d-00000", "kimi-k2.6", max_tokens, est, orjson.dumps(body))


def _records(directory: Path) -> list[dict]:
    return [
        orjson.loads(line)
        for segment in sorted(directory.glob("*.jsonl"))
        for line in segment.read_bytes().splitlines()
    ]


async def _run(sim, directory: Path, items, total: int, **runner_args) -> Runner:
    con = duckdb.connect()
    migrate(con)
    async with KimiClient(sim.base_url, SIM_KEY, concurrency=8) as client:
        runner = Runner(
            client=client,
            limiter=runner_args.pop("limiter", RateLimiter(resolve_limits(5, concurrency=8))),
            catalogue=Catalogue.from_connection(con),
            spool=SpoolWriter(directory, "stops"),
            run_id="stops",
            options=RunOptions(sync_interval=0.05, progress_interval=0.05, abort_grace=5.0),
            **runner_args,
        )
        try:
            await runner.run(items, total)
        finally:
            runner.spool.close()
    return runner


def test_replies_in_flight_when_dispatch_raises_reach_the_spool(sim, tmp_path) -> None:
    """The item source breaks while four requests are out: their replies are still recorded."""
    sim.configure(latency=0.3)

    def items() -> Iterator[WorkItem]:
        yield from (_item(n) for n in range(4))
        raise RuntimeError("the item source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        asyncio.run(_run(sim, tmp_path, items(), 4))
    records = _records(tmp_path)
    assert len(sim.bill()) == 4
    assert sorted((r["item_id"], r["outcome"]) for r in records) == [
        (f"i{n}", "ok") for n in range(4)
    ]


def test_a_failing_progress_callback_stops_the_run_loudly(sim, tmp_path) -> None:
    """Housekeeping (fsyncs, merges, progress) that dies must not leave the run going on
    without it: the run raises the error, and every reply received is in the spool."""

    def progress(stats) -> None:
        raise ValueError("the progress reporter broke")

    items = [_item(n) for n in range(200)]
    with pytest.raises(ValueError, match="progress reporter broke"):
        asyncio.run(_run(sim, tmp_path, items, len(items), on_progress=progress))
    records = _records(tmp_path)
    assert len(records) == len(sim.bill())
    assert {r["outcome"] for r in records} <= {"ok", "cancelled"}


def test_an_item_no_window_admits_fails_alone_with_its_reason(sim, db, write_jsonl) -> None:
    """At 10,000 tokens a minute no request above 9,850 is ever admitted: that item fails with
    its id and the fix, the others of its chunk succeed, and nothing of it is sent."""
    lines = item_lines(6, max_tokens=64)
    lines[2]["max_tokens"] = 12_000
    report = ingest_file(db, write_jsonl("big.jsonl", lines), chunk_size=100)
    settings = Settings(
        api_key=SIM_KEY, limits=resolve_limits(5, tpm=10_000), base_url=sim.base_url
    )
    stats = asyncio.run(process_partitions(db, report.partitions, settings, run_id="big"))
    assert (stats.succeeded, stats.failed) == (5, 1)
    with duckdb.connect(str(db), read_only=True) as con:
        rows = dict(
            (item, (status, error))
            for item, status, error in con.execute(
                "SELECT item_id, status, error_type FROM item_results"
            ).fetchall()
        )
        (message,) = con.execute(
            "SELECT error_message FROM attempts WHERE item_id = 'item0002'"
        ).fetchone()
    assert rows.pop("item0002") == ("failed", "too_large")
    assert set(rows.values()) == {("succeeded", None)}
    assert "item0002" in message and "9,850" in message and "max_tokens" in message
    assert "item0002" not in {entry["request_id"].split(":")[1] for entry in sim.requests()}


def test_a_real_time_run_leaves_what_open_batches_reserved(sim, db, write_jsonl) -> None:
    """A batch submitted but not loaded may still be billed its worst case: a real-time run of
    the same dataset counts it against the dataset's cap, as a second batch would."""
    sim.configure(batch_delays=[60, 60, 60])  # the batch stays open for the whole test
    report = ingest_file(db, write_jsonl("t.jsonl", item_lines(40, max_tokens=64)), chunk_size=20)
    settings = Settings(api_key=SIM_KEY, limits=resolve_limits(5), base_url=sim.base_url)
    asyncio.run(batches.run_batch_mode(db, report.partitions[:1], settings, wait=False))
    (open_batch,) = batches.list_batches(db, open_only=True)
    set_budget(db, "t", open_batch.worst_cost_usd * 1.5)  # room for half as much again
    stats = asyncio.run(process_partitions(db, report.partitions[1:], settings, run_id="rt"))
    assert stats.budget_exhausted and 0 < stats.succeeded < 20
    with duckdb.connect(str(db), read_only=True) as con:
        spent = con.execute("SELECT sum(cost_usd)::DOUBLE FROM attempts").fetchone()[0]
    assert spent + open_batch.worst_cost_usd <= open_batch.worst_cost_usd * 1.5
