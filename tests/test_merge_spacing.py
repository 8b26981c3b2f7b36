"""Merges are spaced by the CPU they cost (issue 3's CPU floor), never by time spent waiting
for the file, and never when concurrent runs share a dataset cap (its re-read rides on them)."""

from __future__ import annotations

import time

import duckdb

from kimi_dagster.catalogue import Catalogue
from kimi_dagster.limits import RateLimiter, resolve_limits
from kimi_dagster.runner import Runner, RunOptions
from kimi_dagster.spool import SpoolWriter
from kimi_dagster.store import migrate


def _runner(tmp_path, merge, **extra) -> Runner:
    con = duckdb.connect()
    migrate(con)
    return Runner(
        client=None,  # type: ignore[arg-type]  # no request is sent
        limiter=RateLimiter(resolve_limits(5)),
        catalogue=Catalogue.from_connection(con),
        spool=SpoolWriter(tmp_path, "spacing"),
        run_id="spacing",
        options=RunOptions(merge_interval=2.0),
        merge=merge,
        **extra,
    )


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_costly_merges_are_spaced_up_to_five_intervals(tmp_path) -> None:
    runner = _runner(tmp_path, lambda: _burn(0.02))
    cpu = runner._merge_cpu()
    assert cpu >= 0.02
    assert runner._next_merge_gap(cpu) == min(10.0, 200 * cpu) > 2.0
    assert runner._next_merge_gap(1.0) == 10.0
    assert runner._next_merge_gap(0.001) == 2.0


def test_waiting_for_the_file_does_not_count(tmp_path) -> None:
    runner = _runner(tmp_path, lambda: time.sleep(0.2))
    assert runner._next_merge_gap(runner._merge_cpu()) == 2.0


def test_shared_dataset_caps_keep_the_shortest_interval(tmp_path) -> None:
    runner = _runner(
        tmp_path,
        lambda: _burn(0.02),
        dataset_budgets={"d": (1.0, 0.0, 0.0)},
        others_spend=lambda: {"d": 0.0},
    )
    assert runner._next_merge_gap(runner._merge_cpu()) == 2.0
