"""The chat endpoint over real HTTP: auth, validation, replies, usage, bill, cache, balance."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from kimi_dagster.simulator import MODELS, SimulatorProcess, cost_usd, expected_reply

from .simtools import chat, error_of


def post(client: httpx.Client, body: Any, **kwargs: Any) -> httpx.Response:
    return client.post("/chat/completions", json=body, **kwargs)


@pytest.mark.parametrize(
    ("header", "kind"),
    [
        (None, "invalid_authentication_error"),
        ("Bearer", "invalid_authentication_error"),
        ("Basic sk-abc", "invalid_authentication_error"),
        ("Bearer abc", "invalid_authentication_error"),
    ],
)
def test_missing_or_malformed_key_is_401(sim: SimulatorProcess, header: str | None, kind: str):
    headers = {} if header is None else {"Authorization": header}
    response = httpx.post(f"{sim.base_url}/chat/completions", json=chat(), headers=headers)
    assert error_of(response)[:2] == (401, kind)


def test_configured_key_must_match(sim: SimulatorProcess, client: httpx.Client) -> None:
    sim.configure(api_key="sk-right")
    assert error_of(post(client, chat()))[:2] == (401, "incorrect_api_key_error")
    ok = post(client, chat(), headers={"Authorization": "Bearer sk-right"})
    assert ok.status_code == 200


def test_other_v1_routes_need_auth(sim: SimulatorProcess) -> None:
    response = httpx.get(f"{sim.base_url}/users/me/balance")
    assert error_of(response)[:2] == (401, "invalid_authentication_error")


INVALID: list[tuple[str, Any]] = [
    ("not json", b"{nope"),
    ("not an object", b"[1]"),
    ("no model", {"messages": [{"role": "user", "content": "x"}]}),
    ("no messages", {"model": "kimi-k2.6"}),
    ("empty messages", chat() | {"messages": []}),
    ("messages not a list", chat() | {"messages": "hi"}),
    ("empty content", chat(text="")),
    ("bad role", chat() | {"messages": [{"role": "robot", "content": "x"}]}),
    ("content a number", chat() | {"messages": [{"role": "user", "content": 3}]}),
    ("untyped part", chat() | {"messages": [{"role": "user", "content": [{"text": "x"}]}]}),
    ("temperature > 1", chat("kimi-k2-0905-preview", temperature=1.5)),
    ("temperature on k2.6", chat("kimi-k2.6", temperature=0.5)),
    ("top_p on k2.5", chat("kimi-k2.5", top_p=0.9)),
    ("n on k2.5", chat("kimi-k2.5", n=1)),
    ("penalty on k2.6", chat("kimi-k2.6", presence_penalty=0.1)),
    ("n > 5", chat("moonshot-v1-8k", n=6)),
    ("max_tokens 0", chat(max_tokens=0)),
    ("max_tokens text", chat(max_tokens="100")),
    ("over the context", chat("moonshot-v1-8k", max_tokens=8190)),
    ("bad response_format", chat(response_format={"type": "xml"})),
    ("bad thinking", chat(thinking={"type": "maybe"})),
    ("stream", chat(stream=True)),
]


@pytest.mark.parametrize(("case", "body"), INVALID, ids=[case for case, _ in INVALID])
def test_invalid_bodies_are_400(client: httpx.Client, case: str, body: Any) -> None:
    response = (
        client.post("/chat/completions", content=body)
        if isinstance(body, bytes)
        else post(client, body)
    )
    assert error_of(response)[:2] == (400, "invalid_request_error"), case


def test_context_window_counts_input_plus_max_tokens(client: httpx.Client) -> None:
    prompt = post(client, chat("moonshot-v1-8k", max_tokens=10)).json()["usage"]["prompt_tokens"]
    assert post(client, chat("moonshot-v1-8k", max_tokens=8192 - prompt)).status_code == 200
    response = post(client, chat("moonshot-v1-8k", max_tokens=8193 - prompt))
    status, _, message = error_of(response)
    assert status == 400 and "token limit: 8192" in message


def test_unknown_model_is_404_after_validation(client: httpx.Client) -> None:
    assert error_of(post(client, chat("kimi-k9")))[:2] == (404, "resource_not_found_error")
    assert error_of(post(client, chat("kimi-k9", text="")))[0] == 400


def test_content_filter_marker(client: httpx.Client) -> None:
    status, kind, message = error_of(post(client, chat(text="x [[sim:content_filter]]")))
    assert (status, kind) == (400, "content_filter") and "high risk" in message


def test_success_is_the_expected_reply_and_billed_right(
    sim: SimulatorProcess, client: httpx.Client
) -> None:
    bodies = [
        chat("kimi-k2.6", "one", max_tokens=300),
        chat("kimi-k2.5", "two", thinking={"type": "disabled"}),
        chat("kimi-k2-thinking", "three", max_tokens=15),
        chat("moonshot-v1-32k", "four", response_format={"type": "json_object"}, n=2),
        chat("kimi-k2-turbo-preview", "five", temperature=0.3),
    ]
    for i, body in enumerate(bodies):
        response = post(client, body, headers={"X-Request-Id": f"item-{i}:1"})
        assert response.status_code == 200, response.text
        data = response.json()
        reply = expected_reply(body)
        choices = body.get("n", 1)
        assert data["object"] == "chat.completion" and data["model"] == body["model"]
        assert data["id"].startswith("chatcmpl-") and len(data["choices"]) == choices
        message = data["choices"][0]["message"]
        assert message["content"] == reply.content
        assert message.get("reasoning_content") == reply.reasoning_content
        assert data["choices"][0]["finish_reason"] == reply.finish_reason
        usage = data["usage"]
        assert usage["completion_tokens"] == reply.completion_tokens * choices
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        estimate = client.post(
            "/tokenizers/estimate-token-count",
            json={"model": body["model"], "messages": body["messages"]},
        )
        assert estimate.json() == {"data": {"total_tokens": usage["prompt_tokens"]}}

    bill = sim.bill()
    assert [line["request_id"] for line in bill] == [f"item-{i}:1" for i in range(len(bodies))]
    for line in bill:
        recomputed = cost_usd(
            MODELS[line["model"]],
            line["prompt_tokens"],
            line["completion_tokens"],
            line["cached_tokens"],
        )
        assert line["cost_usd"] == pytest.approx(recomputed, abs=1e-12)
        assert line["batch"] is False
    assert bodies[2] and bill[2]["completion_tokens"] == 15
    requests = sim.requests()
    assert [r["status"] for r in requests] == [200] * len(bodies)
    assert requests[0]["gateway_tokens"] == bill[0]["prompt_tokens"] + 300
    assert requests[1]["gateway_tokens"] == bill[1]["prompt_tokens"] + 1024


def test_repeated_long_system_prompt_is_cached(sim: SimulatorProcess, client: httpx.Client):
    system = {"role": "system", "content": "You are a careful writer. " * 30}
    short = {"role": "system", "content": "Be brief."}

    def ask(model: str, first: dict[str, str], text: str) -> dict[str, Any]:
        body = {"model": model, "messages": [first, {"role": "user", "content": text}]}
        return post(client, body).json()["usage"]

    first = ask("kimi-k2.6", system, "a")
    second = ask("kimi-k2.6", system, "b")
    assert first["cached_tokens"] == 0
    assert 64 <= second["cached_tokens"] < second["prompt_tokens"]
    assert ask("kimi-k2.5", system, "c")["cached_tokens"] == 0  # caches are per model
    assert (
        ask("kimi-k2.6", short, "d")["cached_tokens"]
        == ask("kimi-k2.6", short, "e")["cached_tokens"]
        == 0
    )
    assert ask("moonshot-v1-8k", system, "f")["cached_tokens"] == 0
    assert ask("moonshot-v1-8k", system, "g")["cached_tokens"] == 0  # no cache off the K2 family
    line = sim.bill()[1]
    k26 = MODELS["kimi-k2.6"]
    assert line["cost_usd"] == pytest.approx(
        cost_usd(k26, second["prompt_tokens"], second["completion_tokens"], second["cached_tokens"])
    )
    sim.configure(cached_tokens_location="details")
    usage = ask("kimi-k2.6", system, "h")
    assert "cached_tokens" not in usage and usage["prompt_tokens_details"]["cached_tokens"] > 0


def test_exhausted_balance_is_a_quota_429(sim: SimulatorProcess, client: httpx.Client) -> None:
    sim.configure(balance=0.0001)
    assert client.get("/users/me/balance").json()["data"]["available_balance"] == 0.0001
    assert post(client, chat(max_tokens=100)).status_code == 200  # ~0.0004 USD: now negative
    balance = client.get("/users/me/balance").json()["data"]
    assert balance["available_balance"] < 0
    status, kind, _ = error_of(post(client, chat(max_tokens=100)))
    assert (status, kind) == (429, "exceeded_current_quota_error")
    assert len(sim.bill()) == 1


def test_models_listing(client: httpx.Client) -> None:
    names = {m["id"] for m in client.get("/models").json()["data"]}
    assert names == set(MODELS)


def test_ratelimit_headers_only_when_asked(sim: SimulatorProcess, client: httpx.Client) -> None:
    assert "X-RateLimit-Limit" not in post(client, chat()).headers
    sim.configure(ratelimit_headers=True)
    headers = post(client, chat()).headers
    assert headers["X-RateLimit-Limit"] == "10000"
    assert headers["X-RateLimit-Remaining"] == "9998"


def test_reply_length_follows_live_reply_tokens(sim: SimulatorProcess, client: httpx.Client):
    sim.configure(reply_tokens=(30, 30))
    body = chat("kimi-k2-turbo-preview", "sized")
    message = post(client, body).json()["choices"][0]["message"]
    assert message["content"] == sim.expected_reply(body).content != expected_reply(body).content
    assert sim.expected_reply(body).completion_tokens == 30
