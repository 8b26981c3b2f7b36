"""The KimiPipeline Component from YAML, as a Dagster user adds it: a project whose defs folder
holds two ``defs.yaml`` files (two dataset pipelines, no Python), loaded with Dagster's own
``load_from_defs_folder``; the configured values reach the assets, sensors, job and resources,
and a partition materialized against the simulator uses them."""

from __future__ import annotations

import sys
import uuid
import warnings
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from conftest import item_lines

from kimi_dagster.resource import KimiResource, KimiStore

warnings.filterwarnings("ignore", category=dg.BetaWarning)

TICKETS_YAML = """\
type: kimi_dagster.component.KimiPipeline
attributes:
  prefix: tickets
  model_name: kimi-k2-turbo-preview
  tier: 4
  chunk_size: 7
  max_tokens: 48
  chunks_per_run: 2
  inbox: {inbox}
  budget_usd: 2.5
  db_path: {db}
  auto_run: false
  sensor_interval: 5
"""

REVIEWS_YAML = """\
type: kimi_dagster.component.KimiPipeline
attributes:
  prefix: reviews
  tier: 5
  chunk_size: 500
  db_path: {db}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A dg project in tmp_path: dg.toml + src/<module>/defs/{tickets,reviews}/defs.yaml."""
    module = f"kimi_project_{uuid.uuid4().hex[:8]}"
    (tmp_path / "dg.toml").write_text(
        f'directory_type = "project"\n\n[project]\nroot_module = "{module}"\n'
    )
    defs = tmp_path / "src" / module / "defs"
    for pipeline, text in (("tickets", TICKETS_YAML), ("reviews", REVIEWS_YAML)):
        (defs / pipeline).mkdir(parents=True)
        yaml = text.format(inbox=tmp_path / "inbox", db=tmp_path / "kimi.duckdb")
        (defs / pipeline / "defs.yaml").write_text(yaml)
    (defs.parent / "__init__.py").write_text("")
    (defs / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith(module)]:
        del sys.modules[name]


def test_yaml_pipelines_load_with_their_settings(project: Path, sim) -> None:
    defs = dg.load_from_defs_folder(path_within_project=project)

    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {
        f"{prefix}_{name}"
        for prefix in ("tickets", "reviews")
        for name in ("inputs", "results", "summary")
    }
    results = defs.resolve_assets_def("tickets_results")
    assert {spec.name for spec in results.check_specs} == {
        "failure_rate",
        "truncated_share",
        "budget",
    }
    assert results.partitions_def == dg.DynamicPartitionsDefinition(name="tickets_chunks")
    assert results.op.pool == "kimi_api"
    assert results.backfill_policy.max_partitions_per_run == 2
    assert defs.resolve_job_def("tickets_inference").name == "tickets_inference"

    inbox_sensor = defs.resolve_sensor_def("tickets_inbox_sensor")
    assert inbox_sensor.minimum_interval_seconds == 5
    assert str(project / "inbox") in (inbox_sensor.description or "")
    chunk_sensor = defs.resolve_sensor_def("tickets_chunk_sensor")
    assert chunk_sensor.default_status == dg.DefaultSensorStatus.STOPPED  # auto_run: false
    assert chunk_sensor.job_name == "tickets_inference"
    # reviews: no inbox, so no inbox sensor; its chunk sensor runs new chunks by default
    assert defs.resolve_sensor_def("reviews_chunk_sensor").default_status == (
        dg.DefaultSensorStatus.RUNNING
    )
    with pytest.raises(dg.DagsterInvariantViolationError):
        defs.resolve_sensor_def("reviews_inbox_sensor")

    account = defs.resources["tickets_account"]
    assert isinstance(account, KimiResource)
    assert (account.tier, account.budget_usd) == (4, 2.5)
    assert defs.resources["reviews_account"].tier == 5
    assert isinstance(defs.resources["tickets_store"], KimiStore)
    assert defs.resources["tickets_store"].path == str(project / "kimi.duckdb")


def test_yaml_pipeline_materializes_a_partition(project: Path, sim, write_jsonl) -> None:
    defs = dg.load_from_defs_folder(path_within_project=project)
    lines = [{"id": x["id"], "message": x["message"]} for x in item_lines(15, prefix="t")]
    source = write_jsonl("support.jsonl", lines)  # no model, no max_tokens: the YAML's apply
    # resolved from the Definitions, the assets carry their YAML-configured resources
    assets = [defs.resolve_assets_def(f"tickets_{n}") for n in ("inputs", "results")]
    home = project / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        dg.materialize(
            assets,
            selection=["tickets_inputs"],
            instance=instance,
            run_config={"ops": {"tickets_inputs": {"config": {"path": str(source)}}}},
        )
        keys = instance.get_dynamic_partitions("tickets_chunks")
        assert keys == ["support-00000", "support-00001", "support-00002"]  # chunk_size: 7
        result = dg.materialize(
            assets,
            selection=["tickets_results"],
            partition_key="support-00001",
            instance=instance,
        )
    assert result.success
    meta = result.asset_materializations_for_node("tickets_results")[0].metadata
    assert (meta["items"].value, meta["succeeded"].value) == (7, 7)

    con = duckdb.connect(str(project / "kimi.duckdb"), read_only=True)
    models = con.execute("SELECT DISTINCT model, max_tokens FROM items").fetchall()
    done = con.execute(
        "SELECT partition_key, count(*) FROM results WHERE status = 'succeeded' GROUP BY ALL"
    ).fetchall()
    con.close()
    assert models == [("kimi-k2-turbo-preview", 48)]
    assert done == [("support-00001", 7)]
    bill = sim.bill()
    assert len(bill) == 7 and {line["model"] for line in bill} == {"kimi-k2-turbo-preview"}
