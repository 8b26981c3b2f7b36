"""Body validation of a chat request, in the provider's order: shape, parameters, context, model.

Rejections carry the provider's error types; the wording of messages is the simulator's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import orjson

from kimi_dagster.simulator.errors import invalid, not_found
from kimi_dagster.simulator.models import MODELS, ModelSpec
from kimi_dagster.simulator.replies import max_tokens_of, request_hash
from kimi_dagster.simulator.tokens import count_tokens

ROLES = frozenset({"system", "user", "assistant", "tool"})
FIXED_SAMPLING = ("temperature", "top_p", "n", "presence_penalty", "frequency_penalty")
RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})
MAX_N = 5


@dataclass(frozen=True)
class ChatRequest:
    """A validated request and what the gateway and billing need from it."""

    body: dict[str, Any]
    spec: ModelSpec
    prompt_tokens: int
    max_tokens: int

    @property
    def model(self) -> str:
        return self.spec.name

    @property
    def gateway_tokens(self) -> int:
        """What TPM/TPD are charged at admission: input plus the allowed output."""
        return self.prompt_tokens + self.max_tokens

    @property
    def choices(self) -> int:
        return self.body.get("n") or 1

    @cached_property
    def digest(self) -> str:
        return request_hash(self.body)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_content(index: int, message: Mapping[str, Any]) -> None:
    content = message.get("content")
    if message.get("role") == "assistant" and message.get("tool_calls") and not content:
        return
    if isinstance(content, str):
        if not content:
            raise invalid(f"messages[{index}].content must not be empty")
        return
    if not isinstance(content, list):
        raise invalid(f"messages[{index}].content must be a string or a list of typed parts")
    if not content:
        raise invalid(f"messages[{index}].content must not be empty")
    for part in content:
        if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
            raise invalid(f"messages[{index}].content parts must be objects with a type")
        if part["type"] == "text" and not (isinstance(part.get("text"), str) and part["text"]):
            raise invalid(f"messages[{index}].content text parts need a non-empty text")


def check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise invalid("messages must be a non-empty list")
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise invalid(f"messages[{index}] must be an object")
        if message.get("role") not in ROLES:
            raise invalid(f"messages[{index}].role must be one of {', '.join(sorted(ROLES))}")
        _check_content(index, message)


def _check_parameters(body: Mapping[str, Any], model: str) -> None:
    spec = MODELS.get(model)
    if spec is not None and spec.fixed_sampling:
        for name in FIXED_SAMPLING:
            if body.get(name) is not None:
                raise invalid(f"{name} is fixed for model {model} and must not be sent")
    temperature = body.get("temperature")
    if temperature is not None and not (_is_number(temperature) and 0 <= temperature <= 1):
        raise invalid("temperature must be a number in [0, 1]")
    top_p = body.get("top_p")
    if top_p is not None and not (_is_number(top_p) and 0 <= top_p <= 1):
        raise invalid("top_p must be a number in [0, 1]")
    for name in ("presence_penalty", "frequency_penalty"):
        value = body.get(name)
        if value is not None and not (_is_number(value) and -2 <= value <= 2):
            raise invalid(f"{name} must be a number in [-2, 2]")
    n = body.get("n")
    if n is not None and not (_is_positive_int(n) and n <= MAX_N):
        raise invalid(f"n must be an integer from 1 to {MAX_N}")
    for name in ("max_tokens", "max_completion_tokens"):
        if body.get(name) is not None and not _is_positive_int(body[name]):
            raise invalid(f"{name} must be a positive integer")
    fmt = body.get("response_format")
    if fmt is not None and not (isinstance(fmt, Mapping) and fmt.get("type") in RESPONSE_FORMATS):
        raise invalid("response_format.type must be text, json_object or json_schema")
    thinking = body.get("thinking")
    if thinking is not None and not (
        isinstance(thinking, Mapping) and thinking.get("type") in ("enabled", "disabled")
    ):
        raise invalid('thinking must be {"type": "enabled"} or {"type": "disabled"}')
    if body.get("stream"):
        raise invalid("stream is not supported by the simulator")


def parse_chat(raw: bytes) -> ChatRequest:
    """Validate a chat completion body; raises :class:`ApiError` like the provider would."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object")
    return check_chat(body)


def check_chat(body: dict[str, Any]) -> ChatRequest:
    """Validate an already decoded chat body (also used for Batch API lines)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model is required")
    if "messages" not in body:
        raise invalid("messages is required")
    check_messages(body["messages"])
    _check_parameters(body, model)
    prompt_tokens = count_tokens(body["messages"])
    max_tokens = max_tokens_of(body)
    spec = MODELS.get(model)
    if spec is None:
        raise not_found(model)
    if prompt_tokens + max_tokens > spec.context_tokens:
        raise invalid(
            f"Your request exceeded model token limit: {spec.context_tokens} "
            f"(input {prompt_tokens} + max_tokens {max_tokens})"
        )
    return ChatRequest(body, spec, prompt_tokens, max_tokens)
