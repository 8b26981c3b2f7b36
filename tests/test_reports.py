"""What the read commands (``status``, ``sql``, ``estimate``) write to the file: nothing, unless
the file needs its migration or runs left spool segments to merge."""

from __future__ import annotations

from pathlib import Path

import pytest

from kimi_dagster import reports, store
from kimi_dagster.spool import spool_dir
from kimi_dagster.store import connect


def _refuse(*_args, **_kwargs):
    raise AssertionError("a read of a current file with an empty spool took the write lock")


def test_a_read_writes_only_what_the_file_needs(tmp_path: Path, monkeypatch) -> None:
    db = tmp_path / "kimi.duckdb"
    store.ensure_schema(db)
    monkeypatch.setattr(store, "_ready", set())  # as a fresh CLI process sees it

    with monkeypatch.context() as patched:
        patched.setattr(store, "migrate", _refuse)
        patched.setattr(reports, "merged", _refuse)
        assert reports.query(db, "SELECT count(*) AS n FROM items") == (["n"], [(0,)])
        assert reports.dataset_summaries(db) == []

    fresh = tmp_path / "fresh.duckdb"  # a missing file is created with the newest schema
    assert not store.schema_current(fresh)
    reports.refresh(fresh)
    monkeypatch.setattr(store, "_ready", set())
    assert store.schema_current(fresh)

    with connect(db) as con:  # as a file written before a view or macro was added
        con.execute("DROP MACRO still_to_send")
    assert not store.schema_current(db)
    reports.refresh(db)
    monkeypatch.setattr(store, "_ready", set())
    assert store.schema_current(db)

    spool_dir(db).mkdir()
    (spool_dir(db) / "left-000001.jsonl").write_bytes(b"")
    with monkeypatch.context() as patched:
        patched.setattr(reports, "merged", _refuse)
        with pytest.raises(AssertionError):
            reports.refresh(db)
    reports.refresh(db)
    assert not list(spool_dir(db).glob("*.jsonl"))  # the empty segment was merged away
