"""The seed's workflow through the real CLI process: batch, resume, retry file, exports."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
from conftest import SIM_KEY, item_lines


def cli(*args: str, sim) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MOONSHOT_BASE_URL=sim.base_url, MOONSHOT_API_KEY=SIM_KEY)
    return subprocess.run(
        [sys.executable, "-m", "kimi_dagster.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_batch_round_trip_resume_and_retry_recipe(sim, tmp_path, write_jsonl) -> None:
    lines = item_lines(50)
    lines[7]["message"] += " [[sim:content_filter]]"  # fails for good: 400 content_filter
    lines[9]["message"] += " [[sim:fail=server_error:2]]"  # two 500s, then succeeds
    source = write_jsonl("tickets.jsonl", lines)
    db, out = tmp_path / "k.duckdb", tmp_path / "results.json"

    done = cli(
        "batch",
        "-i",
        str(source),
        "-o",
        str(out),
        "-c",
        "20",
        "-t",
        "10",
        "--tier",
        "5",
        "--db",
        str(db),
        "--chunk-size",
        "16",
        sim=sim,
    )
    assert done.returncode == 0, done.stderr
    result = orjson.loads(out.read_bytes())
    assert result["summary"]["succeeded"] == 49 and result["summary"]["failed"] == 1
    items = {item["id"]: item for item in result["items"]}
    assert set(items) == {line["id"] for line in lines}
    first = items["item0000"]
    assert set(first) >= {
        "id",
        "input",
        "output",
        "success",
        "error",
        "finish_reason",
        "usage",
        "cost_usd",
        "latency_ms",
        "attempts",
    }
    assert first["success"] is True and first["output"].startswith("SIM-")
    assert first["usage"]["total_tokens"] == (
        first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
    )
    assert items["item0009"]["attempts"] == 3 and items["item0009"]["success"]
    assert items["item0007"]["success"] is False
    assert "high risk" in items["item0007"]["error"]
    billed = len(sim.bill())
    assert billed == 49

    # The seed's jq recipe turns the failures into a valid retry file.
    retry = [{"id": i["id"], "message": i["input"]} for i in result["items"] if not i["success"]]
    assert retry == [{"id": "item0007", "message": lines[7]["message"]}]

    # Running the same command again resumes: nothing that succeeded is sent again; the
    # failed item is retried (and fails again), and -o .jsonl writes one item per line.
    again = cli(
        "batch",
        "-i",
        str(source),
        "-o",
        str(tmp_path / "r.jsonl"),
        "--tier",
        "5",
        "--db",
        str(db),
        "--chunk-size",
        "16",
        sim=sim,
    )
    assert again.returncode == 0, again.stderr
    assert len(sim.bill()) == billed
    assert [r["request_id"].split(":")[1] for r in sim.requests()[-1:]] == ["item0007"]
    jsonl = [orjson.loads(x) for x in (tmp_path / "r.jsonl").read_bytes().splitlines()]
    assert len(jsonl) == 50

    requests_before = len(sim.requests())
    missing = cli(
        "batch",
        "-i",
        str(source),
        "-o",
        str(out),
        "--missing-only",
        "--tier",
        "5",
        "--db",
        str(db),
        sim=sim,
    )
    assert missing.returncode == 0
    assert len(sim.requests()) == requests_before  # the failed item is not retried

    status = cli("status", "--json", "--db", str(db), sim=sim)
    row = orjson.loads(status.stdout)[0]
    assert (row["dataset"], row["succeeded"], row["failed"], row["pending"]) == (
        "tickets",
        49,
        1,
        0,
    )

    sql = cli(
        "sql",
        "SELECT count(*) AS n FROM attempts WHERE outcome = 'retry'",
        "--json",
        "--db",
        str(db),
        sim=sim,
    )
    assert orjson.loads(sql.stdout) == [{"n": 2}]


def test_missing_key_and_bad_file_are_clear_errors(sim, tmp_path) -> None:
    env = dict(os.environ)
    env.pop("MOONSHOT_API_KEY", None)
    source = tmp_path / "x.jsonl"
    source.write_text('{"id": "a", "message": "hi"}\n')
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kimi_dagster.cli",
            "batch",
            "-i",
            str(source),
            "-o",
            str(tmp_path / "o.json"),
            "--db",
            str(tmp_path / "k.duckdb"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "set MOONSHOT_API_KEY" in done.stderr
    missing = cli("batch", "-i", str(tmp_path / "nope.jsonl"), "-o", "o.json", sim=sim)
    assert missing.returncode == 1 and "input file not found" in missing.stderr
