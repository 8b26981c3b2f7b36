"""Account rate limits, and the limiter that keeps a run inside them.

The gateway counts sliding windows (requests and tokens per minute, tokens per day) and charges a
request's input tokens plus its max_tokens at admission. A bucket that bursts sends a minute's
budget in the first second and collects 429s; this limiter paces admissions evenly and checks the
exact sliding windows, so a run goes at the account's limits without crossing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Limits:
    """An account's rate limits (or one run's share of them); ``tpd`` None means unlimited."""

    concurrency: int
    rpm: int
    tpm: int
    tpd: int | None = None

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None or field.name != "tpd":
                _check_positive(field.name, value)

    def share(self, parts: int) -> Limits:
        """This run's share when ``parts`` runs spend one account: limits are per account."""
        _check_positive("parts", parts)
        return Limits(
            concurrency=max(1, self.concurrency // parts),
            rpm=max(1, self.rpm // parts),
            tpm=max(1, self.tpm // parts),
            tpd=None if self.tpd is None else max(1, self.tpd // parts),
        )


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")


TIERS: dict[int, Limits] = {
    0: Limits(concurrency=1, rpm=3, tpm=500_000, tpd=1_500_000),
    1: Limits(concurrency=50, rpm=200, tpm=2_000_000),
    2: Limits(concurrency=100, rpm=500, tpm=3_000_000),
    3: Limits(concurrency=200, rpm=5_000, tpm=3_000_000),
    4: Limits(concurrency=400, rpm=5_000, tpm=4_000_000),
    5: Limits(concurrency=1_000, rpm=10_000, tpm=5_000_000),
}


def resolve_limits(
    tier: int | None = 3,
    *,
    concurrency: int | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    tpd: int | None = None,
) -> Limits:
    """The tier's preset with every number given overriding it; without a tier, give them all."""
    given = {
        name: value
        for name, value in (("concurrency", concurrency), ("rpm", rpm), ("tpm", tpm), ("tpd", tpd))
        if value is not None
    }
    if tier is None:
        missing = [name for name in ("concurrency", "rpm", "tpm") if name not in given]
        if missing:
            raise ValueError(f"without a tier, give {', '.join(missing)}")
        return Limits(**given)
    if isinstance(tier, bool) or tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}: tiers are {min(TIERS)} to {max(TIERS)}")
    return replace(TIERS[tier], **given)


class LimitSettings(Protocol):
    """Where a tier and its overrides are configured: the CLI's flags or ``KimiResource``."""

    tier: int | None
    concurrency: int | None
    rpm: int | None
    tpm: int | None
    tpd: int | None


def configured_limits(config: LimitSettings) -> Limits:
    """``resolve_limits`` with the tier and the overrides read off ``config``."""
    return resolve_limits(
        config.tier, concurrency=config.concurrency, rpm=config.rpm, tpm=config.tpm, tpd=config.tpd
    )


@dataclass(frozen=True, slots=True, eq=False)
class Permit:
    """One admission: its token charge and clock time. Compared by identity: each permit is one
    ticket, handed back once through ``RateLimiter.release``."""

    tokens: int
    admitted_at: float


@dataclass(frozen=True, slots=True)
class LimiterStats:
    """A snapshot for progress lines and run metadata."""

    in_flight: int
    requests_last_minute: int
    tokens_last_minute: int
    rate_factor: float
    paused_until: float | None
    rate_limited: int


_SECOND = 1 / 60  # of the window: one second of the provider's minute (burst, day-ledger grain)
_WINDOWS_PER_DAY = 1_440
_DECREASE = 0.7  # rate_factor after a limit-429 ...
_DECREASE_EVERY = 2.0  # ... at most once per this many seconds (one burst of 429s, one cut)
_FLOOR = 0.05
_RECOVERY = 0.05  # rate_factor regained ...
_RECOVERY_EVERY = 5.0  # ... per this many seconds without a 429
_BACKOFF = 1.0  # pause after a 429 that named no wait
_RESTORE_AFTER = 300.0  # a limit lowered by a 429's message is lifted after this quiet time
_ADOPTABLE = ("concurrency", "rpm", "tpm")  # limits a 429 can lower (the day keeps its own)


class _Ledger:
    """Amounts recorded over the trailing ``span`` seconds, with their running sum.

    Records less than ``grain`` apart share a bucket that leaves only when all of it has left the
    span: the sum may over-count by one grain (never under-count) and a day of records at
    Tier 5 is 86,400 buckets, not millions. A bucket is ``[expires_at, amount]``.
    """

    __slots__ = ("_buckets", "cap", "grain", "span", "total")

    def __init__(self, span: float, cap: float, grain: float = 0.0) -> None:
        self.span = span
        self.cap = cap
        self.grain = grain
        self.total = 0
        self._buckets: deque[list] = deque()

    def expire(self, now: float) -> None:
        buckets = self._buckets
        while buckets and buckets[0][0] <= now:
            self.total -= buckets.popleft()[1]

    def add(self, now: float, amount: int) -> list:
        self.expire(now)
        self.total += amount
        buckets = self._buckets
        if buckets and buckets[-1][0] > now + self.span:  # still inside the newest grain
            buckets[-1][1] += amount
            return buckets[-1]
        bucket = [now + self.grain + self.span, amount]
        buckets.append(bucket)
        return bucket

    def revise(self, now: float, bucket: list, change: int) -> None:
        """Correct a recorded amount, if its bucket still counts."""
        self.expire(now)
        if bucket[0] > now:
            bucket[1] += change
            self.total += change

    def wait(self, now: float, amount: int) -> float:
        """Seconds until ``amount`` more fits under the cap (inf: never); reads only."""
        excess = self.total + amount - self.cap
        if excess <= 0:
            return 0.0
        for expires_at, held in self._buckets:
            excess -= held
            if excess <= 0:
                return expires_at - now
        return math.inf


class RateLimiter:
    """Admits requests as fast as an account's limits allow, and never faster.

    A request is charged the tokens the caller passes: estimated input + max_tokens, what the
    gateway charges at admission. With H = headroom, W = window (60 s) and f = rate_factor:

    - Sliding windows, exact: every window [t, t + W) holds at most max(1, floor(H * rpm))
      admissions, and their tokens, as recorded when the last of them was admitted (estimates,
      or actual charges already passed to ``release``), total at most H * tpm. Every day
      (1,440 W) holds at most H * tpd tokens when tpd is set. A charge revised upwards after
      later admissions cannot be undone; admissions after the revision wait for it.
    - Concurrency: an admission leaves at most max(1, floor(concurrency * f)) permits out.
    - Pacing: requests are spaced H * rpm * f / W per second and tokens H * tpm * f / W per
      second, with a burst of at most one second's worth (W / 60) of either. A new limiter starts
      with that burst spent: it runs at full pace at once but never sends a minute's budget in
      its first seconds. In steady state the binding limit is used at H.
    - ``penalize`` (a limit-429): no admission until the wait the 429 named; f is cut x0.7 (at
      most once per 2 s, floor 0.05) and regains 0.05 per 5 s without a 429, up to 1.
    - A 429 that names a lower account limit than configured ("max RPM: 2500": the provider
      lowered it) makes this limiter use that limit / ``share`` from then on, until 5 minutes
      pass without a 429; then the configured limits apply again (a 429 lowers them again if
      the provider still holds the lower one). AIMD alone would keep probing above the lower
      limit, and collect a burst of 429s every minute.
    - A request charged more tokens than a window (or a day) admits can never go:
      ``admit`` and ``acquire`` raise ValueError.
    """

    __slots__ = (
        "_budgets",
        "_burst",
        "_clock",
        "_configured",
        "_decreased_at",
        "_factor",
        "_freed",
        "_headroom",
        "_held",
        "_largest",
        "_limits",
        "_lowered",
        "_paused_until",
        "_penalized_at",
        "_queue",
        "_rate_limited",
        "_request_due",
        "_request_gap",
        "_requests",
        "_share",
        "_token_due",
        "_token_gap",
        "_tokens",
        "_window",
    )

    def __init__(
        self,
        limits: Limits,
        *,
        share: int = 1,
        headroom: float = 0.985,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < headroom <= 1:
            raise ValueError(f"headroom must be in (0, 1], got {headroom!r}")
        if not window > 0:
            raise ValueError(f"window must be positive, got {window!r}")
        _check_positive("share", share)
        self._configured = limits
        self._share = share  # runs spending the account at once: a named limit / share is ours
        self._lowered = False
        self._headroom = headroom
        self._window = window
        self._clock = clock
        self._burst = window * _SECOND
        self._requests = _Ledger(window, 0)
        self._tokens = _Ledger(window, 0)
        self._use(limits)
        # Every ledger a request's tokens are charged to: the minute, and the day when limited.
        self._budgets: tuple[_Ledger, ...] = (self._tokens,)
        if limits.tpd is not None:
            day = _Ledger(window * _WINDOWS_PER_DAY, headroom * limits.tpd, grain=self._burst)
            self._budgets += (day,)
        self._largest = min(ledger.cap for ledger in self._budgets)  # the configured limits'
        # Pacing: the next admission is due at *_due; it may go up to one burst early.
        self._request_due = self._token_due = clock() + self._burst
        self._held: dict[Permit, list[list]] = {}  # permit -> its bucket in each budget
        self._factor = 1.0  # rate_factor as of the last penalty; it recovers from there
        self._penalized_at = -math.inf
        self._decreased_at = -math.inf
        self._paused_until = -math.inf
        self._rate_limited = 0
        self._queue = asyncio.Lock()  # FIFO: only its holder waits on the limits
        self._freed = asyncio.Event()

    @property
    def limits(self) -> Limits:
        """The limits in force: the configured ones, or lower ones a 429 named."""
        self._restore(self._clock())
        return self._limits

    @property
    def largest_charge(self) -> int:
        """The largest token charge a request can ever be admitted with (``acquire`` refuses
        more): the smallest window of the configured limits, with headroom."""
        return math.floor(self._largest)

    def _use(self, limits: Limits) -> None:
        """Pace and cap by ``limits`` from now on (the windows keep what they hold)."""
        self._limits = limits
        self._request_gap = self._window / (self._headroom * limits.rpm)  # s per request, f = 1
        self._token_gap = self._window / (self._headroom * limits.tpm)  # s per token, f = 1
        self._requests.cap = max(1, math.floor(self._headroom * limits.rpm + 1e-9))
        self._tokens.cap = self._headroom * limits.tpm

    def _restore(self, now: float) -> None:
        if self._lowered and now - self._penalized_at >= _RESTORE_AFTER:
            self._lowered = False
            self._use(self._configured)

    def delay(self, tokens: int) -> float:
        """Seconds until a request charged ``tokens`` may be admitted: 0.0 now, inf while every
        concurrency slot is out (a release must come first) or if it never fits. Reads only."""
        return self._wait(self._clock(), tokens)

    def admit(self, tokens: int) -> Permit:
        """Record an admission now; the caller has seen ``delay(tokens) == 0``."""
        self._check(tokens)
        now = self._clock()
        wait = self._wait(now, tokens)
        if wait > 0:
            raise RuntimeError(f"not admissible for another {wait:.3f} s: wait for delay() first")
        return self._record(now, tokens)

    async def acquire(self, tokens: int) -> Permit:
        """Wait for admission in arrival order, so a large request is never overtaken by a stream
        of small ones."""
        self._check(tokens)
        async with self._queue:
            while True:
                now = self._clock()
                wait = self._wait(now, tokens)
                if wait <= 0:
                    return self._record(now, tokens)
                if wait == math.inf:  # every slot is out: the next release frees one
                    self._freed.clear()
                    # (or, under a limit a 429 lowered, its lifting may let a large one fit)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(_RESTORE_AFTER if self._lowered else None):
                            await self._freed.wait()
                else:
                    await asyncio.sleep(wait)

    def release(self, permit: Permit, *, actual_tokens: int | None = None) -> None:
        """Free the permit's slot. Given the real charge (usage.prompt_tokens + max_tokens), record
        it in place of the estimate, so the windows count what the gateway counted."""
        try:
            buckets = self._held.pop(permit)
        except KeyError:
            raise ValueError(
                "this permit was already released, or is not from this limiter"
            ) from None
        if actual_tokens is not None and actual_tokens != permit.tokens:
            now = self._clock()
            change = actual_tokens - permit.tokens
            for ledger, bucket in zip(self._budgets, buckets, strict=True):
                ledger.revise(now, bucket, change)
            self._token_due += change * self._token_gap / self._rate_factor(now)
        self._freed.set()

    def penalize(
        self, retry_after: float | None = None, named: tuple[str, int] | None = None
    ) -> None:
        """A limit-429 came back: pause admissions for the wait it named and slow down.
        ``named``: the account limit its message named, e.g. ("rpm", 2500)."""
        now = self._clock()
        if named is not None and named[0] in _ADOPTABLE:
            ours = max(1, named[1] // self._share)
            if ours < getattr(self._limits, named[0]):
                self._use(replace(self._limits, **{named[0]: ours}))
                self._lowered = True
        self._factor = self._rate_factor(now)
        if now - self._decreased_at >= _DECREASE_EVERY:
            self._factor = max(_FLOOR, self._factor * _DECREASE)
            self._decreased_at = now
        self._penalized_at = now
        wait = _BACKOFF if retry_after is None else retry_after
        self._paused_until = max(self._paused_until, now + wait)
        self._rate_limited += 1

    def stats(self) -> LimiterStats:
        now = self._clock()
        self._restore(now)
        self._requests.expire(now)
        self._tokens.expire(now)
        return LimiterStats(
            in_flight=len(self._held),
            requests_last_minute=self._requests.total,
            tokens_last_minute=self._tokens.total,
            rate_factor=self._rate_factor(now),
            paused_until=self._paused_until if self._paused_until > now else None,
            rate_limited=self._rate_limited,
        )

    def _check(self, tokens: int) -> None:
        if tokens > self._largest:
            raise ValueError(
                f"a request charged {tokens:,} tokens can never be admitted: at most "
                f"{math.floor(self._largest):,} fit a window of {self._configured} with headroom; "
                "lower its max_tokens or shorten its input"
            )

    def _rate_factor(self, now: float) -> float:
        if self._factor >= 1.0:
            return 1.0
        steps = (now - self._penalized_at) // _RECOVERY_EVERY
        return min(1.0, self._factor + _RECOVERY * steps)

    def _wait(self, now: float, tokens: int) -> float:
        self._restore(now)
        factor = self._rate_factor(now)
        if len(self._held) >= max(1, math.floor(self._limits.concurrency * factor + 1e-9)):
            return math.inf
        wait = max(
            self._paused_until - now,
            self._request_due - self._burst - now,
            self._token_due - self._burst - now,
            self._requests.wait(now, 1),
            *(ledger.wait(now, tokens) for ledger in self._budgets),
        )
        return max(wait, 0.0)

    def _record(self, now: float, tokens: int) -> Permit:
        factor = self._rate_factor(now)
        self._request_due = max(self._request_due, now) + self._request_gap / factor
        self._token_due = max(self._token_due, now) + tokens * self._token_gap / factor
        self._requests.add(now, 1)
        permit = Permit(tokens, now)
        self._held[permit] = [ledger.add(now, tokens) for ledger in self._budgets]
        return permit
