"""The DuckDB file: schema migrations, named SQL from ``sql/``, and short-lived connections.

DuckDB lets one process at a time open a file read-write, and while it does no other process may
open it at all. Every caller here therefore opens the file briefly, retries with jittered backoff
while another process holds it, and always closes it, so concurrent runs, asset checks and a
user's ``kimi-dagster sql`` take turns instead of failing on "Could not set lock".
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import duckdb

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
DEFAULT_DB = Path(".kimi_dagster") / "kimi.duckdb"


def default_db_path() -> Path:
    """``$KIMI_DAGSTER_DB`` or ``.kimi_dagster/kimi.duckdb`` under the working directory."""
    return Path(os.environ.get("KIMI_DAGSTER_DB") or DEFAULT_DB)


@cache
def sql(name: str) -> str:
    """The text of ``sql/<name>.sql`` (queries are kept as files, one per question)."""
    return (SQL_DIR / f"{name}.sql").read_text()


def run_sql(
    con: duckdb.DuckDBPyConnection, name: str, params: dict[str, object] | None = None
) -> duckdb.DuckDBPyConnection:
    """Execute ``sql/<name>.sql`` passing only the ``$parameters`` that file names."""
    text = sql(name)
    used = {k: v for k, v in (params or {}).items() if f"${k}" in text}
    return con.execute(text, used)


def sql_string(path: str | os.PathLike[str]) -> str:
    """A path as the inside of a SQL string literal (COPY and ATTACH take no parameters)."""
    return str(path).replace("'", "''")


class DatabaseBusy(RuntimeError):
    """Another process kept the DuckDB file locked for longer than the caller would wait."""


def _is_lock_conflict(exc: duckdb.Error) -> bool:
    text = str(exc)
    return "lock" in text.lower() and ("Conflicting" in text or "Could not set" in text)


@contextmanager
def connect(
    path: str | os.PathLike[str], *, read_only: bool = False, timeout: float = 120.0
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the file, waiting (jittered exponential backoff) while another process holds it.

    The connection is closed when the block exits, also on error, so a lock never outlives
    the work that needed it.
    """
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.Error as exc:
            if not _is_lock_conflict(exc):
                raise
            if time.monotonic() >= deadline:
                raise DatabaseBusy(
                    f"{path} stayed locked by another process for {timeout:.0f} s; close any "
                    "DuckDB shell holding it read-write, or query through `kimi-dagster sql`"
                ) from exc
            time.sleep(random.uniform(0, delay))
            delay = min(delay * 2, 0.5)
    try:
        yield con
    finally:
        con.close()


def schema_files() -> list[Path]:
    return sorted((SQL_DIR / "schema").glob("[0-9][0-9][0-9]_*.sql"))


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    """Bring the file to the newest schema version, (re)create the views and load the price list."""
    run_sql(con, "queries/schema_version_table")
    applied = {v for (v,) in run_sql(con, "queries/schema_versions").fetchall()}
    version = max(applied, default=0)
    for file in schema_files():
        number = int(file.name[:3])
        version = max(version, number)
        if number not in applied:  # by set, not max: a file numbered into a gap still applies
            con.execute("BEGIN")
            con.execute(file.read_text())
            run_sql(con, "queries/record_schema_version", {"version": number})
            con.execute("COMMIT")
    for view in sorted((SQL_DIR / "views").glob("*.sql")):
        con.execute(view.read_text())
    run_sql(con, "queries/load_models", {"file": str(SQL_DIR / "models.csv")})
    for prices in price_files():
        try:
            run_sql(con, "queries/load_prices", {"file": str(prices)})
        except duckdb.Error as exc:
            raise ValueError(
                f"price list {prices} could not be loaded ({exc}); it needs the header of "
                "sql/prices.csv: model,currency,input_cache_hit,input_cache_miss,output,"
                "batch_discount,effective_date,source"
            ) from None
    return version


def price_files() -> list[Path]:
    """The shipped price list, then ``$KIMI_DAGSTER_PRICES`` (same columns) to add or override."""
    files = [SQL_DIR / "prices.csv"]
    if override := os.environ.get("KIMI_DAGSTER_PRICES"):
        files.append(Path(override))
    return files


_ready: set[Path] = set()


def ensure_schema(path: str | os.PathLike[str]) -> None:
    """Create or migrate the file once per process."""
    key = Path(path).resolve()
    if key in _ready:
        return
    with connect(path) as con:
        migrate(con)
    _ready.add(key)


def schema_current(path: str | os.PathLike[str]) -> bool:
    """Whether the file exists with every migration applied, judged read-only, so readers
    (``status``, ``sql``) need not take the write lock to re-run the migration."""
    if Path(path).resolve() in _ready:
        return True
    if not Path(path).exists():
        return False
    with connect(path, read_only=True) as con:
        try:
            applied = {v for (v,) in run_sql(con, "queries/schema_versions").fetchall()}
        except duckdb.CatalogException:
            return False
        defined = {name for (name,) in run_sql(con, "queries/defined_names").fetchall()}
    return {int(file.name[:3]) for file in schema_files()} <= applied and view_names() <= defined


def view_names() -> set[str]:
    """The views and macros ``sql/views/`` creates (a file from an older version may lack some)."""
    pattern = re.compile(r"CREATE OR REPLACE (?:VIEW|MACRO) (\w+)", re.IGNORECASE)
    return {
        match[1]
        for file in (SQL_DIR / "views").glob("*.sql")
        for match in pattern.finditer(file.read_text())
    }
