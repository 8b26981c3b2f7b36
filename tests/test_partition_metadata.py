"""A run of several chunk partitions (a backfill's ``chunks_per_run``): Dagster 1.13 gives
every partition of the step the same materialization metadata (the run's totals, labelled with
``run_partitions``), so each partition's own outcomes are recorded as an observation of it."""

from __future__ import annotations

import warnings

import dagster as dg
from conftest import item_lines
from in_process import materialize_ingest

from kimi_dagster.assets import kimi_assets
from kimi_dagster.resource import KimiResource, KimiStore

warnings.filterwarnings("ignore", category=dg.BetaWarning)


def test_each_partition_of_a_multi_partition_run_gets_its_own_outcomes(
    sim, instance, tmp_path, write_jsonl
) -> None:
    lines = item_lines(7, max_tokens=64)
    lines[1]["message"] += " [[sim:content_filter]]"  # one failure, in the first chunk only
    pipeline = kimi_assets("kimi", chunk_size=4)
    resources = {
        "kimi": KimiResource(api_key=dg.EnvVar("MOONSHOT_API_KEY"), concurrency=4),
        "store": KimiStore(path=str(tmp_path / "kimi.duckdb")),
    }
    materialize_ingest(pipeline, instance, resources, write_jsonl("two.jsonl", lines))
    keys = instance.get_dynamic_partitions("kimi_chunks")
    assert len(keys) == 2
    result = dg.materialize(
        pipeline.assets,
        selection=[pipeline.results.key.to_user_string()],
        instance=instance,
        resources=resources,
        tags={
            "dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[1],
        },
        raise_on_error=False,
    )
    records = instance.all_logs(result.run_id)
    observed = {
        o.partition: o.metadata
        for r in records
        if r.dagster_event is not None and r.dagster_event.event_type_value == "ASSET_OBSERVATION"
        for o in [r.dagster_event.event_specific_data.asset_observation]
        if o.partition is not None and "done" not in o.metadata  # not a progress observation
    }
    assert sorted(observed) == keys
    assert [observed[k]["items"].value for k in keys] == [4, 3]
    assert [observed[k]["succeeded"].value for k in keys] == [3, 3]
    assert [observed[k]["failed"].value for k in keys] == [1, 0]
    materialized = instance.fetch_materializations(dg.AssetKey("kimi_results"), limit=10)
    by_partition = {r.partition_key: r.asset_materialization for r in materialized.records}
    assert sorted(by_partition) == keys
    for materialization in by_partition.values():  # the run's totals, labelled as such
        assert materialization.metadata["run_partitions"].value == 2
        assert materialization.metadata["succeeded"].value == 6
