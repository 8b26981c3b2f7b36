"""The process helper and CLI: ready line, startup errors, shutdown, and isolation of the
tokenizer from project code."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from kimi_dagster.simulator import SimulatorProcess, build_parser, start_simulator

from .simtools import KEY, chat


def test_start_reports_the_childs_error(sim: SimulatorProcess) -> None:
    port = int(sim.base_url.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(RuntimeError, match=r"(?i)address already in use"):
        start_simulator(port=port)


def test_bad_config_fails_before_starting() -> None:
    with pytest.raises(ValueError, match="tier"):
        start_simulator(tier=9)


def test_cli_prints_one_ready_line_and_stops_on_sigterm_despite_a_hang() -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "kimi_dagster.simulator", "--tier", "0", "--latency", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().decode()
        assert line.startswith("KIMI_SIMULATOR_READY http://127.0.0.1:") and line.endswith("/v1\n")
        base = line.split()[1]
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY}"}) as client:
            stats = client.get(base.removesuffix("/v1") + "/_sim/stats").json()
            assert stats["config"]["limits"]["rpm"] == 3
            with pytest.raises(httpx.ReadTimeout):
                client.post("/chat/completions", json=chat(text="[[sim:fail=hang:1]]"), timeout=0.3)
        started = time.monotonic()
        child.send_signal(signal.SIGTERM)
        assert child.wait(10) == 0
        assert time.monotonic() - started < 5
        assert child.stdout.read() == b""
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_stop_ends_the_child() -> None:
    with start_simulator(latency=0) as sim:
        pid = sim.pid
        assert httpx.get(
            f"{sim.base_url}/models", headers={"Authorization": "Bearer sk-a"}
        ).is_success
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_parser_takes_every_documented_flag() -> None:
    args = build_parser().parse_args(
        [
            *("--host", "127.0.0.1", "--port", "0", "--tier", "3", "--concurrency", "7"),
            *("--rpm", "70", "--tpm", "700", "--tpd", "unlimited", "--latency", "0.1"),
            *("--latency-per-token", "0.001", "--latency-jitter", "0.2", "--reply-tokens", "5:9"),
            *("--seed", "4", "--api-key", "sk-k", "--fail-5xx", "0.1", "--fail-overload", "0.1"),
            *("--fail-quota", "0.01", "--fail-reset", "0.01", "--fail-hang", "0.01"),
            *("--fail-malformed", "0.01", "--hang-seconds", "9", "--ratelimit-headers"),
            *("--cached-tokens-location", "both", "--balance", "5", "--batch-delays", "1:2:3"),
            *("--batch-line-failure", "0.1", "--expire-batches"),
        ]
    )
    assert (args.tpd, args.reply_tokens, args.batch_delays) == (0, (5, 9), (1.0, 2.0, 3.0))


def test_project_code_does_not_use_the_simulators_tokenizer_or_replies() -> None:
    root = Path(__file__).resolve().parents[2] / "kimi_dagster"
    forbidden_modules = {"kimi_dagster.simulator.tokens", "kimi_dagster.simulator.replies"}
    forbidden_names = {"count_tokens", "count_text", "expected_reply"}
    for path in root.rglob("*.py"):
        if "simulator" in path.relative_to(root).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "kimi_dagster.simulator"
            ):
                assert node.module not in forbidden_modules, path
                assert not forbidden_names & {alias.name for alias in node.names}, path
