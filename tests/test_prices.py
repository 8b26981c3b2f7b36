"""Prices are data with a date: the shipped list matches kimi-api.md, a user's CSV overrides or
adds rows without code, and the row in effect is the newest one dated today or earlier."""

from __future__ import annotations

import datetime as dt

import pytest

from kimi_dagster.catalogue import Catalogue
from kimi_dagster.store import connect, migrate

# kimi-api.md, "Prices per 1M tokens": (cache hit, cache miss, output); moonshot-v1 has no cache.
DOCUMENTED_USD = {
    "kimi-k2.6": (0.16, 0.95, 4.00),
    "kimi-k2.5": (0.10, 0.60, 3.00),
    "kimi-k2-0905-preview": (0.15, 0.60, 2.50),
    "kimi-k2-turbo-preview": (0.15, 1.15, 8.00),
    "moonshot-v1-8k": (0.20, 0.20, 2.00),
    "moonshot-v1-32k": (1.00, 1.00, 3.00),
    "moonshot-v1-128k": (2.00, 2.00, 5.00),
}


def catalogue(db) -> Catalogue:
    with connect(db) as con:
        migrate(con)
        return Catalogue.from_connection(con)


def test_shipped_prices_are_the_documented_ones(db) -> None:
    cat = catalogue(db)
    for model, (hit, miss, out) in DOCUMENTED_USD.items():
        price = cat.price(model)
        assert (price.input_cache_hit, price.input_cache_miss, price.output) == (hit, miss, out)
        assert price.batch_discount == 0.40
    cny = cat.price("kimi-k2.6", "CNY")
    assert (cny.input_cache_hit, cny.input_cache_miss, cny.output) == (1.10, 6.50, 27.00)

    k25 = cat.price("kimi-k2.5")
    # 1,000 cached + 3,000 uncached input tokens and 500 output tokens
    realtime = k25.cost(4_000, 500, 1_000)
    assert realtime == pytest.approx((1_000 * 0.10 + 3_000 * 0.60 + 500 * 3.00) / 1e6)
    assert k25.cost(4_000, 500, 1_000, batch=True) == pytest.approx(0.6 * realtime)
    assert k25.worst_case(4_000, 500) == pytest.approx((4_000 * 0.60 + 500 * 3.00) / 1e6)


def test_a_users_price_file_adds_versions_without_code(db, tmp_path, monkeypatch) -> None:
    today = dt.date.today()
    override = tmp_path / "prices.csv"
    override.write_text(
        "model,currency,input_cache_hit,input_cache_miss,output,batch_discount,"
        "effective_date,source\n"
        f"kimi-k2.5,USD,0.05,0.30,1.50,0.50,{today - dt.timedelta(days=1)},new list\n"
        f"kimi-k2.5,USD,9.00,9.00,9.00,0.50,{today + dt.timedelta(days=30)},announced\n"
        f"kimi-k2.5,CNY,0.70,4.00,21.00,0.40,{today},cn list\n"
    )
    monkeypatch.setenv("KIMI_DAGSTER_PRICES", str(override))
    cat = catalogue(db)
    price = cat.price("kimi-k2.5")
    assert (price.input_cache_miss, price.output, price.batch_discount) == (0.30, 1.50, 0.50)
    assert cat.price("kimi-k2.5", "CNY").output == 21.00
    assert cat.price("kimi-k2.6").output == 4.00  # untouched rows stay
    with connect(db, read_only=True) as con:
        versions = con.execute(
            "SELECT count(*) FROM prices WHERE model = 'kimi-k2.5' AND currency = 'USD'"
        ).fetchone()[0]
    assert versions == 3  # the shipped row, today's override and the announced one


def test_a_broken_price_file_names_itself(db, tmp_path, monkeypatch) -> None:
    bad = tmp_path / "my-prices.csv"
    bad.write_text("model,price\nkimi-k2.5,cheap\n")
    monkeypatch.setenv("KIMI_DAGSTER_PRICES", str(bad))
    with pytest.raises(ValueError, match=r"my-prices\.csv"):
        catalogue(db)
