"""The simulator's tokenizer: the ground truth for ``usage.prompt_tokens``.

The provider publishes no offline tokenizer, so this approximates a BPE one with fixed rules:
a run of ASCII letters and digits costs one token per 4 characters (a leading space is free, as
in BPE's " word" tokens), every other visible ASCII character costs 1, CJK characters cost 0.7
each (rounded up per run), other non-ASCII text 1 per 2 characters, whitespace nothing. Each
message adds 4 tokens of framing and each request 3. Only text parts of a content list count.

The rules are additive over runs, which lets :mod:`replies` build texts of an exact token count.
Project code outside the simulator must not import this: the client estimates on its own, and
tests compare that estimate with this count.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

MESSAGE_OVERHEAD = 4
REQUEST_OVERHEAD = 3

_RUNS = re.compile(
    r"([A-Za-z0-9]+)"
    r"|([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+)"
    r"|([^\x00-\x7f]+)"
    r"|[!-/:-@\[-`{-~]"
)


def count_text(text: str) -> int:
    """Tokens of one piece of text under the rules above."""
    total = 0
    for word, cjk, other in _RUNS.findall(text):
        if word:
            total += (len(word) + 3) // 4
        elif cjk:
            total += (len(cjk) * 7 + 9) // 10
        elif other:
            total += (len(other) + 1) // 2
        else:
            total += 1
    return total


def content_texts(content: Any) -> Iterable[str]:
    """The text parts of a message's content: a string, or a list of parts with ``text``."""
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                yield part["text"]


def count_message(message: Mapping[str, Any]) -> int:
    """Tokens of one chat message: its text, its name and tool calls, and the framing."""
    total = MESSAGE_OVERHEAD + sum(count_text(t) for t in content_texts(message.get("content")))
    if isinstance(message.get("name"), str):
        total += count_text(message["name"])
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            total += count_text(str(function.get("name", "")))
            total += count_text(str(function.get("arguments", "")))
    return total


def count_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """``prompt_tokens`` of a request with these messages, exactly as the simulator bills it."""
    return REQUEST_OVERHEAD + sum(count_message(m) for m in messages)
