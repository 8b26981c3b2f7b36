"""The HTTP client for Kimi's chat endpoint, and the classification of everything it can get back.

httpx is the API; the transport is aiohttp's (``httpx-aiohttp``) for its cheaper connection pool
at hundreds of concurrent requests (the two are not compared here; ``benchmarks/rate_limits.py``
prints the client's CPU per request). One client per run, its pool sized to its concurrency.
"""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

DEFAULT_BASE_URL = "https://api.moonshot.ai/v1"


def env_base_url() -> str:
    """``$MOONSHOT_BASE_URL`` (the .cn platform or a simulator), else the international one."""
    return os.environ.get("MOONSHOT_BASE_URL", DEFAULT_BASE_URL)


_RETRY_AFTER = re.compile(r"try again after (\d+(?:\.\d+)?) ?s", re.IGNORECASE)
_SECRET = re.compile(r"sk-[A-Za-z0-9_\-]{4,}")
_NAMED_LIMIT = re.compile(r"max (RPM|TPM|TPD|concurrency)\s*:?\s*(\d[\d,]*)", re.IGNORECASE)


class ErrorKind(enum.Enum):
    """What the runner does about an error (kimi-api.md's table, in one place)."""

    RATE_LIMIT = "rate_limit"  # 429 rate_limit_reached_error: wait as told, slow down, retry
    RETRYABLE = "retryable"  # overload 429, 5xx, timeouts, resets, broken bodies: back off, retry
    ITEM = "item"  # 400 invalid_request_error / content_filter: this item fails, run goes on
    FATAL = "fatal"  # 401, 403, 404, quota 429: stop the whole run


class ApiError(Exception):
    """A request that produced no usable reply."""

    def __init__(
        self,
        kind: ErrorKind,
        error_type: str,
        message: str,
        *,
        http_status: int | None = None,
        retry_after: float | None = None,
        limit: tuple[str, int] | None = None,
    ) -> None:
        self.kind = kind
        self.error_type = error_type
        self.message = redact(message)
        self.http_status = http_status
        self.retry_after = retry_after
        self.limit = limit  # a limit-429's named account limit, e.g. ("rpm", 5000)
        super().__init__(f"{error_type}: {self.message}")


@dataclass(frozen=True, slots=True)
class Reply:
    content: str
    reasoning: str | None
    finish_reason: str | None
    response_id: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int


def redact(text: str) -> str:
    """Remove anything shaped like an API key, so no error text can carry one."""
    return _SECRET.sub("sk-***", text)


def retry_after(message: str, headers: httpx.Headers | None = None) -> float | None:
    """Seconds to wait, from the 429 message ("please try again after N seconds") or headers."""
    if match := _RETRY_AFTER.search(message):
        return float(match.group(1))
    if headers is not None:
        for name in ("retry-after", "x-ratelimit-reset"):
            try:
                return float(headers[name])
            except (KeyError, ValueError):
                continue
    return None


def named_limit(message: str) -> tuple[str, int] | None:
    """The account limit a limit-429 names ("reached organization max RPM: 5000"), if any."""
    if match := _NAMED_LIMIT.search(message):
        return match.group(1).lower(), int(match.group(2).replace(",", ""))
    return None


def classify(status: int, body: bytes, headers: httpx.Headers | None = None) -> ApiError:
    """Map a non-200 response to an ApiError with the action kimi-api.md prescribes."""
    try:
        error = orjson.loads(body).get("error") or {}
        error_type, message = str(error.get("type", "")), str(error.get("message", ""))
    except (orjson.JSONDecodeError, AttributeError):
        error_type, message = "", body[:300].decode("utf-8", errors="replace")
    error_type = error_type or f"http_{status}"
    if status == 429:
        if error_type == "exceeded_current_quota_error":
            kind = ErrorKind.FATAL
            message = f"{message} (balance exhausted or account suspended: top up, then re-run)"
        elif error_type == "engine_overloaded_error":
            kind = ErrorKind.RETRYABLE
        else:
            kind = ErrorKind.RATE_LIMIT
        return ApiError(
            kind,
            error_type,
            message,
            http_status=status,
            retry_after=retry_after(message, headers),
            limit=named_limit(message) if kind is ErrorKind.RATE_LIMIT else None,
        )
    if status in (401, 403, 404):
        hint = {
            401: "check MOONSHOT_API_KEY and that it belongs to MOONSHOT_BASE_URL's platform",
            403: "the API is not open to this account",
            404: "unknown model or endpoint: check the model name and MOONSHOT_BASE_URL",
        }[status]
        return ApiError(ErrorKind.FATAL, error_type, f"{message} ({hint})", http_status=status)
    if status == 400 or 402 <= status < 500:
        return ApiError(ErrorKind.ITEM, error_type, message, http_status=status)
    return ApiError(ErrorKind.RETRYABLE, error_type, message, http_status=status)


def parse_reply(body: bytes) -> Reply:
    """Read a chat.completion body; a body that is not one is a retryable error."""
    try:
        data: dict[str, Any] = orjson.loads(body)
        choice = data["choices"][0]
        message = choice["message"]
        usage = data["usage"]
        cached = usage.get("cached_tokens")
        if cached is None:
            cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
        return Reply(
            content=message.get("content") or "",
            reasoning=message.get("reasoning_content"),
            finish_reason=choice.get("finish_reason"),
            response_id=data.get("id"),
            prompt_tokens=int(usage["prompt_tokens"]),
            completion_tokens=int(usage["completion_tokens"]),
            cached_tokens=int(cached or 0),
        )
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise ApiError(
            ErrorKind.RETRYABLE,
            "malformed_response",
            f"unreadable reply body ({exc!r})",
            http_status=200,
        ) from None


def _transport_error(exc: BaseException) -> ApiError:
    """Name a failed exchange by its root cause (the aiohttp transport maps resets to
    ``ConnectTimeout``, so httpx's class alone would call a reset a timeout)."""
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    if isinstance(root, (TimeoutError, aiohttp.ServerTimeoutError, httpx.TimeoutException)):
        return ApiError(ErrorKind.RETRYABLE, "timeout", f"no reply in time ({root!r})")
    return ApiError(ErrorKind.RETRYABLE, "connection_error", f"connection failed ({root!r})")


class KimiClient:
    """``async with KimiClient(url, key, concurrency=200) as client: await client.chat(...)``"""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        concurrency: int,
        timeout: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,  # tests pass httpx.MockTransport
    ) -> None:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._transport = transport or AiohttpTransport(limits=limits)
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 30.0)),
            transport=self._transport,
        )
        # The chat hot path goes to the transport with these prepared once: AsyncClient's
        # per-request URL merging, auth, redirect and cookie handling cost ~0.3 ms of CPU per
        # request (benchmarks/rate_limits.py), a third of the client's whole budget.
        self._chat_url = self._http.base_url.join("chat/completions")
        self._chat_headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
        }
        self._chat_extensions = {"timeout": self._http.timeout.as_dict()}

    async def __aenter__(self) -> KimiClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._http.aclose()

    async def chat(self, body: bytes, request_id: str) -> Reply:
        """POST one prepared chat body; raise ApiError for anything but a usable reply."""
        request = httpx.Request(
            "POST",
            self._chat_url,
            headers={**self._chat_headers, "X-Request-Id": request_id},
            content=body,
            extensions=self._chat_extensions,
        )
        try:
            response = await self._transport.handle_async_request(request)
            try:
                content = await response.aread()
            finally:
                await response.aclose()
        except (httpx.TransportError, aiohttp.ClientError, TimeoutError) as exc:
            raise _transport_error(exc) from None
        if response.status_code != 200:
            raise classify(response.status_code, content, response.headers)
        return parse_reply(content)

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Any endpoint (``path`` relative to the base URL; httpx keyword arguments): the 200
        response, else ApiError classified as for chat. The Files and Batch APIs use this."""
        try:
            response = await self._http.request(method, path, **kwargs)
        except (httpx.TransportError, aiohttp.ClientError, TimeoutError) as exc:
            raise _transport_error(exc) from None
        if response.status_code != 200:
            raise classify(response.status_code, response.content, response.headers)
        return response
