"""The Dagster side of the money: the ingest's estimate metadata, the inference asset's numeric
metadata against the bill and `kimi-dagster status`, and the asset checks failing when they
should — all through real materializations against the simulator."""

from __future__ import annotations

import warnings

import dagster as dg
import orjson
import pytest
from in_process import materialize_chunk, materialize_ingest

from kimi_dagster.assets import kimi_assets
from kimi_dagster.cli import main
from kimi_dagster.resource import KimiResource, KimiStore

warnings.filterwarnings("ignore", category=dg.BetaWarning)

FILTERED = (1, 6, 11, 15)  # 4 of chunk 0's 20 items are refused for good: 20 % > 5 %


def lines() -> list[dict]:
    out = []
    for i in range(60):
        line = {"id": f"c{i:02d}", "message": f"Summarize order {i}.", "max_tokens": 256}
        if i in FILTERED:
            line["message"] += " [[sim:content_filter]]"
        if 20 <= i < 40:
            line["max_tokens"] = 8  # every answer is cut: finish_reason "length"
        out.append(line)
    return out


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        yield instance


def account(sim, **budget) -> KimiResource:
    return KimiResource(
        api_key=dg.EnvVar("MOONSHOT_API_KEY"), base_url=sim.base_url, tier=5, timeout=10, **budget
    )


def materialize(pipeline, instance, resources, key: str):
    result = materialize_chunk(pipeline, instance, resources, key)
    meta = {k: v.value for k, v in result.asset_materializations_for_node("kimi_results")[0]
            .metadata.items()}  # fmt: skip
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    return meta, checks


def test_metadata_and_checks_through_real_materializations(
    sim, instance, tmp_path, write_jsonl, capsys
) -> None:
    db = tmp_path / "kimi.duckdb"
    source = write_jsonl("chk.jsonl", lines())
    pipeline = kimi_assets("kimi", chunk_size=20)
    store = KimiStore(path=str(db))
    resources = {"kimi": account(sim), "store": store}

    ingest = materialize_ingest(pipeline, instance, resources, source)
    estimate = {
        k: v.value for k, v in ingest.asset_materializations_for_node("kimi_inputs")[0]
        .metadata.items() if k.startswith("estimate_")
    }  # fmt: skip
    assert estimate["estimate_pending_items"] == 60
    assert estimate["estimate_max_output_tokens"] == 40 * 256 + 20 * 8
    assert "assumed 50% of max_tokens" in estimate["estimate_output_basis"]
    assert estimate["estimate_binding_limit"] == "concurrency"  # 10 s assumed, 1,000 at Tier 5

    # chunk 0: 4 of 20 refused -> failure_rate fails; the rest pass
    meta, checks = materialize(pipeline, instance, resources, "chk-00000")
    assert not checks["failure_rate"].passed
    assert checks["failure_rate"].metadata["failure_rate"].value == pytest.approx(0.2)
    assert checks["truncated_share"].passed and checks["budget"].passed
    bill = sim.bill()
    assert (meta["items"], meta["done"], meta["pct_done"], meta["failed"]) == (20, 20, 100, 4)
    assert meta["total_tokens"] == sum(b["prompt_tokens"] + b["completion_tokens"] for b in bill)
    assert meta["cost_usd"] == pytest.approx(sum(b["cost_usd"] for b in bill), abs=1e-6)
    assert meta["rpm_actual"] == len(sim.requests()) and meta["eta_seconds"] == 0

    # chunk 1: every answer cut at max_tokens -> truncated_share fails, as a warning
    meta, checks = materialize(pipeline, instance, resources, "chk-00001")
    assert checks["failure_rate"].passed and checks["budget"].passed
    assert not checks["truncated_share"].passed
    assert checks["truncated_share"].severity == dg.AssetCheckSeverity.WARN
    assert meta["truncated"] == 20

    # chunk 2 with a tiny run budget: stops, the check fails and shows what was consumed
    spent_before = sum(b["cost_usd"] for b in sim.bill())
    capped = {"kimi": account(sim, budget_usd=0.002), "store": store}
    meta, checks = materialize(pipeline, instance, capped, "chk-00002")
    assert not checks["budget"].passed
    assert 0 < meta["pending"] < 20
    consumed = checks["budget"].metadata["budget_run_consumed"].value
    assert 0 < consumed <= 1
    run_spend = sum(b["cost_usd"] for b in sim.bill()) - spent_before
    assert consumed == pytest.approx(run_spend / 0.002, abs=1e-3)

    # the same chunk under a dataset cap from the resource config: earlier spend counts
    spent = sum(b["cost_usd"] for b in sim.bill())
    capped = {"kimi": account(sim, dataset_budgets={"chk": spent + 0.0005}), "store": store}
    before = len(sim.bill())
    meta, checks = materialize(pipeline, instance, capped, "chk-00002")
    assert not checks["budget"].passed and meta["pending"] > 0
    assert len(sim.bill()) - before <= 1  # room for at most one more call
    assert checks["budget"].metadata["budget_dataset_consumed"].value <= 1

    # without a cap it finishes; the dataset's status is the sum of what the runs reported
    meta, checks = materialize(pipeline, instance, resources, "chk-00002")
    assert checks["budget"].passed and meta["pending"] == 0
    assert main(["status", "--json", "--db", str(db)]) == 0
    (status,) = orjson.loads(capsys.readouterr().out)
    bill = sim.bill()
    assert status["batch_progress"] == "60/60" and status["failed"] == 4
    assert status["total_tokens"] == sum(b["prompt_tokens"] + b["completion_tokens"] for b in bill)
    assert status["cost_usd"] == pytest.approx(sum(b["cost_usd"] for b in bill), abs=1e-6)
    assert sum(b["cost_usd"] for b in bill) <= estimate["estimate_cost_worst_case_usd"]
