"""Rate limits over real HTTP: sliding RPM, TPM charged at admission, concurrency, live config."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from kimi_dagster.simulator import SimulatorProcess

from .simtools import KEY, chat, error_of


def post(client: httpx.Client, **params: object) -> httpx.Response:
    return client.post("/chat/completions", json=chat(**params))


def test_tier0_rpm_rejects_the_fourth_request(sim: SimulatorProcess, client: httpx.Client):
    sim.configure(tier=0)
    assert [post(client).status_code for _ in range(3)] == [200, 200, 200]
    status, kind, message = error_of(post(client))
    assert (status, kind) == (429, "rate_limit_reached_error")
    assert "max RPM: 3, please try again after" in message
    seconds = int(message.rsplit("after ", 1)[1].split()[0])
    assert 58 <= seconds <= 60
    requests = sim.requests()
    assert [r["gateway_tokens"] > 0 for r in requests] == [True, True, True, False]
    assert sim.stats()["requests_last_minute"] == 3  # the rejected one is not counted


def test_tpm_is_charged_input_plus_max_tokens(sim: SimulatorProcess, client: httpx.Client):
    sim.configure(tpm=1000)
    assert post(client, max_tokens=600).status_code == 200  # ~610 charged, ~150 used
    status, _, message = error_of(post(client, max_tokens=600))  # would fit by actual use
    assert status == 429 and "max TPM: 1000, please try again after" in message
    assert post(client, max_tokens=100).status_code == 200  # ~110 more still fits
    assert sim.stats()["tokens_last_minute"] == sum(r["gateway_tokens"] for r in sim.requests())


async def _burst(base_url: str, count: int) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10) as client:
        calls = [client.post("/chat/completions", json=chat(text=f"c{i}")) for i in range(count)]
        return await asyncio.gather(*calls)


def test_concurrency_limit_counts_requests_in_flight(sim: SimulatorProcess) -> None:
    sim.configure(concurrency=3, latency=0.5)
    responses = asyncio.run(_burst(sim.base_url, 5))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 200, 429, 429]
    rejected = [r for r in responses if r.status_code == 429]
    assert all(
        "max concurrency: 3, please try again after 1 seconds" in error_of(r)[2] for r in rejected
    )
    stats = sim.stats()
    assert stats["max_in_flight"] == 3 and stats["in_flight"] == 0


def test_live_reconfiguration_applies_to_the_next_request(
    sim: SimulatorProcess, client: httpx.Client
) -> None:
    config = sim.configure(rpm=2)
    assert config["limits"]["rpm"] == 2 and config["limits"]["concurrency"] == 1000
    assert [post(client).status_code for _ in range(3)] == [200, 200, 429]
    assert "max RPM: 2" in error_of(post(client))[2]
    sim.configure(rpm=10)
    assert post(client).status_code == 200
    assert sim.configure(tier=1)["limits"] == {
        "concurrency": 50,
        "rpm": 200,
        "tpm": 2_000_000,
        "tpd": None,
    }


def test_bad_live_config_is_refused(sim: SimulatorProcess) -> None:
    for change, reason in (
        ({"rpm": -1}, "positive"),
        ({"fail_hang": 2}, "probabilities"),
        ({"nonsense": 1}, "unknown"),
        ({"port": 80}, "start-only"),
    ):
        with pytest.raises(ValueError, match=reason):
            sim.configure(**change)
