"""Results out of DuckDB: the seed's ``{"summary", "items"}`` JSON, JSON Lines, or Parquet.

DuckDB writes the rows itself (``COPY ... TO``), so exporting millions of items costs no
Python per row; the JSON form wraps DuckDB's JSON Lines output in the seed's envelope.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from kimi_dagster.spool import merged
from kimi_dagster.store import run_sql, sql, sql_string

FORMATS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


def export_format(path: str | os.PathLike[str]) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(
            f"cannot tell the export format of {path}: use .json (seed shape), .jsonl or .parquet"
        )
    return FORMATS[suffix]


def export_results(
    db_path: str | os.PathLike[str],
    dataset: str,
    out_path: str | os.PathLike[str],
    *,
    first_key: str | None = None,
    last_key: str | None = None,
    summary_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a dataset's items (optionally a partition-key range); returns the summary."""
    out = Path(out_path)
    fmt = export_format(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    params = {"dataset": dataset, "first_key": first_key, "last_key": last_key}
    with merged(db_path) as (con, _):
        cursor = run_sql(con, "queries/export_summary", params)
        names = [d[0] for d in cursor.description]
        summary = dict(zip(names, cursor.fetchone(), strict=True)) | {"dataset": dataset}
        summary |= summary_extra or {}
        run_sql(con, "queries/export_items_table", params)
        tmp = out.with_name(out.name + ".part")
        copy = sql("queries/export_copy")
        con.execute(
            copy.format(path=sql_string(tmp), format="parquet" if fmt == "parquet" else "json")
        )
        run_sql(con, "queries/export_drop")
    if fmt == "json":
        _wrap_json(tmp, out, summary)
    else:
        tmp.replace(out)
    return summary


def _wrap_json(lines: Path, out: Path, summary: dict[str, Any]) -> None:
    """``{"summary": {...}, "items": [<each line>, ...]}`` streamed, never held in memory."""
    with lines.open("rb") as src, out.open("wb") as dst:
        dst.write(b'{"summary": ' + orjson.dumps(summary, default=str) + b', "items": [\n')
        first = True
        for line in src:
            if not first:
                dst.write(b",\n")
            dst.write(line.rstrip(b"\n"))
            first = False
        dst.write(b"\n]}\n")
    lines.unlink()
