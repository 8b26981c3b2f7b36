"""The sensors with a real ``dagster-daemon``: a JSONL file dropped into the inbox is ingested
once, its chunks run and every item is paid once; touching the file adds nothing; a manual
ingest (the inputs asset materialized with a path) gets its chunks run too."""

from __future__ import annotations

import os
import warnings

import dagster as dg
import orjson
from conftest import item_lines
from dagster_process import (
    all_finished,
    dagster_home,
    ingest,
    runs_of,
    sensor_cursor,
    start,
    wait_for,
    write_definitions,
)
from outcomes import assert_every_item_succeeded_once

warnings.filterwarnings("ignore", category=dg.BetaWarning)

CHUNK = 13  # tickets: 25 items, two chunks; reviews: 12 items, one chunk
RUNS = 3


def write_lines(path, lines) -> None:
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))


def test_inbox_file_is_ingested_once_and_every_chunk_runs(sim, tmp_path) -> None:
    home = dagster_home(tmp_path)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    db = tmp_path / "kimi.duckdb"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "KIMI_DAGSTER_DB": str(db),
        "KIMI_DAGSTER_INBOX": str(inbox),
        "KIMI_DAGSTER_TIER": "5",
    }
    code = write_definitions(tmp_path, chunk_size=CHUNK, sensor_interval=1)
    daemon = start(
        ["dagster-daemon", "run", "-f", str(code)], env, tmp_path / "daemon.log", tmp_path
    )
    try:
        instance = dg.DagsterInstance.from_config(str(home))
        staged = tmp_path / "tickets.jsonl"
        write_lines(staged, item_lines(25, prefix="ticket", max_tokens=64))
        os.replace(staged, inbox / "tickets.jsonl")  # an atomic drop

        # Meanwhile the manual path: the inputs asset materialized with a path; the chunk
        # sensor runs the chunks of every ingest, whoever made it.
        reviews = tmp_path / "reviews.jsonl"
        write_lines(reviews, item_lines(12, prefix="review", max_tokens=64))
        ingest(instance, db, reviews, CHUNK)

        def inference_runs():
            runs = runs_of(instance, "kimi_inference")
            return runs if len(runs) == RUNS and all_finished(runs) else None

        runs = wait_for(inference_runs, "the chunk runs", timeout=150, process=daemon)
        keys = ["reviews-00000", "tickets-00000", "tickets-00001"]
        assert sorted(instance.get_dynamic_partitions("kimi_chunks")) == keys
        assert sorted(r.tags["dagster/partition"] for r in runs) == keys
        assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
        assert_every_item_succeeded_once(db, sim, 37)

        # Touching the file makes the sensor ingest it again, which finds nothing new: once
        # the chunk sensor has read that ingest, still no new run and nothing more paid.
        os.utime(inbox / "tickets.jsonl")
        ingest_filter = dg.RunsFilter(tags={"kimi/source_file": "tickets.jsonl"})

        def reingest_seen_by_chunk_sensor():
            ingests = list(instance.get_runs(filters=ingest_filter))
            if len(ingests) < 2 or not all_finished(ingests):
                return None
            latest = instance.fetch_materializations(dg.AssetKey("kimi_inputs"), limit=1)
            cursor = sensor_cursor(instance, "kimi_chunk_sensor")
            seen = cursor is not None and int(cursor) >= latest.records[0].storage_id
            return ingests if seen else None

        ingests = wait_for(reingest_seen_by_chunk_sensor, "the re-ingest", timeout=60)
        assert len(ingests) == 2 and {r.status for r in ingests} == {dg.DagsterRunStatus.SUCCESS}
        assert len(runs_of(instance, "kimi_inference")) == RUNS
        assert_every_item_succeeded_once(db, sim, 37)
    finally:
        daemon.stop()
