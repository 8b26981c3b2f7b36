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
from conftest import SIM_KEY

from kimi_dagster.catalogue import Catalogue
from kimi_dagster.client import KimiClient
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
            options=RunOptions(sync_interval=0.05, abort_grace=5.0),
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
