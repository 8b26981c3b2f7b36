"""Bad input never corrupts state: every kind of bad line is named by file and line while the
rest of the file runs, and a file that changes or vanishes mid-ingest leaves nothing half-done."""

from __future__ import annotations

import os
import subprocess
import sys

import duckdb
import orjson
import pytest
from conftest import SIM_KEY

from kimi_dagster import ingest
from kimi_dagster.ingest import SourceError, ingest_file


def counts(db) -> tuple[int, int, int]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(
            "SELECT (SELECT count(*) FROM items), (SELECT count(*) FROM rejected_lines), "
            "(SELECT count(*) FROM sources)"
        ).fetchone()


BAD_LINES: list[tuple[bytes | dict, str]] = [  # line -> what its rejection must say
    (b'{"id": "broken", "message": ', "not valid JSON"),
    ({"id": "good1", "message": "a second good1"}, 'duplicate id "good1": first used on line 1'),
    (b'{"id": "latin1", "message": "caf\xe9 cr\xe8me"}', "not valid UTF-8 (byte 32)"),
    ({"id": "ten_mb", "message": "y" * 10_000_000}, "kimi-k2.6's 262,144-token context"),
    (
        {"id": "over8k", "message": "word " * 8_000, "model": "moonshot-v1-8k"},
        "moonshot-v1-8k's 8,192-token context",
    ),
    ({"id": "nothing", "message": ""}, "content is empty"),
]


def test_bad_lines_through_the_cli_are_named_and_the_rest_runs(sim, tmp_path, write_jsonl):
    good = [{"id": f"good{i}", "message": f"Good prompt {i}."} for i in range(1, 5)]
    lines = [good[0], *(line for line, _ in BAD_LINES), *good[1:]]
    source = write_jsonl("mixed.jsonl", lines)
    db, out = tmp_path / "k.duckdb", tmp_path / "out.json"
    env = dict(os.environ, MOONSHOT_BASE_URL=sim.base_url, MOONSHOT_API_KEY=SIM_KEY)
    argv = [sys.executable, "-m", "kimi_dagster.cli", "batch", "-i", str(source), "-o", str(out)]
    done = subprocess.run(
        [*argv, "--tier", "5", "--db", str(db), "--model", "kimi-k2.6"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for line_no, (_, reason) in enumerate(BAD_LINES, start=2):
        assert f"{source}:{line_no}: " in done.stderr and reason in done.stderr, reason
    result = orjson.loads(out.read_bytes())
    assert sorted(i["id"] for i in result["items"]) == [g["id"] for g in good]
    assert all(i["success"] for i in result["items"]) and len(sim.bill()) == 4
    with duckdb.connect(str(db), read_only=True) as con:
        rejected = con.execute("SELECT line_no, reason FROM rejected_lines ORDER BY 1").fetchall()
    assert [n for n, _ in rejected] == list(range(2, 2 + len(BAD_LINES)))


def test_an_empty_file_on_the_cli_is_a_clear_error(sim, db, tmp_path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    env = dict(os.environ, MOONSHOT_BASE_URL=sim.base_url, MOONSHOT_API_KEY=SIM_KEY)
    done = subprocess.run(
        [sys.executable, "-m", "kimi_dagster.cli", "ingest", str(empty), "--db", str(db)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert f"error: {empty}: no prompts in the file" in done.stderr


def lines_of(n: int) -> list[dict]:
    return [{"id": f"q{i}", "message": f"question {i} " + "pad " * 50} for i in range(n)]


@pytest.fixture
def at_line(monkeypatch):
    """at_line(n, action): run ``action(source)`` when the ingest reaches line n, as another
    process acting on the file at that moment would."""

    def install(n: int, action) -> None:
        real = ingest.parse_line
        seen = iter(range(1, 1_000_000))

        def parse(raw, defaults, catalogue, currency):
            if next(seen) == n:
                action()
            return real(raw, defaults, catalogue, currency)

        monkeypatch.setattr(ingest, "parse_line", parse)

    return install


def test_a_file_truncated_while_read_is_refused_whole(db, write_jsonl, at_line) -> None:
    ingest_file(db, write_jsonl("other.jsonl", lines_of(3)))  # the database already has data
    source = write_jsonl("t.jsonl", lines_of(200))
    at_line(150, lambda: os.truncate(source, 5_000))  # e.g. `> t.jsonl` by an exporter
    with pytest.raises(SourceError, match=r"t\.jsonl: the file changed while it was read"):
        ingest_file(db, source)
    assert counts(db) == (3, 0, 1)  # nothing of t.jsonl, the rest untouched


def test_a_file_appended_to_while_read_is_refused_whole(db, write_jsonl, at_line) -> None:
    source = write_jsonl("grow.jsonl", lines_of(40))

    def append() -> None:
        with source.open("ab") as out:
            out.write(b'{"id": "late", "message": "still being writ')

    at_line(20, append)
    with pytest.raises(SourceError, match=r"after line 41: 9,500 bytes when opened, 9,543 now"):
        ingest_file(db, source)
    assert counts(db) == (0, 0, 0)
    with source.open("ab") as out:  # the writer finishes; ingesting again takes every line
        out.write(b'ten"}\n')
    assert ingest_file(db, source).accepted == 41


def test_a_file_removed_while_read_is_ingested_as_opened(db, write_jsonl, at_line) -> None:
    source = write_jsonl("gone.jsonl", lines_of(50))
    at_line(10, source.unlink)
    report = ingest_file(db, source)
    assert (report.accepted, report.rejected) == (50, 0) and not source.exists()


def test_a_vanished_staging_file_leaves_the_database_untouched(
    db, write_jsonl, monkeypatch
) -> None:
    source = write_jsonl("s.jsonl", lines_of(30))
    real = ingest._load

    def load(db_path, staged, rejected, chunk_size, report):
        staged.unlink()  # e.g. a cleaner removed it between validation and load
        return real(db_path, staged, rejected, chunk_size, report)

    monkeypatch.setattr(ingest, "_load", load)
    with pytest.raises(duckdb.IOException, match=r"staged\.jsonl"):
        ingest_file(db, source)
    assert counts(db) == (0, 0, 0)
    monkeypatch.undo()
    assert ingest_file(db, source).accepted == 30
    assert counts(db) == (30, 0, 1)
