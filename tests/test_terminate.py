"""Terminating a run mid-partition, through the Dagster instance as the UI's "Terminate" does:
the run, launched by a real ``dagster-daemon`` (the chunk sensor), is cancelled while one
request hangs; it leaves DuckDB consistent, releases the chunk, and a plain re-run of the
partition sends only the missing item. Each item ends up succeeded and paid exactly once."""

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
    start,
    wait_for,
    write_definitions,
)
from in_process import materialize_chunk
from outcomes import assert_every_item_succeeded_once

from kimi_dagster.assets import kimi_assets
from kimi_dagster.claims import claim
from kimi_dagster.engine import merge_now
from kimi_dagster.resource import KimiResource, KimiStore
from kimi_dagster.spool import spool_dir
from kimi_dagster.store import connect

warnings.filterwarnings("ignore", category=dg.BetaWarning)

ITEMS = 12
HUNG = 7  # this item's first request gets no answer, so the run is mid-partition for good


def _consistent(db) -> tuple[int, int]:
    """(succeeded results, ok attempts); every result row must point at a recorded attempt."""
    with connect(db, read_only=True) as con:
        orphans = con.execute(
            "SELECT count(*) FROM results r ANTI JOIN attempts a USING (attempt_id)"
        ).fetchone()[0]
        assert orphans == 0
        return con.execute(
            "SELECT (SELECT count(*) FROM results WHERE status = 'succeeded'), "
            "(SELECT count(*) FROM attempts WHERE outcome = 'ok')"
        ).fetchone()


def test_terminated_run_leaves_nothing_half_written_and_reruns(sim, tmp_path) -> None:
    sim.configure(hang_seconds=120)
    home = dagster_home(tmp_path)
    db = tmp_path / "kimi.duckdb"
    env = {**os.environ, "DAGSTER_HOME": str(home), "KIMI_DAGSTER_DB": str(db)}
    env.update(KIMI_DAGSTER_TIER="5", KIMI_DAGSTER_INBOX=str(tmp_path / "inbox"))
    code = write_definitions(tmp_path, chunk_size=ITEMS, sensor_interval=1)
    lines = item_lines(ITEMS, prefix="job", max_tokens=64)
    lines[HUNG]["message"] += " [[sim:fail=hang:1]]"
    source = tmp_path / "jobs.jsonl"
    source.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    pipeline = kimi_assets("kimi", chunk_size=ITEMS)
    resources = {
        "kimi": KimiResource(api_key=dg.EnvVar("MOONSHOT_API_KEY"), tier=5),
        "store": KimiStore(path=str(db)),
    }
    instance = dg.DagsterInstance.from_config(str(home))
    daemon = start(
        ["dagster-daemon", "run", "-f", str(code)], env, tmp_path / "daemon.log", tmp_path
    )
    try:
        ingest(instance, db, source, ITEMS)  # the chunk sensor then launches the run
        wait_for(lambda: len(sim.bill()) == ITEMS - 1, "all but the hung item", timeout=90)
        (run,) = runs_of(instance, "kimi_inference")
        assert run.status == dg.DagsterRunStatus.STARTED
        instance.run_coordinator.cancel_run(run.run_id)  # what the UI's Terminate calls
        wait_for(lambda: all_finished(runs_of(instance, "kimi_inference")), "the stop", timeout=60)
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.CANCELED
    finally:
        daemon.stop()

    # Nothing half-written: results only for recorded attempts, nothing for the hung item;
    # whatever the dead run left in the spool merges in, and the chunk is free again.
    succeeded, oks = _consistent(db)
    assert succeeded == oks <= ITEMS - 1
    merge_now(db)
    assert _consistent(db) == (ITEMS - 1, ITEMS - 1)
    assert not list(spool_dir(db).glob("*.jsonl"))
    with claim(spool_dir(db) / "claims", ["jobs-00000"]):
        pass

    sent_before = len(sim.requests())
    result = materialize_chunk(pipeline, instance, resources, "jobs-00000")
    assert result.success
    assert len(sim.requests()) == sent_before + 1  # only the item the terminated run missed
    assert_every_item_succeeded_once(db, sim, ITEMS)
