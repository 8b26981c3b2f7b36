"""The API key never leaves the process environment: after real Dagster materializations and CLI
runs (a good key, a rejected key, a run killed mid-flight), neither key shows up in captured
output and logs, exception and failure messages, Dagster's storage (event log, run config,
compute logs, metadata), the DuckDB file or the spool.

Each place is also shown to be searched for real: a sentinel planted as an item id (duplicated,
so that it also lands in rejection messages) is found in every one of them.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import dagster as dg
import duckdb
from conftest import item_lines
from in_process import materialize_chunk, materialize_ingest

from kimi_dagster.assets import kimi_assets
from kimi_dagster.resource import KimiResource, KimiStore
from kimi_dagster.spool import spool_dir

warnings.filterwarnings("ignore", category=dg.BetaWarning)

TOKEN = uuid.uuid4().hex
KEY = f"sk-goodkey{TOKEN}"
WRONG = f"sk-wrongkey{TOKEN[::-1]}"
SENTINEL = f"sentinel{TOKEN[:16]}"


def needles() -> dict[str, bytes]:
    """What must never be found (the distinctive parts of both keys) and the sentinel."""
    return {"key": KEY[3:].encode(), "wrong": WRONG[3:].encode(), "sentinel": SENTINEL.encode()}


def files_with(root: Path) -> dict[str, set[str]]:
    """needle name -> files under ``root`` whose bytes contain it."""
    found: dict[str, set[str]] = {name: set() for name in needles()}
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for name, needle in needles().items():
                if needle in data:
                    found[name].add(str(path.relative_to(root)))
    return found


def in_text(text: str) -> set[str]:
    return {name for name, needle in needles().items() if needle.decode() in text}


def duckdb_values(db: Path) -> str:
    """Every value of every table and view, as text (the file itself is compressed)."""
    with duckdb.connect(str(db), read_only=True) as con:
        tables = con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
        ).fetchall()
        return "\n".join(
            repr(con.execute(f'SELECT * FROM "{name}"').fetchall()) for (name,) in tables
        )


def cli(args: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kimi_dagster.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_keys_appear_nowhere_after_runs_with_good_and_rejected_keys(
    sim, tmp_path, write_jsonl, monkeypatch, capfd, caplog
) -> None:
    sim.configure(api_key=KEY)  # any other key: 401 incorrect_api_key_error
    monkeypatch.setenv("MOONSHOT_API_KEY", KEY)
    monkeypatch.setenv("KIMI_WRONG_KEY", WRONG)
    caplog.set_level(logging.DEBUG)  # every library's debug logging, httpx and aiohttp included
    dup = f"{SENTINEL}dup"
    lines = [{"id": dup, "message": "first"}, {"id": dup, "message": "again"}]
    source = write_jsonl("secrets.jsonl", lines + item_lines(30, prefix=SENTINEL, max_tokens=32))
    home, db = tmp_path / "dagster_home", tmp_path / "kimi.duckdb"
    home.mkdir()
    texts: dict[str, str] = {}  # where -> what was said there

    # Dagster: ingest, one partition with the good key, one with a rejected key.
    pipeline = kimi_assets("kimi", chunk_size=16)
    store = KimiStore(path=str(db))

    def kimi(var: str) -> KimiResource:
        return KimiResource(api_key=dg.EnvVar(var), base_url=sim.base_url, tier=5, timeout=10)

    with dg.instance_for_test(temp_dir=str(home)) as instance:
        ingest = materialize_ingest(
            pipeline, instance, {"kimi": kimi("MOONSHOT_API_KEY"), "store": store}, source
        )
        good = materialize_chunk(
            pipeline, instance, {"kimi": kimi("MOONSHOT_API_KEY"), "store": store}, "secrets-00000"
        )
        assert good.success
        bad = materialize_chunk(
            pipeline,
            instance,
            {"kimi": kimi("KIMI_WRONG_KEY"), "store": store},
            "secrets-00001",
            raise_on_error=False,
        )
        assert not bad.success
        failure = next(e for e in bad.all_events if e.event_type_value == "STEP_FAILURE")
        texts["step failure"] = str(failure.step_failure_data.error)
        assert "incorrect_api_key_error" in texts["step failure"]
        for run in instance.get_runs():
            texts[f"run {run.run_id} config"] = repr(run.run_config) + repr(run.tags)
            texts[f"run {run.run_id} events"] = "\n".join(
                repr(event) for event in instance.all_logs(run.run_id)
            )
        texts["materialization metadata"] = repr(
            [
                e.event_specific_data
                for result in (ingest, good)
                for e in result.all_events
                if e.is_step_materialization
            ]
        )

    # The CLI: a rejected key (a clear error), then a run killed mid-flight (its spool stays
    # behind), then the run to completion.
    env = dict(os.environ)
    out = tmp_path / "results.json"
    batch = ["batch", "-i", str(source), "-o", str(out), "--db", str(db), "-c", "2"]
    batch += ["--tier", "5", "--chunk-size", "16"]
    rejected = cli(batch, dict(env, MOONSHOT_API_KEY=WRONG))
    texts["cli 401 stdout"], texts["cli 401 stderr"] = rejected.communicate(timeout=60)
    assert rejected.returncode == 2 and "incorrect_api_key_error" in texts["cli 401 stderr"]

    sim.configure(latency=0.3)  # so that the kill finds requests in flight
    killed = cli(batch, env)
    while killed.poll() is None and not any(
        f.stat().st_size for f in spool_dir(db).glob("*.jsonl")
    ):
        time.sleep(0.02)  # until a reply is spooled; more are on the way
    assert killed.poll() is None
    killed.send_signal(signal.SIGKILL)
    texts["killed cli stdout"], texts["killed cli stderr"] = killed.communicate(timeout=60)
    spool = files_with(spool_dir(db))
    sim.configure(latency=0.05)

    finished = cli(batch, env)
    texts["cli stdout"], texts["cli stderr"] = finished.communicate(timeout=120)
    assert finished.returncode == 0, texts["cli stderr"]
    texts["captured output"] = "".join(capfd.readouterr())
    texts["captured logs"] = "\n".join(r.getMessage() for r in caplog.records)
    texts["duckdb values"] = duckdb_values(db)

    leaks = {where: in_text(text) - {"sentinel"} for where, text in texts.items()}
    assert not any(leaks.values()), leaks
    on_disk = files_with(tmp_path)
    assert on_disk["key"] == on_disk["wrong"] == set() == spool["key"] == spool["wrong"]

    # The search is real: the sentinel was found in each kind of place searched.
    for where in ("captured output", "duckdb values", "cli stderr", "materialization metadata"):
        assert "sentinel" in in_text(texts[where]), where
    assert any("sentinel" in in_text(t) for w, t in texts.items() if w.endswith("events"))
    assert spool["sentinel"], "the killed run left spooled records"
    found = on_disk["sentinel"]
    assert any(f.startswith("dagster_home/history/runs/") for f in found), found  # event logs
    assert any(f.endswith(".err") and "compute_logs" in f for f in found), found
    assert any(f.startswith("kimi.duckdb") for f in found), found
    assert "secrets.jsonl:2: duplicate id" in texts["cli stderr"]


def test_the_code_location_the_ui_shows_holds_no_key(monkeypatch) -> None:
    """What the webserver receives from the code location (resources page, run config
    defaults): the shipped definitions name the variable, never its value. A key written into
    the code as a literal would show, which is why the search finds the sentinel then."""
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster._serdes import serialize_value

    from kimi_dagster.defs import build_definitions

    monkeypatch.setenv("MOONSHOT_API_KEY", KEY)

    def snapshot(defs: dg.Definitions) -> str:
        return serialize_value(RepositorySnap.from_def(defs.get_repository_def()))

    shipped = snapshot(build_definitions())
    assert not in_text(shipped) and "MOONSHOT_API_KEY" in shipped
    literal = dg.Definitions(
        assets=kimi_assets("kimi").assets,
        resources={"kimi": KimiResource(api_key=SENTINEL), "store": KimiStore()},
    )
    assert in_text(snapshot(literal)) == {"sentinel"}
