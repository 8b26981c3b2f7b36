"""Run the simulator in a child process: for tests, the demo and benchmarks.

The child is ``sys.executable -m kimi_dagster.simulator`` with the config as flags; its stdin is
a pipe, so it also stops when this process dies without calling :meth:`SimulatorProcess.stop`.
"""

from __future__ import annotations

import dataclasses
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from typing import IO, Any

import orjson

from kimi_dagster.simulator.cli import READY
from kimi_dagster.simulator.config import SimulatorConfig
from kimi_dagster.simulator.replies import Reply, expected_reply

_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def config_argv(config: SimulatorConfig) -> list[str]:
    """The command-line flags that reproduce ``config``."""
    argv: list[str] = []
    defaults = SimulatorConfig()
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value == getattr(defaults, field.name) or value is None:
            continue
        flag = "--" + field.name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag)
        elif isinstance(value, tuple | list):
            argv += [flag, ":".join(str(v) for v in value)]
        else:
            argv += [flag, str(value)]
    return argv


def _stop(child: subprocess.Popen[bytes], timeout: float) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    for stream in (child.stdin, child.stdout):
        if stream is not None:
            stream.close()


class SimulatorProcess:
    """A running simulator child; a context manager that stops it on exit."""

    def __init__(
        self,
        child: subprocess.Popen[bytes],
        base_url: str,
        stderr: IO[bytes],
        config: SimulatorConfig,
    ) -> None:
        self._child = child
        self.config = config  # as started, then as changed through configure()
        self._stderr = stderr
        self.base_url = base_url
        self.root_url = base_url.removesuffix("/v1")
        self._finalizer = weakref.finalize(self, _stop, child, 5.0)

    @property
    def pid(self) -> int:
        return self._child.pid

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM by PID, SIGKILL after ``timeout`` seconds, then wait for it."""
        if self._finalizer.detach() is not None:
            _stop(self._child, timeout)
        self._stderr.close()

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _admin(self, path: str, payload: dict[str, Any] | None = None) -> Any:
        data = None if payload is None else orjson.dumps(payload)
        request = urllib.request.Request(
            f"{self.root_url}/_sim/{path}",
            data=data,
            method="GET" if payload is None else "POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with _LOCAL.open(request, timeout=30) as response:
                return orjson.loads(response.read())
        except urllib.error.HTTPError as error:
            if error.code != 400:
                raise
            raise ValueError(orjson.loads(error.read())["error"]) from None

    def bill(self) -> list[dict[str, Any]]:
        """Every billed request, oldest first."""
        return self._admin("bill")

    def requests(self) -> list[dict[str, Any]]:
        """Every chat request received, oldest first."""
        return self._admin("requests")

    def stats(self) -> dict[str, Any]:
        return self._admin("stats")

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change the running simulator's config (limits, latency, faults, ...); returns it.

        Raises ValueError, with the simulator's reason, for a change it refuses.
        """
        answer = self._admin("config", changes)
        self.config = self.config.updated(changes)
        return answer

    def expected_reply(self, body: dict[str, Any]) -> Reply:
        """What this simulator answers to ``body`` (its reply_tokens setting applied)."""
        return expected_reply(body, reply_tokens=self.config.reply_tokens)

    def reset(self) -> None:
        """Forget all traffic: logs, windows, caches, marker counters, bill."""
        self._admin("reset", {})


def start_simulator(*, startup_timeout: float = 20.0, **config: Any) -> SimulatorProcess:
    """Start ``python -m kimi_dagster.simulator`` with ``config`` (fields of
    :class:`SimulatorConfig`) and wait for it to listen."""
    argv = [sys.executable, "-m", "kimi_dagster.simulator", "--stop-on-stdin-close"]
    settings = SimulatorConfig(**config)
    argv += config_argv(settings)
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 - handed over to SimulatorProcess
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr)
    try:
        base_url = _await_ready(child, startup_timeout)
    except BaseException as error:
        _stop(child, 2.0)
        stderr.seek(0)
        detail = stderr.read().decode(errors="replace").strip()
        stderr.close()
        if not isinstance(error, Exception):
            raise
        raise RuntimeError(
            f"simulator did not start ({error}); its stderr: {detail or '(empty)'}"
        ) from None
    return SimulatorProcess(child, base_url, stderr, settings)


def _await_ready(child: subprocess.Popen[bytes], timeout: float) -> str:
    assert child.stdout is not None
    deadline = time.monotonic() + timeout
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ)
        while b"\n" not in buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no ready line within {timeout} s")
            if selector.select(left):
                chunk = os.read(child.stdout.fileno(), 4096)
                if not chunk:
                    raise RuntimeError(f"exited with code {child.wait()}")
                buffer += chunk
    line = buffer.split(b"\n", 1)[0].decode()
    if not line.startswith(READY + " "):
        raise RuntimeError(f"unexpected first line {line!r}")
    return line.split(" ", 1)[1]
