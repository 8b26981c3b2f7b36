"""The simulated account: config, gateway, faults, prefix cache, bill and request log.

Everything here runs on the server's event loop thread; the HTTP layer (:mod:`app`) and the
Batch API (:mod:`batches`) both serve completions through :meth:`SimulatorState.serve`.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from kimi_dagster.simulator.completions import PrefixCache, completion_body, new_completion_id
from kimi_dagster.simulator.config import SimulatorConfig
from kimi_dagster.simulator.errors import NO_BALANCE, ApiError
from kimi_dagster.simulator.faults import FaultInjector, draw_fault
from kimi_dagster.simulator.gateway import Gateway
from kimi_dagster.simulator.ledger import Ledger
from kimi_dagster.simulator.replies import Reply, expected_reply
from kimi_dagster.simulator.validation import ChatRequest


class SimulatorState:
    """One account's mutable state; the routes of :mod:`app` and :mod:`batches` share it."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.gateway = Gateway(config.limits())
        self.rng = random.Random(config.seed)
        self.faults = FaultInjector()
        self.cache = PrefixCache()
        self.ledger = Ledger(config.balance)
        self.requests: list[dict[str, Any]] = []
        self.by_status: Counter[str] = Counter()
        self.by_error: Counter[str] = Counter()

    def configure(self, changes: Mapping[str, Any]) -> SimulatorConfig:
        """Apply a partial config live (limits, latency, faults, balance, seed, ...)."""
        config = self.config.updated(changes)
        self.config = config
        self.gateway.limits = config.limits()
        if "seed" in changes:
            self.rng.seed(config.seed)
        if "balance" in changes:
            self.ledger.set_balance(config.balance)
        return config

    def reset(self) -> None:
        """Forget all traffic: logs, windows, cache, marker counters, bill; restore the balance."""
        self.gateway.reset()
        self.rng.seed(self.config.seed)
        self.faults.reset()
        self.cache.clear()
        self.ledger.reset(self.config.balance)
        self.requests.clear()
        self.by_status.clear()
        self.by_error.clear()

    def check_auth(self, header: str | None) -> None:
        scheme, _, key = (header or "").partition(" ")
        if scheme != "Bearer" or not key.startswith("sk-"):
            raise ApiError(401, "invalid_authentication_error", "Invalid Authentication")
        if self.config.api_key is not None and key != self.config.api_key:
            raise ApiError(401, "incorrect_api_key_error", "Incorrect API key provided")

    def log_request(self, request_id: str | None) -> dict[str, Any]:
        """A request log entry, filled in by :meth:`finish` when its outcome is known."""
        record = {
            "request_id": request_id,
            "ts": time.time(),
            "status": None,
            "error": None,
            "gateway_tokens": 0,
            "model": None,
        }
        self.requests.append(record)
        return record

    def finish(self, record: dict[str, Any], status: int | None, error: str | None = None) -> None:
        record["status"] = status
        record["error"] = error
        self.by_status[str(status)] += 1
        if error is not None:
            self.by_error[error] += 1

    def admit(self, request: ChatRequest, record: dict[str, Any]) -> None:
        """Balance, then the rate limits; on success the request is in flight."""
        if self.ledger.exhausted():
            raise ApiError(429, "exceeded_current_quota_error", NO_BALANCE)
        rejection = self.gateway.admit(request.gateway_tokens, time.monotonic())
        if rejection is not None:
            raise rejection.error()
        record["gateway_tokens"] = request.gateway_tokens

    def fault(self, request: ChatRequest) -> str | None:
        """The fault this admitted request meets: a marker's first, else a random draw."""
        marked = self.faults.marked(request)
        return marked or draw_fault(self.rng, self.config)

    def reply(self, request: ChatRequest) -> Reply:
        return expected_reply(request.body, reply_tokens=self.config.reply_tokens)

    def latency(self, completion_tokens: int) -> float:
        config = self.config
        base = config.latency + config.latency_per_token * completion_tokens
        return base * (1 + config.latency_jitter * self.rng.uniform(-1, 1))

    def serve(
        self, request: ChatRequest, reply: Reply, *, request_id: str | None, batch: bool
    ) -> dict[str, Any]:
        """The completion body of an answered request, cached and billed."""
        cached = self.cache.lookup(request)
        completion_id = new_completion_id()
        body = completion_body(
            request,
            reply,
            cached,
            completion_id=completion_id,
            cached_location=self.config.cached_tokens_location,
        )
        self.cache.remember(request)
        usage = body["usage"]
        self.ledger.charge(
            request.spec,
            usage["prompt_tokens"],
            usage["completion_tokens"],
            cached,
            request_id=request_id,
            completion_id=completion_id,
            batch=batch,
        )
        return body

    def stats(self) -> dict[str, Any]:
        return {
            "requests": len(self.requests),
            "by_status": dict(self.by_status),
            "by_error": dict(self.by_error),
            **self.gateway.usage(time.monotonic()),
            "billed_requests": len(self.ledger.lines),
            "billed_usd": round(self.ledger.spent, 9),
            "balance": self.ledger.balance(),
            "config": self.config.to_dict(),
        }
