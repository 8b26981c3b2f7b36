"""The spool: appended records survive the writer, merge idempotently, torn tails are cut."""

from __future__ import annotations

import os
import stat
import threading
import time

import duckdb
import orjson
import pytest

from kimi_dagster.spool import SpoolError, SpoolWriter, merge_spool, spool_dir
from kimi_dagster.store import DatabaseBusy, connect, ensure_schema


def record(item: str, n: int, *, ok: bool, final: bool = True) -> dict:
    now = time.time()
    base = {
        "attempt_id": f"run1:{item}:{n}", "dataset": "d", "item_id": item,
        "partition_key": "d-00000", "run_id": "run1", "attempt": n, "model": "kimi-k2.5",
        "mode": "realtime", "started_at": now, "finished_at": now + 0.1, "latency_ms": 100.0,
        "http_status": 200 if ok else 500, "outcome": "ok" if ok else "failed",
        "error_type": None if ok else "server_error", "error_message": None,
        "gateway_tokens": 100, "final": final,
    }  # fmt: skip
    if ok:
        base.update(
            prompt_tokens=10,
            completion_tokens=5,
            cached_tokens=0,
            cost_usd=0.000021,
            status="succeeded",
            output=f"out-{item}",
            finish_reason="stop",
        )
    elif final:
        base["status"] = "failed"
    return base


def table(db, sql: str) -> list[tuple]:
    with connect(db, read_only=True) as con:
        return con.execute(sql).fetchall()


def test_merge_is_idempotent_and_success_is_never_replaced(db) -> None:
    ensure_schema(db)
    directory = spool_dir(db)
    writer = SpoolWriter(directory, "run1")
    writer.append(record("a", 1, ok=False))
    writer.append(record("a", 2, ok=True))
    writer.append(record("b", 1, ok=True))
    old = writer.rotate()
    assert old is not None
    SpoolWriter.seal(old)
    # a segment copied back (as if a crash came between commit and delete) adds nothing
    segment = sorted(directory.glob("*.jsonl"))[0]
    replay = segment.read_bytes()
    with connect(db) as con:
        assert merge_spool(con, directory) == 3
    assert not segment.exists()
    segment.write_bytes(replay)
    writer.append(record("b", 2, ok=False))  # a later failure must not undo b's success
    writer.close()
    with connect(db) as con:
        merge_spool(con, directory)
    assert table(db, "SELECT count(*) FROM attempts") == [(4,)]
    assert table(db, "SELECT item_id, status, output FROM results ORDER BY 1") == [
        ("a", "succeeded", "out-a"),
        ("b", "succeeded", "out-b"),
    ]
    assert list(directory.glob("*.jsonl")) == []


def test_open_segment_of_a_live_writer_is_left_alone(db) -> None:
    ensure_schema(db)
    writer = SpoolWriter(spool_dir(db), "live")
    writer.append(record("a", 1, ok=True))
    with connect(db) as con:
        assert merge_spool(con, spool_dir(db)) == 0
    writer.close()
    with connect(db) as con:
        assert merge_spool(con, spool_dir(db)) == 1


def test_short_writes_are_completed_and_new_segments_synced(db, monkeypatch) -> None:
    ensure_schema(db)
    real_write, synced = os.write, []

    def short_write(fd: int, data: bytes) -> int:  # the kernel may write less than asked
        return real_write(fd, bytes(data[:7]))

    monkeypatch.setattr(os, "write", short_write)
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.fstat(fd).st_mode))
    writer = SpoolWriter(spool_dir(db), "short")
    writer.append(record("a", 1, ok=True))
    writer.append(record("b", 1, ok=False))
    writer.close()
    monkeypatch.undo()
    assert [stat.S_ISDIR(mode) for mode in synced].count(True) == 1  # the new directory entry
    with connect(db) as con:
        assert merge_spool(con, spool_dir(db)) == 2


def test_torn_last_line_of_a_dead_writer_is_dropped(db) -> None:
    ensure_schema(db)
    directory = spool_dir(db)
    directory.mkdir()
    segment = directory / "dead-000001.jsonl"
    whole = orjson.dumps(record("a", 1, ok=True)) + b"\n"
    torn = orjson.dumps(record("b", 1, ok=True))[:57]
    segment.write_bytes(whole + torn)
    with connect(db) as con:
        assert merge_spool(con, directory) == 1
    assert table(db, "SELECT item_id FROM results") == [("a",)]


def test_a_damaged_segment_stops_merges_with_its_name_and_changes_nothing(db) -> None:
    ensure_schema(db)
    directory = spool_dir(db)
    directory.mkdir()
    segment = directory / "damaged-000001.jsonl"
    lines = [orjson.dumps(record(i, 1, ok=True)) for i in ("a", "b")]
    segment.write_bytes(lines[0] + b"\n\x00\x00garbage\n" + lines[1] + b"\n")
    with connect(db) as con, pytest.raises(SpoolError, match=r"damaged-000001\.jsonl"):
        merge_spool(con, directory)
    assert table(db, "SELECT count(*) FROM attempts") == [(0,)] and segment.exists()
    segment.write_bytes(lines[0] + b"\n" + lines[1] + b"\n")  # repaired
    with connect(db) as con:
        assert merge_spool(con, directory) == 2


def hold_in_child(db) -> tuple[int, int]:
    """Fork a process that opens the file read-write and keeps it until told to let go;
    returns (pid, the descriptor to write to when it should)."""
    held_r, held_w = os.pipe()
    release_r, release_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        con = duckdb.connect(str(db))
        os.write(held_w, b"1")
        os.read(release_r, 1)
        con.close()
        os._exit(0)
    assert os.read(held_r, 1) == b"1"  # the child holds the file now
    return pid, release_w


def test_connect_waits_for_another_process_lock(db) -> None:
    ensure_schema(db)
    pid, release = hold_in_child(db)
    opened: list[tuple] = []

    def read() -> None:
        with connect(db, read_only=True, timeout=30) as con:
            opened.append(con.execute("SELECT 1").fetchone())

    reader = threading.Thread(target=read)
    reader.start()
    reader.join(0.5)
    assert reader.is_alive() and not opened  # waiting, not failing
    os.write(release, b"1")
    reader.join(30)
    os.waitpid(pid, 0)
    assert opened == [(1,)]

    pid, release = hold_in_child(db)
    with pytest.raises(DatabaseBusy, match="stayed locked"), connect(db, timeout=0.3):
        pass
    os.write(release, b"1")
    os.waitpid(pid, 0)


def test_a_merge_between_a_new_segments_creation_and_its_lock_leaves_it_alone(
    db, monkeypatch
) -> None:
    """A merger running in the instant a writer has created its next segment but not yet locked
    it must not remove it: the records written next would go to an unlinked file."""
    import kimi_dagster.spool as spool

    ensure_schema(db)
    directory = spool_dir(db)
    real_flock, raced = spool.fcntl.flock, []

    def flock(fd: int, operation: int) -> None:
        if operation == spool.fcntl.LOCK_EX | spool.fcntl.LOCK_NB and not raced:
            raced.append(True)  # another process merges right now, before this lock
            with connect(db) as con:
                merge_spool(con, directory)
        real_flock(fd, operation)

    monkeypatch.setattr(spool.fcntl, "flock", flock)
    writer = SpoolWriter(directory, "race")
    monkeypatch.setattr(spool.fcntl, "flock", real_flock)
    writer.append(record("a", 1, ok=True))
    writer.close()
    with connect(db) as con:
        assert merge_spool(con, directory) == 1
    assert raced and table(db, "SELECT item_id, status FROM results") == [("a", "succeeded")]
