"""Dagster resources: the Kimi account (key, endpoint, limits, retries) and the DuckDB file."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from kimi_dagster.client import env_base_url
from kimi_dagster.engine import Settings, platform_currency
from kimi_dagster.estimate import Plan
from kimi_dagster.limits import configured_limits
from kimi_dagster.runner import RunOptions
from kimi_dagster.store import default_db_path


class KimiResource(ConfigurableResource):
    """The Kimi account a run spends, and how fast it may spend it.

    ```python
    KimiResource(api_key=EnvVar("MOONSHOT_API_KEY"), tier=3, share=3)
    ```
    Limits are per account, not per key: when several runs go at once (as many as the
    ``kimi_api`` pool allows), each run takes that share of the account's limits.
    """

    api_key: str = Field(
        description="API key; pass EnvVar('MOONSHOT_API_KEY') so it never shows in run config."
    )
    base_url: str = Field(
        default_factory=env_base_url,
        description="API base: https://api.moonshot.ai/v1 (USD), https://api.moonshot.cn/v1 "
        "(CNY), or a simulator. Defaults to $MOONSHOT_BASE_URL.",
    )
    tier: int = Field(default=3, description="Account tier 0-5: the preset limits.")
    concurrency: int | None = Field(default=None, description="Override: requests in flight.")
    rpm: int | None = Field(default=None, description="Override: requests per minute.")
    tpm: int | None = Field(
        default=None, description="Override: tokens per minute (input + max_tokens)."
    )
    tpd: int | None = Field(default=None, description="Override: tokens per day.")
    share: int | None = Field(
        default=None,
        description="How many runs share the account at once; each run gets limits / share. "
        "Unset: the limit of the asset's Dagster pool (kimi_api), read from the instance.",
    )
    timeout: float = Field(default=120.0, description="Seconds to wait for one reply.")
    max_attempts: int = Field(
        default=5, description="Attempts per item for retryable errors (5xx, overload, resets)."
    )
    budget_usd: float | None = Field(
        default=None,
        description="Stop a run before it could spend more than this (in the platform's "
        "currency: USD, CNY on .cn).",
    )
    dataset_budgets: dict[str, float] = Field(
        default_factory=dict,
        description="Caps per dataset in the platform's currency (USD, CNY on .cn), counting "
        "earlier runs' spend: {dataset: usd}. "
        "A cap stored with `kimi-dagster budget` also holds; the stricter one wins.",
    )
    progress_interval: float = Field(
        default=10.0,
        description="Seconds between a run's progress log lines and asset observations "
        "(done/total, achieved RPM and TPM, cost, ETA).",
    )

    def settings(self, pool_limit: int | None = None) -> Settings:
        """The run's settings; ``pool_limit`` is used when ``share`` is not set."""
        limits = configured_limits(self)
        share = self.share or pool_limit or 1
        return Settings(
            api_key=self.api_key,
            limits=limits.share(share) if share > 1 else limits,
            base_url=self.base_url,
            timeout=self.timeout,
            options=RunOptions(
                max_attempts=self.max_attempts,
                budget_usd=self.budget_usd,
                dataset_budgets_usd=self.dataset_budgets,
                progress_interval=self.progress_interval,
            ),
            share=share,
        )

    def estimate_plan(self) -> Plan:
        """What ``estimate`` assumes for this account: its whole limits, its currency."""
        return Plan(limits=configured_limits(self), currency=platform_currency(self.base_url))


class KimiStore(ConfigurableResource):
    """The DuckDB file holding inputs, results and the ledger."""

    path: str = Field(
        default_factory=lambda: str(default_db_path()),
        description="DuckDB file; defaults to $KIMI_DAGSTER_DB or .kimi_dagster/kimi.duckdb.",
    )

    @property
    def db_path(self) -> Path:
        return Path(self.path)
