"""The input-token estimate, measured against what the simulator bills (``usage.prompt_tokens``)
for the same requests sent through the engine, and the correction the runner learns from it.

Run with ``-s`` to see the figures (they are quoted in ``kimi_dagster/tokens.py``)."""

from __future__ import annotations

import asyncio
import random

import duckdb
import pytest
from conftest import SIM_KEY

from kimi_dagster.engine import Settings, process_partitions
from kimi_dagster.ingest import ingest_file
from kimi_dagster.limits import resolve_limits
from kimi_dagster.tokens import EstimateCorrection

PER_CORPUS = 100
LEARN = 60  # replies observed before the corrected estimate is judged
_WORDS = [
    "order",
    "refund",
    "delivery",
    "invoice",
    "password",
    "billing",
    "shipping",
    "warranty",
    "customer",
]
_HAN = "我们的客户服务团队将在二十四小时内回复您的问题请耐心等待谢谢"


def _line(corpus: str, i: int, rng: random.Random) -> dict:
    words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 40)))
    line: dict = {"id": f"{corpus}-{i:03d}", "max_tokens": 16}
    if corpus == "english":
        line["message"] = f"Ticket #{i}: {words}. Reply politely, in 2-3 sentences!"
    elif corpus == "english_long":
        line["message"] = " ".join(rng.choice(_WORDS) for _ in range(1_500))
    elif corpus == "chinese":
        line["message"] = "".join(rng.choice(_HAN) for _ in range(rng.randint(50, 400)))
    elif corpus == "json":
        line["message"] = f'{{"ticket": {i}, "tags": ["{words[:20]}"], "score": {i / 7:.3f}}}'
    else:  # a system prompt and a user message
        line["system"] = "You are a support agent. Answer briefly. " + words
        line["message"] = f"Customer {i} asks: {words}?"
    return line


CORPORA = ("english", "english_long", "chinese", "json", "system_user")


@pytest.fixture
def measured(sim, db, write_jsonl) -> dict[str, list[tuple[int, int]]]:
    """(estimate, prompt_tokens billed by the simulator) per item, by corpus, in send order."""
    rng = random.Random(5)
    lines = [_line(c, i, rng) for i in range(PER_CORPUS) for c in CORPORA]
    report = ingest_file(db, write_jsonl("mixed.jsonl", lines), chunk_size=len(lines))
    settings = Settings(api_key=SIM_KEY, limits=resolve_limits(5), base_url=sim.base_url)
    stats = asyncio.run(process_partitions(db, report.partitions, settings, run_id="tokens"))
    assert stats.succeeded == len(lines)
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT i.item_id, i.est_input_tokens, r.prompt_tokens FROM items i "
            "JOIN item_results r USING (dataset, item_id) ORDER BY i.line_no"
        ).fetchall()
    assert sum(r[2] for r in rows) == sum(b["prompt_tokens"] for b in sim.bill())
    by_corpus: dict[str, list[tuple[int, int]]] = {c: [] for c in CORPORA}
    for item_id, estimate, actual in rows:
        by_corpus[item_id.rsplit("-", 1)[0]].append((estimate, actual))
    return by_corpus


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_estimate_error_and_the_learned_correction(measured) -> None:
    print("\ncorpus        raw error (mean, min..max)   corrected after 60 replies (mean, under)")
    for corpus, pairs in measured.items():
        raw = [(est - actual) / actual for est, actual in pairs]
        correction = EstimateCorrection()
        corrected = []
        for n, (est, actual) in enumerate(pairs):
            if n >= LEARN:
                corrected.append((correction.corrected(est) - actual) / actual)
            correction.observe(est, actual)
        under = sum(error < 0 for error in corrected) / len(corrected)
        print(
            f"{corpus:13} {_mean(raw):+7.1%} ({min(raw):+.1%}..{max(raw):+.1%})"
            f"        {_mean(corrected):+7.1%}, {under:.0%} of requests under-charged"
        )
        # The bands tokens.py documents: the raw rule is off by up to half (JSON) ...
        assert -0.55 <= _mean(raw) <= 0.05, corpus
        # ... and the learned ratio brings a homogeneous stream to within a few percent.
        assert abs(_mean(corrected)) <= 0.06, corpus


def test_the_correction_is_bounded_against_odd_replies() -> None:
    correction = EstimateCorrection()
    for _ in range(500):
        correction.observe(100, 10_000)
    assert 204 <= correction.corrected(100) <= 205  # x2.0 at most, and the 2 % margin
    for _ in range(500):
        correction.observe(100, 1)
    assert 51 <= correction.corrected(100) <= 52  # x0.5 at least
