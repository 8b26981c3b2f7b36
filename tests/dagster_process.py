"""Dagster's own processes (``dagster dev``, ``dagster-daemon run``) for end-to-end tests.

Each runs in its own process group with a temporary ``DAGSTER_HOME`` holding the shipped
``dagster_home/dagster.yaml``, and is stopped by that group's id (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import dagster as dg

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
T = TypeVar("T")


def dagster_home(directory: Path) -> Path:
    """A fresh DAGSTER_HOME with the project's instance settings (pools, monitoring, retries).

    Its SQLite storages are created here, before any Dagster process starts: processes
    creating them at the same moment can leave two alembic heads behind."""
    home = directory / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)):
        pass
    return home


def write_definitions(directory: Path, **options: object) -> Path:
    """A code location file: the project's ``build_definitions`` with test-sized options."""
    path = directory / "test_definitions.py"
    args = ", ".join(f"{name}={value!r}" for name, value in options.items())
    path.write_text(
        f"from kimi_dagster.defs import build_definitions\n\ndefs = build_definitions({args})\n"
    )
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DagsterProcess:
    """A started Dagster command; its output goes to ``log``."""

    def __init__(self, argv: list[str], env: Mapping[str, str], log: Path, cwd: Path) -> None:
        self.log = log
        self._out = log.open("ab")  # O_APPEND: run workers inherit and share it
        self.child = subprocess.Popen(
            argv, env=dict(env), cwd=cwd, stdout=self._out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

    def alive(self) -> bool:
        return self.child.poll() is None

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the process group (webserver, daemon, code servers, run workers), then
        SIGKILL to what is left after ``timeout``."""
        group = self.child.pid  # start_new_session: the group id is the leader's pid
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(group):
                self.child.poll()
                time.sleep(0.2)
            if not _group_alive(group):
                break
        self.child.poll()
        self._out.close()


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def start(argv: list[str], env: Mapping[str, str], log: Path, cwd: Path) -> DagsterProcess:
    return DagsterProcess([str(BIN / argv[0]), *argv[1:]], env, log, cwd)


def wait_for(
    check: Callable[[], T], what: str, *, timeout: float, process: DagsterProcess | None = None
) -> T:
    """Poll ``check`` until it returns something truthy; fail with the process's log tail."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if process is not None and not process.alive():
            raise AssertionError(f"Dagster exited while waiting for {what}:\n{process.tail()}")
        if time.monotonic() > deadline:
            log = process.tail() if process else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{log}")
        time.sleep(0.5)


def runs_of(instance: dg.DagsterInstance, job_name: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(job_name=job_name)))


def all_finished(runs: list[dg.DagsterRun]) -> bool:
    return bool(runs) and all(run.is_finished for run in runs)


def sensor_cursor(instance: dg.DagsterInstance, name: str) -> str | None:
    """The cursor a sensor stored after its last tick (None before its first)."""
    for state in instance.all_instigator_state():
        if state.name == name and state.instigator_data is not None:
            return getattr(state.instigator_data, "cursor", None)
    return None


def ingest(instance: dg.DagsterInstance, db: Path, source: Path, chunk_size: int) -> None:
    """The manual ingest: materialize ``kimi_inputs`` with a path, in this process, on the
    same instance the Dagster processes use (so its chunk partitions are theirs too)."""
    from kimi_dagster.assets import kimi_assets
    from kimi_dagster.resource import KimiResource, KimiStore

    dg.materialize(
        kimi_assets("kimi", chunk_size=chunk_size).assets,
        selection=["kimi_inputs"],
        instance=instance,
        resources={
            "kimi": KimiResource(api_key=dg.EnvVar("MOONSHOT_API_KEY")),
            "store": KimiStore(path=str(db)),
        },
        run_config={"ops": {"kimi_inputs": {"config": {"path": str(source)}}}},
    )
