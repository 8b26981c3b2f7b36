"""Batch API mode against the simulator's Files and Batch endpoints: the CLI, crash recovery at
each step, expired, partially failed and cancelled batches, and the Dagster asset + sensor."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from functools import partial
from pathlib import Path

import duckdb
import httpx
import orjson
import pytest
from conftest import SIM_KEY, item_lines, sim_settings
from in_process import evaluate_sensor, materialize_chunk, materialize_ingest

from kimi_dagster import batches
from kimi_dagster.cli import main
from kimi_dagster.ingest import ingest_file

POLL = ["--poll-interval", "0.1"]
FAST = {"batch_delays": [0.05, 0.2, 0.05]}  # validating : in_progress : finalizing seconds


@pytest.fixture
def fast_sim(sim):
    sim.configure(**FAST)
    return sim


def provider_batches(sim) -> list[dict]:
    """Every batch the simulated account holds (the provider's view, not ours)."""
    found, after = [], None
    while True:
        params = {"limit": 100} | ({"after": after} if after else {})
        page = httpx.get(
            f"{sim.base_url}/batches",
            params=params,
            headers={"Authorization": f"Bearer {SIM_KEY}"},
        ).json()
        found += page["data"]
        if not page["has_more"]:
            return found
        after = page["last_id"]


def ledger(db: Path) -> tuple[Decimal, int, int]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(
            "SELECT coalesce(sum(cost_usd), 0), count(*), count(DISTINCT item_id) FROM attempts"
        ).fetchone()


def statuses(db: Path) -> dict[str, str]:
    with duckdb.connect(str(db), read_only=True) as con:
        return dict(con.execute("SELECT item_id, status FROM item_results").fetchall())


def billed(sim) -> Decimal:
    lines = sim.bill()
    assert all(line["batch"] for line in lines)
    return Decimal(str(round(sum(line["cost_usd"] for line in lines), 9)))


def batch_cli(source: Path, db: Path, out: Path, *extra: str) -> int:
    flags = ["--db", str(db), "--chunk-size", "10", "--mode", "batch", "--poll-interval", "0.1"]
    return main(["batch", "-i", str(source), "-o", str(out), *flags, *extra])


def test_cli_batch_mode_loads_every_answer_at_the_discounted_price(
    fast_sim, tmp_path, write_jsonl, capsys
) -> None:
    lines = item_lines(25, max_tokens=64)
    lines[3]["temperature"] = 0.3  # refused at ingest: kimi-k2.5 fixes sampling
    source = write_jsonl("tickets.jsonl", lines)
    db, out = tmp_path / "k.duckdb", tmp_path / "out.json"

    assert batch_cli(source, db, out, "--wait") == 0
    result = orjson.loads(out.read_bytes())
    assert result["summary"]["succeeded"] == 24 and result["summary"]["pending"] == 0
    for item in result["items"]:
        body = {"model": "kimi-k2.5", "messages": [{"role": "user", "content": item["input"]}]}
        assert item["output"] == fast_sim.expected_reply(body | {"max_tokens": 64}).content

    cost, attempts, items = ledger(db)
    assert attempts == items == 24 == len(fast_sim.bill())
    assert cost == billed(fast_sim)  # to the nano-dollar, so to the cent
    assert fast_sim.requests() == []  # nothing went through the real-time endpoint
    rows = batches.list_batches(db)
    assert len(rows) == 3 == len(provider_batches(fast_sim))
    assert all(r.state == "completed" and r.loaded and r.loaded_rows == r.items for r in rows)
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT DISTINCT mode FROM attempts").fetchall() == [("batch",)]
        assert con.execute("SELECT mode FROM datasets").fetchall() == [("batch",)]

    # Again: nothing pending, so nothing submitted, nothing loaded twice.
    assert batch_cli(source, db, out) == 0
    assert len(provider_batches(fast_sim)) == 3 and ledger(db)[1] == 24

    capsys.readouterr()
    assert main(["batches", "--db", str(db), "--json"]) == 0
    listed = orjson.loads(capsys.readouterr().out)
    assert [r["batch_id"] for r in listed] == [r.batch_id for r in rows]
    assert main(["batches", "--db", str(db)]) == 0
    table = capsys.readouterr().out
    assert all(r.batch_id in table for r in rows) and "completed" in table

    # The views and `status` read batch answers like real-time ones.
    assert main(["status", "--db", str(db), "--json"]) == 0
    (status,) = orjson.loads(capsys.readouterr().out)
    assert (status["succeeded"], status["pending"]) == (24, 0)
    assert Decimal(str(status["cost_usd"])) == round(cost, 6)


def test_a_large_chunk_is_split_into_files_under_the_size_limit(fast_sim, db, write_jsonl):
    source = write_jsonl("big.jsonl", item_lines(12, max_tokens=32))
    report = ingest_file(db, source, chunk_size=100)
    limit = 4 * 200  # about four lines per file
    options = batches.BatchOptions(max_file_bytes=limit, poll_interval=0.1)
    run = batches.run_batch_mode(
        db, report.partitions, sim_settings(fast_sim), wait=True, options=options
    )
    done = asyncio.run(run)
    rows = batches.list_batches(db)
    assert len(rows) > 1 and len(done.submitted) == len(rows)
    assert all(r.input_bytes <= limit for r in rows) and sum(r.items for r in rows) == 12
    assert set(statuses(db).values()) == {"succeeded"}


def test_models_the_batch_api_does_not_serve_are_refused_before_upload(fast_sim, db, write_jsonl):
    source = write_jsonl("old.jsonl", item_lines(3))
    report = ingest_file(db, source, chunk_size=10)
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE items SET model = 'moonshot-v1-8k'")
    with pytest.raises(batches.BatchModeError, match="does not serve moonshot-v1-8k"):
        asyncio.run(batches.sync_partitions(db, report.partitions, sim_settings(fast_sim)))
    assert provider_batches(fast_sim) == []


def test_crash_after_upload_before_create_resumes_with_one_batch(
    fast_sim, db, write_jsonl, monkeypatch
) -> None:
    report = ingest_file(db, write_jsonl("t.jsonl", item_lines(8)), chunk_size=10)
    original = batches.KimiClient.request

    async def dies_before_create(self, method, path, **kwargs):
        if method == "POST" and path == "batches":
            raise KeyboardInterrupt  # the process is gone before the request leaves
        return await original(self, method, path, **kwargs)

    monkeypatch.setattr(batches.KimiClient, "request", dies_before_create)
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(batches.sync_partitions(db, report.partitions, sim_settings(fast_sim)))
    (row,) = batches.list_batches(db)
    assert row.state == "uploaded" and row.input_file_id and provider_batches(fast_sim) == []

    monkeypatch.setattr(batches.KimiClient, "request", original)
    _finish(db, report.partitions, fast_sim)
    (row,) = batches.list_batches(db)
    assert len(provider_batches(fast_sim)) == 1 and row.loaded
    assert ledger(db)[1:] == (8, 8) and ledger(db)[0] == billed(fast_sim)


def test_crash_after_create_before_recording_adopts_the_providers_batch(
    fast_sim, db, write_jsonl, monkeypatch
) -> None:
    report = ingest_file(db, write_jsonl("t.jsonl", item_lines(8)), chunk_size=10)
    original = batches._record_status

    def dies(*args, **kwargs):
        raise KeyboardInterrupt  # created at the provider, id never written down

    monkeypatch.setattr(batches, "_record_status", dies)
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(batches.sync_partitions(db, report.partitions, sim_settings(fast_sim)))
    assert len(provider_batches(fast_sim)) == 1 and batches.list_batches(db)[0].batch_id is None

    monkeypatch.setattr(batches, "_record_status", original)
    _finish(db, report.partitions, fast_sim)
    assert [b["id"] for b in provider_batches(fast_sim)] == [batches.list_batches(db)[0].batch_id]
    assert ledger(db)[1:] == (8, 8) and ledger(db)[0] == billed(fast_sim)


def test_crash_between_completion_and_load_loads_once(
    fast_sim, db, write_jsonl, monkeypatch
) -> None:
    report = ingest_file(db, write_jsonl("t.jsonl", item_lines(15)), chunk_size=10)
    asyncio.run(batches.sync_partitions(db, report.partitions, sim_settings(fast_sim)))
    _await_provider(fast_sim)
    original = batches.merge_segment

    def merges_then_dies(con, segment):
        original(con, segment)
        raise KeyboardInterrupt  # killed after the merge, before COMMIT

    monkeypatch.setattr(batches, "merge_segment", merges_then_dies)
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(batches.sync_partitions(db, report.partitions, sim_settings(fast_sim)))
    assert ledger(db)[1] == 0 and not any(r.loaded for r in batches.list_batches(db))

    monkeypatch.setattr(batches, "merge_segment", original)
    for _ in range(2):  # the second pass finds everything loaded
        asyncio.run(batches.sync_partitions(db, report.partitions, sim_settings(fast_sim)))
    assert ledger(db)[1:] == (15, 15) and ledger(db)[0] == billed(fast_sim)
    assert len(provider_batches(fast_sim)) == 2


def test_expired_batch_leaves_the_rest_pending_then_reruns(fast_sim, db, write_jsonl) -> None:
    report = ingest_file(db, write_jsonl("t.jsonl", item_lines(40)), chunk_size=40)
    fast_sim.configure(expire_batches=True)
    _finish(db, report.partitions, fast_sim)
    (row,) = batches.list_batches(db)
    assert row.state == "expired" and row.loaded and "expired" in row.error
    states = statuses(db)
    assert 0 < list(states.values()).count("succeeded") < 40
    assert set(states.values()) == {"succeeded", "pending"}  # unanswered lines: still pending

    fast_sim.configure(expire_batches=False)
    _finish(db, report.partitions, fast_sim)
    assert set(statuses(db).values()) == {"succeeded"}
    assert len(provider_batches(fast_sim)) == 2 and ledger(db)[1:] == (40, 40)
    assert ledger(db)[0] == billed(fast_sim)


def test_partially_failed_batch_fails_those_items_with_the_reason(
    fast_sim, db, write_jsonl
) -> None:
    lines = item_lines(10)
    lines[2]["message"] += " [[sim:content_filter]]"
    lines[5]["message"] += " [[sim:fail=server_error:1]]"
    report = ingest_file(db, write_jsonl("t.jsonl", lines), chunk_size=10)
    _finish(db, report.partitions, fast_sim)
    (row,) = batches.list_batches(db)
    assert (row.state, row.completed, row.failed) == ("completed", 8, 2)
    with duckdb.connect(str(db), read_only=True) as con:
        failed = con.execute(
            "SELECT item_id, error_type, error_message FROM item_results "
            "WHERE status = 'failed' ORDER BY 1"
        ).fetchall()
    assert [(i, t) for i, t, _ in failed] == [
        ("item0002", "content_filter"),
        ("item0005", "server_error"),
    ]
    assert all(message for *_, message in failed)
    assert list(statuses(db).values()).count("succeeded") == 8
    with duckdb.connect(str(db), read_only=True) as con:
        by_error = con.execute(
            "SELECT error_type, items_failed FROM failures_by_error ORDER BY 1"
        ).fetchall()
    assert by_error == [("content_filter", 1), ("server_error", 1)]

    batches.set_dataset_mode(db, "t", "batch")  # retry-failed follows the dataset's mode
    assert main(["retry-failed", "--dataset", "t", "--db", str(db), "--wait", *POLL]) == 0
    states = statuses(db)
    assert states["item0005"] == "succeeded" and states["item0002"] == "failed"
    assert ledger(db)[0] == billed(fast_sim)


def test_cancel_from_the_cli_cancels_the_provider_batch(sim, tmp_path, write_jsonl, capsys) -> None:
    sim.configure(batch_delays=[0.05, 20, 0.05])  # still running when cancelled
    source = write_jsonl("slow.jsonl", item_lines(20))
    db, out = tmp_path / "k.duckdb", tmp_path / "out.json"
    assert batch_cli(source, db, out) == 0
    assert batch_cli(source, db, out) == 0  # both chunks have an open batch: no second one
    first, second = batches.list_batches(db)
    assert len(provider_batches(sim)) == 2
    assert main(["cancel", first.batch_id, "--db", str(db)]) == 0
    assert main(["cancel", "--dataset", "slow", "--db", str(db)]) == 0
    assert {b["id"]: b["status"] for b in provider_batches(sim)}.keys() == {
        first.batch_id,
        second.batch_id,
    }
    assert {b["status"] for b in provider_batches(sim)} <= {"cancelling", "cancelled"}
    _await_provider(sim)
    assert batch_cli(source, db, out) == 0  # loads the cancelled batches, submits anew
    rows = batches.list_batches(db)
    assert [r.state for r in rows[:2]] == ["cancelled", "cancelled"] and rows[0].loaded
    assert main(["cancel", "batch_unknown", "--db", str(db)]) == 1
    assert "no open batch batch_unknown" in capsys.readouterr().err


def _await_provider(sim, timeout: float = 20.0) -> None:
    """Until the simulator has finished every batch (fast delays: well under a second)."""
    deadline = time.monotonic() + timeout
    while any(b["status"] not in batches.TERMINAL for b in provider_batches(sim)):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _finish(db: Path, keys: list[str], sim) -> batches.SyncReport:
    options = batches.BatchOptions(poll_interval=0.1)
    return asyncio.run(
        batches.run_batch_mode(db, keys, sim_settings(sim), wait=True, options=options)
    )


def test_dagster_asset_submits_and_the_sensor_has_each_batch_loaded(
    fast_sim, tmp_path, write_jsonl
) -> None:
    import dagster as dg

    from kimi_dagster.assets import kimi_assets
    from kimi_dagster.resource import KimiResource, KimiStore

    db = tmp_path / "k.duckdb"
    source = write_jsonl("tickets.jsonl", item_lines(15, max_tokens=64))
    pipeline = kimi_assets("kimi", chunk_size=15)
    (sensor,) = [s for s in pipeline.sensors if s.name == "kimi_batch_sensor"]
    resources = {
        "kimi": KimiResource(
            api_key=dg.EnvVar("MOONSHOT_API_KEY"), base_url=fast_sim.base_url, timeout=10
        ),
        "store": KimiStore(path=str(db)),
    }
    definitions = dg.Definitions(
        assets=pipeline.assets,
        jobs=[pipeline.inference_job],
        sensors=[sensor],
        resources=resources,
    )
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:

        def materialize(key: str, request: dg.RunRequest | None = None) -> dict:
            result = materialize_chunk(
                pipeline,
                instance,
                resources,
                key,
                run_config=request.run_config if request else {},
                tags=request.tags if request else None,
                raise_on_error=False,
            )
            if not result.success:
                return {}
            meta = result.asset_materializations_for_node("kimi_results")[0].metadata
            return {k: v.value for k, v in meta.items()}

        tick = partial(evaluate_sensor, sensor, instance, resources, definitions)

        materialize_ingest(pipeline, instance, resources, source, mode="batch")
        keys = instance.get_dynamic_partitions("kimi_chunks")
        for key in keys:  # the dataset's stored mode: no run config needed
            meta = materialize(key)
            assert meta["mode"] == "batch" and meta["batches_submitted"] == 1
            assert meta["pending"] == meta["items"] and meta["succeeded"] == 0
        assert len(provider_batches(fast_sim)) == 1

        _await_provider(fast_sim)
        result = tick()
        assert sorted(r.partition_key for r in result.run_requests) == keys
        assert {e.metadata["batch_state"].value for e in result.asset_events} == {"completed"}
        first = result.run_requests[0]

        def broken(*args, **kwargs):
            raise batches.BatchModeError("the load run fails")

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(batches, "sync_partitions", broken)
            assert materialize(first.partition_key, first) == {}  # a failed load run
        again = {r.partition_key: r.run_key for r in tick().run_requests}
        assert again[first.partition_key] == first.run_key.removesuffix(":0") + ":1"
        for request in tick().run_requests:
            meta = materialize(request.partition_key, request)
            assert meta["batches_loaded"] == 1 and meta["pending"] == 0
            assert meta["succeeded"] == meta["items"] and meta["cost_usd"] > 0
        assert tick().skip_message == "no open batches"

    assert ledger(db)[1:] == (15, 15) and ledger(db)[0] == billed(fast_sim)
    assert fast_sim.requests() == []


def test_cancel_adopts_a_batch_created_by_a_crashed_submitter(
    sim, db, write_jsonl, monkeypatch
) -> None:
    sim.configure(batch_delays=[0.05, 60, 0.05])
    report = ingest_file(db, write_jsonl("t.jsonl", item_lines(5)), chunk_size=10)
    original = batches._record_status

    def dies(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(batches, "_record_status", dies)
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(batches.sync_partitions(db, report.partitions, sim_settings(sim)))
    monkeypatch.setattr(batches, "_record_status", original)

    (cancelled,) = asyncio.run(
        batches.cancel(db, api_key=SIM_KEY, base_url=sim.base_url, dataset="t")
    )
    (provider,) = provider_batches(sim)
    assert cancelled.batch_id == provider["id"] and provider["status"] in (
        "cancelling",
        "cancelled",
    )


def test_crash_after_upload_before_recording_it_reuses_the_uploaded_file(
    fast_sim, db, write_jsonl, monkeypatch
) -> None:
    report = ingest_file(db, write_jsonl("t.jsonl", item_lines(6)), chunk_size=10)
    original = batches._update

    def dies_recording_the_file(db_path, submission_id, **changes):
        if "input_file_id" in changes:
            raise KeyboardInterrupt  # uploaded, id never written down
        original(db_path, submission_id, **changes)

    monkeypatch.setattr(batches, "_update", dies_recording_the_file)
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(batches.sync_partitions(db, report.partitions, sim_settings(fast_sim)))
    assert batches.list_batches(db)[0].state == "prepared"

    monkeypatch.setattr(batches, "_update", original)
    _finish(db, report.partitions, fast_sim)
    files = httpx.get(
        f"{fast_sim.base_url}/files", headers={"Authorization": f"Bearer {SIM_KEY}"}
    ).json()["data"]
    assert len([f for f in files if f["purpose"] == "batch"]) == 1
    assert len(provider_batches(fast_sim)) == 1 and ledger(db)[1:] == (6, 6)


def test_budgets_cap_what_is_submitted_by_its_worst_case(fast_sim, db, write_jsonl) -> None:
    from kimi_dagster.budgets import set_budget

    report = ingest_file(db, write_jsonl("t.jsonl", item_lines(20, max_tokens=256)), chunk_size=10)
    set_budget(db, "t", 0.004)  # room for the worst case of about eight items
    done = _finish(db, report.partitions, fast_sim)
    rows = batches.list_batches(db)
    submitted = sum(r.items for r in rows)
    assert done.budget_exhausted and 0 < submitted < 20
    assert float(sum(r.worst_cost_usd for r in rows)) <= 0.004
    assert list(statuses(db).values()).count("succeeded") == submitted
    assert ledger(db)[0] == billed(fast_sim) <= Decimal("0.004")

    set_budget(db, "t", 1.0)
    assert not _finish(db, report.partitions, fast_sim).budget_exhausted
    assert set(statuses(db).values()) == {"succeeded"}
    assert ledger(db)[0] == billed(fast_sim)


def test_sensor_resumes_a_submission_its_run_left_half_done(
    fast_sim, db, tmp_path, write_jsonl, monkeypatch
) -> None:
    import dagster as dg

    from kimi_dagster.assets import kimi_assets
    from kimi_dagster.resource import KimiResource, KimiStore

    report = ingest_file(db, write_jsonl("t.jsonl", item_lines(4)), chunk_size=10)
    monkeypatch.setattr(batches, "_advance", _dies)
    with pytest.raises(KeyboardInterrupt):  # the run died after recording, before uploading
        asyncio.run(batches.sync_partitions(db, report.partitions, sim_settings(fast_sim)))
    pipeline = kimi_assets("kimi")
    (sensor,) = [s for s in pipeline.sensors if s.name == "kimi_batch_sensor"]
    resources = {
        "kimi": KimiResource(api_key=dg.EnvVar("MOONSHOT_API_KEY"), base_url=fast_sim.base_url),
        "store": KimiStore(path=str(db)),
    }
    definitions = dg.Definitions(
        assets=pipeline.assets, jobs=[pipeline.inference_job], sensors=[sensor], resources=resources
    )
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        instance.add_dynamic_partitions("kimi_chunks", report.partitions)

        tick = partial(evaluate_sensor, sensor, instance, resources, definitions)

        assert tick().skip_message  # a live run may still be submitting it
        with duckdb.connect(str(db)) as con:
            con.execute("UPDATE batches SET updated_at = updated_at - INTERVAL 1 HOUR")
        (request,) = tick().run_requests
    assert request.partition_key == "t-00000" and request.tags["kimi/batch_action"] == "resume"
    assert request.run_config["ops"]["kimi_results"]["config"] == {"mode": "batch", "submit": False}


def _dies(*args, **kwargs):
    raise KeyboardInterrupt


def test_polling_lists_batches_instead_of_asking_for_each(sim, db, write_jsonl, monkeypatch):
    sim.configure(batch_delays=[0.05, 60, 0.05])
    report = ingest_file(db, write_jsonl("t.jsonl", item_lines(30)), chunk_size=10)
    asyncio.run(batches.sync_partitions(db, report.partitions, sim_settings(sim)))
    while {b["status"] for b in provider_batches(sim)} != {"in_progress"}:
        time.sleep(0.02)  # validated after 0.05 s
    calls: list[str] = []
    original = batches.KimiClient.request

    async def counted(self, method, path, **kwargs):
        calls.append(f"{method} {path}")
        return await original(self, method, path, **kwargs)

    monkeypatch.setattr(batches.KimiClient, "request", counted)
    changed = asyncio.run(batches.poll(db, sim_settings(sim)))
    assert calls == ["GET batches"]  # three batches, one listing request
    assert {state for _, state in changed} == {"in_progress"}
    assert {r.state for r in batches.list_batches(db)} == {"in_progress"}


def test_waiting_rides_out_a_failed_poll(fast_sim, db, write_jsonl, monkeypatch) -> None:
    from kimi_dagster.client import ApiError, ErrorKind

    report = ingest_file(db, write_jsonl("t.jsonl", item_lines(5)), chunk_size=10)
    original = batches.KimiClient.request
    failed: list[str] = []

    async def hiccups_once(self, method, path, **kwargs):
        if (method, path) == ("GET", "batches") and not failed:
            failed.append(path)
            raise ApiError(ErrorKind.RETRYABLE, "server_error", "try later", http_status=500)
        return await original(self, method, path, **kwargs)

    monkeypatch.setattr(batches.KimiClient, "request", hiccups_once)
    _finish(db, report.partitions, fast_sim)
    assert failed and set(statuses(db).values()) == {"succeeded"}


def test_fixed_sampling_parameters_are_dropped_from_batch_lines(fast_sim, db, write_jsonl):
    report = ingest_file(db, write_jsonl("t.jsonl", item_lines(3)), chunk_size=10)
    with duckdb.connect(str(db)) as con:  # as if stored before kimi-k2.5 fixed its sampling
        con.execute(
            "UPDATE items SET request = json_merge_patch(request, '{\"temperature\": 0.5}')"
        )
    _finish(db, report.partitions, fast_sim)  # the simulator answers a line with one by a 400
    assert set(statuses(db).values()) == {"succeeded"}
