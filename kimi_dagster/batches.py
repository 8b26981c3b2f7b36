"""Batch API mode: a chunk partition's pending items -> provider batches (60 % of the price) ->
their answers loaded into the same ``attempts`` and ``results`` tables as a real-time run.

Each step is recorded in DuckDB's ``batches`` table before the next begins, so a crash at any
point resumes without a second batch and without loading an output twice:

1. prepare: the input JSONL (one model, at most ``max_file_bytes``) is written and fsync'd to
   ``<db>.batches/<submission_id>.jsonl``, then a ``prepared`` row is inserted with its worst
   case cost, reserved against the budgets until loaded. A partition with any row whose output
   is not loaded yet never gets a new submission.
2. upload: the Files API (``purpose=batch``); the file id is recorded (``uploaded``). A row
   still ``prepared`` after a crash first looks for its file by name, so no upload is repeated.
3. create: with ``metadata.kimi_dagster_submission``. An ``uploaded`` row first searches the
   provider's batch list for that metadata, so a crash after the create request but before the
   batch id was recorded adopts that batch instead of creating another.
4. poll: status and request_counts are recorded.
5. load: once terminal, the output and error files become attempt records (attempt id
   ``<batch id>:<item id>``, cost at the Batch price) merged with the spool's SQL, in the same
   transaction that sets ``loaded``. Items the batch never answered (expired, cancelled,
   failed) stay pending; error-file lines fail their item with the provider's reason.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson

from kimi_dagster.budgets import read_budgets, run_caps
from kimi_dagster.catalogue import Catalogue
from kimi_dagster.claims import ChunkBusy, claim
from kimi_dagster.client import (
    ApiError,
    ErrorKind,
    KimiClient,
    classify,
    parse_reply,
    redact,
)
from kimi_dagster.engine import Settings
from kimi_dagster.ingest import dataset_of
from kimi_dagster.spool import merge_segment, spool_dir
from kimi_dagster.store import connect, ensure_schema, run_sql

MODES = ("realtime", "batch")
CHAT_URL = "/v1/chat/completions"
MAX_FILE_BYTES = 100_000_000  # the Files API's 100 MB per file, read as decimal to be safe
SAMPLING = ("temperature", "top_p", "n", "presence_penalty", "frequency_penalty")
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
METADATA_KEY = "kimi_dagster_submission"


class BatchModeError(ValueError):
    """Items that cannot go through the Batch API, or a batch that cannot be found."""


@dataclass(frozen=True)
class BatchOptions:
    completion_window: str = "24h"  # "12h".."7d"
    max_file_bytes: int = MAX_FILE_BYTES
    poll_interval: float = 30.0  # seconds between polls while waiting


@dataclass(frozen=True)
class BatchRecord:
    """One row of the ``batches`` table."""

    submission_id: str
    dataset: str
    partition_key: str
    model: str
    items: int
    input_bytes: int
    input_file_id: str | None
    batch_id: str | None
    state: str
    completed: int
    failed: int
    total: int
    output_file_id: str | None
    error_file_id: str | None
    error: str | None
    loaded: bool
    loaded_rows: int | None
    worst_cost_usd: float  # reserved against budgets until loaded
    created_at: datetime
    updated_at: datetime

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class SyncReport:
    """What one pass over some partitions did."""

    submitted: list[str]  # batch ids created in this pass
    loaded: list[BatchRecord]  # submissions whose output this pass loaded
    open: list[BatchRecord]  # submissions still waiting for the provider
    skipped: list[str]  # partitions not submitted because they still have an open batch
    budget_exhausted: bool = False  # a budget left some pending items unsubmitted

    @property
    def loaded_rows(self) -> int:
        return sum(r.loaded_rows or 0 for r in self.loaded)


def batch_dir(db_path: str | os.PathLike[str]) -> Path:
    """Input files waiting to be uploaded, beside the DuckDB file like the spool."""
    path = Path(db_path)
    return path.with_name(path.name + ".batches")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def set_dataset_mode(db_path: str | os.PathLike[str], dataset: str, mode: str) -> None:
    """Store how the dataset's chunks run (``realtime`` or ``batch``) unless a run overrides."""
    check_mode(mode)
    ensure_schema(db_path)
    with connect(db_path) as con:
        if not run_sql(
            con, "queries/set_dataset_mode", {"dataset": dataset, "mode": mode}
        ).fetchall():
            raise ValueError(f"no dataset {dataset!r}; ingest a file into it first")


def partition_mode(db_path: str | os.PathLike[str], partition_keys: Sequence[str]) -> str:
    """The stored mode of the partitions' datasets (``batch`` if any of them says so)."""
    ensure_schema(db_path)
    datasets = sorted({dataset_of(key) for key in partition_keys})
    with connect(db_path, read_only=True) as con:
        modes = {
            row[0]
            for d in datasets
            if (row := run_sql(con, "queries/dataset_mode", {"dataset": d}).fetchone())
        }
    return "batch" if "batch" in modes else "realtime"


def list_batches(
    db_path: str | os.PathLike[str],
    *,
    dataset: str | None = None,
    partition_keys: Sequence[str] | None = None,
    batch_id: str | None = None,
    submission_id: str | None = None,
    open_only: bool = False,
) -> list[BatchRecord]:
    """Rows of the ``batches`` table, oldest first; ``open_only``: output not loaded yet."""
    ensure_schema(db_path)
    params = {
        "dataset": dataset,
        "partition_keys": list(partition_keys) if partition_keys is not None else None,
        "batch_id": batch_id,
        "submission_id": submission_id,
        "open_only": open_only,
    }
    with connect(db_path, read_only=True) as con:
        rows = run_sql(con, "queries/batch_rows", params).fetchall()
    return [BatchRecord(*row) for row in rows]


def partition_outcomes(
    db_path: str | os.PathLike[str], partition_keys: Sequence[str]
) -> dict[str, int | float]:
    """Items, outcomes, tokens and cost of the partitions as they stand (for the asset)."""
    with connect(db_path, read_only=True) as con:
        cursor = run_sql(
            con, "queries/partition_outcomes", {"partition_keys": list(partition_keys)}
        )
        row = cursor.fetchone()
        return dict(zip([c[0] for c in cursor.description], row, strict=True))


def _update(db_path: str | os.PathLike[str], submission_id: str, **changes: Any) -> None:
    columns = ("input_file_id", "batch_id", "state", "completed", "failed", "total")
    columns += ("output_file_id", "error_file_id", "error")
    params = {c: changes.get(c) for c in columns} | {"submission_id": submission_id}
    with connect(db_path) as con:
        run_sql(con, "queries/batch_update", params)


def _client(base_url: str, api_key: str, timeout: float = 120.0) -> KimiClient:
    return KimiClient(base_url, api_key, concurrency=4, timeout=timeout)


# -- prepare ---------------------------------------------------------------------------------


def _batch_line(item_id: str, request: str, fixed_sampling: bool) -> bytes:
    body = orjson.loads(request)
    if fixed_sampling:  # kimi-k2.5/k2.6 fix these; the Batch API refuses lines that set them
        for name in SAMPLING:
            body.pop(name, None)
    line = {"custom_id": item_id, "method": "POST", "url": CHAT_URL, "body": body}
    return orjson.dumps(line) + b"\n"


@dataclass
class _Allowance:
    """What one pass may still commit to batches: per capped dataset, its cap less its ledger
    and its open batches' worst case; and the run's own cap (``RunOptions.budget_usd``)."""

    datasets: dict[str, float]
    run: float | None
    exhausted: bool = False

    def take(self, dataset: str, worst: float) -> bool:
        left = [v for v in (self.datasets.get(dataset), self.run) if v is not None]
        if any(worst > v for v in left):
            self.exhausted = True
            return False
        if dataset in self.datasets:
            self.datasets[dataset] -= worst
        if self.run is not None:
            self.run -= worst
        return True


def _allowance(
    con: duckdb.DuckDBPyConnection, keys: Sequence[str], settings: Settings
) -> _Allowance:
    caps = run_caps(read_budgets(con, partition_keys=keys), settings.options.dataset_budgets_usd)
    left = {d: cap[0] - cap[1] for d, cap in caps.items()}  # cap less spent and open batches'
    return _Allowance(left, settings.options.budget_usd)


def _prepare(
    db_path: Path,
    key: str,
    catalogue: Catalogue,
    settings: Settings,
    allowance: _Allowance,
    retry_failed: bool,
    options: BatchOptions,
) -> int:
    """Write the partition's pending items into input files (one model each, size-capped) and
    record them as ``prepared``; returns how many submissions it made. Items past what the
    budgets allow (worst case, at the Batch price) stay pending."""
    with connect(db_path, read_only=True) as con:
        rows = run_sql(
            con, "queries/pending_items", {"partition_key": key, "retry_failed": retry_failed}
        ).fetchall()
    by_model: dict[str, list[tuple[str, str]]] = defaultdict(list)
    worst_by_model: dict[str, float] = defaultdict(float)
    dataset = dataset_of(key)
    for _, item_id, _, model, max_tokens, est, request in rows:
        if not catalogue.model(model).batch_api:
            by_model[model].append((item_id, request))
            continue  # refused below, before anything is spent
        price = catalogue.price(model, settings.currency)
        worst = price.worst_case(est, max_tokens, batch=True)
        if not allowance.take(dataset, worst):
            break  # this item and the rest stay pending, in line order
        by_model[model].append((item_id, request))
        worst_by_model[model] += worst
    refused = sorted(m for m in by_model if not catalogue.model(m).batch_api)
    if refused:
        served = ", ".join(sorted(n for n, m in catalogue.models.items() if m.batch_api))
        raise BatchModeError(
            f"chunk {key}: the Batch API does not serve {', '.join(refused)} (it serves "
            f"{served}); run this dataset in realtime mode or give its items a served model"
        )
    directory = batch_dir(db_path)
    directory.mkdir(parents=True, exist_ok=True)
    parts: list[tuple[str, str, int, int, float]] = []  # id, model, items, bytes, worst USD
    for model, items in by_model.items():
        fixed = catalogue.model(model).fixed_sampling
        lines = [_batch_line(item_id, request, fixed) for item_id, request in items]
        for group in _split(lines, options.max_file_bytes, key):
            submission_id = f"{key}-{uuid.uuid4().hex[:12]}"
            _write_durably(directory / f"{submission_id}.jsonl", group)
            share = worst_by_model[model] * len(group) / len(lines)  # split pro rata
            parts.append((submission_id, model, len(group), sum(map(len, group)), share))
    with connect(db_path) as con:
        con.execute("BEGIN")
        for submission_id, model, count, size, worst in parts:
            run_sql(
                con,
                "queries/batch_insert",
                {
                    "submission_id": submission_id,
                    "dataset": dataset,
                    "partition_key": key,
                    "model": model,
                    "items": count,
                    "input_bytes": size,
                    "worst_cost_usd": worst,
                },
            )
        con.execute("COMMIT")
    return len(parts)


def _split(lines: list[bytes], limit: int, key: str) -> list[list[bytes]]:
    groups: list[list[bytes]] = [[]]
    size = 0
    for line in lines:
        if len(line) > limit:
            raise BatchModeError(f"chunk {key}: one request is {len(line):,} bytes, over {limit:,}")
        if size + len(line) > limit:
            groups.append([])
            size = 0
        groups[-1].append(line)
        size += len(line)
    return [g for g in groups if g]


def _write_durably(path: Path, lines: list[bytes]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as out:
        out.writelines(lines)
        out.flush()
        os.fsync(out.fileno())
    tmp.rename(path)


# -- upload and create -----------------------------------------------------------------------


async def _find_file(client: KimiClient, filename: str) -> str | None:
    """An earlier upload of this submission's file; a failed look-up only costs a re-upload."""
    try:
        listing = (await client.request("GET", "files")).json()
    except ApiError:
        return None
    return next((f["id"] for f in listing.get("data", []) if f.get("filename") == filename), None)


async def _provider_batches(client: KimiClient, since: datetime) -> AsyncIterator[dict[str, Any]]:
    """The account's batches, newest first, 100 a request, down to those created at ``since``
    (less a margin for clock skew between this machine and the provider)."""
    oldest = since.timestamp() - 300
    after: str | None = None
    while True:
        params = {"limit": 100} | ({"after": after} if after else {})
        page = (await client.request("GET", "batches", params=params)).json()
        data = page.get("data") or []
        for batch in data:
            yield batch
        if not page.get("has_more") or not data or data[-1].get("created_at", 0) < oldest:
            return
        after = data[-1]["id"]


async def _find_batch(client: KimiClient, record: BatchRecord) -> dict[str, Any] | None:
    """The provider's batch carrying this submission's metadata."""
    async for batch in _provider_batches(client, record.created_at):
        if (batch.get("metadata") or {}).get(METADATA_KEY) == record.submission_id:
            return batch
    return None


async def _advance(
    client: KimiClient, db_path: Path, record: BatchRecord, options: BatchOptions
) -> str | None:
    """Take one prepared/uploaded submission to a created batch; returns its batch id."""
    directory = batch_dir(db_path)
    local = directory / f"{record.submission_id}.jsonl"
    file_id = record.input_file_id
    if file_id is None:
        file_id = await _find_file(client, local.name)
        if file_id is None:
            if not local.is_file():
                _update(db_path, record.submission_id, state="failed", error="input file lost")
                return None
            with local.open("rb") as content:
                files = {"file": (local.name, content, "application/jsonl")}
                answer = await client.request(
                    "POST", "files", data={"purpose": "batch"}, files=files
                )
            file_id = answer.json()["id"]
        _update(db_path, record.submission_id, input_file_id=file_id, state="uploaded")
    batch = await _find_batch(client, record) if record.state == "uploaded" else None
    if batch is None:
        body = {
            "input_file_id": file_id,
            "endpoint": CHAT_URL,
            "completion_window": options.completion_window,
            "metadata": {
                METADATA_KEY: record.submission_id,
                "dataset": record.dataset,
                "partition": record.partition_key,
            },
        }
        batch = (await client.request("POST", "batches", json=body)).json()
    _record_status(db_path, record.submission_id, batch)
    local.unlink(missing_ok=True)
    return batch["id"]


def _record_status(db_path: Path, submission_id: str, batch: dict[str, Any]) -> None:
    counts = batch.get("request_counts") or {}
    error = None
    if batch.get("errors"):
        error = redact("; ".join(e.get("message", "") for e in batch["errors"].get("data", [])))
    elif batch.get("status") == "expired":
        error = "expired before every line was answered; the rest stay pending"
    _update(
        db_path,
        submission_id,
        batch_id=batch["id"],
        state=batch["status"],
        completed=counts.get("completed"),
        failed=counts.get("failed"),
        total=counts.get("total"),
        output_file_id=batch.get("output_file_id"),
        error_file_id=batch.get("error_file_id"),
        error=error,
    )


# -- load ------------------------------------------------------------------------------------


def _attempt_records(
    record: BatchRecord,
    content: bytes,
    catalogue: Catalogue,
    currency: str,
    started: float,
    finished: float,
) -> list[dict[str, Any]]:
    """Output or error file lines -> the spool's attempt records (see ``spool.ATTEMPT_COLUMNS``)."""
    assert record.batch_id is not None
    price = catalogue.price(record.model, currency)
    records = []
    for raw in content.splitlines():
        if not raw.strip():
            continue
        line = orjson.loads(raw)
        item_id = str(line["custom_id"])
        response = line.get("response") or {}
        status = response.get("status_code")
        body = orjson.dumps(response.get("body") or {})
        base: dict[str, Any] = {
            "attempt_id": f"{record.batch_id}:{item_id}", "dataset": record.dataset,
            "item_id": item_id, "partition_key": record.partition_key,
            "run_id": record.batch_id, "attempt": 1, "model": record.model, "mode": "batch",
            "started_at": started, "finished_at": finished,
            "latency_ms": (finished - started) * 1000, "http_status": status,
            "gateway_tokens": 0, "final": True,
        }  # fmt: skip
        try:
            if line.get("error") or status != 200:  # the reason: top-level, else in the body
                failure = orjson.dumps({"error": line["error"]}) if line.get("error") else body
                raise classify(status or 500, failure)
            reply = parse_reply(body)
        except ApiError as error:
            base.update(
                outcome="failed", status="failed", error_type=error.error_type,
                error_message=error.message,
            )  # fmt: skip
            records.append(base)
            continue
        cost = price.cost(
            reply.prompt_tokens, reply.completion_tokens, reply.cached_tokens, batch=True
        )
        base.update(
            outcome="ok", status="succeeded", prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens, cached_tokens=reply.cached_tokens,
            cost_usd=cost, output=reply.content, reasoning=reply.reasoning,
            finish_reason=reply.finish_reason, response_id=reply.response_id,
        )  # fmt: skip
        records.append(base)
    return records


def _stamp(batch: dict[str, Any], *names: str) -> float | None:
    return next((float(batch[n]) for n in names if batch.get(n)), None)


async def _load(
    client: KimiClient,
    db_path: Path,
    record: BatchRecord,
    catalogue: Catalogue,
    currency: str,
) -> int | None:
    """Download a terminal batch's files and merge them, once; returns rows merged (None when
    another process loaded it first)."""
    assert record.batch_id is not None
    batch = (await client.request("GET", f"batches/{record.batch_id}")).json()
    started = _stamp(batch, "created_at") or record.created_at.timestamp()
    finished = _stamp(
        batch, "completed_at", "expired_at", "cancelled_at", "failed_at", "finalizing_at"
    )
    records: list[dict[str, Any]] = []
    for file_id in (batch.get("output_file_id"), batch.get("error_file_id")):
        if file_id:
            content = (await client.request("GET", f"files/{file_id}/content")).content
            records += _attempt_records(
                record, content, catalogue, currency, started, finished or started
            )
    segment = batch_dir(db_path) / f"{record.submission_id}.load.jsonl"
    segment.parent.mkdir(parents=True, exist_ok=True)
    segment.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    try:
        with connect(db_path) as con:
            con.execute("BEGIN")
            marked = run_sql(
                con,
                "queries/batch_mark_loaded",
                {"submission_id": record.submission_id, "rows": len(records)},
            ).fetchall()
            if not marked:  # another process loaded it between our poll and now
                con.execute("ROLLBACK")
                return None
            added = merge_segment(con, segment) if records else 0
            con.execute("COMMIT")
    finally:
        segment.unlink(missing_ok=True)
    return added


# -- the passes the CLI, the asset and the sensor run ----------------------------------------


async def poll(
    db_path: str | os.PathLike[str],
    settings: Settings,
    *,
    partition_keys: Sequence[str] | None = None,
) -> list[tuple[BatchRecord, str]]:
    """Ask the provider about every created, unfinished batch and record the answer; returns
    (record as it was, new state) for each whose state changed."""
    db_path = Path(db_path)
    waiting = [
        r
        for r in list_batches(db_path, partition_keys=partition_keys, open_only=True)
        if r.batch_id is not None and not r.terminal
    ]
    changed: list[tuple[BatchRecord, str]] = []
    if not waiting:
        return changed
    wanted = {r.batch_id: r for r in waiting}
    found: dict[str, dict[str, Any]] = {}
    async with _client(settings.base_url, settings.api_key, settings.timeout) as client:
        # One listing request per 100 batches, not one request per batch.
        async for batch in _provider_batches(client, min(r.created_at for r in waiting)):
            if batch["id"] in wanted:
                found[batch["id"]] = batch
                if len(found) == len(wanted):
                    break
        for batch_id in wanted.keys() - found.keys():  # not listed (yet): ask for each
            found[batch_id] = (await client.request("GET", f"batches/{batch_id}")).json()
        for record in waiting:
            batch = found[record.batch_id]
            counts = batch.get("request_counts") or {}
            if batch["status"] != record.state or counts.get("completed") != record.completed:
                _record_status(db_path, record.submission_id, batch)
                changed.append((record, batch["status"]))
    return changed


async def sync_partitions(
    db_path: str | os.PathLike[str],
    partition_keys: Sequence[str],
    settings: Settings,
    *,
    submit: bool = True,
    retry_failed: bool = True,
    options: BatchOptions = BatchOptions(),
) -> SyncReport:
    """One idempotent pass: poll, load finished batches, then (``submit``) submit the pending
    items of every partition that has no open batch left, as far as the budgets allow (the
    dataset's cap less its ledger and its open batches' worst case, and the run's cap), and
    finish interrupted submissions.

    Each partition is claimed (the lock real-time runs take), so two passes, or a pass and a
    real-time run, never work on one chunk at once.
    """
    db_path = Path(db_path)
    ensure_schema(db_path)
    with connect(db_path, read_only=True) as con:
        catalogue = Catalogue.from_connection(con)
    report = SyncReport(submitted=[], loaded=[], open=[], skipped=[])
    with claim(spool_dir(db_path) / "claims", partition_keys):
        await poll(db_path, settings, partition_keys=partition_keys)
        async with _client(settings.base_url, settings.api_key, settings.timeout) as client:
            for key in partition_keys:
                await _load_finished(client, db_path, key, catalogue, settings, report)
            with connect(db_path, read_only=True) as con:
                allowance = _allowance(con, partition_keys, settings)
            for key in partition_keys:
                rows = list_batches(db_path, partition_keys=[key], open_only=True)
                if rows and submit:
                    report.skipped.append(key)
                elif submit:
                    _prepare(db_path, key, catalogue, settings, allowance, retry_failed, options)
                for record in list_batches(db_path, partition_keys=[key], open_only=True):
                    if record.state in ("prepared", "uploaded") and (
                        batch_id := await _advance(client, db_path, record, options)
                    ):
                        report.submitted.append(batch_id)
    report.open = list_batches(db_path, partition_keys=partition_keys, open_only=True)
    report.budget_exhausted = allowance.exhausted
    return report


async def _load_finished(
    client: KimiClient,
    db_path: Path,
    key: str,
    catalogue: Catalogue,
    settings: Settings,
    report: SyncReport,
) -> None:
    for record in list_batches(db_path, partition_keys=[key], open_only=True):
        if not record.terminal:
            continue
        if record.batch_id is None:  # never created (input lost, or cancelled before)
            _mark_empty(db_path, record)
        elif await _load(client, db_path, record, catalogue, settings.currency) is not None:
            report.loaded.append(_reload(db_path, record))


def _reload(db_path: Path, record: BatchRecord) -> BatchRecord:
    return list_batches(db_path, submission_id=record.submission_id)[0]


def _mark_empty(db_path: Path, record: BatchRecord) -> None:
    with connect(db_path) as con:
        run_sql(
            con, "queries/batch_mark_loaded", {"submission_id": record.submission_id, "rows": 0}
        )


async def run_batch_mode(
    db_path: str | os.PathLike[str],
    partition_keys: Sequence[str],
    settings: Settings,
    *,
    wait: bool,
    retry_failed: bool = True,
    options: BatchOptions = BatchOptions(),
    on_progress: Callable[[SyncReport], None] | None = None,
) -> SyncReport:
    """Submit the partitions' pending items as batches; with ``wait``, poll every
    ``options.poll_interval`` seconds and load each batch as it finishes, until none is open.
    While waiting, a poll that fails for a passing reason (5xx, timeout, 429) is retried at the
    next interval: the batches carry on at the provider either way."""
    report = await sync_partitions(
        db_path, partition_keys, settings, retry_failed=retry_failed, options=options
    )
    total = report
    while wait and total.open:
        if on_progress is not None:
            on_progress(total)
        await asyncio.sleep(options.poll_interval)
        try:
            report = await sync_partitions(
                db_path, partition_keys, settings, submit=False, options=options
            )
        except ApiError as exc:
            if exc.kind not in (ErrorKind.RETRYABLE, ErrorKind.RATE_LIMIT):
                raise
            continue
        total = SyncReport(
            submitted=total.submitted,
            loaded=total.loaded + report.loaded,
            open=report.open,
            skipped=total.skipped,
            budget_exhausted=total.budget_exhausted,
        )
    return total


async def cancel(
    db_path: str | os.PathLike[str],
    *,
    api_key: str,
    base_url: str,
    batch_id: str | None = None,
    dataset: str | None = None,
) -> list[BatchRecord]:
    """Cancel provider batches (one, or every open one of a dataset); a submission not yet
    created is dropped. What a cancelled batch already answered is loaded by the next pass."""
    if (batch_id is None) == (dataset is None):
        raise ValueError("give a batch id or a dataset")
    db_path = Path(db_path)
    rows = list_batches(db_path, batch_id=batch_id, dataset=dataset, open_only=True)
    if batch_id is not None and not rows:
        raise BatchModeError(
            f"no open batch {batch_id} in {db_path}; `kimi-dagster batches` lists them"
        )
    cancelled = []
    async with _client(base_url, api_key) as client:
        for record in rows:
            if record.batch_id is None and not await _drop_unsubmitted(client, db_path, record):
                continue
            record = _reload(db_path, record)
            if record.state in ("validating", "in_progress"):
                answer = await client.request("POST", f"batches/{record.batch_id}/cancel")
                _record_status(db_path, record.submission_id, answer.json())
            elif record.batch_id is not None:
                continue  # finalizing or finished: nothing left to cancel
            cancelled.append(_reload(db_path, record))
    return cancelled


async def _drop_unsubmitted(client: KimiClient, db_path: Path, record: BatchRecord) -> bool:
    """Cancel a submission that has no batch id yet, under the chunk's claim (so a live
    submitter cannot create its batch meanwhile). A batch the provider already has under its
    metadata is adopted, to be cancelled like any other. False: a live run holds the chunk."""
    try:
        with claim(spool_dir(db_path) / "claims", [record.partition_key]):
            batch = await _find_batch(client, record) if record.state == "uploaded" else None
            if batch is not None:
                _record_status(db_path, record.submission_id, batch)
                return True
            _update(db_path, record.submission_id, state="cancelled", error="cancelled")
            _mark_empty(db_path, record)
            batch_dir(db_path).joinpath(f"{record.submission_id}.jsonl").unlink(missing_ok=True)
            return True
    except ChunkBusy:
        return False
