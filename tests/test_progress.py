"""What a user watches in the Dagster UI: during a partition, log lines and asset observations
with progress, achieved RPM and ETA; at its end, numeric metadata per partition (the kind the
UI plots across partitions)."""

from __future__ import annotations

import warnings

import dagster as dg
from conftest import item_lines
from in_process import materialize_chunk, materialize_ingest

from kimi_dagster.assets import kimi_assets
from kimi_dagster.resource import KimiResource, KimiStore

warnings.filterwarnings("ignore", category=dg.BetaWarning)

CHUNK = 20
PLOTTED = ("items", "succeeded", "failed", "total_tokens", "cost_usd", "rpm", "latency_p50_ms")


def test_progress_during_a_partition_and_numeric_metadata_per_partition(
    sim, instance, tmp_path, write_jsonl
) -> None:
    sim.configure(latency=0.15)  # 20 items, 2 at a time: about 1.5 s per partition
    source = write_jsonl("watch.jsonl", item_lines(2 * CHUNK, prefix="w", max_tokens=64))
    pipeline = kimi_assets("kimi", chunk_size=CHUNK)
    resources = {
        "kimi": KimiResource(
            api_key=dg.EnvVar("MOONSHOT_API_KEY"), concurrency=2, progress_interval=0.2
        ),
        "store": KimiStore(path=str(tmp_path / "kimi.duckdb")),
    }
    materialize_ingest(pipeline, instance, resources, source)
    keys = instance.get_dynamic_partitions("kimi_chunks")
    runs = {key: materialize_chunk(pipeline, instance, resources, key) for key in keys}

    run = runs[keys[0]]
    records = instance.all_logs(run.run_id)
    lines = [r.user_message for r in records if "ETA" in r.user_message and "rpm" in r.user_message]
    assert lines[-1].startswith(f"{CHUNK}/{CHUNK} (100.0%)")
    assert any(not line.startswith(f"{CHUNK}/{CHUNK}") for line in lines[:-1])  # mid-partition
    observations = [
        r.dagster_event.event_specific_data.asset_observation
        for r in records
        if r.dagster_event is not None and r.dagster_event.event_type_value == "ASSET_OBSERVATION"
    ]
    assert observations and all(o.partition == keys[0] for o in observations)
    done = [o.metadata["done"].value for o in observations]
    assert done == sorted(done) and done[0] < CHUNK
    for observation in observations:
        assert {"pct_done", "rpm_actual", "cost_usd"} <= observation.metadata.keys()
    assert any("eta_seconds" in o.metadata for o in observations if o.metadata["done"].value)

    # one materialization per partition, each with numbers (ints/floats), which the UI plots
    materializations = instance.fetch_materializations(dg.AssetKey("kimi_results"), limit=10)
    by_partition = {r.partition_key: r.asset_materialization for r in materializations.records}
    assert sorted(by_partition) == keys
    for materialization in by_partition.values():
        for name in PLOTTED:
            value = materialization.metadata[name]
            assert isinstance(value, dg.IntMetadataValue | dg.FloatMetadataValue), name
        assert materialization.metadata["succeeded"].value == CHUNK
        assert materialization.metadata["rpm"].value > 0
