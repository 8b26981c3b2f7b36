"""Spending caps per dataset, kept in DuckDB next to the ledger they are checked against.

A run already has its own cap (``RunOptions.budget_usd``); a dataset's cap also counts what
earlier runs spent on it, so a dataset worked through in many runs (a backfill, retries, a
resume) never costs more than its owner allowed. The cap is set from the shell (``kimi-dagster
budget``) and stored in ``budgets``; a resource or component may give caps too
(``dataset_budgets``), and the stricter of the two holds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import duckdb

from kimi_dagster.store import connect, ensure_schema, run_sql


@dataclass(frozen=True, slots=True)
class DatasetBudget:
    dataset: str
    budget_usd: float | None  # None: no cap stored
    spent_usd: float  # every attempt of the dataset in the ledger
    reserved_usd: float  # worst case of its batches not loaded yet (not in the ledger)
    left_usd: float | None
    others_usd: float  # spent by runs other than the one asking, and reserved by batches


def read_budgets(
    con: duckdb.DuckDBPyConnection,
    *,
    partition_keys: Sequence[str] = (),
    dataset: str | None = None,
    run_id: str | None = None,
) -> dict[str, DatasetBudget]:
    """Cap and spend of the datasets of ``partition_keys`` (and of ``dataset``)."""
    rows = run_sql(
        con,
        "queries/dataset_budgets",
        {"partition_keys": list(partition_keys), "dataset": dataset, "run_id": run_id},
    ).fetchall()
    return {row[0]: DatasetBudget(*row) for row in rows}


def run_caps(
    stored: Mapping[str, DatasetBudget], configured: Mapping[str, float]
) -> dict[str, tuple[float, float, float]]:
    """Per dataset with a cap: (the stricter cap, spent or reserved so far, spent or reserved by
    others) for the runner to reserve in; an open batch may still be billed its worst case."""
    caps: dict[str, tuple[float, float, float]] = {}
    for name, budget in stored.items():
        limits = [b for b in (budget.budget_usd, configured.get(name)) if b is not None]
        if limits:
            taken = budget.spent_usd + budget.reserved_usd
            caps[name] = (min(limits), taken, budget.others_usd)
    return caps


def others_spend(
    db_path: str | os.PathLike[str], partition_keys: Sequence[str], run_id: str
) -> dict[str, float]:
    """What runs other than ``run_id`` have spent (or open batches reserved) on the datasets of
    ``partition_keys`` so far, as merged into the file: a running run re-reads it to see
    concurrent runs' spend."""
    with connect(db_path, read_only=True, timeout=2.0) as con:
        stored = read_budgets(con, partition_keys=partition_keys, run_id=run_id)
    return {name: budget.others_usd for name, budget in stored.items()}


def set_budget(db_path: str | os.PathLike[str], dataset: str, budget_usd: float | None) -> None:
    """Set a dataset's cap, or remove it (None). Caps and costs are in the currency of the
    platform that bills (USD, CNY on .cn): ``*_usd`` names that currency on .cn too."""
    if budget_usd is not None and budget_usd < 0:
        raise ValueError(f"a budget must be 0 or more, got {budget_usd}")
    ensure_schema(db_path)
    with connect(db_path) as con:
        if budget_usd is None:
            run_sql(con, "queries/clear_budget", {"dataset": dataset})
        else:
            run_sql(con, "queries/set_budget", {"dataset": dataset, "budget_usd": budget_usd})
