"""One simulator process for the whole directory; each test gets it reset and reconfigured."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from kimi_dagster.simulator import SimulatorProcess, start_simulator

from .simtools import KEY

BASE_CONFIG: dict[str, Any] = {
    "latency": 0.0,
    "latency_jitter": 0.0,
    "batch_delays": (0.2, 0.3, 0.2),
}


@pytest.fixture(scope="session")
def simulator() -> Iterator[SimulatorProcess]:
    with start_simulator(**BASE_CONFIG) as sim:
        yield sim


@pytest.fixture
def sim(simulator: SimulatorProcess) -> Iterator[SimulatorProcess]:
    """The shared simulator, reset, with the session's config restored after the test."""
    original = simulator.stats()["config"]
    original = {k: v for k, v in original.items() if k not in ("host", "port", "limits")}
    simulator.reset()
    yield simulator
    simulator.configure(**original)
    simulator.reset()


@pytest.fixture
def client(sim: SimulatorProcess) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=sim.base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10
    ) as http:
        yield http
