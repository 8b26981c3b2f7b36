"""The sensor that watches Batch API batches and has finished ones loaded by a run.

Each tick polls the provider for every open batch in DuckDB (status, request_counts), records
the answer, and reports it as an observation on the chunk partition. A batch that has reached
a final state gets a run of the inference asset for its partition (``mode: batch, submit:
false``): that run downloads the output and error files and loads them, idempotently, and its
materialization carries the partition's outcomes, so loads are visible and retryable in the UI.
A run key per batch and attempt means one load run per batch, however many ticks see it
finished, and a new one only after the last ended without loading it (say the chunk was busy);
a submission a crashed run left half done (no batch created) gets a run that finishes it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import dagster as dg

from kimi_dagster import batches
from kimi_dagster.resource import KimiResource, KimiStore

STALE_SUBMISSION = timedelta(minutes=10)  # a submission untouched this long lost its run
SUBMISSION_TAG = "kimi/batch_submission"


def batch_sensor(
    name: str,
    job_name: str,
    results_key: dg.AssetKey,
    *,
    kimi_key: str = "kimi",
    store_key: str = "store",
    interval: int = 30,
    running: bool = True,
) -> dg.SensorDefinition:
    """Poll open batches; request a load run for each finished one."""
    node = results_key.to_python_identifier()

    @dg.sensor(
        name=name,
        job_name=job_name,
        minimum_interval_seconds=interval,
        required_resource_keys={kimi_key, store_key},
        default_status=dg.DefaultSensorStatus.RUNNING
        if running
        else dg.DefaultSensorStatus.STOPPED,
        description="Polls Batch API batches; requests a load run when one finishes",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        store: KimiStore = getattr(context.resources, store_key)
        if not batches.list_batches(store.db_path, open_only=True):
            return dg.SkipReason("no open batches")
        kimi: KimiResource = getattr(context.resources, kimi_key)
        changed = asyncio.run(batches.poll(store.db_path, kimi.settings()))
        observations = [
            dg.AssetObservation(
                asset_key=results_key,
                partition=record.partition_key,
                metadata={
                    "batch_id": record.batch_id or "",
                    "batch_state": state,
                    "previous_state": record.state,
                },
            )
            for record, state in changed
        ]
        requests = []
        now = datetime.now(UTC)
        for record in batches.list_batches(store.db_path, open_only=True):
            stale = not record.batch_id and now - record.updated_at > STALE_SUBMISSION
            if not (record.terminal or stale):
                continue
            earlier = context.instance.get_runs(
                dg.RunsFilter(tags={SUBMISSION_TAG: record.submission_id})
            )
            if not all(run.is_finished for run in earlier):
                continue  # its load run is queued or running
            action = "load" if record.terminal else "resume"
            requests.append(
                dg.RunRequest(
                    run_key=f"batch-{action}:{record.submission_id}:{len(earlier)}",
                    partition_key=record.partition_key,
                    run_config={"ops": {node: {"config": {"mode": "batch", "submit": False}}}},
                    tags={
                        SUBMISSION_TAG: record.submission_id,
                        "kimi/batch_id": record.batch_id or "",
                        "kimi/batch_action": action,
                    },
                )
            )
        if not requests and not observations:
            return dg.SkipReason("batches still running; no change")
        return dg.SensorResult(run_requests=requests, asset_events=observations)

    return _sensor
