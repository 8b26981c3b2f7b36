"""One Dagster run of the inference asset over the given chunk partitions (consecutive keys, in
one run, back to back): what a backfill's run does. The code location is the shipped one
(``build_definitions``, configured from the environment) and the instance is ``$DAGSTER_HOME``,
so the ``kimi_api`` pool and the run's share of the account are the real ones.

Usage (by ``rate_limits.py``): ``python benchmarks/dagster_run.py KEY [KEY ...]``.
"""

from __future__ import annotations

import sys
import warnings

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from kimi_dagster.defs import build_definitions


def main(keys: list[str]) -> int:
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    job = build_definitions().resolve_job_def("kimi_inference")
    tags = {ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]}
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
