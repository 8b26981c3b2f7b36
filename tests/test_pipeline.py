"""The Dagster path, for real: a persistent instance, materializations of the ingest asset and
of chunk partitions against the simulator over HTTP, rows checked in the DuckDB file."""

from __future__ import annotations

import warnings

import dagster as dg
import duckdb
import orjson
import pytest
from conftest import item_lines
from in_process import materialize_chunk, materialize_ingest

from kimi_dagster.assets import kimi_assets
from kimi_dagster.resource import KimiResource, KimiStore
from kimi_dagster.simulator import expected_reply

warnings.filterwarnings("ignore", category=dg.BetaWarning)


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        yield instance


def test_materialize_partitions_writes_exactly_the_simulators_replies(
    sim, instance, tmp_path, write_jsonl
) -> None:
    db = tmp_path / "kimi.duckdb"
    lines = item_lines(45)
    lines.append({"id": "bad", "message": "x", "temperature": 0.5})  # fixed for kimi-k2.5
    source = write_jsonl("tickets.jsonl", lines)
    pipeline = kimi_assets("kimi", chunk_size=20)
    resources = {
        "kimi": KimiResource(
            api_key=dg.EnvVar("MOONSHOT_API_KEY"), base_url=sim.base_url, tier=5, timeout=10
        ),
        "store": KimiStore(path=str(db)),
    }

    ingest = materialize_ingest(pipeline, instance, resources, source)
    meta = ingest.asset_materializations_for_node("kimi_inputs")[0].metadata
    assert meta["accepted"].value == 45 and meta["rejected"].value == 1
    keys = instance.get_dynamic_partitions("kimi_chunks")
    assert keys == ["tickets-00000", "tickets-00001", "tickets-00002"]

    for key in keys:
        result = materialize_chunk(pipeline, instance, resources, key)
        assert result.success
        checks = result.get_asset_check_evaluations()
        assert {c.check_name: c.passed for c in checks} == {
            "failure_rate": True,
            "truncated_share": True,
            "budget": True,
        }
    run_meta = result.asset_materializations_for_node("kimi_results")[0].metadata
    assert run_meta["succeeded"].value == 5 and run_meta["failed"].value == 0
    assert run_meta["rpm"].value > 0 and run_meta["latency_p50_ms"].value >= 50

    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute(
        "SELECT i.request, r.status, r.output, r.finish_reason FROM items i "
        "JOIN results r USING (dataset, item_id) ORDER BY i.item_id"
    ).fetchall()
    assert len(rows) == 45
    for request, status, output, finish_reason in rows:
        expected = expected_reply(orjson.loads(request))
        assert (status, output, finish_reason) == (
            "succeeded",
            expected.content,
            expected.finish_reason,
        )
    ledger = con.execute("SELECT count(*), sum(cost_usd)::DOUBLE FROM attempts").fetchone()
    con.close()
    bill = sim.bill()
    assert ledger[0] == len(bill) == 45
    assert ledger[1] == pytest.approx(sum(b["cost_usd"] for b in bill), abs=1e-6)

    # Re-materializing a finished partition sends nothing and changes nothing.
    materialize_chunk(pipeline, instance, resources, keys[0])
    assert len(sim.bill()) == 45


def test_fatal_error_fails_the_run_without_retries(sim, instance, tmp_path, write_jsonl) -> None:
    db = tmp_path / "kimi.duckdb"
    source = write_jsonl("t.jsonl", item_lines(400))
    pipeline = kimi_assets("kimi", chunk_size=400)
    resources = {
        # 20 requests a second: the first 401 is back long before a few dozen could go out
        "kimi": KimiResource(api_key="sk-wrong-key", base_url=sim.base_url, tier=5, rpm=1_200),
        "store": KimiStore(path=str(db)),
    }
    sim.configure(api_key="sk-the-right-key")
    materialize_ingest(pipeline, instance, resources, source)
    result = materialize_chunk(pipeline, instance, resources, "t-00000", raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "incorrect_api_key_error" in failure.step_failure_data.error.message
    assert "sk-wrong-key" not in str(result.all_events)
    # stopped at once: only what went out before the first 401 came back, not the 400 items
    assert len(sim.requests()) <= 20 and len(sim.bill()) == 0
