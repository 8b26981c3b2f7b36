"""One JSONL line -> one normalized item, or a reason it was rejected.

Two line forms are accepted: the seed's ``{"id", "message"}`` and the full
``{"id", "messages": [...]}``; both may carry ``model``, ``system``, ``max_tokens``,
``temperature``, ``response_format``, ``thinking`` and ``metadata``. Everything the API would
refuse with a 400 is refused here instead, before it costs a request.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from kimi_dagster.catalogue import Catalogue, UnknownModel
from kimi_dagster.tokens import estimate_tokens, message_text

ROLES = frozenset({"system", "user", "assistant", "tool"})
KNOWN_FIELDS = frozenset(
    {
        "id",
        "message",
        "messages",
        "model",
        "system",
        "max_tokens",
        "temperature",
        "response_format",
        "thinking",
        "metadata",
    }
)
MAX_ID_LENGTH = 512


class LineError(ValueError):
    """Why a line cannot become an item; the message says what to fix."""


DEFAULT_MODEL = "kimi-k2.5"
DEFAULT_MAX_TOKENS = 1024  # the API's own default when max_tokens is omitted


@dataclass(frozen=True, slots=True)
class ItemDefaults:
    """What a line without ``model`` or ``max_tokens`` gets."""

    model: str = DEFAULT_MODEL
    max_tokens: int = DEFAULT_MAX_TOKENS


@dataclass(frozen=True, slots=True)
class Item:
    item_id: str
    model: str
    max_tokens: int
    est_input_tokens: int
    request: bytes  # the exact JSON body for /chat/completions
    request_sha256: str
    input_text: str
    metadata: bytes | None


def parse_line(
    raw: bytes, defaults: ItemDefaults, catalogue: Catalogue, currency: str = "USD"
) -> Item:
    """Validate and normalize one line (without its newline); raise LineError on bad input.
    Its model must have a price in ``currency`` (the billing platform's), or no run could
    price it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LineError(
            f"not valid UTF-8 (byte {exc.start}); re-encode the file as UTF-8"
        ) from None
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise LineError(f"not valid JSON ({exc}); each line must be one JSON object") from None
    if not isinstance(record, dict):
        raise LineError(f"expected a JSON object, got {type(record).__name__}")
    item_id = _item_id(record)
    unknown = set(record) - KNOWN_FIELDS
    if unknown:
        raise LineError(
            f"unknown field(s) {sorted(unknown)}; allowed: {sorted(KNOWN_FIELDS)} "
            '(put your own data under "metadata")'
        )

    model_name = _optional(record, "model", str) or defaults.model
    try:
        model = catalogue.model(model_name)
        catalogue.price(model_name, currency)
    except UnknownModel as exc:
        raise LineError(str(exc)) from None
    messages = _messages(record)
    max_tokens = _optional(record, "max_tokens", int)
    if max_tokens is None:
        max_tokens = defaults.max_tokens
    elif max_tokens <= 0:
        raise LineError(f"max_tokens must be a positive integer, got {max_tokens}")

    body: dict[str, Any] = {"model": model_name, "messages": messages, "max_tokens": max_tokens}
    temperature = _optional(record, "temperature", (int, float))
    if temperature is not None:
        if model.fixed_sampling:
            raise LineError(f'{model_name} fixes temperature; remove "temperature" from the line')
        if not 0 <= temperature <= 1:
            raise LineError(f"temperature must be within [0, 1] for Kimi, got {temperature}")
        body["temperature"] = temperature
    response_format = _optional(record, "response_format", dict)
    if response_format is not None:
        if response_format.get("type") not in ("text", "json_object", "json_schema"):
            raise LineError('response_format.type must be "text", "json_object" or "json_schema"')
        body["response_format"] = response_format
    thinking = _optional(record, "thinking", dict)
    if thinking is not None:
        if not model.thinking:
            raise LineError(f'{model_name} does not take "thinking"; remove it or use kimi-k2.6')
        if thinking.get("type") not in ("enabled", "disabled"):
            raise LineError('thinking.type must be "enabled" or "disabled"')
        body["thinking"] = thinking
    metadata = record.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise LineError("metadata must be a JSON object")

    est = estimate_tokens(messages)
    if est + max_tokens > model.context_tokens:
        raise LineError(
            f"about {est:,} input tokens + max_tokens {max_tokens:,} exceed {model_name}'s "
            f"{model.context_tokens:,}-token context; shorten the prompt or lower max_tokens"
        )
    request = orjson.dumps(body)
    return Item(
        item_id=item_id,
        model=model_name,
        max_tokens=max_tokens,
        est_input_tokens=est,
        request=request,
        request_sha256=hashlib.sha256(request).hexdigest(),
        input_text=_input_text(record, messages),
        metadata=orjson.dumps(metadata) if metadata is not None else None,
    )


def _item_id(record: dict[str, Any]) -> str:
    if "id" not in record:
        raise LineError('missing "id"; every line needs a unique "id"')
    value = record["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise LineError(f'"id" must be a string or integer, got {type(value).__name__}')
    item_id = str(value)
    if not item_id.strip():
        raise LineError('"id" is empty')
    if len(item_id) > MAX_ID_LENGTH or any(ord(ch) < 32 for ch in item_id):
        raise LineError(
            f'"id" must be at most {MAX_ID_LENGTH} characters, without control characters'
        )
    return item_id


def _optional(record: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise LineError(f'"{key}" must be {names}, got {type(value).__name__}')
    return value


def _messages(record: dict[str, Any]) -> list[dict[str, Any]]:
    has_message, has_messages = "message" in record, "messages" in record
    if has_message == has_messages:
        raise LineError('give exactly one of "message" (a string) or "messages" (a list)')
    system = _optional(record, "system", str)
    if has_message:
        message = record["message"]
        if not isinstance(message, str):
            raise LineError(f'"message" must be a string, got {type(message).__name__}')
        messages = [{"role": "user", "content": message}]
    else:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise LineError('"messages" must be a non-empty list of {"role", "content"} objects')
    if system is not None:
        messages = [{"role": "system", "content": system}, *messages]
    for n, message in enumerate(messages):
        _check_message(n, message)
    return messages


def _check_message(n: int, message: Any) -> None:
    if not isinstance(message, dict):
        raise LineError(f"messages[{n}] must be an object with role and content")
    role = message.get("role")
    if role not in ROLES:
        raise LineError(f"messages[{n}].role must be one of {sorted(ROLES)}, got {role!r}")
    content = message.get("content")
    if isinstance(content, list):
        if not content or not all(isinstance(p, dict) and "type" in p for p in content):
            raise LineError(
                f"messages[{n}].content list must hold typed parts like "
                '{"type": "text", "text": "..."}'
            )
    elif not isinstance(content, str):
        raise LineError(f"messages[{n}].content must be a string or a list of parts")
    if not message_text(content).strip() and role != "assistant":
        raise LineError(f"messages[{n}].content is empty; the API refuses empty messages")


def _input_text(record: dict[str, Any], messages: list[dict[str, Any]]) -> str:
    if isinstance(record.get("message"), str):
        return record["message"]
    users = [m for m in messages if m["role"] == "user"]
    return message_text((users or messages)[-1]["content"])
