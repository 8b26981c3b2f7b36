"""The SQL views, status, exports and retry-failed through the real path (the CLI against the
simulator), every figure checked against the simulator's own bill and request log."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import duckdb
import orjson
import pytest
from conftest import SIM_KEY
from test_cli import cli

from kimi_dagster.cli import main

SYSTEM = (
    "You are a support triage assistant for a large online shop. Read the customer's ticket and "
    "answer with the department that should handle it, a priority from one to four, and one "
    "sentence that explains the choice to the agent who picks the ticket up next."
)  # > 64 tokens, shared: the prefix cache serves it once the first answers are in
CHUNK = 20
FILTERED = (3, 17, 33)  # refused once with content_filter: the item fails; a retry succeeds
FLAKY = (5, 25)  # two 500s, then an answer
BIG_MODEL = range(50, 60)  # kimi-k2.6 instead of the default kimi-k2.5


def shop_lines() -> list[dict]:
    lines = []
    for i in range(60):
        line = {"id": f"q{i:03d}", "system": SYSTEM, "message": f"Ticket {i}: where is my order?"}
        line["max_tokens"] = 300
        if i in FILTERED:
            line["message"] += " [[sim:fail=content_filter:1]]"
        if i in FLAKY:
            line["message"] += " [[sim:fail=server_error:2]]"
        if i in BIG_MODEL:
            line["model"] = "kimi-k2.6"
        lines.append(line)
    return lines


def partition_of(request_id: str) -> str:
    """attempt ids are <run>:<item id>:<n>; items are numbered into chunks in file order."""
    item = request_id.split(":")[-2]
    return f"shop-{int(item[1:]) // CHUNK:05d}"


def view(db: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


def json_out(capsys, *args: str):
    assert main(list(args)) == 0
    return orjson.loads(capsys.readouterr().out)


def test_views_status_exports_and_retry_against_the_bill(sim, tmp_path, write_jsonl, capsys):
    db = tmp_path / "k.duckdb"
    source = write_jsonl("shop.jsonl", shop_lines())
    out = tmp_path / "out.json"
    ingest = cli("ingest", str(source), "--db", str(db), "--chunk-size", str(CHUNK), sim=sim)
    assert ingest.returncode == 0, ingest.stderr
    assert view(db, "SELECT count(*) FROM pending_items") == [(60,)]

    done = cli(
        "batch", "-i", str(source), "-o", str(out), "-c", "10", "-t", "10", "--tier", "5",
        "--db", str(db), sim=sim,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    bill, log = sim.bill(), sim.requests()
    assert len(bill) == 57 and len(log) == 57 + 3 + 4

    # The ledger is the bill, line by line (the attempt id travels as X-Request-Id).
    attempts = {
        r[0]: r[1:]
        for r in view(
            db,
            "SELECT attempt_id, prompt_tokens, completion_tokens, cached_tokens, "
            "cost_usd::DOUBLE FROM attempts WHERE outcome = 'ok'",
        )
    }
    assert set(attempts) == {b["request_id"] for b in bill}
    for b in bill:
        tokens = (b["prompt_tokens"], b["completion_tokens"], b["cached_tokens"])
        assert attempts[b["request_id"]][:3] == tokens
        assert attempts[b["request_id"]][3] == pytest.approx(b["cost_usd"], abs=1e-9)
    billed = sum(b["cost_usd"] for b in bill)
    ledger = view(db, "SELECT sum(cost_usd)::DOUBLE FROM attempts")[0][0]
    assert round(ledger, 2) == round(billed, 2) and ledger == pytest.approx(billed, abs=1e-6)

    # cost_by_partition: requests from the request log, answers and cost from the bill
    want: dict[str, list] = defaultdict(lambda: [0, 0, 0.0])
    for entry in log:
        want[partition_of(entry["request_id"])][0] += 1
    for b in bill:
        want[partition_of(b["request_id"])][1] += 1
        want[partition_of(b["request_id"])][2] += b["cost_usd"]
    rows = view(
        db,
        "SELECT partition_key, requests, succeeded, cost_usd::DOUBLE FROM cost_by_partition "
        "ORDER BY 1",
    )
    assert [r[0] for r in rows] == ["shop-00000", "shop-00001", "shop-00002"]
    for key, requests, succeeded, cost in rows:
        assert (requests, succeeded) == tuple(want[key][:2])
        assert cost == pytest.approx(want[key][2], abs=1e-6)

    # cost_by_model and cost_by_day
    by_model: dict[str, list] = defaultdict(lambda: [0, 0, 0.0])
    for b in bill:
        by_model[b["model"]][0] += b["prompt_tokens"]
        by_model[b["model"]][1] += b["completion_tokens"]
        by_model[b["model"]][2] += b["cost_usd"]
    rows = view(
        db,
        "SELECT model, sum(prompt_tokens), sum(completion_tokens), sum(cost_usd)::DOUBLE "
        "FROM cost_by_model GROUP BY model ORDER BY model",
    )
    assert [r[0] for r in rows] == ["kimi-k2.5", "kimi-k2.6"]
    for model, prompt, completion, cost in rows:
        assert (prompt, completion) == tuple(by_model[model][:2])
        assert cost == pytest.approx(by_model[model][2], abs=1e-6)
    ((day, tokens, cost),) = view(
        db, "SELECT day, sum(tokens), sum(cost_usd)::DOUBLE FROM cost_by_day GROUP BY day"
    )
    assert str(day) == time.strftime("%Y-%m-%d", time.gmtime(bill[0]["ts"]))
    assert tokens == sum(b["prompt_tokens"] + b["completion_tokens"] for b in bill)
    assert cost == pytest.approx(billed, abs=1e-6)

    # throughput_per_minute: every request the simulator saw; tokens the gateway charged
    ((sent, charged, limited),) = view(
        db, "SELECT sum(rpm_actual), sum(tpm_actual), sum(rate_limited) FROM throughput_per_minute"
    )
    assert (sent, limited) == (len(log), 0)
    gateway = sum(e["gateway_tokens"] for e in log)
    answered = sum(e["gateway_tokens"] for e in log if e["status"] == 200)
    assert charged == pytest.approx(gateway, rel=0.02)  # failed requests: the local estimate
    ok_charged = view(
        db,
        "SELECT sum(a.prompt_tokens + i.max_tokens) FROM attempts a JOIN items i "
        "USING (dataset, item_id) WHERE a.outcome = 'ok'",
    )[0][0]
    assert ok_charged == answered

    # latency_percentiles over the answered requests; the simulator takes 50 ms
    rows = view(db, "SELECT model, requests, p50_ms, p95_ms, max_ms FROM latency_percentiles")
    assert {r[0]: r[1] for r in rows} == dict(Counter(b["model"] for b in bill))
    assert all(50 <= p50 <= p95 <= top for _, _, p50, p95, top in rows)

    # failures_by_error: attempts by error type as the simulator logged them; final failures
    rows = view(db, "SELECT error_type, attempts, items_failed FROM failures_by_error")
    logged = Counter(e["error"] for e in log if e["status"] != 200)
    assert {r[0]: r[1] for r in rows} == dict(logged) == {"server_error": 4, "content_filter": 3}
    assert {r[0]: r[2] for r in rows} == {"server_error": 0, "content_filter": 3}

    # cache_hit_ratio per model, from the bill's cached tokens
    rows = view(
        db, "SELECT model, cached_tokens, prompt_tokens, cache_hit_ratio FROM cache_hit_ratio"
    )
    for model, cached, prompt, ratio in rows:
        mine = [b for b in bill if b["model"] == model]
        assert cached == sum(b["cached_tokens"] for b in mine) > 0
        assert prompt == sum(b["prompt_tokens"] for b in mine)
        assert float(ratio) == pytest.approx(cached / prompt, abs=1e-4)

    # pending_items: the refused ones; dataset_summary: the whole bill
    pending = view(db, "SELECT item_id, status, error_type FROM pending_items ORDER BY 1")
    assert pending == [(f"q{i:03d}", "failed", "content_filter") for i in FILTERED]
    ((items, ok, failed, waiting, requests, total, cost),) = view(
        db,
        "SELECT items, succeeded, failed, pending, requests, total_tokens, cost_usd::DOUBLE "
        "FROM dataset_summary WHERE dataset = 'shop'",
    )
    assert (items, ok, failed, waiting, requests) == (60, 57, 3, 0, len(log))
    assert total == sum(b["prompt_tokens"] + b["completion_tokens"] for b in bill)
    assert cost == pytest.approx(billed, abs=1e-6)

    # status --json: the same figures, plus the last minute's rate and the ETA
    (status,) = json_out(capsys, "status", "--json", "--db", str(db))
    assert status["batch_progress"] == "60/60" and status["pct_done"] == 100
    assert status["total_tokens"] == total and status["cost_usd"] == pytest.approx(billed, abs=1e-6)
    assert status["rpm_actual"] == len(log)  # the whole run fits in the last minute
    assert status["eta_seconds"] == 0

    # exports: the seed's JSON, JSON Lines of a partition range, Parquet of one partition
    seed = orjson.loads(out.read_bytes())
    outputs = dict(view(db, "SELECT item_id, output FROM results"))
    assert {i["id"]: i["output"] for i in seed["items"]} == outputs
    assert seed["summary"]["cost_usd"] == pytest.approx(billed, abs=1e-6)
    jsonl = tmp_path / "range.jsonl"
    assert main(["export", "--dataset", "shop", "-o", str(jsonl), "--from", "shop-00001",
                 "--to", "shop-00002", "--db", str(db)]) == 0  # fmt: skip
    lines = [orjson.loads(line) for line in jsonl.read_bytes().splitlines()]
    assert [line["id"] for line in lines] == [f"q{i:03d}" for i in range(20, 60)]
    assert all(line["output"] == outputs[line["id"]] for line in lines)
    parquet = tmp_path / "first.parquet"
    assert main(["export", "--dataset", "shop", "-o", str(parquet), "--from", "shop-00000",
                 "--to", "shop-00000", "--db", str(db)]) == 0  # fmt: skip
    with duckdb.connect() as con:
        n, spent = con.execute(
            f"SELECT count(*), sum(cost_usd) FROM read_parquet('{parquet}')"
        ).fetchone()
    assert n == CHUNK and spent == pytest.approx(want["shop-00000"][2], abs=1e-6)

    # retry-failed sends only the failed items, once each, and they succeed now
    before = len(sim.requests())
    retried = cli("retry-failed", "--dataset", "shop", "--tier", "5", "--db", str(db), sim=sim)
    assert retried.returncode == 0, retried.stderr
    again = sim.requests()[before:]
    assert sorted(e["request_id"].split(":")[-2] for e in again) == [f"q{i:03d}" for i in FILTERED]
    assert view(db, "SELECT count(*) FROM pending_items") == [(0,)]
    ledger = view(db, "SELECT sum(cost_usd)::DOUBLE FROM attempts")[0][0]
    assert ledger == pytest.approx(sum(b["cost_usd"] for b in sim.bill()), abs=1e-6)


def test_sql_while_a_run_writes(sim, tmp_path, write_jsonl, capsys) -> None:
    """`kimi-dagster sql` answers while a batch run is writing to the same file."""
    db = tmp_path / "k.duckdb"
    source = write_jsonl(
        "slow.jsonl", [{"id": f"s{i}", "message": f"m{i}", "max_tokens": 50} for i in range(80)]
    )
    sim.configure(latency=0.25)
    env = dict(os.environ, MOONSHOT_BASE_URL=sim.base_url, MOONSHOT_API_KEY=SIM_KEY)
    run = subprocess.Popen(
        [sys.executable, "-m", "kimi_dagster.cli", "batch", "-i", str(source), "-o",
         str(tmp_path / "o.jsonl"), "-c", "4", "--tier", "5", "--db", str(db)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        seen = []
        while run.poll() is None or not seen:
            if db.exists():
                rows = json_out(
                    capsys, "sql", "SELECT count(*) AS n FROM attempts", "--json", "--db", str(db)
                )
                seen.append(rows[0]["n"])
            time.sleep(0.3)
        assert run.wait(timeout=60) == 0, run.stderr.read()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert seen == sorted(seen) and len(seen) >= 3
    assert any(0 < n < 80 for n in seen)  # read mid-run, not only before or after
    assert json_out(capsys, "sql", "SELECT count(*) AS n FROM attempts", "--json",
                    "--db", str(db)) == [{"n": 80}]  # fmt: skip
