"""The durable record of a run: append-only JSONL segments beside the DuckDB file.

Every attempt's record is written to the run's open segment the moment its reply arrives
(one ``write`` call, so ``kill -9`` loses nothing already received) and fsync'd at least every
``sync_interval`` seconds (so a machine crash loses at most that much). Segments are rotated
and merged into DuckDB in short transactions; a segment is deleted only after its merge has
committed, and merging is idempotent, so a crash at any point neither loses nor doubles a row.

The writer holds an ``flock`` on its open segment. Whoever merges next (any run, or the CLI)
takes every segment that is not locked: closed ones, and those whose writer has died.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import orjson

from kimi_dagster.store import connect, run_sql

ATTEMPT_COLUMNS = {
    "attempt_id": "VARCHAR", "dataset": "VARCHAR", "item_id": "VARCHAR",
    "partition_key": "VARCHAR", "run_id": "VARCHAR", "attempt": "INTEGER", "model": "VARCHAR",
    "mode": "VARCHAR", "started_at": "DOUBLE", "finished_at": "DOUBLE", "latency_ms": "DOUBLE",
    "http_status": "INTEGER", "outcome": "VARCHAR", "error_type": "VARCHAR",
    "error_message": "VARCHAR", "gateway_tokens": "INTEGER", "prompt_tokens": "INTEGER",
    "completion_tokens": "INTEGER", "cached_tokens": "INTEGER", "cost_usd": "DECIMAL(18,9)",
    "final": "BOOLEAN", "status": "VARCHAR", "output": "VARCHAR", "reasoning": "VARCHAR",
    "finish_reason": "VARCHAR", "response_id": "VARCHAR",
}  # fmt: skip


def spool_dir(db_path: str | os.PathLike[str]) -> Path:
    """Segments live in ``<db>.spool/`` so every process using the database finds them."""
    path = Path(db_path)
    return path.with_name(path.name + ".spool")


class SpoolWriter:
    """Appends attempt records for one run; ``rotate()`` closes the segment for merging."""

    def __init__(self, directory: Path, run_token: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._directory = directory
        self._token = run_token
        self._seq = 0
        self._fd = -1
        self._dirty = False
        self._open_segment()

    def _open_segment(self) -> None:
        self._seq += 1
        path = self._directory / f"{self._token}-{self._seq:06d}.jsonl"
        # locked under a name mergers skip, then renamed: a merger that saw the new file before
        # the lock would take it for a dead writer's empty segment and remove it under us
        staging = path.with_suffix(".tmp")
        self._fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        staging.rename(path)
        self._written = 0
        self._new_entry = True

    def append(self, record: dict[str, Any]) -> None:
        data = memoryview(orjson.dumps(record) + b"\n")
        while data:  # a short write would leave half a line that the next record continues
            data = data[os.write(self._fd, data) :]
        self._written += 1
        self._dirty = True

    def sync(self) -> None:
        """fsync what was appended since the last sync, and the directory entry of a new
        segment, which a machine crash could otherwise lose (call from a thread: it blocks)."""
        if self._dirty:
            self._dirty = False
            os.fsync(self._fd)
        if self._new_entry:
            self._new_entry = False
            directory = os.open(self._directory, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def rotate(self) -> int | None:
        """Start a new segment if the current one has data; returns the old descriptor, which
        ``seal`` (blocking: run it in a thread) makes durable and mergeable."""
        if not self._written:
            return None
        old = self._fd
        self._open_segment()
        return old

    @staticmethod
    def seal(fd: int) -> None:
        os.fsync(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def close(self) -> None:
        """Seal the open segment (an empty one is removed)."""
        if self._fd < 0:
            return
        self.sync()
        self.seal(self._fd)
        self._fd = -1
        if not self._written:
            (self._directory / f"{self._token}-{self._seq:06d}.jsonl").unlink(missing_ok=True)


class SpoolError(RuntimeError):
    """A segment that cannot be merged (damaged on disk); it is left in place, untouched."""


def merge_spool(con: duckdb.DuckDBPyConnection, directory: Path) -> int:
    """Load every unlocked segment into ``attempts``/``results``; returns records merged."""
    if not directory.is_dir():
        return 0
    merged = 0
    for segment in sorted(directory.glob("*.jsonl")):
        try:
            fd = os.open(segment, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer still appends to it
            if not os.fstat(fd).st_nlink:
                continue  # another merger merged and removed it after we opened it
            _drop_torn_tail(fd)
            if os.fstat(fd).st_size:
                con.execute("BEGIN")
                try:
                    merged += merge_segment(con, segment)
                except duckdb.Error as exc:
                    con.execute("ROLLBACK")
                    raise SpoolError(
                        f"spool segment {segment} cannot be merged into the database ({exc}); "
                        "nothing of it was merged and no run can resume until it is: repair "
                        "the bad line, or move the file away (its items are then sent again)"
                    ) from exc
                con.execute("COMMIT")
            segment.unlink()
        finally:
            os.close(fd)
    return merged


@contextmanager
def merged(
    db_path: str | os.PathLike[str], *, timeout: float = 120.0
) -> Iterator[tuple[duckdb.DuckDBPyConnection, int]]:
    """Open the file read-write with every finished segment merged in first, so what the
    block reads includes all that was paid for; yields the connection and the records merged."""
    with connect(db_path, timeout=timeout) as con:
        yield con, merge_spool(con, spool_dir(db_path))


def has_segments(db_path: str | os.PathLike[str]) -> bool:
    """Whether any run left spool segments beside the file (a merge has work to do)."""
    return any(spool_dir(db_path).glob("*.jsonl"))


def merge_segment(con: duckdb.DuckDBPyConnection, segment: Path) -> int:
    """Merge one JSONL file of attempt records (``ATTEMPT_COLUMNS``) inside the caller's
    transaction; idempotent by attempt id. Returns the attempts added."""
    params = {"segment": str(segment), "columns": ATTEMPT_COLUMNS}
    added = run_sql(con, "queries/merge_attempts", params).fetchone()[0]
    run_sql(con, "queries/merge_results", params)
    return added


def _drop_torn_tail(fd: int, block: int = 1 << 16) -> None:
    """A writer killed mid-``write`` can leave a partial last line; it was never acknowledged."""
    end = size = os.fstat(fd).st_size
    if not size or os.pread(fd, 1, size - 1) == b"\n":
        return
    while end > 0:
        start = max(0, end - block)
        cut = os.pread(fd, end - start, start).rfind(b"\n")
        if cut >= 0:
            os.ftruncate(fd, start + cut + 1)
            return
        end = start
    os.ftruncate(fd, 0)
