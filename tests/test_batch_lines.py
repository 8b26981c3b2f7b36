"""Batch API output and error file lines -> attempt records: a failed line keeps its reason
wherever the provider put it (the line's ``error``, or only the response body's)."""

from __future__ import annotations

from datetime import datetime

import duckdb
import orjson
import pytest

from kimi_dagster.batches import BatchRecord, _attempt_records
from kimi_dagster.catalogue import Catalogue
from kimi_dagster.store import migrate

REASON = {"type": "content_filter", "message": "the request was rejected as high risk"}


def _record() -> BatchRecord:
    now = datetime.now()
    return BatchRecord(
        "s1", "d", "d-00000", "kimi-k2.6", 1, 100, "file-1", "batch-1", "completed", 0, 1, 1,
        None, "file-2", None, False, None, 0.0, now, now,
    )  # fmt: skip


@pytest.mark.parametrize(
    "line",
    [
        {"response": {"status_code": 400, "body": {"error": REASON}}, "error": REASON},
        {"response": {"status_code": 400, "body": {"error": REASON}}, "error": None},
        {"response": {"status_code": 400, "body": {"error": REASON}}},
    ],
    ids=["top-level", "null-top-level", "body-only"],
)
def test_a_failed_line_keeps_the_providers_reason(line: dict) -> None:
    con = duckdb.connect()
    migrate(con)
    content = orjson.dumps({"custom_id": "item7", **line})
    (record,) = _attempt_records(
        _record(), content, Catalogue.from_connection(con), "USD", 0.0, 1.0
    )
    assert (record["item_id"], record["status"], record["http_status"]) == ("item7", "failed", 400)
    assert (record["error_type"], record["error_message"]) == (
        REASON["type"],
        REASON["message"],
    )
