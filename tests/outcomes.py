"""The end-to-end tests' final word: every item succeeded exactly once, and was paid once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from kimi_dagster.simulator import SimulatorProcess
from kimi_dagster.store import connect


def assert_every_item_succeeded_once(db: Path, sim: SimulatorProcess, items: int) -> None:
    """DuckDB: ``items`` rows, each with a succeeded result and exactly one ``ok`` attempt.
    Simulator: each item billed exactly once (item ids unique across the datasets), and the
    ledger's cost matches the bill."""
    with connect(db, read_only=True) as con:
        states = con.execute(
            "SELECT r.status, count(*) FROM items i LEFT JOIN results r USING (dataset, item_id) "
            "GROUP BY ALL"
        ).fetchall()
        oks = con.execute(
            "SELECT dataset, item_id, count(*) FILTER (WHERE outcome = 'ok') FROM attempts "
            "GROUP BY ALL"
        ).fetchall()
        ledger_cost = con.execute("SELECT coalesce(sum(cost_usd), 0)::DOUBLE FROM attempts")
        ledger_cost = ledger_cost.fetchone()[0]
    assert dict(states) == {"succeeded": items}
    assert len(oks) == items and {n for *_, n in oks} == {1}
    bill = sim.bill()
    paid = Counter(line["request_id"].split(":")[1] for line in bill)  # <run>:<item>:<attempt>
    assert len(paid) == items, f"{len(paid)} items billed, expected {items}"
    assert max(paid.values()) == 1, f"paid twice: {[i for i, n in paid.items() if n > 1]}"
    assert abs(ledger_cost - sum(line["cost_usd"] for line in bill)) < 1e-6
