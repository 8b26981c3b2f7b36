"""``kimi-dagster demo``: the whole pipeline on generated prompts, offline.

Starts the simulator on 127.0.0.1, writes a JSONL of the seed's SEO-article prompts (plus two
bad lines, to show they are reported and skipped), materializes the ingest asset and every
chunk partition through a real Dagster instance (``<workdir>/dagster_home``, so ``dagster dev``
shows the runs afterwards), then prints a summary from DuckDB.
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from pathlib import Path

import dagster as dg
import orjson

from kimi_dagster.defs import build_definitions
from kimi_dagster.reports import named
from kimi_dagster.resource import KimiResource
from kimi_dagster.simulator import start_simulator

INSTANCE_SETTINGS = Path(__file__).resolve().parent.parent / "dagster_home" / "dagster.yaml"
TOPICS = ("tech", "finance", "health", "travel", "food")
DEMO_KEY = "sk-demo-simulator-only"


def write_prompts(path: Path, items: int) -> None:
    with path.open("wb") as out:
        for i in range(items):
            topic = TOPICS[i % len(TOPICS)]
            line = {
                "id": f"article_{i:05d}",
                "message": f"Write a short SEO article about {topic}, angle #{i}. "
                "Include H2 headings, bullet points, and a conclusion.",
                "max_tokens": 256,
            }
            out.write(orjson.dumps(line) + b"\n")
        out.write(b'{"id": "broken", "message": \n')
        out.write(b'{"id": "article_00000", "message": "a duplicate id"}\n')


def run_demo(items: int, workdir: Path) -> int:
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    home = workdir / "dagster_home"
    home.mkdir(exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copyfile(INSTANCE_SETTINGS, home / "dagster.yaml")
    prompts = workdir / "articles.jsonl"
    write_prompts(prompts, items)
    db = workdir / "kimi.duckdb"

    with start_simulator(tier=5, latency=0.3, reply_tokens=(40, 240), seed=7) as sim:
        os.environ.update(
            DAGSTER_HOME=str(home),
            KIMI_DAGSTER_DB=str(db),
            MOONSHOT_BASE_URL=sim.base_url,
            MOONSHOT_API_KEY=DEMO_KEY,
        )
        print(f"simulator: {sim.base_url} (pid {sim.pid}); Dagster home: {home}", file=sys.stderr)
        defs = build_definitions()
        pipeline_assets = list(defs.assets or [])
        # The demo's runs go one after another, so each may use the whole account (share=1).
        resources = {
            **(defs.resources or {}),
            "kimi": KimiResource(api_key=dg.EnvVar("MOONSHOT_API_KEY"), tier=5, share=1),
        }
        with dg.DagsterInstance.get() as instance:
            dg.materialize(
                pipeline_assets,
                selection=["kimi_inputs"],
                instance=instance,
                resources=resources,
                run_config={"ops": {"kimi_inputs": {"config": {"path": str(prompts)}}}},
            )
            keys = instance.get_dynamic_partitions("kimi_chunks")
            print(f"ingested {prompts.name}: {len(keys)} chunk partition(s)", file=sys.stderr)
            for key in keys:
                result = dg.materialize(
                    pipeline_assets,
                    selection=["kimi_results"],
                    partition_key=key,
                    instance=instance,
                    resources=resources,
                )
                print(f"  {key}: {'ok' if result.success else 'FAILED'}", file=sys.stderr)
            dg.materialize(
                pipeline_assets,
                selection=["kimi_summary"],
                instance=instance,
                resources=resources,
            )

    for column, value in named(db, "queries/demo_summary", {})[0].items():
        print(f"{column:>20}: {value}")
    print(
        f'\nDuckDB file: {db}\nQuery it: kimi-dagster sql --db {db} "SELECT * FROM dataset_summary"'
    )
    return 0
