"""``python -m kimi_dagster.simulator`` (and ``kimi-dagster simulate``): run the simulator.

Prints ``KIMI_SIMULATOR_READY http://HOST:PORT/v1`` once listening and serves until SIGTERM or
SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from aiohttp import web

from kimi_dagster.simulator.app import build_app
from kimi_dagster.simulator.config import SimulatorConfig
from kimi_dagster.simulator.gateway import TIERS
from kimi_dagster.simulator.state import SimulatorState

READY = "KIMI_SIMULATOR_READY"


def _pair(text: str) -> tuple[int, int]:
    low, _, high = text.partition(":")
    return int(low), int(high or low)


def _delays(text: str) -> tuple[float, float, float]:
    parts = [float(p) for p in text.split(":")]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError("expected VALIDATING:IN_PROGRESS:FINALIZING seconds")
    return parts[0], parts[1], parts[2]


def _tpd(text: str) -> int:
    return 0 if text == "unlimited" else int(text)


def build_parser(prog: str = "python -m kimi_dagster.simulator") -> argparse.ArgumentParser:
    """The simulator's flags; ``kimi-dagster simulate`` mounts the same parser."""
    d = SimulatorConfig()
    p = argparse.ArgumentParser(prog=prog, description="A local simulator of the Kimi chat API.")
    p.add_argument("--host", default=d.host)
    p.add_argument("--port", type=int, default=d.port, help="0 picks a free port (default)")
    limits = p.add_argument_group("rate limits (per account)")
    limits.add_argument("--tier", type=int, choices=sorted(TIERS), default=d.tier)
    limits.add_argument("--concurrency", type=int, help="requests in flight (overrides tier)")
    limits.add_argument("--rpm", type=int, help="requests per sliding minute (overrides tier)")
    limits.add_argument("--tpm", type=int, help="tokens per sliding minute (overrides tier)")
    limits.add_argument("--tpd", type=_tpd, help="tokens per sliding day, or 'unlimited'")
    timing = p.add_argument_group("replies and latency")
    timing.add_argument("--latency", type=float, default=d.latency, help="seconds per answer")
    timing.add_argument("--latency-per-token", type=float, default=d.latency_per_token)
    timing.add_argument(
        "--latency-jitter",
        type=float,
        default=d.latency_jitter,
        help="latency is scaled by 1 +- this fraction",
    )
    timing.add_argument("--reply-tokens", type=_pair, default=d.reply_tokens, metavar="MIN:MAX")
    timing.add_argument("--seed", type=int, default=d.seed, help="seed of faults and jitter")
    faults = p.add_argument_group("fault probabilities, drawn per admitted request")
    for kind, what in (
        ("5xx", "500 server_error, or a 502/503/504 page"),
        ("overload", "429 engine_overloaded_error"),
        ("quota", "429 exceeded_current_quota_error"),
        ("reset", "TCP reset, no response"),
        ("hang", "no answer for --hang-seconds"),
        ("malformed", "200 with a truncated JSON body"),
    ):
        default = d.fault_probability(kind)
        faults.add_argument(f"--fail-{kind}", type=float, default=default, metavar="P", help=what)
    faults.add_argument("--hang-seconds", type=float, default=d.hang_seconds)
    account = p.add_argument_group("account and wire format")
    account.add_argument("--api-key", help="accept only this key (default: any Bearer sk-...)")
    account.add_argument("--balance", type=float, help="USD; unlimited when omitted")
    account.add_argument(
        "--ratelimit-headers", action="store_true", help="send X-RateLimit-* headers"
    )
    account.add_argument(
        "--cached-tokens-location",
        choices=("top", "details", "both"),
        default=d.cached_tokens_location,
    )
    batch = p.add_argument_group("Batch API")
    batch.add_argument(
        "--batch-delays",
        type=_delays,
        default=d.batch_delays,
        metavar="VALIDATING:IN_PROGRESS:FINALIZING",
    )
    batch.add_argument(
        "--batch-line-failure",
        type=float,
        default=d.batch_line_failure,
        metavar="P",
        help="probability that a batch line fails",
    )
    batch.add_argument(
        "--expire-batches",
        action="store_true",
        help="batches in progress expire instead of finishing",
    )
    p.add_argument("--stop-on-stdin-close", action="store_true", help=argparse.SUPPRESS)
    return p


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    names = [f.name for f in dataclasses.fields(SimulatorConfig) if hasattr(args, f.name)]
    return SimulatorConfig(**{name: getattr(args, name) for name in names})


async def _stdin_closed() -> None:
    """Returns when the parent that started us closes our stdin (or dies)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass


async def serve(config: SimulatorConfig, *, stop_on_stdin_close: bool = False) -> None:
    """Serve until SIGTERM/SIGINT (or stdin closes, if asked)."""
    runner = web.AppRunner(
        build_app(SimulatorState(config)),
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=1.0,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, config.host, config.port, backlog=2048).start()
        host, port = runner.addresses[0][:2]
        host = f"[{host}]" if ":" in host else host
        print(f"{READY} http://{host}:{port}/v1", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        waiters = [asyncio.ensure_future(stop.wait())]
        if stop_on_stdin_close:
            waiters.append(asyncio.ensure_future(_stdin_closed()))
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
    finally:
        await runner.cleanup()


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """On uvloop when it is installed: less CPU per request, more room beside the client."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run the simulator with these flags; ``prog`` names the command in ``--help``."""
    args = (build_parser(prog) if prog else build_parser()).parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as error:
        print(f"simulator: {error}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        _run(serve(config, stop_on_stdin_close=args.stop_on_stdin_close))
    return 0
