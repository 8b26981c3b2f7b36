"""The simulator's settings: one frozen dataclass, shared by the CLI, the process helper and
live reconfiguration through ``POST /_sim/config``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kimi_dagster.simulator.gateway import TIERS, Limits

FAULTS = ("5xx", "overload", "quota", "reset", "hang", "malformed")
CACHED_LOCATIONS = ("top", "details", "both")
LIMIT_FIELDS = ("concurrency", "rpm", "tpm", "tpd")


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything the simulator can be told; ``None`` limits take the tier's value.

    ``tpd=0`` means unlimited. Fault probabilities are drawn once per admitted request and must
    add up to at most 1. ``balance=None`` means an unlimited balance.
    """

    host: str = "127.0.0.1"
    port: int = 0
    tier: int = 5
    concurrency: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    tpd: int | None = None
    latency: float = 0.2
    latency_per_token: float = 0.0
    latency_jitter: float = 0.1
    reply_tokens: tuple[int, int] = (20, 200)
    seed: int = 0
    api_key: str | None = None
    fail_5xx: float = 0.0
    fail_overload: float = 0.0
    fail_quota: float = 0.0
    fail_reset: float = 0.0
    fail_hang: float = 0.0
    fail_malformed: float = 0.0
    hang_seconds: float = 3600.0
    ratelimit_headers: bool = False
    cached_tokens_location: str = "top"
    balance: float | None = None
    batch_delays: tuple[float, float, float] = (1.0, 2.0, 1.0)
    expire_batches: bool = False
    batch_line_failure: float = 0.0

    def __post_init__(self) -> None:
        if self.tier not in TIERS:
            raise ValueError(f"tier must be one of {sorted(TIERS)}")
        for name in LIMIT_FIELDS:
            value = getattr(self, name)
            if value is not None and (value < 0 or (value == 0 and name != "tpd")):
                raise ValueError(f"{name} must be positive")
        low, high = self.reply_tokens
        if not 1 <= low <= high:
            raise ValueError("reply_tokens must be MIN:MAX with 1 <= MIN <= MAX")
        if min(self.latency, self.latency_per_token, self.hang_seconds, *self.batch_delays) < 0:
            raise ValueError("latencies, hang_seconds and batch delays must not be negative")
        if not 0 <= self.latency_jitter <= 1:
            raise ValueError("latency_jitter must be in [0, 1]")
        probabilities = [self.fault_probability(kind) for kind in FAULTS]
        if min(*probabilities, self.batch_line_failure) < 0 or sum(probabilities) > 1:
            raise ValueError("fault probabilities must be >= 0 and add up to at most 1")
        if self.batch_line_failure > 1:
            raise ValueError("batch_line_failure must be at most 1")
        if self.cached_tokens_location not in CACHED_LOCATIONS:
            raise ValueError(f"cached_tokens_location must be one of {CACHED_LOCATIONS}")

    def fault_probability(self, kind: str) -> float:
        return getattr(self, f"fail_{kind}")

    def limits(self) -> Limits:
        """The tier's limits with the explicit overrides applied."""
        preset = TIERS[self.tier]
        tpd = preset.tpd if self.tpd is None else (self.tpd or None)
        return Limits(
            concurrency=self.concurrency or preset.concurrency,
            rpm=self.rpm or preset.rpm,
            tpm=self.tpm or preset.tpm,
            tpd=tpd,
        )

    def updated(self, changes: Mapping[str, Any]) -> SimulatorConfig:
        """A copy with ``changes`` (JSON values) applied; a new tier drops old limit overrides."""
        known = {f.name for f in dataclasses.fields(self)} - {"host", "port"}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown or start-only config fields: {', '.join(sorted(unknown))}")
        values = dict(changes)
        if "tier" in values:
            for name in LIMIT_FIELDS:
                values.setdefault(name, None)
        for name in ("reply_tokens", "batch_delays"):
            if isinstance(values.get(name), str):
                values[name] = values[name].split(":")
        if "reply_tokens" in values:
            values["reply_tokens"] = tuple(int(v) for v in values["reply_tokens"])
        if "batch_delays" in values:
            values["batch_delays"] = tuple(float(v) for v in values["batch_delays"])
            if len(values["batch_delays"]) != 3:
                raise ValueError("batch_delays must be validating:in_progress:finalizing")
        return dataclasses.replace(self, **values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields plus the resolved limits."""
        data = dataclasses.asdict(self)
        data["limits"] = dataclasses.asdict(self.limits())
        return data
