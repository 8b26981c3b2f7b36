"""Models and prices, read from the DuckDB tables that ``sql/models.csv`` and ``sql/prices.csv``
fill: the catalogue changes every few months, so it is data, not code."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from kimi_dagster.store import sql


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    context_tokens: int
    fixed_sampling: bool  # temperature, top_p, n and penalties must not be sent
    thinking: bool  # accepts {"thinking": {"type": "enabled" | "disabled"}}
    batch_api: bool = False  # served by the Batch API (kimi-api.md: kimi-k2.6, kimi-k2.5)


@dataclass(frozen=True, slots=True)
class Price:
    """USD (or CNY) per million tokens, as in effect today."""

    model: str
    currency: str
    input_cache_hit: float
    input_cache_miss: float
    output: float
    batch_discount: float

    def cost(
        self, prompt_tokens: int, completion_tokens: int, cached_tokens: int, *, batch: bool = False
    ) -> float:
        """What one request is billed: cached input at the cache-hit price, the rest at miss."""
        cached = min(cached_tokens, prompt_tokens)
        amount = (
            cached * self.input_cache_hit
            + (prompt_tokens - cached) * self.input_cache_miss
            + completion_tokens * self.output
        ) / 1_000_000
        if batch:
            amount *= 1 - self.batch_discount
        return round(amount, 9)

    def worst_case(self, input_tokens: int, max_tokens: int, *, batch: bool = False) -> float:
        """The most one request can cost: no cache hit and every allowed output token."""
        return self.cost(input_tokens, max_tokens, 0, batch=batch)


class UnknownModel(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Catalogue:
    """The models and their current prices, read once per run so every attempt is priced alike."""

    models: dict[str, Model]
    prices: dict[tuple[str, str], Price]

    @classmethod
    def from_connection(cls, con: duckdb.DuckDBPyConnection) -> Catalogue:
        models = {row[0]: Model(*row) for row in con.execute(sql("queries/models")).fetchall()}
        prices = {}
        for model, currency, hit, miss, out, discount, _ in con.execute(
            sql("queries/current_prices")
        ).fetchall():
            prices[model, currency] = Price(
                model, currency, float(hit), float(miss), float(out), float(discount)
            )
        return cls(models, prices)

    def model(self, name: str) -> Model:
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models))
            raise UnknownModel(
                f"unknown model {name!r}; known models: {known} (add it to sql/models.csv)"
            ) from None

    def price(self, model: str, currency: str = "USD") -> Price:
        try:
            return self.prices[model, currency]
        except KeyError:
            priced = sorted(name for name, cur in self.prices if cur == currency)
            raise UnknownModel(
                f"no {currency} price for model {model!r} (models priced in {currency}: "
                f"{', '.join(priced) or 'none'}; the .cn platform bills in CNY, the .ai one in "
                "USD); use one of those, or add a row to a prices CSV (columns as "
                "sql/prices.csv) and point $KIMI_DAGSTER_PRICES at it"
            ) from None
