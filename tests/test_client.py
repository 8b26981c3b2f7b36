"""Client: every response class maps to the action kimi-api.md prescribes (MockTransport)."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest

from kimi_dagster.client import ApiError, ErrorKind, KimiClient, classify, redact, retry_after

OK = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hi", "reasoning_content": "think"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15, "cached_tokens": 4},
}


def error(kind: str, message: str = "m") -> bytes:
    return orjson.dumps({"error": {"type": kind, "message": message}})


@pytest.mark.parametrize(
    ("status", "body", "kind", "error_type"),
    [
        (
            429,
            error("rate_limit_reached_error", "max RPM: 5000, please try again after 7 seconds"),
            ErrorKind.RATE_LIMIT,
            "rate_limit_reached_error",
        ),
        (429, error("engine_overloaded_error"), ErrorKind.RETRYABLE, "engine_overloaded_error"),
        (
            429,
            error("exceeded_current_quota_error"),
            ErrorKind.FATAL,
            "exceeded_current_quota_error",
        ),
        (
            401,
            error("invalid_authentication_error"),
            ErrorKind.FATAL,
            "invalid_authentication_error",
        ),
        (403, error("permission_denied_error"), ErrorKind.FATAL, "permission_denied_error"),
        (404, error("resource_not_found_error"), ErrorKind.FATAL, "resource_not_found_error"),
        (400, error("invalid_request_error"), ErrorKind.ITEM, "invalid_request_error"),
        (400, error("content_filter"), ErrorKind.ITEM, "content_filter"),
        (500, error("server_error"), ErrorKind.RETRYABLE, "server_error"),
        (502, b"<html>Bad Gateway</html>", ErrorKind.RETRYABLE, "http_502"),
        (504, b"", ErrorKind.RETRYABLE, "http_504"),
    ],
)
def test_classify(status: int, body: bytes, kind: ErrorKind, error_type: str) -> None:
    err = classify(status, body)
    assert (err.kind, err.error_type, err.http_status) == (kind, error_type, status)


def test_retry_after_from_message_then_headers() -> None:
    assert retry_after("please try again after 7 seconds") == 7.0
    assert retry_after("no hint", httpx.Headers({"Retry-After": "3"})) == 3.0
    assert retry_after("no hint", httpx.Headers({})) is None


def test_a_limit_429_carries_the_limit_its_message_names() -> None:
    message = "request reached organization max TPM: 1,500,000, please try again after 2 seconds"
    err = classify(429, error("rate_limit_reached_error", message))
    assert (err.limit, err.retry_after) == (("tpm", 1_500_000), 2.0)
    assert classify(429, error("rate_limit_reached_error", "slow down")).limit is None
    assert classify(429, error("engine_overloaded_error", "max RPM: 5")).limit is None


def test_keys_are_redacted_from_messages() -> None:
    err = ApiError(ErrorKind.FATAL, "x", "bad key sk-abcdef123456 given")
    assert "sk-abcdef" not in str(err) and "sk-***" in err.message
    assert redact("Bearer sk-AAAA_bbbb-1") == "Bearer sk-***"


def run_chat(handler) -> object:
    async def go():
        async with KimiClient(
            "http://sim/v1", "sk-secret-key", concurrency=4, transport=httpx.MockTransport(handler)
        ) as client:
            return await client.chat(b'{"model": "m"}', "run:item:1")

    return asyncio.run(go())


def test_chat_sends_auth_and_request_id_and_reads_usage() -> None:
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(
            path=request.url.path,
            auth=request.headers["authorization"],
            rid=request.headers["x-request-id"],
            body=request.content,
        )
        return httpx.Response(200, json=OK)

    reply = run_chat(handler)
    assert seen == {
        "path": "/v1/chat/completions",
        "auth": "Bearer sk-secret-key",
        "rid": "run:item:1",
        "body": b'{"model": "m"}',
    }
    assert (reply.content, reply.reasoning, reply.prompt_tokens, reply.cached_tokens) == (
        "hi",
        "think",
        12,
        4,
    )


def test_cached_tokens_under_prompt_tokens_details() -> None:
    body = {
        **OK,
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 3,
            "prompt_tokens_details": {"cached_tokens": 9},
        },
    }
    assert run_chat(lambda r: httpx.Response(200, json=body)).cached_tokens == 9


def test_malformed_body_and_transport_errors_are_retryable() -> None:
    with pytest.raises(ApiError) as caught:
        run_chat(lambda r: httpx.Response(200, content=b'{"id": "x", "choi'))
    assert (caught.value.kind, caught.value.error_type) == (
        ErrorKind.RETRYABLE,
        "malformed_response",
    )

    def reset(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("connection reset by peer")

    with pytest.raises(ApiError) as caught:
        run_chat(reset)
    assert (caught.value.kind, caught.value.error_type) == (ErrorKind.RETRYABLE, "connection_error")

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out")

    with pytest.raises(ApiError) as caught:
        run_chat(slow)
    assert caught.value.error_type == "timeout"
