"""Deterministic replies: what the simulator answers to a request, as a pure function of it.

The reply is derived from a SHA-256 of the canonical request (model, messages, response_format
and whether thinking is on), so a test can recompute every stored output with
:func:`expected_reply`. The content starts with ``SIM-<first 12 hex of the hash>:`` and goes on
with pseudo-words from a PRNG seeded by the hash until a drawn length; with ``response_format``
json_object or json_schema it is the JSON object ``{"sim": "SIM-<hex>", "text": "..."}`` (the
schema itself is not followed). A reply longer than ``max_tokens`` is cut there, token-exact,
with ``finish_reason`` "length" (a cut JSON reply is invalid JSON, as with the real API).
Every text is built from pieces worth exactly one token under :mod:`tokens`, so
``completion_tokens`` equals the tokenizer's count of reasoning plus content.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from kimi_dagster.simulator.models import MODELS

DEFAULT_MAX_TOKENS = 1024
REASONING_TOKENS = (8, 40)

_SYLLABLES = tuple(c + v for c in "bdfgklmnprstvz" for v in "aeiou")


@dataclass(frozen=True, slots=True)
class Reply:
    content: str
    reasoning_content: str | None
    completion_tokens: int
    finish_reason: str  # "stop" or "length"


def max_tokens_of(body: Mapping[str, Any]) -> int:
    """The output cap a request asks for (``max_completion_tokens`` wins), or the default."""
    value = body.get("max_completion_tokens")
    if value is None:
        value = body.get("max_tokens")
    return DEFAULT_MAX_TOKENS if value is None else int(value)


def thinking_enabled(body: Mapping[str, Any]) -> bool:
    """Whether the reply carries ``reasoning_content``: on by default where the model allows."""
    spec = MODELS.get(body.get("model", ""))
    if spec is None or spec.thinking == "never":
        return False
    if spec.thinking == "always":
        return True
    thinking = body.get("thinking")
    return not (isinstance(thinking, Mapping) and thinking.get("type") == "disabled")


def request_hash(body: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the parts of a request that decide its reply."""
    canonical = {
        "model": body.get("model"),
        "messages": body.get("messages"),
        "response_format": body.get("response_format"),
        "thinking": thinking_enabled(body),
    }
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _words(rng: random.Random, count: int, *, lead: str, paragraphs: bool) -> list[str]:
    """``count`` one-token pieces: words of at most 4 letters, full stops, paragraph breaks."""
    pieces: list[str] = []
    sentence_left = 0
    sentences = 0
    while len(pieces) < count:
        if sentence_left == 0 and pieces:
            pieces.append(".")
            sentences += 1
            sentence_left = -1
            continue
        word = rng.choice(_SYLLABLES)
        if rng.random() < 0.6:
            word += rng.choice(_SYLLABLES)
        gap = " " if pieces else lead
        if sentence_left <= 0:
            sentence_left = rng.randint(4, 14)
            word = word.capitalize()
            if paragraphs and sentences and sentences % 4 == 0:
                gap = "\n\n"
        sentence_left -= 1
        pieces.append(gap + word)
    return pieces


def _marker(digest: str) -> list[str]:
    return ["SIM", "-", digest[0:4], digest[4:8], digest[8:12]]


def _content_pieces(rng: random.Random, digest: str, target: int, as_json: bool) -> list[str]:
    if as_json:
        head = ["{", '"', "sim", '"', ":", ' "', *_marker(digest), '"', ",", ' "', "text", '"']
        head += [":", ' "']
        tail = ['"', "}"]
        body = _words(rng, max(target - len(head) - len(tail), 1), lead="", paragraphs=False)
        return head + body + tail
    head = [*_marker(digest), ":"]
    return head + _words(rng, max(target - len(head), 1), lead=" ", paragraphs=True)


def expected_reply(body: Mapping[str, Any], *, reply_tokens: tuple[int, int] = (20, 200)) -> Reply:
    """The reply the simulator gives to ``body`` when it answers 200 (and in batch output)."""
    digest = request_hash(body)
    rng = random.Random(int(digest, 16))
    target = rng.randint(*reply_tokens)
    reasoning = (
        _words(rng, rng.randint(*REASONING_TOKENS), lead="", paragraphs=False)
        if thinking_enabled(body)
        else None
    )
    fmt = body.get("response_format")
    as_json = isinstance(fmt, Mapping) and fmt.get("type") in ("json_object", "json_schema")
    content = _content_pieces(rng, digest, target, as_json)

    budget = max_tokens_of(body)
    wanted = len(content) + len(reasoning or ())
    if reasoning is not None:
        reasoning = reasoning[:budget]
        budget -= len(reasoning)
    content = content[:budget]
    return Reply(
        content="".join(content),
        reasoning_content=None if reasoning is None else "".join(reasoning),
        completion_tokens=len(content) + len(reasoning or ()),
        finish_reason="length" if wanted > max_tokens_of(body) else "stop",
    )
