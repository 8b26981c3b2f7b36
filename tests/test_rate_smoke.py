"""CI's short version of ``benchmarks/rate_limits.py rpm``: ``kimi-dagster batch`` in its own
process against the simulator at a low custom limit, judged from the simulator's request log.
No throughput floor here (the CI machine's CPUs are shared); the full figures are the
benchmark's."""

from __future__ import annotations

from bisect import bisect_left

from conftest import item_lines
from test_cli import cli

from kimi_dagster.limits import Limits, RateLimiter
from kimi_dagster.stats import RunStats

RPM = 600  # 10 requests a second
ITEMS = 150  # about 15 s


def most_in(times: list[float], span: float) -> int:
    """The most of ``times`` (sorted) inside any window [t, t + span)."""
    return max(bisect_left(times, t + span) - i for i, t in enumerate(times))


def test_cli_paces_to_the_limit_without_a_429(sim, tmp_path, write_jsonl) -> None:
    sim.configure(rpm=RPM, concurrency=100)
    source = write_jsonl("smoke.jsonl", item_lines(ITEMS, max_tokens=64))
    argv = ["batch", "-i", str(source), "-o", str(tmp_path / "out.jsonl")]
    argv += ["--db", str(tmp_path / "k.duckdb"), "--tier", "5", "--rpm", str(RPM), "-c", "100"]
    done = cli(*argv, sim=sim)
    assert done.returncode == 0, done.stderr

    log = sim.requests()
    admitted = sorted(entry["ts"] for entry in log if entry["gateway_tokens"])
    assert len(admitted) == len(log) == ITEMS  # every request admitted at the first try
    assert not [e for e in log if e["error"] == "rate_limit_reached_error"]
    assert most_in(admitted, 60.0) <= RPM  # the gateway's sliding window
    # Paced, not burst: a client sending its 100 slots at once would put 100 in one second;
    # the limiter allows one second's worth ahead of the pace (+ a little arrival jitter).
    assert most_in(admitted, 1.0) <= 2 * RPM / 60 + 5
    rate = (ITEMS - 1) / (admitted[-1] - admitted[0]) * 60
    assert rate >= 0.5 * RPM, rate  # a sanity bound, not a benchmark

    lines = [line for line in done.stderr.replace("\r", "\n").splitlines() if "ETA" in line]
    assert len(lines) >= 2  # a progress line every 2 s, and the final one
    for field in ("rpm ", "tpm ", "in-flight ", "429s 0", "ETA "):
        assert field in lines[0], (field, lines[0])
    assert lines[-1].startswith(f"{ITEMS}/{ITEMS} (100.0%)")


def test_observations_carry_the_live_rates() -> None:
    """What each Dagster observation during a run carries besides counts: the last minute's
    requests and tokens as the limiter counted them, requests in flight, 429s, the ETA."""
    limiter = RateLimiter(Limits(concurrency=10, rpm=600, tpm=100_000))
    limiter.admit(120)
    limiter.penalize(0.0)
    stats = RunStats(limiter=limiter)
    stats.start(5)
    meta = stats.metadata()
    assert (meta["rpm_actual"], meta["tpm_actual"], meta["in_flight"]) == (1, 120, 1)
    assert meta["rate_limited_429s"] == 1 and "eta_seconds" in meta
