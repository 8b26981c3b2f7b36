"""The Dagster code location: ``dagster dev`` (via workspace.yaml) loads ``defs`` from here."""

from kimi_dagster.defs import build_definitions

defs = build_definitions()
