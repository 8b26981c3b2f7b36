"""Read-side questions over the DuckDB file: dataset status and ad-hoc SQL.

Reads open the file read-only and briefly, so they work while runs are writing (runs hold the
file only for sub-second merges). Two things take the write lock first, and only when needed:
creating or migrating a file that is missing or older than this version, and merging what runs
left in the spool (when the file is free), so a status is never behind what was paid for.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from kimi_dagster.spool import has_segments, merged
from kimi_dagster.store import DatabaseBusy, connect, ensure_schema, run_sql, schema_current


def refresh(db_path: str | os.PathLike[str]) -> None:
    """Migrate only a file that is not current, and merge spool segments if there are any and
    the file is free right now (never waits long); otherwise nothing is written."""
    if not schema_current(db_path):
        ensure_schema(db_path)
    if has_segments(db_path):
        with contextlib.suppress(DatabaseBusy), merged(db_path, timeout=2.0):
            pass


def query(
    db_path: str | os.PathLike[str], text: str, params: dict[str, Any] | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one read-only statement; returns column names and rows."""
    refresh(db_path)
    with connect(db_path, read_only=True) as con:
        cursor = con.execute(text, params or {})
        columns = [d[0] for d in cursor.description or []]
        return columns, cursor.fetchall()


def named(
    db_path: str | os.PathLike[str], name: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """Rows of ``sql/<name>.sql`` as dicts."""
    refresh(db_path)
    with connect(db_path, read_only=True) as con:
        cursor = run_sql(con, name, params)
        columns = [d[0] for d in cursor.description or []]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def dataset_summaries(db_path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    return named(db_path, "queries/status", {"dataset": None})
