"""The bad-line battery: every way a line can be wrong gets a reason that says what to fix."""

from __future__ import annotations

import orjson
import pytest

from kimi_dagster.catalogue import Catalogue, Model, Price
from kimi_dagster.inputs import ItemDefaults, LineError, parse_line

CATALOGUE = Catalogue(
    models={
        "kimi-k2.5": Model("kimi-k2.5", 262_144, True, True),
        "moonshot-v1-8k": Model("moonshot-v1-8k", 8_192, False, False),
    },
    prices={
        ("kimi-k2.5", "USD"): Price("kimi-k2.5", "USD", 0.10, 0.60, 3.00, 0.40),
        ("moonshot-v1-8k", "USD"): Price("moonshot-v1-8k", "USD", 0.20, 0.20, 2.00, 0.40),
    },
)


def parse(line: dict | bytes, **defaults: object):
    raw = line if isinstance(line, bytes) else orjson.dumps(line)
    return parse_line(raw, ItemDefaults(**defaults), CATALOGUE)  # type: ignore[arg-type]


def test_seed_form_becomes_a_user_message() -> None:
    item = parse({"id": "a", "message": "Hello"})
    body = orjson.loads(item.request)
    assert body == {
        "model": "kimi-k2.5",
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 1024,
    }
    assert item.input_text == "Hello"
    assert item.est_input_tokens > 0


def test_full_form_keeps_options_and_prepends_system() -> None:
    item = parse(
        {
            "id": 7,
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Yo"},
                {"role": "user", "content": [{"type": "text", "text": "Go on"}]},
            ],
            "system": "Be brief.",
            "model": "moonshot-v1-8k",
            "max_tokens": 64,
            "temperature": 0.2,
            "response_format": {"type": "json_object"},
            "metadata": {"ticket": 12},
        }
    )
    body = orjson.loads(item.request)
    assert item.item_id == "7"
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["temperature"] == 0.2 and body["max_tokens"] == 64
    assert body["response_format"] == {"type": "json_object"}
    assert item.input_text == "Go on"
    assert orjson.loads(item.metadata) == {"ticket": 12}


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b'{"id": "x", "message": "caf\xe9"}', "not valid UTF-8"),
        (b"[1, 2]", "expected a JSON object"),
        ({"message": "no id"}, 'missing "id"'),
        ({"id": "", "message": "x"}, '"id" is empty'),
        ({"id": True, "message": "x"}, '"id" must be a string or integer'),
        ({"id": "a\nb", "message": "x"}, "control characters"),
        ({"id": "x"}, 'exactly one of "message"'),
        ({"id": "x", "message": "a", "messages": []}, 'exactly one of "message"'),
        ({"id": "x", "message": ""}, "content is empty"),
        ({"id": "x", "message": 5}, '"message" must be a string'),
        ({"id": "x", "messages": []}, "non-empty list"),
        ({"id": "x", "messages": [{"role": "bot", "content": "hi"}]}, "role must be one of"),
        ({"id": "x", "messages": [{"role": "user", "content": None}]}, "must be a string or"),
        ({"id": "x", "message": "hi", "max_tokens": 0}, "positive integer"),
        ({"id": "x", "message": "hi", "max_tokens": "9"}, '"max_tokens" must be int'),
        ({"id": "x", "message": "hi", "temperature": 0.5}, "fixes temperature"),
        (
            {"id": "x", "message": "hi", "model": "moonshot-v1-8k", "temperature": 1.5},
            "within [0, 1]",
        ),
        ({"id": "x", "message": "hi", "model": "gpt-4"}, "unknown model 'gpt-4'"),
        ({"id": "x", "message": "hi", "thinking": {"type": "maybe"}}, "thinking.type"),
        (
            {
                "id": "x",
                "message": "hi",
                "model": "moonshot-v1-8k",
                "thinking": {"type": "enabled"},
            },
            'does not take "thinking"',
        ),
        ({"id": "x", "message": "hi", "response_format": {"type": "xml"}}, "response_format"),
        ({"id": "x", "message": "hi", "metadata": [1]}, "metadata must be a JSON object"),
        ({"id": "x", "message": "hi", "prompt": "?"}, "unknown field(s) ['prompt']"),
        (
            {"id": "x", "message": "word " * 40_000, "model": "moonshot-v1-8k"},
            "8,192-token context",
        ),
    ],
)
def test_bad_lines_are_rejected_with_a_reason(line: dict | bytes, reason: str) -> None:
    with pytest.raises(LineError) as caught:
        parse(line)
    assert reason in str(caught.value)
