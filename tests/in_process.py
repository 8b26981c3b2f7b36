"""In-process Dagster materializations of a ``kimi_assets`` pipeline, as the tests run them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.definitions.sensor_definition import SensorExecutionData

from kimi_dagster.assets import KimiAssets


def materialize_ingest(
    pipeline: KimiAssets,
    instance: dg.DagsterInstance,
    resources: dict[str, Any],
    source: Path,
    **config: Any,
) -> dg.ExecuteInProcessResult:
    """The ingest asset on ``source``, with the rest of its run config as a user would give it."""
    name = pipeline.inputs.key.to_user_string()
    return dg.materialize(
        pipeline.assets,
        selection=[name],
        instance=instance,
        resources=resources,
        run_config={"ops": {name: {"config": {"path": str(source), **config}}}},
    )


def materialize_chunk(
    pipeline: KimiAssets,
    instance: dg.DagsterInstance,
    resources: dict[str, Any],
    key: str,
    **options: Any,
) -> dg.ExecuteInProcessResult:
    """One chunk partition of the inference asset (``options``: run_config, tags, ...)."""
    return dg.materialize(
        pipeline.assets,
        selection=[pipeline.results.key.to_user_string()],
        partition_key=key,
        instance=instance,
        resources=resources,
        **options,
    )


def evaluate_sensor(
    sensor: dg.SensorDefinition,
    instance: dg.DagsterInstance,
    resources: dict[str, Any],
    definitions: dg.Definitions,
) -> SensorExecutionData:
    """One tick of ``sensor`` as the daemon evaluates it (with the instance's ref and the code
    location's definitions, which the sensor reads its jobs and partitions from)."""
    with dg.build_sensor_context(
        instance=instance,
        instance_ref=instance.get_ref(),
        resources=resources,
        definitions=definitions,
    ) as context:
        return sensor.evaluate_tick(context)
