"""How much traffic the simulator sustains on this machine, with its client beside it.

Two figures: the raw capacity (limits lifted, 1,000 requests in flight, 0.2 s latency) and
the simulator's CPU while it serves Tier 5 at full pace (10,000 RPM = 167 req/s) with 5 s
answers, so that about 830 of the 1,000 allowed requests are in flight at once.
Run: ``.venv/bin/python benchmarks/simulator_capacity.py [SECONDS]``. Not a test.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp

from kimi_dagster.simulator import start_simulator

IN_FLIGHT = 1000
TIER5_RATE = 10_000 / 60


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(base_url: str, seconds: float, rate: float | None) -> Counter[int]:
    """Keep IN_FLIGHT workers posting for ``seconds``; at most ``rate`` starts per second."""
    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + seconds
    started = time.monotonic()
    sent = 0
    connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
    headers = {"Authorization": "Bearer sk-bench"}
    async with aiohttp.ClientSession(base_url, connector=connector, headers=headers) as session:

        async def worker(n: int) -> None:
            nonlocal sent
            i = 0
            while time.monotonic() < deadline:
                if rate is not None:
                    due = started + sent / rate
                    sent += 1
                    if due >= deadline:
                        return
                    if due > time.monotonic():
                        await asyncio.sleep(due - time.monotonic())
                body = {
                    "model": "kimi-k2.6",
                    "messages": [{"role": "user", "content": f"worker {n} request {i}"}],
                    "max_tokens": 200,
                }
                i += 1
                async with session.post("chat/completions", json=body) as response:
                    await response.read()
                    statuses[response.status] += 1

        await asyncio.gather(*(worker(n) for n in range(IN_FLIGHT)))
    return statuses


def measure(label: str, seconds: float, rate: float | None, **config: object) -> None:
    with start_simulator(**config) as sim:
        cpu = cpu_seconds(sim.pid)
        began = time.monotonic()
        statuses = asyncio.run(drive(sim.base_url + "/", seconds, rate))
        elapsed = time.monotonic() - began
        cpu = cpu_seconds(sim.pid) - cpu
        stats = sim.stats()
    ok = statuses[200]
    print(
        f"{label}: {ok / seconds:,.0f} req/s started and answered 200 "
        f"({ok:,} of {sum(statuses.values()):,}; statuses {dict(statuses)}) in a {seconds:.0f} s "
        f"window, {elapsed:.1f} s to drain; simulator CPU {100 * cpu / elapsed:.0f} % of one "
        f"core; max in flight {stats['max_in_flight']}"
    )


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 15.0
    measure("raw capacity (limits lifted)", seconds, None, latency=0.2, rpm=10**9, tpm=10**12)
    measure("Tier 5 pace (167 req/s, 5 s answers)", seconds, TIER5_RATE, tier=5, latency=5.0)


if __name__ == "__main__":
    main()
