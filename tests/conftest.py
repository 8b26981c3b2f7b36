"""Shared fixtures: a fresh DuckDB path per test and a JSONL writer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "kimi.duckdb"


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[..., Path]:
    """write_jsonl("name.jsonl", [dict | bytes, ...]): bytes are written verbatim as a line."""

    def write(name: str, lines: list[dict | bytes]) -> Path:
        path = tmp_path / name
        with path.open("wb") as out:
            for line in lines:
                out.write((line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n")
        return path

    return write
