"""What a dataset will cost and how long it will take, before a cent is spent.

Input tokens are the local estimate (``tokens.py``); output tokens cannot be known before the
answers exist, so the estimate says where its figure comes from. When the dataset (or the one
named as ``history``) already has answers, their mean output, their actual/estimated input ratio,
cache-hit share and latency calibrate the rest: run a sample first and the estimate of the
remainder is close. Without history it assumes ``fill`` of each item's max_tokens and no cache
hits, and the worst case (every item uses its whole max_tokens, no cache) bounds the spend.

Time at the tier is the slowest of the limits: requests / RPM, tokens as the gateway charges
them (input + max_tokens) / TPM (and TPD), and requests x latency / concurrency. The Batch API
costs ``1 - batch_discount`` of that and finishes within its 12 h - 7 d completion window.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import duckdb

from kimi_dagster.budgets import read_budgets
from kimi_dagster.catalogue import Catalogue
from kimi_dagster.ingest import DEFAULT_CHUNK_SIZE, DEFAULTS, ingest_file
from kimi_dagster.inputs import ItemDefaults
from kimi_dagster.limits import Limits
from kimi_dagster.reports import refresh
from kimi_dagster.store import connect, run_sql, sql, sql_string

DEFAULT_FILL = 0.5  # share of max_tokens an answer is assumed to use when there is no history
DEFAULT_LATENCY_S = 10.0  # seconds per request assumed when there is no history
BATCH_WINDOW_S = (12 * 3600, 7 * 86400)  # the Batch API's completion window, shortest to longest

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90s``, ``45m``, ``12h``, ``3d`` (or a bare number of seconds) -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text.lower())
    if not match:
        raise ValueError(f"cannot read the duration {text!r}: write e.g. 90m, 12h or 3d")
    return float(match[1]) * _UNITS[match[2] or "s"]


@dataclass(frozen=True)
class Plan:
    """How the run would go: the account's limits and the assumptions the estimate states."""

    limits: Limits
    currency: str = "USD"
    fill: float = DEFAULT_FILL
    latency_s: float | None = None  # None: the history's mean latency, else DEFAULT_LATENCY_S
    deadline_s: float | None = None
    retry_failed: bool = True  # failed items are sent again (the default of every run)

    def __post_init__(self) -> None:
        if not 0 < self.fill <= 1:
            raise ValueError(f"fill must be in (0, 1], got {self.fill}")


@dataclass(frozen=True)
class Estimate:
    dataset: str
    items: int
    pending: int  # items a run would send
    input_tokens: int
    cached_tokens: int  # of input_tokens, expected to hit the prefix cache
    output_tokens: int  # expected
    max_output_tokens: int  # the sum of max_tokens: the ceiling
    gateway_tokens: int  # what TPM/TPD are charged: input + max_tokens per request
    output_basis: str  # where output_tokens comes from, in words
    history_answers: int
    currency: str
    cost_realtime: float
    cost_batch: float
    cost_worst_case: float  # real time, no cache hit, every item at its max_tokens
    batch_eligible: bool  # every model is served by the Batch API
    tier_limits: dict[str, int | None]
    latency_s: float
    latency_basis: str
    seconds_by_limit: dict[str, float]
    binding_limit: str
    realtime_seconds: float
    deadline_s: float | None
    fits_realtime: bool | None
    fits_batch: bool | None
    recommended_mode: str | None  # realtime | batch | None (no deadline given, or none fits)
    batch_completion_window: str | None
    budget_left_usd: float | None  # what the dataset's stored cap still allows, if it has one
    rejected_lines: int = 0  # lines of the file that would be rejected (not estimated)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metadata(self) -> dict[str, float | int | str]:
        """The figures as flat Dagster metadata (numbers are plotted per materialization)."""
        cur = self.currency.lower()
        return {
            "estimate_pending_items": self.pending,
            "estimate_input_tokens": self.input_tokens,
            "estimate_cached_tokens": self.cached_tokens,
            "estimate_output_tokens": self.output_tokens,
            "estimate_max_output_tokens": self.max_output_tokens,
            f"estimate_cost_realtime_{cur}": round(self.cost_realtime, 6),
            f"estimate_cost_batch_{cur}": round(self.cost_batch, 6),
            f"estimate_cost_worst_case_{cur}": round(self.cost_worst_case, 6),
            "estimate_realtime_seconds": round(self.realtime_seconds, 1),
            "estimate_binding_limit": self.binding_limit,
            "estimate_output_basis": self.output_basis,
            "estimate_latency_s": self.latency_s,
        }

    def describe(self) -> str:
        """The estimate for a person, with its assumptions."""
        cur = self.currency
        lines = [
            f"{self.dataset}: {self.pending:,} of {self.items:,} item(s) to send"
            + (f" ({self.rejected_lines:,} line(s) rejected)" if self.rejected_lines else ""),
            f"  input tokens   {self.input_tokens:,} (cached {self.cached_tokens:,})",
            f"  output tokens  {self.output_tokens:,} expected ({self.output_basis}); "
            f"at most {self.max_output_tokens:,}",
            f"  cost real-time {self.cost_realtime:,.4f} {cur}"
            f"   (worst case {self.cost_worst_case:,.4f} {cur})",
            f"  cost Batch API {self.cost_batch:,.4f} {cur}"
            + ("" if self.batch_eligible else "   (a model here is not served by the Batch API)"),
            f"  time real-time {_human(self.realtime_seconds)} at {_limits(self.tier_limits)}, "
            f"bound by {self.binding_limit} (latency {self.latency_s:g} s, {self.latency_basis})",
            "  time Batch API within the completion window, 12h to 7d",
        ]
        if self.deadline_s is not None:
            verdict = self.recommended_mode or "neither mode fits"
            lines.append(f"  deadline {_human(self.deadline_s)}: {verdict}")
        if self.budget_left_usd is not None:
            enough = self.budget_left_usd >= self.cost_worst_case
            lines.append(
                f"  dataset budget left {self.budget_left_usd:,.4f} USD: "
                + ("covers the worst case" if enough else "a run may stop at the cap (exit 3)")
            )
        return "\n".join(lines)


def estimate_dataset(
    con: duckdb.DuckDBPyConnection, dataset: str, plan: Plan, *, history: str | None = None
) -> Estimate:
    """Estimate a dataset already in the file ``con`` has open."""
    run_sql(con, "queries/estimate_scope_dataset", {"dataset": dataset})
    return _estimate(con, dataset, plan, history or dataset)


def estimate_stored(
    db_path: str | os.PathLike[str], dataset: str, plan: Plan, *, history: str | None = None
) -> Estimate:
    """Estimate a dataset already ingested into ``db_path`` (read-only, briefly)."""
    with connect(db_path, read_only=True) as con:
        return estimate_dataset(con, dataset, plan, history=history)


def estimate_file(
    path: str | os.PathLike[str],
    plan: Plan,
    *,
    db_path: str | os.PathLike[str],
    dataset: str | None = None,
    defaults: ItemDefaults = DEFAULTS,
    history: str | None = None,
) -> Estimate:
    """Estimate a JSONL file without ingesting it: the file is validated into a scratch DuckDB
    file exactly as ``ingest`` would. When ``db_path`` exists, what it holds for the dataset
    (answers, history) is taken into account; it is read as ``status`` reads it (migrated if
    older than this version, finished spool segments merged first), and nothing else is written."""
    with tempfile.TemporaryDirectory(prefix="kimi-estimate-") as tmp:
        scratch = Path(tmp) / "scratch.duckdb"
        report = ingest_file(
            scratch, path, dataset=dataset, chunk_size=DEFAULT_CHUNK_SIZE, defaults=defaults
        )
        if not Path(db_path).exists():
            with connect(scratch, read_only=True) as con:
                result = estimate_dataset(con, report.dataset, plan, history=history)
        else:
            refresh(db_path)
            with connect(db_path, read_only=True) as con:
                con.execute(sql("queries/attach_scratch").format(path=sql_string(scratch)))
                run_sql(con, "queries/estimate_scope_file", {"dataset": report.dataset})
                result = _estimate(con, report.dataset, plan, history or report.dataset)
    return replace(result, rejected_lines=report.rejected)


def _estimate(con: duckdb.DuckDBPyConnection, dataset: str, plan: Plan, history: str) -> Estimate:
    catalogue = Catalogue.from_connection(con)
    cursor = run_sql(
        con,
        "queries/estimate",
        {"history": history, "fill": plan.fill, "retry_failed": plan.retry_failed},
    )
    names = [d[0] for d in cursor.description]
    rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    cost = batch = worst = 0.0
    batch_eligible = True
    for row in rows:
        if not row["pending"]:
            continue
        price = catalogue.price(row["model"], plan.currency)
        args = (row["input_tokens"], row["output_tokens"], row["cached_tokens"])
        cost += price.cost(*args)
        batch += price.cost(*args, batch=True)
        worst += price.worst_case(row["input_tokens"], row["max_output_tokens"])
        batch_eligible &= catalogue.model(row["model"]).batch_api
    total = {k: sum(r[k] for r in rows) for k in names if k not in ("model", "latency_s")}

    answered = [r for r in rows if r["history_answers"]]
    if answered:
        basis = f"mean of {total['history_answers']:,} answer(s) in {history}"
    else:
        basis = f"assumed {plan.fill:.0%} of max_tokens: no answers in {history} yet"
    if plan.latency_s is not None:
        latency, latency_basis = plan.latency_s, "as given"
    elif answered:
        latency = sum(r["latency_s"] * r["history_answers"] for r in answered) / sum(
            r["history_answers"] for r in answered
        )
        latency, latency_basis = round(latency, 3), f"mean of {history}'s answers"
    else:
        latency, latency_basis = DEFAULT_LATENCY_S, "assumed; pass --latency to change"

    gateway = total["input_tokens"] + total["max_output_tokens"]
    seconds = _seconds_by_limit(plan.limits, total["pending"], gateway, latency)
    binding = max(seconds, key=seconds.__getitem__)
    realtime = seconds[binding]
    fits_rt = fits_batch = mode = window = None
    if plan.deadline_s is not None:
        fits_rt = realtime <= plan.deadline_s
        fits_batch = batch_eligible and plan.deadline_s >= BATCH_WINDOW_S[0]
        mode = "batch" if fits_batch else "realtime" if fits_rt else None
        if fits_batch:
            window = f"{int(min(plan.deadline_s, BATCH_WINDOW_S[1]) // 3600)}h"
    return Estimate(
        dataset=dataset,
        items=total["items"],
        pending=total["pending"],
        input_tokens=total["input_tokens"],
        cached_tokens=total["cached_tokens"],
        output_tokens=total["output_tokens"],
        max_output_tokens=total["max_output_tokens"],
        gateway_tokens=gateway,
        output_basis=basis,
        history_answers=total["history_answers"],
        currency=plan.currency,
        cost_realtime=round(cost, 6),
        cost_batch=round(batch, 6),
        cost_worst_case=round(worst, 6),
        batch_eligible=batch_eligible and bool(rows),
        tier_limits=asdict(plan.limits),
        latency_s=latency,
        latency_basis=latency_basis,
        seconds_by_limit={k: round(v, 1) for k, v in seconds.items()},
        binding_limit=binding,
        realtime_seconds=round(realtime, 1),
        deadline_s=plan.deadline_s,
        fits_realtime=fits_rt,
        fits_batch=fits_batch,
        recommended_mode=mode,
        batch_completion_window=window,
        budget_left_usd=read_budgets(con, dataset=dataset)[dataset].left_usd,
    )


def _seconds_by_limit(
    limits: Limits, requests: int, gateway_tokens: int, latency_s: float
) -> dict[str, float]:
    """How long each limit alone would make the run take; the largest one binds."""
    seconds = {
        "rpm": requests / limits.rpm * 60,
        "tpm": gateway_tokens / limits.tpm * 60,
        "concurrency": requests * latency_s / limits.concurrency,
    }
    if limits.tpd is not None:  # whole days of waiting once a day's tokens are spent
        seconds["tpd"] = max(0, math.ceil(gateway_tokens / limits.tpd) - 1) * 86400.0
    return seconds


def _limits(limits: dict[str, int | None]) -> str:
    return ", ".join(f"{name} {value:,}" for name, value in limits.items() if value is not None)


def _human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f}min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
