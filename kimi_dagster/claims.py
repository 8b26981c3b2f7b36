"""One run per chunk at a time: an ``flock`` per partition key, released when the holder exits.

Two runs sending the same chunk would pay for every item twice. The lock is a file lock, so a
run killed with ``kill -9`` frees its chunks at once, with nothing to clean up.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


class ChunkBusy(RuntimeError):
    """Another live process is processing this chunk."""


@contextmanager
def claim(directory: Path, partition_keys: Iterable[str]) -> Iterator[None]:
    """Hold the lock of every key for the duration of the block, or raise ChunkBusy."""
    directory.mkdir(parents=True, exist_ok=True)
    held: list[int] = []
    try:
        for key in partition_keys:
            fd = os.open(directory / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ChunkBusy(
                    f"chunk {key} is being processed by another run; wait for it to finish "
                    "(or terminate it) before re-running this chunk"
                ) from None
            held.append(fd)
        yield
    finally:
        for fd in held:
            os.close(fd)
