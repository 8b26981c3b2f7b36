"""A YAML-configured Dagster Component, so a second dataset pipeline needs no Python:

```yaml
# defs/support_tickets/defs.yaml
type: kimi_dagster.component.KimiPipeline
attributes:
  prefix: tickets
  model_name: kimi-k2.5
  tier: 3
  chunk_size: 2000
  max_tokens: 64
  inbox: /data/tickets/inbox
  budget_usd: 500           # per run
  dataset_budgets: {tickets: 2000}   # per dataset, earlier runs' spend included
```
It builds the same assets, checks and sensors as ``kimi_assets`` plus the resources, under
the keys ``<prefix>_account`` and ``<prefix>_store``, so pipelines with different settings can
sit side by side in one code location.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from kimi_dagster.assets import ResourceKeys, kimi_assets
from kimi_dagster.ingest import DEFAULT_CHUNK_SIZE
from kimi_dagster.inputs import DEFAULT_MAX_TOKENS, DEFAULT_MODEL
from kimi_dagster.resource import KimiResource, KimiStore
from kimi_dagster.store import default_db_path


class KimiPipeline(dg.Component, dg.Model, dg.Resolvable):
    """One prompt pipeline: inbox -> ingest -> chunk inference through Kimi -> DuckDB."""

    prefix: str = Field(default="kimi", description="Names the assets: <prefix>_inputs, ...")
    model_name: str = Field(default=DEFAULT_MODEL, description="Model for lines without one")
    tier: int = Field(default=3, description="Account tier 0-5")
    chunk_size: int = Field(default=DEFAULT_CHUNK_SIZE, description="Items per partition")
    max_tokens: int = Field(default=DEFAULT_MAX_TOKENS, description="Default max_tokens")
    chunks_per_run: int = Field(default=4, description="Chunk partitions per backfill run")
    inbox: str | None = Field(default=None, description="Folder watched for new JSONL files")
    auto_run: bool = Field(default=True, description="Run new chunks as soon as ingested")
    sensor_interval: int = Field(
        default=30, description="Seconds between the sensors' looks at the inbox / new ingests"
    )
    budget_usd: float | None = Field(
        default=None, description="Per-run spending cap (USD; CNY on .cn)"
    )
    dataset_budgets: dict[str, float] = Field(
        default_factory=dict,
        description="Caps per dataset (USD; CNY on .cn; earlier runs' spend counts): "
        "{dataset: amount}",
    )
    db_path: str | None = Field(
        default=None, description="DuckDB file (default: env/.kimi_dagster)"
    )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        keys = ResourceKeys(kimi=f"{self.prefix}_account", store=f"{self.prefix}_store")
        pipeline = kimi_assets(
            self.prefix,
            chunk_size=self.chunk_size,
            model=self.model_name,
            max_tokens=self.max_tokens,
            chunks_per_run=self.chunks_per_run,
            inbox=self.inbox,
            auto_run=self.auto_run,
            sensor_interval=self.sensor_interval,
            resource_keys=keys,
        )
        return dg.Definitions(
            assets=pipeline.assets,
            jobs=[pipeline.inference_job],
            sensors=pipeline.sensors,
            resources={
                keys.kimi: KimiResource(
                    api_key=dg.EnvVar("MOONSHOT_API_KEY"),
                    tier=self.tier,
                    budget_usd=self.budget_usd,
                    dataset_budgets=self.dataset_budgets,
                ),
                keys.store: KimiStore(path=self.db_path or str(default_db_path())),
            },
        )
