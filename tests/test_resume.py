"""Re-running a chunk sends only items without a success: failed ones again by default, none of
them with "missing only" (the asset's ``missing_only`` config, the CLI's ``--missing-only``)."""

from __future__ import annotations

import asyncio
import warnings
from collections import Counter
from pathlib import Path

import dagster as dg
import duckdb
from conftest import item_lines, sim_settings
from in_process import materialize_chunk, materialize_ingest

from kimi_dagster.assets import kimi_assets
from kimi_dagster.engine import process_partitions
from kimi_dagster.ingest import ingest_file
from kimi_dagster.resource import KimiResource, KimiStore

warnings.filterwarnings("ignore", category=dg.BetaWarning)


def sent_items(sim, since: int = 0) -> Counter[str]:
    return Counter(r["request_id"].split(":")[1] for r in sim.requests()[since:])


def states(db: Path) -> dict[str, str]:
    with duckdb.connect(str(db), read_only=True) as con:
        return dict(con.execute("SELECT item_id, status FROM results").fetchall())


def test_engine_rerun_retries_failures_by_default_and_skips_them_when_missing_only(
    sim, db, write_jsonl
) -> None:
    lines = item_lines(12, max_tokens=64)
    lines[3]["message"] += " [[sim:fail=server_error:3]]"  # fails twice per run, then succeeds
    report = ingest_file(db, write_jsonl("r.jsonl", lines), chunk_size=100)
    settings = sim_settings(sim, max_attempts=2, backoff_base=0.05, backoff_max=0.1)

    def run(name: str, retry_failed: bool) -> Counter[str]:
        before = len(sim.requests())
        asyncio.run(
            process_partitions(
                db, report.partitions, settings, run_id=name, retry_failed=retry_failed
            )
        )
        return sent_items(sim, before)

    first = run("first", True)
    assert first["item0003"] == 2 and sum(first.values()) == 13
    assert states(db)["item0003"] == "failed"

    assert run("missing-only", False) == Counter()  # the failure is kept, nothing is sent
    assert run("again", True) == Counter({"item0003": 2})  # third 500, then the success
    assert set(states(db).values()) == {"succeeded"}
    assert run("done", True) == Counter()
    assert len(sim.bill()) == 12


def test_asset_missing_only_config(sim, tmp_path, write_jsonl) -> None:
    db = tmp_path / "kimi.duckdb"
    lines = item_lines(6, max_tokens=64)
    lines[0]["message"] += " [[sim:content_filter]]"  # always a 400: fails on every run
    source = write_jsonl("cfg.jsonl", lines)
    pipeline = kimi_assets("kimi", chunk_size=10)
    resources = {
        "kimi": KimiResource(api_key=dg.EnvVar("MOONSHOT_API_KEY"), base_url=sim.base_url, tier=5),
        "store": KimiStore(path=str(db)),
    }
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        materialize_ingest(pipeline, instance, resources, source)

        def materialize(missing_only: bool | None) -> Counter[str]:
            before = len(sim.requests())
            config = {} if missing_only is None else {"missing_only": missing_only}
            result = materialize_chunk(
                pipeline,
                instance,
                resources,
                "cfg-00000",
                run_config={"ops": {"kimi_results": {"config": config}}},
            )
            assert result.success
            return sent_items(sim, before)

        assert sum(materialize(None).values()) == 6
        assert materialize(True) == Counter()
        assert materialize(None) == Counter({"item0000": 1})  # the default retries the failure
    assert states(db)["item0000"] == "failed" and len(sim.bill()) == 5


def test_a_step_retried_inside_the_same_run_keeps_every_attempt(sim, db, write_jsonl) -> None:
    """Dagster retries a failed step inside the same run, with the same run id: the second
    try's attempts must not be mistaken for the first try's (idempotent merge by attempt id)."""
    lines = item_lines(4, max_tokens=64)
    lines[1]["message"] += " [[sim:fail=server_error:1]]"
    report = ingest_file(db, write_jsonl("same.jsonl", lines), chunk_size=100)
    settings = sim_settings(sim, max_attempts=1)
    for _ in range(2):
        asyncio.run(process_partitions(db, report.partitions, settings, run_id="one-run"))

    with duckdb.connect(str(db), read_only=True) as con:
        ledger = con.execute("SELECT attempt_id, outcome, run_id FROM attempts").fetchall()
        result = con.execute(
            "SELECT r.status, a.outcome FROM results r JOIN attempts a USING (attempt_id) "
            "WHERE r.item_id = 'item0001'"
        ).fetchall()
    assert len(ledger) == len(sim.requests()) == 5
    assert sorted(a for a, o, _ in ledger if o == "ok") == sorted(
        b["request_id"] for b in sim.bill()
    )
    assert {r for _, _, r in ledger} == {"one-run"}
    assert result == [("succeeded", "ok")]
