"""Send a stream of items through the limiter and the client; record every attempt in the spool.

The runner owns the retry policy (kimi-api.md's error table, via ``client.ErrorKind``):
limit-429s slow the limiter down and retry after the wait the message names; overloads, 5xx,
timeouts, resets and broken bodies retry with exponential backoff and jitter, at most
``max_attempts`` times; 400s fail the item; quota, 401, 403 and 404 stop the whole run at once.
Budgets, when set (the run's, and the dataset's counting what earlier runs spent on it),
reserve each call's worst case before sending it and stop cleanly (items stay pending) when the
next call could exceed one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kimi_dagster.catalogue import Catalogue, Price
from kimi_dagster.client import ApiError, ErrorKind, KimiClient, Reply
from kimi_dagster.limits import Permit, RateLimiter
from kimi_dagster.spool import SpoolWriter
from kimi_dagster.stats import RunStats
from kimi_dagster.store import DatabaseBusy
from kimi_dagster.tokens import EstimateCorrection

MERGE_SHARE = 200  # a merge may cost up to 1/200 of a core (0.5 %) over the time between merges
MERGE_STRETCH = 5  # merges are at most this many merge_intervals apart


@dataclass(slots=True)
class WorkItem:
    """One pending item as the runner needs it: its request body, serialized once at ingest, and
    its counts of sends and failures in this run (retries are bounded by them)."""

    dataset: str
    item_id: str
    partition_key: str
    model: str
    max_tokens: int
    est_input_tokens: int
    request: bytes
    sends: int = 0  # attempts made in this run
    failures: int = 0  # attempts that failed for a reason other than a limit-429


@dataclass(frozen=True)
class RunOptions:
    """How hard a run retries, what it may spend, and how often it syncs, merges and reports."""

    max_attempts: int = 5  # per item: failures other than limit-429s before it fails
    max_rate_limited: int = 30  # per item: limit-429s before it fails (keeps retries bounded)
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    budget_usd: float | None = None  # stop before spending more than this in the run
    dataset_budgets_usd: Mapping[str, float] = field(default_factory=dict)  # caps from config
    abort_grace: float = 10.0  # after a fatal error, how long in-flight requests may finish
    sync_interval: float = 0.5  # fsync the spool at least this often
    # move spooled records into DuckDB this often; stretched up to MERGE_STRETCH times when
    # merges are slow (see Runner._next_merge_gap)
    merge_interval: float = 2.0
    progress_interval: float = 10.0


class RunAborted(RuntimeError):
    """The provider refused the account (bad key, no balance, no access, unknown model)."""

    def __init__(self, error: ApiError, stats: RunStats) -> None:
        self.error = error
        self.stats = stats
        super().__init__(
            f"run stopped: {error} (HTTP {error.http_status}); items not yet done stay pending "
            "and the next run resumes them"
        )


@dataclass
class _Budget:
    limit: float | None
    spent: float = 0.0  # for a dataset: earlier runs' spend included
    reserved: float = 0.0  # worst cases of the calls in flight
    others: float = 0.0  # for a dataset: other runs' spend, as last read from DuckDB

    def fits(self, worst: float) -> bool:
        return self.limit is None or self.spent + self.reserved + worst <= self.limit

    def observe_others(self, others: float) -> None:
        """Count what concurrent runs of the dataset spent since the last look."""
        self.spent += max(0.0, others - self.others)
        self.others = max(self.others, others)

    def settle(self, worst: float, actual: float) -> None:
        self.reserved -= worst
        self.spent += actual


@dataclass
class Runner:
    """Sends items at the limiter's pace until each is final (succeeded or failed), retrying
    with backoff, stopping at budgets or account-level errors; every reply is written to the
    spool before it counts as done, so nothing paid for is lost."""

    client: KimiClient
    limiter: RateLimiter
    catalogue: Catalogue
    spool: SpoolWriter
    run_id: str
    options: RunOptions = field(default_factory=RunOptions)
    merge: Callable[[], Any] | None = None  # moves sealed segments into DuckDB (blocking)
    on_progress: Callable[[RunStats], None] | None = None
    currency: str = "USD"
    mode: str = "realtime"
    # per dataset: (cap, spent so far, spent by other runs); others_spend re-reads the last
    # after each merge, so concurrent runs of one dataset see each other's spend
    dataset_budgets: Mapping[str, tuple[float, float, float]] = field(default_factory=dict)
    others_spend: Callable[[], Mapping[str, float]] | None = None
    attempt_prefix: str | None = None  # attempt ids are <prefix>:<item>:<n>; default: run_id

    def __post_init__(self) -> None:
        self.stats = RunStats(limiter=self.limiter)
        self._correction = EstimateCorrection()
        self._budget = _Budget(self.options.budget_usd)
        self._dataset_budgets = {
            name: _Budget(cap, spent, others=others)
            for name, (cap, spent, others) in self.dataset_budgets.items()
        }
        self._retries: list[tuple[float, int, WorkItem]] = []
        self._seq = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._fatal: ApiError | None = None
        self._crash: BaseException | None = None  # a bug in this module: stop, do not hide it
        self._source: Iterator[WorkItem] = iter(())
        self._source_done = False
        self._merging: asyncio.Task[None] | None = None
        self._merge_gap = self.options.merge_interval

    async def run(self, items: Iterable[WorkItem], total: int) -> RunStats:
        """Process ``items`` (``total`` of them) to a final state, or until stopped."""
        self._source = iter(items)
        self.stats.start(total)
        housekeeping = asyncio.create_task(self._housekeeping())
        housekeeping.add_done_callback(self._stop_on_crash)  # no fsyncs or merges: stop the run
        stopped = True
        try:
            await self._dispatch()
            stopped = False
        finally:
            # also when dispatch raised (a bug, a cancel, Ctrl-C): a reply that arrives must be
            # in the spool before it closes, or it was paid for and is sent (and paid) again
            try:
                await self._drain(stopped)
            finally:
                housekeeping.cancel()
            if self._merging is not None:
                await asyncio.wait([self._merging])
            self.stats.finish()
            self.stats.budgets = self._budget_usage()
            await self._flush(final=True)
        if self._crash is not None:
            raise self._crash
        if self._fatal is not None:
            raise RunAborted(self._fatal, self.stats)
        return self.stats

    # -- dispatch ---------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while self._fatal is None and self._crash is None:
            item = self._next_ready()
            if item is None:
                if self._source_done and not self._tasks and not self._retries:
                    return
                await self._wait_for_work()
                continue
            charge = self._correction.corrected(item.est_input_tokens) + item.max_tokens
            largest = self.limiter.largest_charge
            if item.est_input_tokens + item.max_tokens > largest:
                self._refuse(item, largest)  # it alone fails; the run goes on
                continue
            charge = min(charge, largest)  # the correction is a guess; the item fits unguessed
            price = self.catalogue.price(item.model, self.currency)
            worst = price.worst_case(charge - item.max_tokens, item.max_tokens)
            if not self._reserve(item, worst):
                return  # this and every later item stay pending for a run with a higher budget
            permit = await self.limiter.acquire(charge)
            if self._fatal is not None:
                self.limiter.release(permit)
                self._settle(item, worst, 0.0)
                return
            task = asyncio.create_task(self._attempt(item, permit, price, worst))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    def _refuse(self, item: WorkItem, largest: int) -> None:
        """Fail an item no window of the limits can ever admit, with the reason and the fix."""
        item.sends += 1
        error = ApiError(
            ErrorKind.ITEM,
            "too_large",
            f"item {item.item_id} of dataset {item.dataset} is charged about "
            f"{item.est_input_tokens + item.max_tokens:,} tokens ({item.est_input_tokens:,} input "
            f"+ max_tokens {item.max_tokens:,}) but this run's limits admit at most {largest:,} "
            "per request: lower its max_tokens, use a higher tier or --tpm, or let fewer runs "
            "share the account; then run retry-failed",
        )
        attempt_id = self._attempt_id(item)
        permit = Permit(0, time.monotonic())
        self._record(item, attempt_id, time.time(), 0.0, permit, None, error, 0.0)

    def _budgets(self, item: WorkItem) -> list[_Budget]:
        dataset = self._dataset_budgets.get(item.dataset)
        return [self._budget] if dataset is None else [self._budget, dataset]

    def _reserve(self, item: WorkItem, worst: float) -> bool:
        """Reserve the call's worst case in the run's cap and its dataset's, or stop the run."""
        budgets = self._budgets(item)
        if not all(budget.fits(worst) for budget in budgets):
            self.stats.budget_exhausted = True
            return False
        for budget in budgets:
            budget.reserved += worst
        return True

    def _settle(self, item: WorkItem, worst: float, actual: float) -> None:
        for budget in self._budgets(item):
            budget.settle(worst, actual)

    def _budget_usage(self) -> dict[str, tuple[float, float]]:
        """(cap, spent) of the run's cap and of the most consumed dataset cap, where set."""
        usage = {}
        if self._budget.limit is not None:
            usage["run"] = (self._budget.limit, self._budget.spent)
        if self._dataset_budgets:
            fullest = max(
                self._dataset_budgets.values(),
                key=lambda b: b.spent / b.limit if b.limit else float("inf"),
            )
            usage["dataset"] = (fullest.limit or 0.0, fullest.spent)
        return usage

    def _next_ready(self) -> WorkItem | None:
        if self._retries and self._retries[0][0] <= time.monotonic():
            return heapq.heappop(self._retries)[2]
        if not self._source_done:
            try:
                return next(self._source)
            except StopIteration:
                self._source_done = True
        return None

    async def _wait_for_work(self) -> None:
        self._wake.clear()
        timeout = None
        if self._retries:
            timeout = max(0.0, self._retries[0][0] - time.monotonic())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wake.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._crash = exc

    async def _drain(self, stopped: bool) -> None:
        """Wait for the requests in flight; once the run is stopping, ``abort_grace`` at most."""
        if not self._tasks:
            return
        stopping = stopped or self._fatal is not None
        grace = self.options.abort_grace if stopping else None
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    # -- one attempt ------------------------------------------------------------------------

    def _attempt_id(self, item: WorkItem) -> str:
        """Unique per send: an in-run step retry gets its own prefix (the merge is idempotent)."""
        return f"{self.attempt_prefix or self.run_id}:{item.item_id}:{item.sends}"

    async def _attempt(self, item: WorkItem, permit: Permit, price: Price, worst: float) -> None:
        item.sends += 1
        attempt_id = self._attempt_id(item)
        started = time.time()
        t0 = time.perf_counter()
        reply: Reply | None = None
        error: ApiError | None = None
        try:
            reply = await self.client.chat(item.request, attempt_id)
        except ApiError as exc:
            error = exc
        except BaseException:  # cancelled, interrupted (a terminated Dagster run), or a bug:
            # whether the provider answered (and billed) is unknown, so the item stays pending
            error = ApiError(ErrorKind.RETRYABLE, "cancelled", "run stopped while in flight")
            raise
        finally:
            latency_ms = (time.perf_counter() - t0) * 1000
            actual = reply.prompt_tokens + item.max_tokens if reply else None
            self.limiter.release(permit, actual_tokens=actual)
            cost = 0.0
            if reply is not None:
                self._correction.observe(item.est_input_tokens, reply.prompt_tokens)
                cost = price.cost(
                    reply.prompt_tokens,
                    reply.completion_tokens,
                    reply.cached_tokens,
                    batch=self.mode == "batch",
                )
            self._settle(item, worst, cost)
            self._record(item, attempt_id, started, latency_ms, permit, reply, error, cost)

    def _record(
        self,
        item: WorkItem,
        attempt_id: str,
        started: float,
        latency_ms: float,
        permit: Permit,
        reply: Reply | None,
        error: ApiError | None,
        cost: float,
    ) -> None:
        outcome, delay = self._decide(item, error)
        record: dict[str, Any] = {
            "attempt_id": attempt_id, "dataset": item.dataset, "item_id": item.item_id,
            "partition_key": item.partition_key, "run_id": self.run_id, "attempt": item.sends,
            "model": item.model, "mode": self.mode, "started_at": started,
            "finished_at": started + latency_ms / 1000, "latency_ms": latency_ms,
            "http_status": 200 if reply else (error.http_status if error else None),
            "outcome": outcome, "error_type": error.error_type if error else None,
            "error_message": error.message if error else None,
            "gateway_tokens": permit.tokens, "final": outcome in ("ok", "failed"),
        }  # fmt: skip
        if reply is not None:
            record.update(
                prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                cached_tokens=reply.cached_tokens, cost_usd=cost, status="succeeded",
                output=reply.content, reasoning=reply.reasoning,
                finish_reason=reply.finish_reason, response_id=reply.response_id,
            )  # fmt: skip
        elif outcome == "failed":
            record["status"] = "failed"
        self.spool.append(record)
        self.stats.observe(item, outcome, latency_ms, reply, error, cost)
        if outcome == "retry":
            heapq.heappush(self._retries, (time.monotonic() + delay, next(self._seq), item))
        elif outcome == "fatal" and self._fatal is None:
            self._fatal = error

    def _decide(self, item: WorkItem, error: ApiError | None) -> tuple[str, float]:
        """ok | retry (after a delay) | failed (this item) | fatal (the run)."""
        if error is None:
            return "ok", 0.0
        if error.kind is ErrorKind.FATAL:
            return "fatal", 0.0
        if error.kind is ErrorKind.ITEM or error.error_type == "cancelled":
            return ("failed" if error.kind is ErrorKind.ITEM else "cancelled"), 0.0
        if error.kind is ErrorKind.RATE_LIMIT:
            self.limiter.penalize(error.retry_after, named=error.limit)
            if item.sends - item.failures >= self.options.max_rate_limited:
                return "failed", 0.0
            return "retry", error.retry_after or self._backoff(1)
        item.failures += 1
        if item.failures >= self.options.max_attempts:
            return "failed", 0.0
        return "retry", self._backoff(item.failures)

    def _backoff(self, failures: int) -> float:
        """Exponential with full jitter, so retries of a burst of failures spread out."""
        ceiling = min(self.options.backoff_max, self.options.backoff_base * 2 ** (failures - 1))
        return random.uniform(ceiling / 2, ceiling)

    # -- durability and progress ------------------------------------------------------------

    async def _housekeeping(self) -> None:
        last_merge = last_progress = time.monotonic()
        while True:
            await asyncio.sleep(self.options.sync_interval)
            await asyncio.to_thread(self.spool.sync)
            now = time.monotonic()
            if now - last_merge >= self._merge_gap and self._merging is None:
                last_merge = now
                # a task of its own: while a merge waits for the file, fsyncs must go on
                self._merging = asyncio.create_task(self._flush(final=False))
                self._merging.add_done_callback(self._merge_done)
            if self.on_progress and now - last_progress >= self.options.progress_interval:
                last_progress = now
                self.on_progress(self.stats)

    def _merge_done(self, task: asyncio.Task[None]) -> None:
        self._merging = None
        self._stop_on_crash(task)

    def _stop_on_crash(self, task: asyncio.Task[None]) -> None:
        """A housekeeping task that raised: stop the run loudly rather than stop it quietly."""
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._crash = exc
            self._wake.set()

    def _merge_cpu(self) -> float:
        """Merge (blocking: runs in a worker thread); returns the CPU it took that thread,
        which waiting for another process to release the file does not count."""
        assert self.merge is not None
        started = time.thread_time()
        try:
            self.merge()
        except DatabaseBusy:
            self.stats.unmerged = True  # safe in the spool; the next merge takes it
        return time.thread_time() - started

    def _next_merge_gap(self, cpu: float) -> float:
        """Merges cost a near-fixed open + checkpoint (tens of ms of CPU, growing with the
        file), so a busy run spaces them to spend ~1/MERGE_SHARE of a core on them, at most
        MERGE_STRETCH merge intervals apart; they only make results queryable (the spool's
        fsyncs keep them safe). Not when dataset caps are shared: the look at other runs'
        spend rides on each merge."""
        shortest = self.options.merge_interval
        if self.others_spend is not None and self._dataset_budgets:
            return shortest
        return min(shortest * MERGE_STRETCH, max(shortest, cpu * MERGE_SHARE))

    async def _flush(self, *, final: bool) -> None:
        """Seal the open segment and merge; the final merge is the caller's (it may wait)."""
        if final:
            await asyncio.to_thread(self.spool.close)
            return
        if (old := self.spool.rotate()) is not None:
            await asyncio.to_thread(self.spool.seal, old)
        if self.merge is not None:
            cpu = await asyncio.to_thread(self._merge_cpu)
            self._merge_gap = self._next_merge_gap(cpu)
        if self.others_spend is not None and self._dataset_budgets:
            with contextlib.suppress(DatabaseBusy):  # look again after the next merge
                seen = await asyncio.to_thread(self.others_spend)
                for name, others in seen.items():
                    if (budget := self._dataset_budgets.get(name)) is not None:
                        budget.observe_others(others)
