"""Shared fixtures: a fresh DuckDB path per test and a JSONL writer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from kimi_dagster.engine import Settings
from kimi_dagster.limits import Limits, resolve_limits
from kimi_dagster.runner import RunOptions
from kimi_dagster.simulator import SimulatorProcess


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "kimi.duckdb"


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[..., Path]:
    """write_jsonl("name.jsonl", [dict | bytes, ...]): bytes are written verbatim as a line."""

    def write(name: str, lines: list[dict | bytes]) -> Path:
        path = tmp_path / name
        with path.open("wb") as out:
            for line in lines:
                out.write((line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n")
        return path

    return write


@pytest.fixture
def instance(tmp_path: Path):
    """A temporary persistent Dagster instance (SQLite; unlike an ephemeral one it has pools)."""
    import dagster as dg

    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield instance


SIM_KEY = "sk-test-never-real-0123456789"


@pytest.fixture(scope="session")
def kimi_sim():
    """One simulator process on 127.0.0.1 for the project's tests (fast: 50 ms latency)."""
    from kimi_dagster.simulator import start_simulator

    with start_simulator(tier=5, latency=0.05, latency_jitter=0.0, seed=3) as sim:
        yield sim


@pytest.fixture
def sim(kimi_sim, monkeypatch: pytest.MonkeyPatch):
    """The shared simulator, reset, with the environment pointing the client at it."""
    kimi_sim.reset()
    original = {
        k: v for k, v in kimi_sim.stats()["config"].items() if k not in ("host", "port", "limits")
    }
    monkeypatch.setenv("MOONSHOT_BASE_URL", kimi_sim.base_url)
    monkeypatch.setenv("MOONSHOT_API_KEY", SIM_KEY)
    yield kimi_sim
    kimi_sim.configure(**original)
    kimi_sim.reset()


def item_lines(count: int, *, prefix: str = "item", max_tokens: int = 256) -> list[dict]:
    return [
        {
            "id": f"{prefix}{i:04d}",
            "message": f"Classify support ticket number {i}.",
            "max_tokens": max_tokens,
        }
        for i in range(count)
    ]


def sim_settings(
    sim: SimulatorProcess, *, limits: Limits | None = None, timeout: float = 10.0, **options: Any
) -> Settings:
    """A run's settings against the test simulator: Tier 5 unless ``limits`` are given, a 10 s
    reply timeout, and ``options`` as the run's ``RunOptions``."""
    return Settings(
        api_key=SIM_KEY,
        limits=limits or resolve_limits(5),
        base_url=sim.base_url,
        timeout=timeout,
        options=RunOptions(**options),
    )
