"""Admission at the provider's gateway: concurrency, RPM, TPM and TPD of one account.

The provider counts sliding windows of *admitted* requests (a rejected request costs nothing):
RPM over the last 60 s, TPM over the last 60 s charging each request ``prompt_tokens +
max_tokens`` at admission, TPD over the last 24 h. Each window keeps its entries in arrays with
a running sum, so admitting, expiring and computing "try again after N seconds" take
O(log n) amortized, never a scan of the window.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass

from kimi_dagster.simulator.errors import ORG, ApiError

MINUTE = 60.0
DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Limits:
    concurrency: int
    rpm: int
    tpm: int
    tpd: int | None  # None: unlimited


TIERS: dict[int, Limits] = {
    0: Limits(1, 3, 500_000, 1_500_000),
    1: Limits(50, 200, 2_000_000, None),
    2: Limits(100, 500, 3_000_000, None),
    3: Limits(200, 5_000, 3_000_000, None),
    4: Limits(400, 5_000, 4_000_000, None),
    5: Limits(1_000, 10_000, 5_000_000, None),
}


class SlidingWindow:
    """Amounts added in the last ``span`` seconds.

    Entries closer than ``resolution`` seconds to the newest are merged into it (and expire with
    it, i.e. up to ``resolution`` late), which bounds memory for the 24 h window.
    """

    __slots__ = ("_cum", "_head", "_resolution", "_span", "_start", "_times")

    def __init__(self, span: float, resolution: float = 0.0) -> None:
        self._span = span
        self._resolution = resolution
        self.clear()

    def clear(self) -> None:
        self._times: list[float] = []
        self._cum: list[int] = []  # running total up to and including each entry
        self._head = 0  # first entry still in the window
        self._start = 0  # running total before entry 0

    def _expire(self, now: float) -> None:
        self._head = bisect_right(self._times, now - self._span, self._head)
        if self._head > 4096 and self._head * 2 > len(self._times):
            self._start = self._cum[self._head - 1]
            del self._times[: self._head], self._cum[: self._head]
            self._head = 0

    def _before(self, index: int) -> int:
        return self._cum[index - 1] if index > 0 else self._start

    def total(self, now: float) -> int:
        self._expire(now)
        return (self._cum[-1] if self._cum else self._start) - self._before(self._head)

    def add(self, amount: int, now: float) -> None:
        if self._times and now - self._times[-1] <= self._resolution:
            self._times[-1] = now
            self._cum[-1] += amount
            return
        self._times.append(now)
        self._cum.append((self._cum[-1] if self._cum else self._start) + amount)

    def wait(self, amount: int, limit: int, now: float) -> float:
        """Seconds until ``amount`` more fits under ``limit``; 0 if it fits now."""
        if self.total(now) + amount <= limit:
            return 0.0
        if amount > limit:
            return self._span  # never fits; the provider still answers with a wait
        # The window must lose entries until what stays plus amount fits:
        # cum[-1] - cum[k] + amount <= limit for the last expired entry k.
        k = bisect_left(self._cum, self._cum[-1] + amount - limit, self._head)
        return self._times[k] + self._span - now


@dataclass(frozen=True, slots=True)
class Rejection:
    limit: str  # "concurrency", "RPM", "TPM" or "TPD"
    value: int
    wait: float  # seconds

    def error(self) -> ApiError:
        seconds = max(1, math.ceil(self.wait))
        return ApiError(
            429,
            "rate_limit_reached_error",
            f"Your account {ORG} request reached organization max {self.limit}: {self.value}, "
            f"please try again after {seconds} seconds",
        )


class Gateway:
    """One account's admission control; single-threaded (the event loop's), no locks."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.in_flight = 0
        self.max_in_flight = 0
        self._requests = SlidingWindow(MINUTE)
        self._tokens = SlidingWindow(MINUTE)
        self._daily = SlidingWindow(DAY, resolution=1.0)

    def reset(self) -> None:
        """Empty the windows; requests still in flight stay counted until they end."""
        self.max_in_flight = self.in_flight
        for window in (self._requests, self._tokens, self._daily):
            window.clear()

    def admit(self, tokens: int, now: float) -> Rejection | None:
        """Admit one request charged ``tokens`` (counted in flight until :meth:`release`)."""
        limits = self.limits
        if self.in_flight >= limits.concurrency:
            return Rejection("concurrency", limits.concurrency, 1.0)
        wait = self._requests.wait(1, limits.rpm, now)
        if wait:
            return Rejection("RPM", limits.rpm, wait)
        wait = self._tokens.wait(tokens, limits.tpm, now)
        if wait:
            return Rejection("TPM", limits.tpm, wait)
        if limits.tpd is not None:
            wait = self._daily.wait(tokens, limits.tpd, now)
            if wait:
                return Rejection("TPD", limits.tpd, wait)
        self._requests.add(1, now)
        self._tokens.add(tokens, now)
        self._daily.add(tokens, now)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return None

    def release(self) -> None:
        self.in_flight -= 1

    def usage(self, now: float) -> dict[str, int]:
        """What the windows hold now (TPD is tracked even while unlimited)."""
        return {
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "requests_last_minute": self._requests.total(now),
            "tokens_last_minute": self._tokens.total(now),
            "tokens_last_day": self._daily.total(now),
        }

    def headers(self, now: float) -> dict[str, str]:
        """``X-RateLimit-*`` headers for the RPM window (optional; clients must not need them)."""
        limit = self.limits.rpm
        used = self._requests.total(now)
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(0, limit - used)),
            "X-RateLimit-Reset": str(math.ceil(self._requests.wait(1, limit, now))),
        }
