"""Process chunk partitions end to end: claim -> merge leftovers -> pending items -> runner.

Both front ends call this: the Dagster asset (one or several partitions per run) and the
``kimi-dagster batch`` command (every partition of a dataset). Pending items are read from
DuckDB one chunk at a time, the next chunk prefetched in a thread, so a 10M-item dataset
streams through in constant memory and the rate does not dip at chunk boundaries.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from kimi_dagster.budgets import others_spend, read_budgets, run_caps
from kimi_dagster.catalogue import Catalogue
from kimi_dagster.claims import claim
from kimi_dagster.client import DEFAULT_BASE_URL, KimiClient
from kimi_dagster.limits import Limits, RateLimiter
from kimi_dagster.runner import Runner, RunOptions, WorkItem
from kimi_dagster.spool import SpoolWriter, merge_spool, merged, spool_dir
from kimi_dagster.stats import RunStats
from kimi_dagster.store import DatabaseBusy, connect, ensure_schema, run_sql


@dataclass(frozen=True)
class Settings:
    """Everything a run needs besides the items; the API key is never printed (repr=False)."""

    api_key: str = field(repr=False)
    limits: Limits
    base_url: str = DEFAULT_BASE_URL
    timeout: float = 120.0
    options: RunOptions = field(default_factory=RunOptions)
    share: int = 1  # runs spending the account at once; ``limits`` is already this run's share

    @property
    def currency(self) -> str:
        return platform_currency(self.base_url)


def platform_currency(base_url: str) -> str:
    """The .cn platform bills in CNY, the international one in USD."""
    return "CNY" if ".cn" in base_url.split("//")[-1].split("/")[0] else "USD"


def merge_now(db_path: str | os.PathLike[str], *, timeout: float = 60.0) -> int:
    """Move every finished spool segment into DuckDB; returns the attempts added.

    On one DuckDB thread: a segment is a few hundred rows, and worker threads for its queries
    and the checkpoint on close cost a run's merges about a third more CPU than they save.
    """
    with connect(db_path, timeout=timeout) as con:
        con.execute("SET threads = 1")
        return merge_spool(con, spool_dir(db_path))


def pending_count(
    db_path: str | os.PathLike[str], partition_keys: Sequence[str], *, retry_failed: bool = True
) -> int:
    with merged(db_path) as (con, _):
        params = {"partition_keys": list(partition_keys), "retry_failed": retry_failed}
        return run_sql(con, "queries/pending_count", params).fetchone()[0]


def _load_chunk(db_path: str | os.PathLike[str], key: str, retry_failed: bool) -> list[WorkItem]:
    with connect(db_path) as con:
        rows = run_sql(
            con, "queries/pending_items", {"partition_key": key, "retry_failed": retry_failed}
        ).fetchall()
    return [
        WorkItem(dataset, item_id, pkey, model, max_tokens, est, request.encode())
        for dataset, item_id, pkey, model, max_tokens, est, request in rows
    ]


def _pending_items(
    db_path: str | os.PathLike[str], keys: Sequence[str], retry_failed: bool
) -> Iterator[WorkItem]:
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kimi-prefetch") as pool:
        upcoming: list[Future[list[WorkItem]]] = [
            pool.submit(_load_chunk, db_path, key, retry_failed) for key in keys[:2]
        ]
        for index in range(len(keys)):
            items = upcoming.pop(0).result()
            if index + 2 < len(keys):
                upcoming.append(pool.submit(_load_chunk, db_path, keys[index + 2], retry_failed))
            yield from items


async def process_partitions(
    db_path: str | os.PathLike[str],
    partition_keys: Sequence[str],
    settings: Settings,
    *,
    run_id: str,
    retry_failed: bool = True,
    on_progress: Callable[[RunStats], None] | None = None,
) -> RunStats:
    """Send every pending item of the given chunks; raises RunAborted on account-level errors.

    The chunks are locked for the duration (a second run on the same chunk fails fast with
    ChunkBusy instead of paying twice), and spooled results of earlier, crashed runs are
    merged first so nothing already paid for is sent again.
    """
    db_path = Path(db_path)
    ensure_schema(db_path)
    spool = spool_dir(db_path)
    with claim(spool / "claims", partition_keys):
        total = pending_count(db_path, partition_keys, retry_failed=retry_failed)
        with connect(db_path, read_only=False) as con:
            catalogue = Catalogue.from_connection(con)
            caps = run_caps(
                read_budgets(con, partition_keys=partition_keys, run_id=run_id),
                settings.options.dataset_budgets_usd,
            )
            earlier = run_sql(con, "queries/run_attempts", {"run_id": run_id}).fetchone()[0]
        # Dagster retries a failed step inside the same run, with the same run id: this try's
        # attempt ids must differ from the last try's, or the merge would skip them as merged.
        prefix = f"{run_id}~{earlier}" if earlier else run_id
        limiter = RateLimiter(settings.limits, share=settings.share)
        writer = SpoolWriter(spool, prefix)
        try:
            async with KimiClient(
                settings.base_url,
                settings.api_key,
                concurrency=settings.limits.concurrency,
                timeout=settings.timeout,
            ) as client:
                runner = Runner(
                    client=client,
                    limiter=limiter,
                    catalogue=catalogue,
                    spool=writer,
                    run_id=run_id,
                    options=settings.options,
                    merge=lambda: merge_now(db_path, timeout=5.0),
                    on_progress=on_progress,
                    currency=settings.currency,
                    dataset_budgets=caps,
                    others_spend=lambda: others_spend(db_path, partition_keys, run_id),
                    attempt_prefix=prefix,
                )
                return await runner.run(
                    _pending_items(db_path, list(partition_keys), retry_failed), total
                )
        finally:
            writer.close()
            with contextlib.suppress(DatabaseBusy):  # durable in the spool; a later merge takes it
                merge_now(db_path)
