"""The Dagster assets: a dataset's ingest -> its chunk partitions' inference -> a summary.

``kimi_assets()`` builds them under a prefix so one code location can hold several
pipelines (the Component in ``component.py`` calls it from YAML). Each chunk of a dataset is a
dynamic partition ``<dataset>-<NNNNN>``; backfills, partition-level retries and "re-execute
from failure" are plain Dagster.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from kimi_dagster import batches
from kimi_dagster.batch_sensor import batch_sensor
from kimi_dagster.claims import ChunkBusy
from kimi_dagster.client import ApiError, ErrorKind
from kimi_dagster.engine import platform_currency, process_partitions
from kimi_dagster.estimate import estimate_stored
from kimi_dagster.ingest import DEFAULT_CHUNK_SIZE, IngestReport, ingest_file
from kimi_dagster.inputs import DEFAULT_MAX_TOKENS, DEFAULT_MODEL, ItemDefaults
from kimi_dagster.reports import dataset_summaries
from kimi_dagster.resource import KimiResource, KimiStore
from kimi_dagster.runner import RunAborted
from kimi_dagster.sensors import chunk_sensor, inbox_sensor
from kimi_dagster.stats import RunStats

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

DEFAULT_POOL = "kimi_api"


@dataclass(frozen=True)
class KimiAssets:
    """What ``kimi_assets`` builds; ``definitions()`` wraps it with resources."""

    inputs: dg.AssetsDefinition
    results: dg.AssetsDefinition
    summary: dg.AssetsDefinition
    partitions: dg.DynamicPartitionsDefinition
    inference_job: "UnresolvedAssetJobDefinition"  # what dg.define_asset_job returns
    sensors: list[dg.SensorDefinition]

    @property
    def assets(self) -> list[dg.AssetsDefinition]:
        return [self.inputs, self.results, self.summary]


@dataclass(frozen=True)
class CheckThresholds:
    """When the inference asset's checks fail (shares of the run's finished items)."""

    max_failure_rate: float = 0.05
    max_truncated_share: float = 0.10


@dataclass(frozen=True)
class ResourceKeys:
    """The resource keys the assets use. Dagster merges a code location's resources by key, so
    a second pipeline with its own account settings or DuckDB file needs its own keys."""

    kimi: str = "kimi"
    store: str = "store"


def pool_limit(instance: dg.DagsterInstance, pool: str) -> int | None:
    """The pool's slot limit from the instance (explicit, else the default), if it has pools."""
    try:
        for limit in instance.event_log_storage.get_pool_limits():
            if limit.name == pool:
                return limit.limit
        return instance.get_concurrency_config().pool_config.default_pool_limit
    except NotImplementedError:  # storages without pools (ephemeral instances)
        return None


def ingest_metadata(report: IngestReport) -> dict[str, dg.MetadataValue | int | str]:
    meta: dict[str, dg.MetadataValue | int | str] = {
        "dataset": report.dataset,
        "source_file": dg.MetadataValue.path(report.source_file),
        "lines": report.lines,
        "accepted": report.accepted,
        "unchanged": report.unchanged,
        "rejected": report.rejected,
        "partitions": len(report.partitions),
        "new_partitions": dg.MetadataValue.json(report.new_partitions),
        "est_input_tokens": report.est_input_tokens,
    }
    if report.rejected:
        meta["rejections"] = dg.MetadataValue.md("```\n" + report.describe_rejections() + "\n```")
    return meta


def kimi_assets(
    prefix: str = "kimi",
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    model: str = DEFAULT_MODEL,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    chunks_per_run: int = 4,
    pool: str = DEFAULT_POOL,
    group_name: str | None = None,
    inbox: str | Path | None = None,
    auto_run: bool = True,
    sensor_interval: int = 30,
    checks: CheckThresholds = CheckThresholds(),
    resource_keys: ResourceKeys = ResourceKeys(),
) -> KimiAssets:
    """Build one pipeline's assets. ``chunks_per_run`` is the backfill policy: how many chunk
    partitions one run processes back to back (no rate dip between them). ``inbox``: a folder
    whose new JSONL files are ingested by a sensor; ``auto_run``: run their chunks at once;
    ``sensor_interval``: seconds between the sensors' looks at the inbox, at new ingests and
    at open Batch API batches."""
    partitions = dg.DynamicPartitionsDefinition(name=f"{prefix}_chunks")
    group = group_name or prefix
    inputs_key = dg.AssetKey(f"{prefix}_inputs")
    results_key = dg.AssetKey(f"{prefix}_results")

    defaults = ItemDefaults(model=model, max_tokens=max_tokens)
    default_chunk_size = chunk_size  # the class body below cannot see shadowed closure names

    class IngestConfig(dg.Config):
        path: str = Field(description="JSONL file to ingest")
        dataset: str | None = Field(default=None, description="Default: from the file name")
        chunk_size: int | None = Field(
            default=None,
            description=f"Items per chunk of a new dataset (default {default_chunk_size}); an "
            "existing dataset keeps its own",
        )
        model: str = Field(default=defaults.model, description="Model for lines without one")
        max_tokens: int = Field(default=defaults.max_tokens, description="For lines without one")
        mode: str | None = Field(
            default=None,
            description="realtime | batch (Batch API, 60 % of the price), stored with the "
            "dataset; default: as stored, else realtime",
        )

    @dg.asset(
        key=inputs_key,
        group_name=group,
        kinds={"duckdb"},
        required_resource_keys={resource_keys.kimi, resource_keys.store},
    )
    def inputs(context: dg.AssetExecutionContext, config: IngestConfig) -> dg.MaterializeResult:
        """Prompts of a JSONL file, validated into DuckDB and split into chunk partitions;
        the metadata estimates what running them will cost and take (``kimi-dagster estimate``)."""
        kimi: KimiResource = getattr(context.resources, resource_keys.kimi)
        store: KimiStore = getattr(context.resources, resource_keys.store)
        report = ingest_file(
            store.db_path,
            config.path,
            dataset=config.dataset,
            chunk_size=config.chunk_size,
            defaults=ItemDefaults(model=config.model, max_tokens=config.max_tokens),
            default_chunk_size=default_chunk_size,
            currency=platform_currency(kimi.base_url),
        )
        if config.mode:
            batches.set_dataset_mode(store.db_path, report.dataset, config.mode)
        context.instance.add_dynamic_partitions(partitions.name, report.partitions)
        if report.rejected:
            context.log.warning(
                f"{report.rejected} line(s) rejected:\n{report.describe_rejections()}"
            )
        estimate = estimate_stored(store.db_path, report.dataset, kimi.estimate_plan())
        return dg.MaterializeResult(metadata=ingest_metadata(report) | estimate.metadata())

    class InferenceConfig(dg.Config):
        missing_only: bool = Field(
            default=False, description="Send only never-finished items; do not retry failures"
        )
        mode: str | None = Field(
            default=None, description="realtime | batch; default: the dataset's stored mode"
        )
        submit: bool = Field(
            default=True,
            description="Batch mode: submit pending items (false: only load finished batches)",
        )

    failure_check = dg.AssetCheckSpec(
        "failure_rate", asset=results_key, description="Share of the run's items that failed"
    )
    truncation_check = dg.AssetCheckSpec(
        "truncated_share", asset=results_key, description="Share of outputs cut at max_tokens"
    )
    budget_check = dg.AssetCheckSpec(
        "budget",
        asset=results_key,
        description="The run stayed within its budgets (the run's and the dataset's cap); "
        "the metadata shows the share of each consumed",
    )

    @dg.asset(
        key=results_key,
        deps=[inputs_key],
        check_specs=[failure_check, truncation_check, budget_check],
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=chunks_per_run),
        pool=pool,
        group_name=group,
        kinds={"duckdb"},
        required_resource_keys={resource_keys.kimi, resource_keys.store},
        retry_policy=dg.RetryPolicy(
            max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
        ),
    )
    async def results(
        context: dg.AssetExecutionContext, config: InferenceConfig
    ) -> dg.MaterializeResult:
        """Every pending item of the chunk(s) sent through the rate-limited Kimi client;
        results, tokens and cost recorded per attempt in DuckDB."""
        kimi: KimiResource = getattr(context.resources, resource_keys.kimi)
        store: KimiStore = getattr(context.resources, resource_keys.store)
        keys = list(context.partition_keys)
        mode = batches.check_mode(config.mode or batches.partition_mode(store.db_path, keys))
        if mode == "batch":
            return await batch_results(context, keys, kimi, store, config)
        if waiting := batches.list_batches(store.db_path, partition_keys=keys, open_only=True):
            raise dg.Failure(
                description=f"{waiting[0].partition_key} has an open batch "
                f"({waiting[0].batch_id or waiting[0].state}); a real-time run would pay for "
                "its items twice: wait for the batch sensor's load run, or `kimi-dagster cancel`",
                allow_retries=False,
            )

        def progress(stats: RunStats) -> None:
            context.log.info(stats.progress_line())
            context.log_event(
                dg.AssetObservation(
                    asset_key=results_key,
                    partition=keys[0] if len(keys) == 1 else None,
                    metadata=_numeric(stats.metadata()),
                )
            )

        try:
            stats = await process_partitions(
                store.db_path,
                keys,
                kimi.settings(pool_limit(context.instance, pool)),
                run_id=context.run.run_id,
                retry_failed=not config.missing_only,
                on_progress=progress,
            )
        except (RunAborted, ChunkBusy) as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        context.log.info(stats.progress_line())
        observe_partitions(context, keys, store.db_path)
        return dg.MaterializeResult(
            metadata=_numeric(stats.metadata()) | {"run_partitions": len(keys)},
            check_results=_check_results(stats, checks),
        )

    def observe_partitions(
        context: dg.AssetExecutionContext, keys: list[str], db_path: Path
    ) -> None:
        """Dagster 1.13 gives every partition of a multi-partition step the step's one
        metadata (the run's totals; per-partition output metadata does not exist, dagster
        issue 18123): record each partition's own outcomes as an observation of it."""
        if len(keys) < 2:
            return
        for key in keys:
            context.log_event(
                dg.AssetObservation(
                    asset_key=results_key,
                    partition=key,
                    metadata=batches.partition_outcomes(db_path, [key]),
                )
            )

    async def batch_results(
        context: dg.AssetExecutionContext,
        keys: list[str],
        kimi: KimiResource,
        store: KimiStore,
        config: InferenceConfig,
    ) -> dg.MaterializeResult:
        """Batch mode: load finished batches, finish interrupted submissions and (``submit``)
        submit pending items as new batches; the outcomes so far are the metadata."""
        try:
            report = await batches.sync_partitions(
                store.db_path,
                keys,
                kimi.settings(),
                submit=config.submit,
                retry_failed=not config.missing_only,
            )
        except batches.BatchModeError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        except ApiError as exc:  # ChunkBusy and transient errors: the retry policy's to retry
            if exc.kind is not ErrorKind.FATAL:
                raise
            raise dg.Failure(description=f"Batch API: {exc}", allow_retries=False) from None
        for record in report.loaded:
            context.log.info(
                f"loaded batch {record.batch_id} ({record.state}): {record.loaded_rows} lines"
            )
        outcome = batches.partition_outcomes(store.db_path, keys)
        stats = RunStats(
            total=int(outcome["items"]),
            succeeded=int(outcome["succeeded"]),
            failed=int(outcome["failed"]),
            truncated=int(outcome["truncated"]),
            cost_usd=float(outcome["cost_usd"]),
            budget_exhausted=report.budget_exhausted,
        )
        observe_partitions(context, keys, store.db_path)
        metadata = {
            "mode": "batch",
            "run_partitions": len(keys),
            **outcome,
            "batches_submitted": len(report.submitted),
            "batches_loaded": len(report.loaded),
            "batches_open": len(report.open),
            "batch_ids": dg.MetadataValue.json(
                [r.batch_id for r in batches.list_batches(store.db_path, partition_keys=keys)]
            ),
        }
        return dg.MaterializeResult(metadata=metadata, check_results=_check_results(stats, checks))

    @dg.asset(
        key=dg.AssetKey(f"{prefix}_summary"),
        deps=[results_key],
        group_name=group,
        kinds={"duckdb"},
        required_resource_keys={resource_keys.store},
    )
    def summary(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        """Per dataset: items, outcomes, tokens and cost so far (the dataset_summary view)."""
        store: KimiStore = getattr(context.resources, resource_keys.store)
        rows = dataset_summaries(store.db_path)
        return dg.MaterializeResult(
            metadata={
                "datasets": len(rows),
                "summary": dg.MetadataValue.md(_markdown_table(rows)),
                "cost_usd": float(sum(r["cost_usd"] for r in rows)),
            }
        )

    job = dg.define_asset_job(f"{prefix}_inference", selection=[results_key])
    sensors = [
        chunk_sensor(
            f"{prefix}_chunk_sensor",
            inputs_key,
            job.name,
            interval=sensor_interval,
            running=auto_run,
        )
    ]
    if inbox is not None:
        sensors.append(
            inbox_sensor(
                f"{prefix}_inbox_sensor", Path(inbox), inputs_key, interval=sensor_interval
            )
        )
    sensors.append(
        batch_sensor(
            f"{prefix}_batch_sensor",
            job.name,
            results_key,
            kimi_key=resource_keys.kimi,
            store_key=resource_keys.store,
            interval=sensor_interval,
        )
    )
    return KimiAssets(inputs, results, summary, partitions, job, sensors)


def _check_results(stats: RunStats, limits: CheckThresholds) -> list[dg.AssetCheckResult]:
    finished = max(1, stats.done)
    failure_rate = stats.failed / finished
    truncated = stats.truncated / max(1, stats.succeeded)
    return [
        dg.AssetCheckResult(
            check_name="failure_rate",
            passed=failure_rate <= limits.max_failure_rate,
            metadata={
                "failure_rate": failure_rate,
                "threshold": limits.max_failure_rate,
                "failed": stats.failed,
            },
        ),
        dg.AssetCheckResult(
            check_name="truncated_share",
            passed=truncated <= limits.max_truncated_share,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "truncated_share": truncated,
                "threshold": limits.max_truncated_share,
                "hint": "raise max_tokens for these prompts" if truncated else "",
            },
        ),
        dg.AssetCheckResult(
            check_name="budget",
            passed=not stats.budget_exhausted,
            metadata={
                "cost_usd": stats.cost_usd,
                "pending_after_budget": stats.total - stats.done,
                **{k: v for k, v in stats.metadata().items() if k.startswith("budget_")},
            },
        ),
    ]


def _numeric(meta: dict[str, object]) -> dict[str, object]:
    """Dagster plots numbers; None would not render, so drop it."""
    return {k: v for k, v in meta.items() if v is not None}


def _markdown_table(rows: list[dict[str, object]]) -> str:
    if not rows:
        return "_no datasets yet_"
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]
    return "\n".join(lines)
