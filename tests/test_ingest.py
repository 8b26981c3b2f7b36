"""Ingest: JSONL -> items in chunk partitions, rejected lines with reasons, idempotent."""

from __future__ import annotations

import duckdb
import pytest

from kimi_dagster.ingest import SourceError, dataset_name, ingest_file


def rows(db, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_chunks_rejections_and_reingest(db, write_jsonl) -> None:
    lines = [{"id": f"q{i}", "message": f"question {i}"} for i in range(5)]
    lines.insert(2, b"{broken")
    lines.append({"id": "q1", "message": "same id, other prompt"})
    lines.append(b"")  # blank lines are skipped silently
    path = write_jsonl("My Tickets.jsonl", lines)

    report = ingest_file(db, path, chunk_size=2)
    assert report.dataset == "my_tickets"
    assert (report.lines, report.accepted, report.unchanged, report.rejected) == (8, 5, 0, 2)
    assert report.partitions == ["my_tickets-00000", "my_tickets-00001", "my_tickets-00002"]
    assert report.new_partitions == report.partitions
    assert [n for n, _ in report.rejections] == [3, 7]
    assert "first used on line 2" in report.rejections[1][1]
    assert rows(db, "SELECT item_id, chunk, line_no FROM items ORDER BY line_no") == [
        ("q0", 0, 1),
        ("q1", 0, 2),
        ("q2", 1, 4),
        ("q3", 1, 5),
        ("q4", 2, 6),
    ]
    assert rows(db, "SELECT line_no FROM rejected_lines ORDER BY 1") == [(3,), (7,)]

    again = ingest_file(db, path, chunk_size=2)
    assert (again.accepted, again.unchanged, again.rejected) == (0, 5, 2)
    assert again.new_partitions == []
    assert rows(db, "SELECT count(*) FROM items") == [(5,)]


def test_appended_lines_get_new_chunks_and_changed_ids_are_refused(db, write_jsonl) -> None:
    first = [{"id": f"q{i}", "message": f"question {i}"} for i in range(3)]
    path = write_jsonl("data.jsonl", first)
    ingest_file(db, path, chunk_size=2)
    path = write_jsonl(
        "data.jsonl",
        [{"id": "q0", "message": "changed prompt"}, *first[1:], {"id": "q3", "message": "new"}],
    )
    report = ingest_file(db, path, chunk_size=2)
    assert (report.accepted, report.unchanged, report.rejected) == (1, 2, 1)
    assert "already ingested from" in report.rejections[0][1]
    assert rows(db, "SELECT chunk FROM items WHERE item_id = 'q3'") == [(2,)]
    assert report.new_partitions == ["data-00002"]


def test_empty_and_missing_files(db, write_jsonl, tmp_path) -> None:
    with pytest.raises(SourceError, match=r"empty\.jsonl: no prompts in the file \(0 blank"):
        ingest_file(db, write_jsonl("empty.jsonl", []))
    with pytest.raises(SourceError, match=r"blank\.jsonl: no prompts in the file \(2 blank"):
        ingest_file(db, write_jsonl("blank.jsonl", [b"", b"  "]))
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        ingest_file(db, tmp_path / "nope.jsonl")


def test_huge_and_non_utf8_lines_do_not_stop_the_ingest(db, write_jsonl) -> None:
    huge = {"id": "huge", "message": "x" * 10_000_000}  # ~2.5M tokens: over any context
    path = write_jsonl(
        "mixed.jsonl",
        [huge, b'{"id": "latin", "message": "caf\xe9"}', {"id": "fine", "message": "ok"}],
    )
    report = ingest_file(db, path)
    assert report.accepted == 1
    reasons = dict(report.rejections)
    assert "context" in reasons[1] and "UTF-8" in reasons[2]


def test_dataset_names_are_partition_safe() -> None:
    assert dataset_name("/x/SEO Articles, v2.jsonl") == "seo_articles_v2"
    assert dataset_name("/x/---.jsonl") == "dataset"


def test_a_fixed_line_ingested_again_is_no_longer_rejected(db, write_jsonl) -> None:
    lines = [{"id": "q0", "message": "fine"}, b"{broken", {"id": "q0", "message": "dup"}]
    path = write_jsonl("fix.jsonl", lines)
    assert ingest_file(db, path).rejected == 2
    assert rows(db, "SELECT line_no FROM rejected_lines ORDER BY 1") == [(2,), (3,)]
    lines[1] = {"id": "q1", "message": "repaired"}
    write_jsonl("fix.jsonl", lines)  # line 2 fixed, line 3 still a duplicate
    report = ingest_file(db, path)
    assert (report.accepted, report.rejected) == (1, 1)
    assert rows(db, "SELECT line_no FROM rejected_lines") == [(3,)]
    other = write_jsonl("other.jsonl", [b"{also broken"])
    ingest_file(db, other, dataset="fix")  # another file's rejections are its own
    ingest_file(db, path)
    assert rows(db, "SELECT line_no FROM rejected_lines ORDER BY 1") == [(1,), (3,)]


def test_a_different_chunk_size_for_an_existing_dataset_is_refused(db, write_jsonl) -> None:
    path = write_jsonl("sized.jsonl", [{"id": f"q{i}", "message": f"q {i}"} for i in range(5)])
    assert len(ingest_file(db, path, chunk_size=2).partitions) == 3
    more = write_jsonl("sized.jsonl", [{"id": f"q{i}", "message": f"q {i}"} for i in range(7)])
    with pytest.raises(ValueError, match=r"chunked by 2 items and cannot change to 1,000"):
        ingest_file(db, more, chunk_size=1_000)
    assert rows(db, "SELECT count(*) FROM items") == [(5,)]
    assert ingest_file(db, more, chunk_size=2).accepted == 2  # the same size is fine
    write_jsonl("sized.jsonl", [{"id": f"q{i}", "message": f"q {i}"} for i in range(9)])
    report = ingest_file(db, more)  # none given: the dataset's own
    assert report.partitions == [f"sized-{n:05d}" for n in range(5)]


def test_on_the_cn_platform_lines_need_a_cny_price(db, write_jsonl, monkeypatch) -> None:
    """The .cn platform bills in CNY: a line whose model has no CNY price is rejected at
    ingest with the models that have one, instead of crashing the run that prices it."""
    monkeypatch.setenv("MOONSHOT_BASE_URL", "https://api.moonshot.cn/v1")
    lines = [{"id": "a", "message": "hi"}, {"id": "b", "message": "hi", "model": "kimi-k2.6"}]
    report = ingest_file(db, write_jsonl("cn.jsonl", lines))
    assert (report.accepted, report.rejected) == (1, 1)
    (line_no, reason), *_ = report.rejections
    assert line_no == 1 and "no CNY price for model 'kimi-k2.5'" in reason
    assert "models priced in CNY: kimi-k2.6" in reason
    usd = ingest_file(db, write_jsonl("ai.jsonl", lines), currency="USD")
    assert (usd.accepted, usd.rejected) == (2, 0)


def test_the_cli_reports_an_unpriced_model_in_one_line(write_jsonl, monkeypatch, capsys) -> None:
    """A model without a price in the platform's currency (items ingested for the other
    platform, say) stops a command with the catalogue's message, not a traceback."""
    from kimi_dagster import cli
    from kimi_dagster.catalogue import Catalogue

    def unpriced(*args, **kwargs):
        Catalogue({}, {}).price("kimi-k2.5", "CNY")

    monkeypatch.setattr(cli, "estimate_file", unpriced)
    source = write_jsonl("p.jsonl", [{"id": "a", "message": "hi"}])
    assert cli.main(["estimate", "-i", str(source)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kimi-dagster: error: no CNY price for model 'kimi-k2.5'")
    assert "Traceback" not in err
