"""Local token estimate for a chat request.

Kimi publishes no offline tokenizer, and the gateway charges TPM at admission as input tokens +
max_tokens, so the limiter needs an estimate before each request. The rule: one token per 4
ASCII characters, 0.7 per other character (CJK text runs about 1.5 characters a token), plus
4 tokens of framing per message and 3 per request. It errs slightly high for English so the
limiter stays under the limit; the runner reconciles it with ``usage.prompt_tokens`` as
replies arrive (see ``EstimateCorrection``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

MESSAGE_OVERHEAD = 4
REQUEST_OVERHEAD = 3


def text_tokens(text: str) -> int:
    non_ascii = len(text.encode("utf-8")) - len(text)  # 0 for pure ASCII; cheap
    if not non_ascii:
        return math.ceil(len(text) / 4)
    wide = sum(1 for ch in text if ord(ch) > 127)
    return math.ceil((len(text) - wide) / 4 + wide * 0.7)


def message_text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a typed-part list."""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, Mapping))


def estimate_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    total = REQUEST_OVERHEAD
    for message in messages:
        total += MESSAGE_OVERHEAD + text_tokens(message_text(message.get("content", "")))
    return total


class EstimateCorrection:
    """Learns the ratio actual/estimated prompt tokens from replies (an exponential average).

    The limiter charges ``corrected(estimate) + max_tokens``; starting at 1.0 and bounded to
    [0.5, 2.0] so one odd reply cannot swing the budget.
    """

    __slots__ = ("ratio",)

    def __init__(self) -> None:
        self.ratio = 1.0

    def observe(self, estimated: int, actual: int) -> None:
        if estimated > 0 and actual > 0:
            sample = min(2.0, max(0.5, actual / estimated))
            self.ratio += 0.05 * (sample - self.ratio)

    def corrected(self, estimated: int) -> int:
        return math.ceil(estimated * self.ratio * 1.02)  # 2 % margin on the learned ratio
