"""Billing: one line per billed request, and the account balance it draws down."""

from __future__ import annotations

import time
from typing import Any

from kimi_dagster.simulator.models import ModelSpec, cost_usd

NOTIONAL_BALANCE = 1_000_000.0  # what "unlimited" reports on the balance endpoint


class Ledger:
    """Only complete 200 answers (and completed batch lines) are billed."""

    def __init__(self, balance: float | None) -> None:
        self.reset(balance)

    def reset(self, balance: float | None) -> None:
        self.lines: list[dict[str, Any]] = []
        self.limited = balance is not None
        self.available = NOTIONAL_BALANCE if balance is None else balance
        self.spent = 0.0

    def set_balance(self, balance: float | None) -> None:
        self.limited = balance is not None
        self.available = NOTIONAL_BALANCE if balance is None else balance

    def exhausted(self) -> bool:
        return self.limited and self.available <= 0

    def charge(
        self,
        spec: ModelSpec,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int,
        *,
        request_id: str | None,
        completion_id: str,
        batch: bool,
    ) -> float:
        """Bill one answered request; returns its cost in USD."""
        cost = cost_usd(spec, prompt_tokens, completion_tokens, cached_tokens, batch=batch)
        self.lines.append(
            {
                "request_id": request_id,
                "id": completion_id,
                "model": spec.name,
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "cached_tokens": cached_tokens,
                "cost_usd": cost,
                "batch": batch,
                "ts": time.time(),
            }
        )
        self.spent += cost
        self.available -= cost
        return cost

    def balance(self) -> dict[str, float]:
        available = round(self.available, 6)
        return {"available_balance": available, "voucher_balance": 0.0, "cash_balance": available}
