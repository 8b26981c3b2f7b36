"""A JSONL file -> rows in DuckDB's ``items``, numbered into chunk partitions.

The file is streamed line by line (never held whole in memory): each line is validated in
Python and written, normalized, to a staging JSONL beside the database; DuckDB then loads the
staging file in one short transaction. Bad lines land in ``rejected_lines`` with their line
number and reason; they never stop the ingest. Re-ingesting the same file adds nothing.

A file that is empty, or that changes while it is read (truncated, rewritten, still being
appended to), is refused as a whole before anything is loaded, so the database never holds half
of a file. One removed or replaced (``mv``) while it is read is ingested as it was when opened:
that content is complete.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from kimi_dagster.catalogue import Catalogue
from kimi_dagster.client import env_base_url
from kimi_dagster.engine import platform_currency
from kimi_dagster.inputs import ItemDefaults, LineError, parse_line
from kimi_dagster.store import connect, ensure_schema, run_sql

DEFAULT_CHUNK_SIZE = 1000
SAMPLE_REJECTIONS = 20
DEFAULTS = ItemDefaults()


class SourceError(ValueError):
    """The file as a whole cannot be ingested (empty, or changed while read); nothing was."""


@dataclass
class IngestReport:
    dataset: str
    source_file: str
    lines: int = 0
    accepted: int = 0
    unchanged: int = 0
    rejected: int = 0
    est_input_tokens: int = 0
    rejections: list[tuple[int, str]] = field(default_factory=list)  # first few (line, reason)
    partitions: list[str] = field(default_factory=list)  # every chunk key of the dataset
    new_partitions: list[str] = field(default_factory=list)  # the chunks this ingest created

    def describe_rejections(self) -> str:
        shown = "\n".join(f"  {self.source_file}:{n}: {why}" for n, why in self.rejections)
        more = self.rejected - len(self.rejections)
        return shown + (f"\n  ... and {more} more (see table rejected_lines)" if more > 0 else "")


def dataset_name(path: str | os.PathLike[str]) -> str:
    """A partition-key-safe name from a file name: ``SEO articles.jsonl`` -> ``seo_articles``."""
    stem = Path(path).name.split(".")[0]
    name = re.sub(r"[^a-z0-9_]+", "_", stem.lower()).strip("_")
    return name or "dataset"


def check_dataset_name(name: str) -> str:
    if not re.fullmatch(r"[a-z0-9_]{1,64}", name):
        raise ValueError(
            f"dataset name {name!r} must be 1-64 characters of a-z, 0-9 and _ "
            "(it becomes part of partition keys)"
        )
    return name


def dataset_of(partition_key: str) -> str:
    """The dataset a chunk key belongs to: keys are ``<dataset>-NNNNN`` (numbered by
    ``sql/ingest/3_insert_items.sql``), so ``seo_articles-00012`` -> ``seo_articles``."""
    return partition_key.rsplit("-", 1)[0]


def ingest_file(
    db_path: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    dataset: str | None = None,
    chunk_size: int | None = None,
    defaults: ItemDefaults = DEFAULTS,
    default_chunk_size: int = DEFAULT_CHUNK_SIZE,
    currency: str | None = None,
) -> IngestReport:
    """Ingest one JSONL file into a dataset (named after the file unless given). A new dataset
    is chunked by ``chunk_size`` (else ``default_chunk_size``); an existing one keeps its own
    and refuses a different ``chunk_size``, since its chunk keys are already numbered by it.
    Each line's model must have a price in ``currency``: the platform's that will bill it
    (default: that of ``$MOONSHOT_BASE_URL``; CNY on the .cn platform)."""
    source = Path(path).resolve()
    if not source.is_file():
        raise FileNotFoundError(f"input file not found: {source}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    dataset = check_dataset_name(dataset or dataset_name(source))
    ensure_schema(db_path)
    with connect(db_path, read_only=True) as con:
        catalogue = Catalogue.from_connection(con)
        stored = run_sql(con, "queries/dataset_chunk_size", {"dataset": dataset}).fetchone()
    if stored and chunk_size is not None and chunk_size != stored[0]:
        raise ValueError(
            f"dataset {dataset!r} is chunked by {stored[0]:,} items and cannot change to "
            f"{chunk_size:,}: ingest without a chunk size (it keeps {stored[0]:,}), or name a "
            "new dataset for the other chunk size"
        )

    report = IngestReport(dataset=dataset, source_file=str(source))
    work = Path(tempfile.mkdtemp(prefix="ingest-", dir=Path(db_path).resolve().parent))
    staged, rejected = work / "staged.jsonl", work / "rejected.jsonl"
    try:
        currency = currency or platform_currency(env_base_url())
        _validate(source, staged, rejected, defaults, catalogue, currency, report)
        _load(db_path, staged, rejected, chunk_size or default_chunk_size, report)
    finally:
        for file in (staged, rejected):
            file.unlink(missing_ok=True)
        work.rmdir()
    return report


def _validate(
    source: Path,
    staged: Path,
    rejected: Path,
    defaults: ItemDefaults,
    catalogue: Catalogue,
    currency: str,
    report: IngestReport,
) -> None:
    try:
        lines = source.open("rb")
    except FileNotFoundError:
        raise FileNotFoundError(f"input file not found: {source}") from None
    prompts = 0
    with lines, staged.open("wb") as ok, rejected.open("wb") as bad:
        opened = os.fstat(lines.fileno())
        for line_no, raw in enumerate(lines, start=1):
            report.lines = line_no
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue
            prompts += 1
            try:
                item = parse_line(raw, defaults, catalogue, currency)
            except LineError as exc:
                report.rejected += 1
                if len(report.rejections) < SAMPLE_REJECTIONS:
                    report.rejections.append((line_no, str(exc)))
                excerpt = raw[:200].decode("utf-8", errors="replace")
                bad.write(
                    orjson.dumps({"line_no": line_no, "reason": str(exc), "excerpt": excerpt})
                    + b"\n"
                )
                continue
            ok.write(
                orjson.dumps(
                    {
                        "line_no": line_no,
                        "item_id": item.item_id,
                        "model": item.model,
                        "max_tokens": item.max_tokens,
                        "est_input_tokens": item.est_input_tokens,
                        "request": item.request.decode(),
                        "request_sha256": item.request_sha256,
                        "input_text": item.input_text,
                        "metadata": orjson.Fragment(item.metadata) if item.metadata else None,
                    }
                )
                + b"\n"
            )
        _check_unchanged(source, opened, os.fstat(lines.fileno()), lines.tell(), report.lines)
    if not prompts:
        raise SourceError(
            f"{source}: no prompts in the file ({report.lines} blank line(s)); write one JSON "
            'object per line, e.g. {"id": "1", "message": "..."}'
        )


def _check_unchanged(
    source: Path, opened: os.stat_result, now: os.stat_result, consumed: int, line_no: int
) -> None:
    """Refuse a file that was truncated, rewritten or appended to while it was read."""
    same = (now.st_size, now.st_mtime_ns) == (opened.st_size, opened.st_mtime_ns)
    if same and consumed == opened.st_size:
        return
    raise SourceError(
        f"{source}: the file changed while it was read (noticed after line {line_no}: "
        f"{opened.st_size:,} bytes when opened, {now.st_size:,} now); nothing from it was "
        "ingested; ingest it again once it is complete"
    )


def _load(
    db_path: str | os.PathLike[str],
    staged: Path,
    rejected: Path,
    chunk_size: int,
    report: IngestReport,
) -> None:
    params = {
        "dataset": report.dataset,
        "source_file": report.source_file,
        "chunk_size": chunk_size,
        "staged": str(staged),
        "rejected": str(rejected),
    }
    with connect(db_path) as con:
        con.execute("BEGIN")
        run_sql(con, "ingest/0_forget_rejections", params)
        run_sql(con, "queries/register_dataset", params)
        params["chunk_size"] = run_sql(con, "queries/dataset_chunk_size", params).fetchone()[0]
        params["min_chunk"] = run_sql(con, "queries/next_chunk", params).fetchone()[0]
        run_sql(con, "ingest/1_stage", params)
        conflicts = run_sql(con, "ingest/2_reject_duplicates", params).fetchall()
        report.accepted = run_sql(con, "ingest/3_insert_items", params).fetchone()[0]
        run_sql(con, "ingest/4_reject_invalid", params)
        matching = run_sql(con, "queries/ingest_matching", params).fetchone()[0]
        report.unchanged = matching - report.accepted
        report.rejected += len(conflicts)
        report.rejections = sorted(report.rejections + conflicts)[:SAMPLE_REJECTIONS]
        run_sql(
            con,
            "queries/record_source",
            {
                **params,
                "lines": report.lines,
                "accepted": report.accepted,
                "unchanged": report.unchanged,
                "rejected": report.rejected,
            },
        )
        (report.est_input_tokens,) = run_sql(con, "queries/dataset_token_totals", params).fetchone()
        every = run_sql(con, "queries/dataset_partitions", {**params, "min_chunk": 0}).fetchall()
        report.partitions = [k for (k,) in every]
        new = run_sql(con, "queries/dataset_partitions", params).fetchall()
        report.new_partitions = [k for (k,) in new]
        run_sql(con, "ingest/5_drop_stage")
        con.execute("COMMIT")
