"""Fault injection: seeded random faults per admitted request, and deterministic test markers.

A message containing ``[[sim:fail=KIND:N]]`` makes the first N requests with that exact request
content (same model, messages, response_format, thinking) fail with KIND, later ones succeed.
``[[sim:content_filter]]`` is always rejected as high risk. Random faults are drawn from the
simulator's ``random.Random(seed)`` with the configured probabilities.
"""

from __future__ import annotations

import random
import re
from collections import Counter

from kimi_dagster.simulator.config import FAULTS, SimulatorConfig
from kimi_dagster.simulator.errors import HIGH_RISK, NO_BALANCE, OVERLOADED, ApiError, invalid
from kimi_dagster.simulator.tokens import content_texts
from kimi_dagster.simulator.validation import ChatRequest

CONTENT_FILTER_MARKER = "[[sim:content_filter]]"
_FAIL_MARKER = re.compile(r"\[\[sim:fail=([a-z_]+):(\d+)\]\]")

# Kinds answered with an ordinary error body; "reset", "hang" and "malformed" act on the wire,
# and "rate_limit" is answered as the gateway's own rejection (``app``), naming the real RPM.
_ERRORS: dict[str, tuple[int, str, str]] = {
    "server_error": (500, "server_error", "Internal server error, please try again later"),
    "overload": (429, "engine_overloaded_error", OVERLOADED),
    "quota": (429, "exceeded_current_quota_error", NO_BALANCE),
    "content_filter": (400, "content_filter", HIGH_RISK),
    "unauthorized": (401, "invalid_authentication_error", "Invalid Authentication"),
    "permission": (
        403,
        "permission_denied_error",
        "The API you are accessing is not open to your account",
    ),
    "not_found": (404, "resource_not_found_error", "Not found the model or Permission denied"),
}
WIRE_KINDS = frozenset({"reset", "hang", "malformed"})
MARKER_KINDS = frozenset(_ERRORS) | WIRE_KINDS | {"rate_limit"}

# Random "5xx" faults: a JSON server_error or a gateway's non-JSON page, as proxies send them.
_GATEWAY_PAGES: tuple[tuple[int, str, str], ...] = (
    (
        502,
        "text/html",
        "<html><head><title>502 Bad Gateway</title></head><body>"
        "<center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>",
    ),
    (
        503,
        "text/plain",
        "upstream connect error or disconnect/reset before headers. "
        "reset reason: connection termination",
    ),
    (
        504,
        "text/html",
        "<html><head><title>504 Gateway Time-out</title></head><body>"
        "<center><h1>504 Gateway Time-out</h1></center><hr><center>nginx</center></body></html>",
    ),
)


def error_for(kind: str) -> ApiError:
    """The error answer of a fault kind that is not one of :data:`WIRE_KINDS`."""
    return ApiError(*_ERRORS[kind])


def gateway_page(rng: random.Random) -> tuple[int, str, str] | None:
    """For a random 5xx: a (status, content type, body) page, or None for a JSON 500."""
    pick = rng.randrange(len(_GATEWAY_PAGES) + 1)
    return _GATEWAY_PAGES[pick] if pick < len(_GATEWAY_PAGES) else None


class FaultInjector:
    """Decides the fault of each admitted request; owns the per-content marker counters."""

    def __init__(self) -> None:
        self._seen: Counter[str] = Counter()

    def reset(self) -> None:
        self._seen.clear()

    def marked(self, request: ChatRequest) -> str | None:
        """The fault a marker asks for on this request, counting it; None when none applies."""
        for text in (t for m in request.body["messages"] for t in content_texts(m.get("content"))):
            if "[[sim:" not in text:
                continue
            if CONTENT_FILTER_MARKER in text:
                return "content_filter"
            match = _FAIL_MARKER.search(text)
            if match is None:
                continue
            kind, times = match[1], int(match[2])
            if kind not in MARKER_KINDS:
                raise invalid(f"unknown simulator fault kind {kind!r} in marker")
            self._seen[request.digest] += 1
            return kind if self._seen[request.digest] <= times else None
        return None


def draw_fault(rng: random.Random, config: SimulatorConfig) -> str | None:
    """A random fault kind of :data:`FAULTS` by the configured probabilities, or None."""
    if not any(config.fault_probability(kind) for kind in FAULTS):
        return None
    draw = rng.random()
    for kind in FAULTS:
        draw -= config.fault_probability(kind)
        if draw < 0:
            return kind
    return None
