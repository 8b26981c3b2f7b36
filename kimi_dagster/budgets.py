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
    left_usd: float | None


def read_budgets(
    con: duckdb.DuckDBPyConnection,
    *,
    partition_keys: Sequence[str] = (),
    dataset: str | None = None,
) -> dict[str, DatasetBudget]:
    """Cap and spend of the datasets of ``partition_keys`` (and of ``dataset``)."""
    rows = run_sql(
        con,
        "queries/dataset_budgets",
        {"partition_keys": list(partition_keys), "dataset": dataset},
    ).fetchall()
    return {row[0]: DatasetBudget(*row) for row in rows}


def run_caps(
    stored: Mapping[str, DatasetBudget], configured: Mapping[str, float]
) -> dict[str, tuple[float, float]]:
    """Per dataset with a cap: (the stricter cap, spent so far) for the runner to reserve in."""
    caps: dict[str, tuple[float, float]] = {}
    for name, budget in stored.items():
        limits = [b for b in (budget.budget_usd, configured.get(name)) if b is not None]
        if limits:
            caps[name] = (min(limits), budget.spent_usd)
    return caps


def set_budget(db_path: str | os.PathLike[str], dataset: str, budget_usd: float | None) -> None:
    """Set a dataset's cap in USD, or remove it (None)."""
    if budget_usd is not None and budget_usd < 0:
        raise ValueError(f"a budget must be 0 USD or more, got {budget_usd}")
    ensure_schema(db_path)
    with connect(db_path) as con:
        if budget_usd is None:
            run_sql(con, "queries/clear_budget", {"dataset": dataset})
        else:
            run_sql(con, "queries/set_budget", {"dataset": dataset, "budget_usd": budget_usd})
