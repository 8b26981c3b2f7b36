"""The common parts of the rate-limit benchmarks (``rate_limits.py``): prompts, the client
processes they time, and how "achieved" is counted.

"Achieved" is counted the way the gateway counts: from the simulator's own request log, the
requests it admitted (a rejected request holds no place in its windows) and their charges
(``prompt_tokens + max_tokens``), over every sliding 60 s window that lies inside the steady
part of the run (from 10 s after the first admission to 2 s before the last; a window starts
every second). The figure is the mean of those windows divided by the binding limit; the
fullest window is printed beside it, and must stay at or under the limit. Limit-429s are the
log's ``rate_limit_reached_error`` answers.

Client cost is measured on the client process alone (the simulator is another process): user +
system CPU from ``wait4`` divided by the requests it sent, everything included (start-up,
ingest, DuckDB merges, the export), and its peak RSS.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

import orjson

from kimi_dagster.simulator import SimulatorProcess, start_simulator

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-benchmark-simulator-only"
WINDOW = 60.0
WARMUP = 10.0
TAIL = 2.0
_VOCABULARY = (
    "account order refund delivery invoice password billing shipping product warranty "
    "customer ticket urgent request update address payment card subscription cancel "
    "question answer summary priority category device login error screen network"
)
_WORDS = _VOCABULARY.split()


def prompt(rng: random.Random, words: int) -> str:
    """A support-ticket-like prompt of ``words`` random words (about 0.75 tokens each)."""
    return "Classify this ticket: " + " ".join(rng.choice(_WORDS) for _ in range(words)) + "."


def write_items(path: Path, count: int, words: int, max_tokens: int, seed: int = 0) -> Path:
    """A JSONL file of ``count`` distinct prompts."""
    rng = random.Random(seed)
    with path.open("wb") as out:
        for i in range(count):
            line = {"id": f"q{i:07d}", "message": prompt(rng, words), "max_tokens": max_tokens}
            out.write(orjson.dumps(line) + b"\n")
    return path


@contextmanager
def simulator(**config: Any) -> Iterator[SimulatorProcess]:
    """A simulator subprocess; stopped by its PID on exit."""
    with start_simulator(latency_jitter=0.1, **config) as sim:
        yield sim


@contextmanager
def workdir(label: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"kimi-bench-{label}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def client_env(sim: SimulatorProcess, **extra: str) -> dict[str, str]:
    return dict(os.environ, MOONSHOT_BASE_URL=sim.base_url, MOONSHOT_API_KEY=KEY, **extra)


@dataclass
class Child:
    """A client process being timed."""

    label: str
    process: subprocess.Popen[bytes]
    log: Path
    started: float
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    wall_s: float = 0.0
    returncode: int | None = None
    last_progress: str = ""  # the last progress line the client printed

    def wait(self) -> Child:
        """Reap the process and read its CPU and peak RSS from the kernel (wait4)."""
        _, status, usage = os.wait4(self.process.pid, 0)
        self.process.returncode = self.returncode = os.waitstatus_to_exitcode(status)
        self.wall_s = time.time() - self.started
        self.cpu_s = usage.ru_utime + usage.ru_stime
        self.peak_rss_mb = usage.ru_maxrss / 1024
        text = self.log.read_text(errors="replace").replace("\r", "\n")  # the CLI rewrites it
        lines = [line.strip() for line in text.splitlines() if "in-flight" in line]
        self.last_progress = lines[-1] if lines else "(no progress line)"
        if self.returncode != 0:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.label} exited with {self.returncode}:\n{tail}")
        return self


def spawn(label: str, argv: Sequence[str], env: dict[str, str], log: Path) -> Child:
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(argv), env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
        )
    return Child(label, process, log, time.time())


def cli_batch(sim: SimulatorProcess, work: Path, items: Path, *flags: str) -> Child:
    """``kimi-dagster batch`` in its own process, as a user runs it."""
    argv = [sys.executable, "-m", "kimi_dagster.cli", "batch", "-i", str(items)]
    argv += ["-o", str(work / "results.jsonl"), "--db", str(work / "kimi.duckdb"), *flags]
    return spawn("kimi-dagster batch", argv, client_env(sim), work / "cli.log")


def dagster_home(work: Path, pool_limit: int) -> Path:
    """A Dagster home with the shipped dagster.yaml, its pool limit set to ``pool_limit``."""
    home = work / "dagster_home"
    home.mkdir()
    text = (ROOT / "dagster_home" / "dagster.yaml").read_text()
    if "default_limit: 3" not in text:
        raise RuntimeError("dagster_home/dagster.yaml no longer sets the pool's default_limit: 3")
    (home / "dagster.yaml").write_text(
        text.replace("default_limit: 3", f"default_limit: {pool_limit}")
    )
    return home


def dagster_run(
    sim: SimulatorProcess, work: Path, home: Path, keys: Sequence[str], label: str
) -> Child:
    """One Dagster run materializing ``keys`` (one run, the chunks back to back)."""
    argv = [sys.executable, str(Path(__file__).with_name("dagster_run.py")), *keys]
    env = client_env(
        sim,
        DAGSTER_HOME=str(home),
        KIMI_DAGSTER_DB=str(work / "kimi.duckdb"),
        KIMI_DAGSTER_TIER="3",
    )
    return spawn(label, argv, env, work / f"{label}.log")


# -- counting what the gateway admitted -------------------------------------------------------


@dataclass(frozen=True)
class Windows:
    """Sliding 60 s windows of the simulator's admitted requests over a span."""

    starts: int  # how many windows (one per second)
    mean_requests: float
    max_requests: int
    mean_tokens: float
    max_tokens: int


@dataclass(frozen=True)
class Log:
    """The simulator's request log, reduced to what the rate benchmarks count."""

    admitted: list[float]  # arrival times of admitted requests, sorted
    charges: list[int]  # their gateway charge, same order
    limited: list[float]  # times of limit-429s
    other_errors: dict[str, int]
    runs: dict[str, tuple[float, float]]  # run id -> its first and last request

    @classmethod
    def of(cls, sim: SimulatorProcess) -> Log:
        admitted: list[tuple[float, int]] = []
        limited: list[float] = []
        other: dict[str, int] = {}
        runs: dict[str, tuple[float, float]] = {}
        for entry in sim.requests():
            run = entry["request_id"].split(":")[0]
            first, _ = runs.get(run, (entry["ts"], 0.0))
            runs[run] = (first, entry["ts"])
            if entry["error"] == "rate_limit_reached_error":
                limited.append(entry["ts"])
            elif entry["gateway_tokens"]:
                admitted.append((entry["ts"], entry["gateway_tokens"]))
            if entry["error"] not in (None, "rate_limit_reached_error"):
                other[entry["error"]] = other.get(entry["error"], 0) + 1
        admitted.sort()
        return cls([t for t, _ in admitted], [c for _, c in admitted], sorted(limited), other, runs)

    def steady(self) -> tuple[float, float]:
        return self.admitted[0] + WARMUP, self.admitted[-1] - TAIL

    def windows(self, start: float, end: float) -> Windows:
        """Every 60 s window [s, s + 60) with start <= s <= end - 60, one a second."""
        if end - start < WINDOW:
            raise ValueError(f"the span is {end - start:.0f} s: shorter than one window")
        cum = [0, *accumulate(self.charges)]
        counts, tokens = [], []
        s = start
        while s <= end - WINDOW:
            lo, hi = bisect_left(self.admitted, s), bisect_left(self.admitted, s + WINDOW)
            counts.append(hi - lo)
            tokens.append(cum[hi] - cum[lo])
            s += 1.0
        return Windows(
            len(counts), sum(counts) / len(counts), max(counts), sum(tokens) / len(tokens),
            max(tokens),
        )  # fmt: skip

    def max_window(self) -> tuple[int, int]:
        """The fullest 60 s window of the whole log: (requests, tokens), at any start."""
        cum = [0, *accumulate(self.charges)]
        most_requests = most_tokens = 0
        for lo, t in enumerate(self.admitted):
            hi = bisect_left(self.admitted, t + WINDOW)
            most_requests = max(most_requests, hi - lo)
            most_tokens = max(most_tokens, cum[hi] - cum[lo])
        return most_requests, most_tokens


def client_cost(children: Sequence[Child], requests: int) -> str:
    cpu = sum(c.cpu_s for c in children)
    rss = max(c.peak_rss_mb for c in children)
    return (
        f"client CPU {1000 * cpu / max(1, requests):.3f} ms/request "
        f"({cpu:.1f} s user+sys for {requests:,} requests, start-up, ingest, DuckDB and export "
        f"included); peak RSS {rss:.0f} MB"
    )


def print_result(name: str, lines: Sequence[str], checks: Sequence[tuple[str, bool]]) -> bool:
    print(f"\n== {name}")
    for line in lines:
        print(f"   {line}")
    for label, ok in checks:
        print(f"   [{'ok' if ok else 'MISSED'}] {label}")
    sys.stdout.flush()
    return all(ok for _, ok in checks)


def wait_until(predicate: Callable[[], bool], timeout: float, poll: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return False
