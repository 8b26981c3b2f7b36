"""The Dagster web UI, driven in headless Chromium: ``dagster dev`` (webserver + daemon) on a
temporary DAGSTER_HOME with the shipped dagster.yaml, and the simulator. A dataset of six chunk
partitions is backfilled from the asset page (Materialize… → All → Launch backfill); one item
carries a fault marker that stops its run with a fatal 401, so that run's partitions fail.
"Re-execute from failure" on the backfill page then runs only those. DuckDB must hold every
item succeeded exactly once, and the simulator's bill no item paid twice.

Chromium is Debian's (/usr/bin/chromium, which ``make test`` installs); Playwright only drives it.
Screenshots go to test-artifacts/. Select with ``pytest -m ui``.
"""

from __future__ import annotations

import os
import urllib.request
import warnings
from pathlib import Path

import dagster as dg
import orjson
import pytest
from conftest import item_lines
from dagster_process import (
    REPO,
    DagsterProcess,
    dagster_home,
    free_port,
    ingest,
    start,
    wait_for,
    write_definitions,
)
from outcomes import assert_every_item_succeeded_once

warnings.filterwarnings("ignore", category=dg.BetaWarning)

pytestmark = pytest.mark.ui

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = REPO / "test-artifacts"
ITEMS, CHUNK = 30, 5  # six partitions; two per run (chunks_per_run), so three backfill runs
FAULTY_ITEM = 22  # in tickets-00004: its run (partitions 4 and 5) fails
BACKFILL_DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _server_up(url: str) -> bool:
    try:
        with _LOCAL.open(f"{url}/server_info", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _finished_backfill(instance: dg.DagsterInstance, backfill_id: str):
    backfill = instance.get_backfill(backfill_id)
    return backfill if backfill and backfill.status.value in BACKFILL_DONE else None


def _partition_ranges(instance: dg.DagsterInstance, backfill_id: str) -> list[tuple[str, str]]:
    runs = instance.get_runs(filters=dg.RunsFilter.for_backfill(backfill_id))
    return sorted(
        (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
        for r in runs
    )


@pytest.fixture
def dagster_dev(sim, tmp_path: Path):
    """``dagster dev`` on a free port; yields (url, instance, db). Stopped by process group."""
    if not CHROMIUM.exists():
        pytest.fail("/usr/bin/chromium is missing: `make test` installs Debian's chromium")
    home = dagster_home(tmp_path)
    db = tmp_path / "kimi.duckdb"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "KIMI_DAGSTER_DB": str(db),
        "KIMI_DAGSTER_INBOX": str(tmp_path / "inbox"),
        "KIMI_DAGSTER_TIER": "5",
    }
    code = write_definitions(tmp_path, chunk_size=CHUNK, chunks_per_run=2, auto_run=False)
    port = free_port()
    argv = ["dagster", "dev", "-f", str(code), "-h", "127.0.0.1", "-p", str(port)]
    dev: DagsterProcess = start(argv, env, tmp_path / "dagster_dev.log", tmp_path)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _server_up(url), "the webserver", timeout=120, process=dev)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            yield url, instance, db
    finally:
        dev.stop()


def test_backfill_and_reexecute_from_failure_in_the_ui(dagster_dev, sim, tmp_path) -> None:
    from playwright.sync_api import sync_playwright

    url, instance, db = dagster_dev
    lines = item_lines(ITEMS, prefix="ticket", max_tokens=64)
    lines[FAULTY_ITEM]["message"] += " [[sim:fail=unauthorized:1]]"
    source = tmp_path / "tickets.jsonl"
    source.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    ingest(instance, db, source, CHUNK)  # registers the six chunk partitions
    keys = [f"tickets-{n:05d}" for n in range(ITEMS // CHUNK)]
    assert instance.get_dynamic_partitions("kimi_chunks") == keys
    ARTIFACTS.mkdir(exist_ok=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(90_000)
            # Dagster's first-visit "join the community" dialog, whenever it shows up
            skip = page.get_by_role("button", name="Skip")
            page.add_locator_handler(skip, lambda button: button.click())

            # The asset page: Materialize… → All partitions → Launch backfill
            page.goto(f"{url}/assets/kimi_results", wait_until="domcontentloaded")
            page.get_by_role("button", name="Materialize…").click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_role("button", name="All", exact=True).click()
            dialog.get_by_text(f"{len(keys)} partitions", exact=True).wait_for()
            dialog.get_by_role("button", name="Launch backfill").click()
            link = page.locator("a[href^='/runs/b/']").first  # the "Created backfill" toast
            backfill_id = link.get_attribute("href").removeprefix("/runs/b/").split("?")[0]

            backfill = wait_for(
                lambda: _finished_backfill(instance, backfill_id), "the backfill", timeout=150
            )
            assert backfill.status.value == "COMPLETED_FAILED"
            assert _partition_ranges(instance, backfill_id) == [
                ("tickets-00000", "tickets-00001"),
                ("tickets-00002", "tickets-00003"),
                ("tickets-00004", "tickets-00005"),
            ]
            failed = [
                r for r in instance.get_runs(filters=dg.RunsFilter.for_backfill(backfill_id))
                if r.status == dg.DagsterRunStatus.FAILURE
            ]  # fmt: skip
            assert [r.tags["dagster/asset_partition_range_start"] for r in failed] == [
                "tickets-00004"
            ]

            page.goto(f"{url}/assets/kimi_results?view=partitions", wait_until="domcontentloaded")
            page.get_by_text("tickets-00004").first.wait_for()
            page.screenshot(path=ARTIFACTS / "ui-asset-page.png", full_page=True)

            # The backfill page: ⌄ → Re-execute from failure
            page.goto(f"{url}/runs/b/{backfill_id}", wait_until="domcontentloaded")
            page.get_by_text("Failed", exact=True).first.wait_for()
            page.screenshot(path=ARTIFACTS / "ui-backfill-page.png", full_page=True)
            menu = page.get_by_role("img", name="expand_more")
            page.get_by_role("button").filter(has=menu).click()
            page.get_by_role("menuitem", name="Re-execute from failure").click()

            def child_backfill():
                for candidate in instance.get_backfills():
                    if candidate.tags.get("dagster/parent_backfill_id") == backfill_id:
                        return candidate.backfill_id
                return None

            retry_id = wait_for(child_backfill, "the re-execution backfill", timeout=30)
            retry = wait_for(
                lambda: _finished_backfill(instance, retry_id), "the re-execution", timeout=120
            )
            assert retry.status.value == "COMPLETED_SUCCESS"
            # only the failed partitions ran again
            assert _partition_ranges(instance, retry_id) == [("tickets-00004", "tickets-00005")]
            page.goto(f"{url}/runs/b/{retry_id}", wait_until="domcontentloaded")
            page.get_by_text("Succeeded", exact=True).first.wait_for()
            page.screenshot(path=ARTIFACTS / "ui-reexecuted-backfill-page.png", full_page=True)
        finally:
            browser.close()

    assert_every_item_succeeded_once(db, sim, ITEMS)
    faulted = [r for r in sim.requests() if r["status"] == 401]
    assert len(faulted) == 1  # the marker's one fatal reply, not billed
