"""Sensors: an inbox folder of JSONL files -> ingest runs -> runs for the new chunk partitions.

Two steps, so that a big file is ingested inside a run (with logs, retries and no sensor
timeout) rather than inside a sensor tick: the inbox sensor requests one ingest run per new
or changed file; the chunk sensor follows each ingest's materialization and requests a run per
chunk partition it added. Runs then queue on the ``kimi_api`` pool, so the account's limits hold.
"""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import orjson

SETTLE_SECONDS = 2.0  # a file modified more recently than this may still be being written
INGESTS_PER_TICK = 100  # materializations of the ingest asset read per chunk-sensor tick


def inbox_sensor(
    name: str,
    inbox: Path,
    inputs_key: dg.AssetKey,
    *,
    interval: int = 30,
    running: bool = True,
) -> dg.SensorDefinition:
    """One ingest run per new (or modified) ``*.jsonl`` in ``inbox``."""

    @dg.sensor(
        name=name,
        target=[inputs_key],
        minimum_interval_seconds=interval,
        default_status=dg.DefaultSensorStatus.RUNNING
        if running
        else dg.DefaultSensorStatus.STOPPED,
        description=f"Ingests each new JSONL file dropped into {inbox}",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        if not inbox.is_dir():
            return dg.SkipReason(f"inbox {inbox} does not exist yet")
        seen: dict[str, str] = orjson.loads(context.cursor) if context.cursor else {}
        requests = []
        for file in sorted(inbox.glob("*.jsonl")):
            stat = file.stat()
            signature = f"{stat.st_mtime_ns}:{stat.st_size}"
            if seen.get(file.name) == signature or time.time() - stat.st_mtime < SETTLE_SECONDS:
                continue
            seen[file.name] = signature
            requests.append(
                dg.RunRequest(
                    run_key=f"{file.name}:{signature}",
                    asset_selection=[inputs_key],
                    run_config={
                        "ops": {inputs_key.to_python_identifier(): {"config": {"path": str(file)}}}
                    },
                    tags={"kimi/source_file": file.name},
                )
            )
        if not requests:
            return dg.SkipReason("no new files")
        return dg.SensorResult(run_requests=requests, cursor=orjson.dumps(seen).decode())

    return _sensor


def chunk_sensor(
    name: str,
    inputs_key: dg.AssetKey,
    job_name: str,
    *,
    interval: int = 30,
    running: bool = True,
) -> dg.SensorDefinition:
    """After each ingest, one run per chunk partition it added (from its ``new_partitions``).

    Every ingest since the cursor is read, oldest first: Dagster's ``asset_sensor`` passes only
    the latest one, which would drop the chunks of a file ingested just before another.
    """

    @dg.sensor(
        name=name,
        job_name=job_name,
        minimum_interval_seconds=interval,
        default_status=dg.DefaultSensorStatus.RUNNING
        if running
        else dg.DefaultSensorStatus.STOPPED,
        description="Requests a run for every chunk partition a new ingest added",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        after = int(context.cursor) if context.cursor else None
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=inputs_key, after_storage_id=after),
            limit=INGESTS_PER_TICK,
            ascending=True,
        ).records
        if not records:
            return dg.SkipReason("no new ingests")
        requests = []
        for record in records:
            materialization = record.asset_materialization
            new = materialization.metadata.get("new_partitions") if materialization else None
            requests += [
                dg.RunRequest(run_key=f"{record.run_id}:{key}", partition_key=key)
                for key in (new.value if new is not None else [])
            ]
        return dg.SensorResult(run_requests=requests, cursor=str(records[-1].storage_id))

    return _sensor
