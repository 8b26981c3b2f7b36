"""A served chat completion: prefix-cache hits, usage and the ``chat.completion`` body."""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any

import orjson

from kimi_dagster.simulator.replies import Reply
from kimi_dagster.simulator.tokens import count_message
from kimi_dagster.simulator.validation import ChatRequest

MIN_CACHED_TOKENS = 64


class PrefixCache:
    """The provider's automatic prefix cache, reduced to one rule: a system prompt of at least
    64 tokens that this model has served before is a hit for its whole token count."""

    def __init__(self) -> None:
        self._seen: set[bytes] = set()

    def clear(self) -> None:
        self._seen.clear()

    @staticmethod
    def _key(request: ChatRequest) -> tuple[bytes, int] | None:
        first = request.body["messages"][0]
        if not request.spec.prefix_cache or first.get("role") != "system":
            return None
        tokens = count_message(first)
        if tokens < MIN_CACHED_TOKENS:
            return None
        text = orjson.dumps([request.model, first.get("content")])
        return hashlib.blake2b(text, digest_size=16).digest(), tokens

    def lookup(self, request: ChatRequest) -> int:
        """Cached tokens of this request."""
        key = self._key(request)
        return key[1] if key is not None and key[0] in self._seen else 0

    def remember(self, request: ChatRequest) -> None:
        key = self._key(request)
        if key is not None:
            self._seen.add(key[0])


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def completion_body(
    request: ChatRequest,
    reply: Reply,
    cached_tokens: int,
    *,
    completion_id: str,
    cached_location: str,
) -> dict[str, Any]:
    """The ``chat.completion`` object, with ``cached_tokens`` where the config puts it.

    With ``n`` > 1 every choice is the same deterministic reply, each billed.
    """
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.reasoning_content is not None:
        message["reasoning_content"] = reply.reasoning_content
    completion_tokens = reply.completion_tokens * request.choices
    usage: dict[str, Any] = {
        "prompt_tokens": request.prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": request.prompt_tokens + completion_tokens,
    }
    if cached_location in ("top", "both"):
        usage["cached_tokens"] = cached_tokens
    if cached_location in ("details", "both"):
        usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": [
            {"index": index, "message": message, "finish_reason": reply.finish_reason}
            for index in range(request.choices)
        ],
        "usage": usage,
    }
