"""Faults as a client sees them: markers that fail N times then succeed, and random faults."""

from __future__ import annotations

import json

import httpx
import pytest

from kimi_dagster.simulator import SimulatorProcess, expected_reply

from .simtools import chat, error_of

ERROR_KINDS = [
    ("server_error", 500, "server_error"),
    ("overload", 429, "engine_overloaded_error"),
    ("rate_limit", 429, "rate_limit_reached_error"),
    ("quota", 429, "exceeded_current_quota_error"),
    ("content_filter", 400, "content_filter"),
    ("unauthorized", 401, "invalid_authentication_error"),
    ("permission", 403, "permission_denied_error"),
    ("not_found", 404, "resource_not_found_error"),
]


@pytest.mark.parametrize(("kind", "status", "type_"), ERROR_KINDS)
def test_marker_fails_n_times_then_succeeds(
    sim: SimulatorProcess, client: httpx.Client, kind: str, status: int, type_: str
) -> None:
    body = chat(text=f"item [[sim:fail={kind}:2]]")
    for _ in range(2):
        assert error_of(client.post("/chat/completions", json=body))[:2] == (status, type_)
    response = client.post("/chat/completions", json=body)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == expected_reply(body).content
    assert len(sim.bill()) == 1
    other = chat(text=f"another item [[sim:fail={kind}:2]]")  # counted per request content
    assert client.post("/chat/completions", json=other).status_code == status


def test_unknown_marker_kind_is_a_400(client: httpx.Client) -> None:
    response = client.post("/chat/completions", json=chat(text="[[sim:fail=gremlins:1]]"))
    assert error_of(response)[0] == 400


def test_reset_drops_the_connection(sim: SimulatorProcess, client: httpx.Client) -> None:
    body = chat(text="[[sim:fail=reset:1]]")
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        client.post("/chat/completions", json=body)
    assert client.post("/chat/completions", json=body).status_code == 200
    assert sim.requests()[0]["error"] == "reset" and len(sim.bill()) == 1


def test_hang_never_answers(sim: SimulatorProcess, client: httpx.Client) -> None:
    body = chat(text="[[sim:fail=hang:1]]")
    with pytest.raises(httpx.ReadTimeout):
        client.post("/chat/completions", json=body, timeout=0.5)
    assert client.post("/chat/completions", json=body).status_code == 200
    stats = sim.stats()
    assert stats["in_flight"] == 0  # the abandoned request was dropped with its connection
    assert sim.requests()[0]["error"] == "client_disconnected"


def test_short_hang_ends_in_a_reset(sim: SimulatorProcess, client: httpx.Client) -> None:
    sim.configure(hang_seconds=0.2)
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        client.post("/chat/completions", json=chat(text="[[sim:fail=hang:1]]"))
    assert sim.requests()[0]["error"] == "hang"


def test_malformed_is_a_200_with_broken_json(sim: SimulatorProcess, client: httpx.Client) -> None:
    body = chat(text="[[sim:fail=malformed:1]]")
    response = client.post("/chat/completions", json=body)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert client.post("/chat/completions", json=body).status_code == 200
    assert len(sim.bill()) == 1


def test_random_faults_follow_the_probabilities(
    sim: SimulatorProcess, client: httpx.Client
) -> None:
    sim.configure(fail_5xx=0.5, fail_overload=0.25, fail_quota=0.25, seed=3)
    statuses = [
        client.post("/chat/completions", json=chat(text=str(i))).status_code for i in range(200)
    ]
    assert 200 not in statuses
    assert {500, 502, 503, 504} <= set(statuses)
    assert 70 <= sum(s >= 500 for s in statuses) <= 130
    pages = [r for r in sim.requests() if r["status"] in (502, 503, 504)]
    assert pages and all(r["error"] == f"http_{r['status']}" for r in pages)
    errors = sim.stats()["by_error"]
    assert errors["engine_overloaded_error"] + errors["exceeded_current_quota_error"] > 60
    assert sim.bill() == []


def test_seeded_faults_repeat(sim: SimulatorProcess, client: httpx.Client) -> None:
    def run() -> list[int]:
        return [
            client.post("/chat/completions", json=chat(text=str(i))).status_code for i in range(30)
        ]

    sim.configure(fail_overload=0.3, seed=11)
    first = run()
    sim.reset()
    assert run() == first and 429 in first and 200 in first


def test_random_reset_and_malformed_with_an_aiohttp_client(sim: SimulatorProcess) -> None:
    import asyncio

    import aiohttp

    sim.configure(fail_reset=0.5, fail_malformed=0.5)

    async def one(session: aiohttp.ClientSession, i: int) -> str:
        try:
            async with session.post("/v1/chat/completions", json=chat(text=str(i))) as response:
                await response.json()
        except aiohttp.ContentTypeError:
            return "?"
        except json.JSONDecodeError:
            return "malformed"
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
            return "reset"
        return "ok"

    async def run() -> list[str]:
        headers = {"Authorization": "Bearer sk-test"}
        async with aiohttp.ClientSession(sim.root_url, headers=headers) as session:
            return [await one(session, i) for i in range(20)]

    outcomes = asyncio.run(run())
    assert set(outcomes) == {"reset", "malformed"}
