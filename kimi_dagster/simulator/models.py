"""The simulated provider's model catalogue and price list, kept as data.

Prices are USD per million tokens from the provider's public pricing page (2026). The provider
publishes no price for kimi-k2-thinking; it is billed here like kimi-k2-0905-preview. The
moonshot-v1 models have no prefix cache, so their cache-hit price is the miss price.
"""

from __future__ import annotations

from dataclasses import dataclass

BATCH_PRICE_FACTOR = 0.6  # the Batch API is 40 % cheaper than real time
PRICES_AS_OF = "2026-01-01"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    context_tokens: int
    cache_hit: float  # USD per 1M cached input tokens
    cache_miss: float  # USD per 1M uncached input tokens
    output: float  # USD per 1M completion tokens
    fixed_sampling: bool  # temperature, top_p, n and penalties must not be sent
    thinking: str  # "optional" (default on), "always" or "never"
    prefix_cache: bool  # automatic prefix caching (the K2 family)
    batch: bool  # accepted by the Batch API


_ROWS: tuple[ModelSpec, ...] = (
    ModelSpec("kimi-k2.6", 262_144, 0.16, 0.95, 4.00, True, "optional", True, True),
    ModelSpec("kimi-k2.5", 262_144, 0.10, 0.60, 3.00, True, "optional", True, True),
    ModelSpec("kimi-k2-0905-preview", 262_144, 0.15, 0.60, 2.50, False, "never", True, False),
    ModelSpec("kimi-k2-turbo-preview", 262_144, 0.15, 1.15, 8.00, False, "never", True, False),
    ModelSpec("kimi-k2-thinking", 262_144, 0.15, 0.60, 2.50, False, "always", True, False),
    ModelSpec("moonshot-v1-8k", 8_192, 0.20, 0.20, 2.00, False, "never", False, False),
    ModelSpec("moonshot-v1-32k", 32_768, 1.00, 1.00, 3.00, False, "never", False, False),
    ModelSpec("moonshot-v1-128k", 131_072, 2.00, 2.00, 5.00, False, "never", False, False),
)

MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in _ROWS}


def cost_usd(
    spec: ModelSpec,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int,
    *,
    batch: bool = False,
) -> float:
    """What the provider bills for one request, rounded to 1e-12 USD so sums stay exact."""
    amount = (
        cached_tokens * spec.cache_hit
        + (prompt_tokens - cached_tokens) * spec.cache_miss
        + completion_tokens * spec.output
    ) / 1_000_000
    if batch:
        amount *= BATCH_PRICE_FACTOR
    return round(amount, 12)
