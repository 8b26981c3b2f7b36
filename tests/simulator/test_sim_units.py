"""Pure parts of the simulator: tokenizer, replies, sliding windows, config, prices."""

from __future__ import annotations

import json

import pytest

from kimi_dagster.simulator import SimulatorConfig, cost_usd, count_tokens, expected_reply
from kimi_dagster.simulator.gateway import DAY, Gateway, Limits, SlidingWindow
from kimi_dagster.simulator.models import MODELS
from kimi_dagster.simulator.process import config_argv
from kimi_dagster.simulator.tokens import count_text


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("word", 1),
        ("words", 2),
        ("Hello, world!", 6),  # Hell o , worl d !
        ("   \n\t", 0),
        ("中文字", 3),  # ceil(3 * 0.7)
        ("中文字中文字中文字中", 7),
        ("héllo", 3),  # h, é, llo
    ],
)
def test_count_text_rules(text: str, tokens: int) -> None:
    assert count_text(text) == tokens


def test_count_tokens_adds_framing_and_reads_text_parts() -> None:
    parts = [{"type": "text", "text": "word"}, {"type": "image_url", "image_url": {"url": "x"}}]
    assert count_tokens([{"role": "user", "content": "word"}]) == 3 + 4 + 1
    assert count_tokens([{"role": "user", "content": parts}]) == 3 + 4 + 1


def body(text: str = "hi", **params: object) -> dict[str, object]:
    return {"model": "kimi-k2-0905-preview", "messages": [{"role": "user", "content": text}]} | (
        params
    )


def test_reply_is_deterministic_and_marked_with_its_request_hash() -> None:
    first, again, other = expected_reply(body()), expected_reply(body()), expected_reply(body("x"))
    assert first == again
    assert first.content != other.content
    assert first.content.startswith("SIM-") and first.content[16] == ":"
    assert first.reasoning_content is None
    assert first.finish_reason == "stop"


@pytest.mark.parametrize("i", range(40))
def test_completion_tokens_are_the_tokenizers_count(i: int) -> None:
    request = body(f"item {i}", model="kimi-k2.5", max_tokens=1 + i * 7)
    reply = expected_reply(request)
    counted = count_text(reply.content) + count_text(reply.reasoning_content or "")
    assert reply.completion_tokens == counted <= 1 + i * 7


def test_reply_cut_at_max_tokens_reports_length() -> None:
    full = expected_reply(body(), reply_tokens=(100, 100))
    cut = expected_reply(body(max_tokens=10), reply_tokens=(100, 100))
    assert (full.completion_tokens, full.finish_reason) == (100, "stop")
    assert (cut.completion_tokens, cut.finish_reason) == (10, "length")
    assert full.content.startswith(cut.content)


def test_json_reply_is_an_object_with_the_marker() -> None:
    reply = expected_reply(body(response_format={"type": "json_object"}))
    data = json.loads(reply.content)
    assert data["sim"] == reply.content.split('"')[3] and data["sim"].startswith("SIM-")


def test_thinking_models_reason_unless_disabled() -> None:
    assert expected_reply(body(model="kimi-k2.6")).reasoning_content
    assert expected_reply(body(model="kimi-k2-thinking")).reasoning_content
    disabled = body(model="kimi-k2.6", thinking={"type": "disabled"})
    assert expected_reply(disabled).reasoning_content is None


def test_rpm_window_slides_and_names_the_wait() -> None:
    gateway = Gateway(Limits(concurrency=10, rpm=3, tpm=10**6, tpd=None))
    for t in (0.0, 10.0, 20.0):
        assert gateway.admit(1, t) is None
        gateway.release()
    rejection = gateway.admit(1, 30.0)
    assert rejection is not None and (rejection.limit, rejection.wait) == ("RPM", 30.0)
    assert "max RPM: 3, please try again after 30 seconds" in rejection.error().message
    assert gateway.admit(1, 59.9) is not None
    assert gateway.admit(1, 60.0) is None  # the request of t=0 has left the window


def test_tpm_charges_at_admission_and_waits_for_enough_tokens() -> None:
    gateway = Gateway(Limits(concurrency=10, rpm=100, tpm=1000, tpd=None))
    assert gateway.admit(600, 0.0) is None
    assert gateway.admit(300, 5.0) is None
    rejection = gateway.admit(200, 6.0)  # needs the 600 gone: at t=60
    assert rejection is not None and rejection.limit == "TPM" and rejection.wait == 54.0
    assert gateway.admit(100, 6.0) is None  # exactly fills 1000


def test_concurrency_and_tpd() -> None:
    gateway = Gateway(Limits(concurrency=1, rpm=100, tpm=10**6, tpd=1000))
    assert gateway.admit(10, 0.0) is None
    rejection = gateway.admit(10, 0.0)
    assert rejection is not None and rejection.limit == "concurrency"
    gateway.release()
    assert gateway.admit(985, 1.0) is None
    gateway.release()
    rejection = gateway.admit(10, 100.0)
    assert rejection is not None and rejection.limit == "TPD"
    assert rejection.wait == DAY + 1.0 - 100.0  # both charges merged into the t=1 entry


def test_window_merges_within_resolution_and_compacts() -> None:
    window = SlidingWindow(10.0, resolution=1.0)
    for i in range(10_000):
        window.add(1, i * 0.01)
    assert window.total(99.99) == 10_000
    assert window.total(200.0) == 0
    exact = SlidingWindow(10.0)
    for i in range(20_000):
        exact.add(1, float(i))
    assert exact.total(20_000.0) == 9  # 19991..19999: t=19990 is exactly 10 s old


def test_config_tiers_overrides_and_updates() -> None:
    config = SimulatorConfig(tier=0, rpm=10)
    assert config.limits() == Limits(1, 10, 500_000, 1_500_000)
    assert SimulatorConfig(tpd=0).limits().tpd is None
    assert config.updated({"tier": 2}).limits() == Limits(100, 500, 3_000_000, None)
    assert config.updated({"reply_tokens": "5:9"}).reply_tokens == (5, 9)
    with pytest.raises(ValueError, match="unknown"):
        config.updated({"port": 1})
    with pytest.raises(ValueError, match="probabilities"):
        SimulatorConfig(fail_5xx=0.7, fail_hang=0.5)
    assert config_argv(config) == ["--tier", "0", "--rpm", "10"]


def test_costs_follow_the_price_list() -> None:
    k26 = MODELS["kimi-k2.6"]
    assert cost_usd(k26, 1_000_000, 1_000_000, 0) == pytest.approx(4.95)
    assert cost_usd(k26, 1_000_000, 0, 1_000_000) == pytest.approx(0.16)
    assert cost_usd(k26, 1000, 100, 200, batch=True) == pytest.approx(
        0.6 * (200 * 0.16 + 800 * 0.95 + 100 * 4.0) / 1e6
    )
