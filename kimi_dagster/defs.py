"""``build_definitions()``: the default code location (what ``definitions.py`` loads)."""

from __future__ import annotations

import os

import dagster as dg

from kimi_dagster.assets import kimi_assets
from kimi_dagster.resource import KimiResource, KimiStore


def build_definitions(prefix: str = "kimi", **asset_options: object) -> dg.Definitions:
    """One pipeline with resources from the environment: ``MOONSHOT_API_KEY`` (read at run
    time, never shown), ``MOONSHOT_BASE_URL``, ``KIMI_DAGSTER_DB``, ``KIMI_DAGSTER_TIER``,
    and ``KIMI_DAGSTER_INBOX`` (folder the inbox sensor watches)."""
    inbox = os.environ.get("KIMI_DAGSTER_INBOX", ".kimi_dagster/inbox")
    pipeline = kimi_assets(prefix, inbox=inbox, **asset_options)  # type: ignore[arg-type]
    return dg.Definitions(
        assets=pipeline.assets,
        jobs=[pipeline.inference_job],
        sensors=pipeline.sensors,
        resources={
            "kimi": KimiResource(
                api_key=dg.EnvVar("MOONSHOT_API_KEY"),
                tier=int(os.environ.get("KIMI_DAGSTER_TIER", "3")),
            ),
            "store": KimiStore(),
        },
    )
