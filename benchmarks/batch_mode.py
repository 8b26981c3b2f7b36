"""What Batch API mode costs and how fast its answers are loaded: measured against the simulator.

The same prompts run twice, once through the real-time chat endpoint and once as provider
batches (``kimi_dagster.batches``); printed: each ledger (DuckDB ``attempts``) against the
simulator's bill, the batch / real-time cost ratio, and how long submitting (building the
input files, uploading, creating) and loading (downloading output files, merging them into
DuckDB) took per line.

Run: ``.venv/bin/python benchmarks/batch_mode.py [ITEMS]`` (default 5,000). Not a test.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import orjson

from kimi_dagster import batches
from kimi_dagster.engine import Settings, process_partitions
from kimi_dagster.ingest import ingest_file
from kimi_dagster.limits import resolve_limits
from kimi_dagster.simulator import start_simulator

SIM_KEY = "sk-benchmark-not-a-real-key"


def write_prompts(path: Path, count: int) -> None:
    with path.open("wb") as out:
        for i in range(count):
            line = {"id": f"q{i:06d}", "message": f"Summarize support ticket {i} in one line."}
            out.write(orjson.dumps(line | {"max_tokens": 200}) + b"\n")


def ledger(db: Path, dataset: str) -> tuple[float, int]:
    with duckdb.connect(str(db), read_only=True) as con:
        cost, rows = con.execute(
            "SELECT sum(cost_usd), count(*) FROM attempts WHERE dataset = ?", [dataset]
        ).fetchone()
    return float(cost), rows


def main(items: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    db = work / "kimi.duckdb"
    with start_simulator(tier=5, latency=0.05, batch_delays=(0.1, 1.0, 0.1)) as sim:
        settings = Settings(api_key=SIM_KEY, limits=resolve_limits(5), base_url=sim.base_url)
        for name in ("realtime", "batched"):
            write_prompts(work / f"{name}.jsonl", items)
        rt = ingest_file(db, work / "realtime.jsonl", chunk_size=1000)
        bt = ingest_file(db, work / "batched.jsonl", chunk_size=items)  # one batch

        t0 = time.perf_counter()
        asyncio.run(process_partitions(db, rt.partitions, settings, run_id="bench-realtime"))
        realtime_s = time.perf_counter() - t0
        rt_bill = sum(line["cost_usd"] for line in sim.bill() if not line["batch"])

        t0 = time.perf_counter()
        submitted = asyncio.run(batches.sync_partitions(db, bt.partitions, settings))
        submit_s = time.perf_counter() - t0
        while any(b.state not in batches.TERMINAL for b in batches.list_batches(db)):
            time.sleep(0.2)
            asyncio.run(batches.poll(db, settings))
        t0 = time.perf_counter()
        loaded = asyncio.run(batches.sync_partitions(db, bt.partitions, settings, submit=False))
        load_s = time.perf_counter() - t0
        bt_bill = sum(line["cost_usd"] for line in sim.bill() if line["batch"])

    rt_cost, rt_rows = ledger(db, "realtime")
    bt_cost, bt_rows = ledger(db, "batched")
    print(f"items per mode:            {items:,}")
    print(f"real-time ledger / bill:   ${rt_cost:.6f} / ${rt_bill:.6f}  ({rt_rows:,} attempts)")
    print(f"batch ledger / bill:       ${bt_cost:.6f} / ${bt_bill:.6f}  ({bt_rows:,} attempts)")
    print(f"batch / real-time cost:    {bt_cost / rt_cost:.4f}")
    print(f"real-time run:             {realtime_s:.1f} s")
    print(
        f"submit {len(submitted.submitted)} batches:       {submit_s:.2f} s "
        f"({submit_s / items * 1e6:.0f} us per line)"
    )
    print(
        f"load {len(loaded.loaded)} outputs:          {load_s:.2f} s "
        f"({load_s / items * 1e6:.0f} us per line, {loaded.loaded_rows:,} lines)"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
