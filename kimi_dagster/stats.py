"""What a run did, as it goes: counts, tokens, cost, rates, latency percentiles and an ETA.

The same object feeds the CLI progress line, Dagster log lines and observations during a run,
and the materialization's metadata at the end.
"""

from __future__ import annotations

import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kimi_dagster.client import ApiError, Reply
    from kimi_dagster.limits import RateLimiter
    from kimi_dagster.runner import WorkItem

RESERVOIR = 50_000  # latencies kept for percentiles: exact below this, a fair sample above


@dataclass
class RunStats:
    """What a run did so far; the progress line, the CLI summary and Dagster metadata read it."""

    limiter: RateLimiter | None = None
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    requests: int = 0
    retries: int = 0
    truncated: int = 0  # finish_reason == "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    gateway_tokens: int = 0  # as the gateway counted TPM: prompt + max_tokens per request
    cost_usd: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)  # every failed attempt, by type
    failed_by_type: Counter[str] = field(default_factory=Counter)  # final failures
    budget_exhausted: bool = False
    budgets: dict[str, tuple[float, float]] = field(default_factory=dict)  # name: (cap, spent)
    unmerged: bool = False  # a periodic merge found the file busy: results waited in the spool
    started: float = 0.0
    ended: float | None = None
    _latencies: list[float] = field(default_factory=list)
    _seen: int = 0
    _done_times: deque[float] = field(default_factory=deque)

    def start(self, total: int) -> None:
        self.total = total
        self.started = time.monotonic()

    def finish(self) -> None:
        self.ended = time.monotonic()

    def observe(
        self,
        item: WorkItem,
        outcome: str,
        latency_ms: float,
        reply: Reply | None,
        error: ApiError | None,
        cost: float,
    ) -> None:
        self.requests += 1
        if reply is not None:
            self.prompt_tokens += reply.prompt_tokens
            self.completion_tokens += reply.completion_tokens
            self.cached_tokens += reply.cached_tokens
            self.gateway_tokens += reply.prompt_tokens + item.max_tokens
            self.cost_usd += cost
            self.truncated += reply.finish_reason == "length"
            self._sample(latency_ms)
        if error is not None:
            self.errors[error.error_type] += 1
        if outcome == "retry":
            self.retries += 1
        elif outcome in ("ok", "failed"):
            if outcome == "ok":
                self.succeeded += 1
            else:
                self.failed += 1
                self.failed_by_type[error.error_type if error else "unknown"] += 1
            now = time.monotonic()
            self._done_times.append(now)
            while self._done_times and self._done_times[0] < now - 60:
                self._done_times.popleft()

    def _sample(self, latency_ms: float) -> None:
        self._seen += 1
        if len(self._latencies) < RESERVOIR:
            self._latencies.append(latency_ms)
        elif (slot := random.randrange(self._seen)) < RESERVOIR:
            self._latencies[slot] = latency_ms

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    @property
    def elapsed(self) -> float:
        return max(1e-9, (self.ended or time.monotonic()) - self.started)

    @property
    def rpm(self) -> float:
        """Requests per minute over the whole run."""
        return self.requests * 60 / self.elapsed

    @property
    def tpm(self) -> float:
        """Tokens per minute as the gateway charges them (prompt + max_tokens)."""
        return self.gateway_tokens * 60 / self.elapsed

    def latency_ms(self, quantile: float) -> float | None:
        if not self._latencies:
            return None
        ordered = sorted(self._latencies)
        return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]

    def eta_seconds(self) -> float | None:
        """Remaining items at the pace of the last minute."""
        remaining = self.total - self.done
        if remaining <= 0:
            return 0.0
        if len(self._done_times) < 2:
            return None
        span = max(1.0, self._done_times[-1] - self._done_times[0])
        return remaining * span / len(self._done_times)

    def progress_line(self) -> str:
        live = self.limiter.stats() if self.limiter else None
        eta = self.eta_seconds()
        parts = [
            f"{self.done:,}/{self.total:,} ({100 * self.done / max(1, self.total):.1f}%)",
            f"ok {self.succeeded:,}",
            f"failed {self.failed:,}",
        ]
        if live is not None:
            parts += [
                f"rpm {live.requests_last_minute:,}",
                f"tpm {live.tokens_last_minute:,}",
                f"in-flight {live.in_flight}",
                f"429s {live.rate_limited}",
            ]
        parts += [f"${self.cost_usd:,.4f}", f"ETA {_duration(eta)}"]
        return " | ".join(parts)

    def metadata(self) -> dict[str, Any]:
        """Numbers for Dagster metadata (plotted per partition) and the CLI summary; the live
        ones (``*_actual``: the last 60 s as the limiter counted them, ``in_flight``) are what
        the observations logged during a run show."""
        eta = self.eta_seconds()
        live = self.limiter.stats() if self.limiter else None
        data: dict[str, Any] = {
            "items": self.total,
            "done": self.done,
            "pct_done": round(100 * self.done / max(1, self.total), 2),
            "succeeded": self.succeeded,
            "failed": self.failed,
            "pending": self.total - self.done,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "requests": self.requests,
            "retries": self.retries,
            "truncated": self.truncated,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "cost_usd": round(self.cost_usd, 6),
            "rpm": round(self.rpm, 1),
            "tpm_gateway": round(self.tpm, 1),
            "elapsed_s": round(self.elapsed, 2),
            "rate_limited_429s": live.rate_limited if live else 0,
            "rpm_actual": live.requests_last_minute if live else None,
            "tpm_actual": live.tokens_last_minute if live else None,
            "in_flight": live.in_flight if live else None,
            "eta_seconds": None if eta is None else round(eta, 1),
        }
        if self.unmerged:
            data["merge_deferred"] = True
        for name, (cap, spent) in sorted(self.budgets.items()):
            data[f"budget_{name}_usd"] = cap
            data[f"budget_{name}_consumed"] = round(spent / cap, 4) if cap else 1.0
        for quantile in (0.5, 0.95):
            value = self.latency_ms(quantile)
            data[f"latency_p{int(quantile * 100)}_ms"] = round(value, 1) if value else None
        data.update({f"failed_{k}": v for k, v in sorted(self.failed_by_type.items())})
        return data


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"
