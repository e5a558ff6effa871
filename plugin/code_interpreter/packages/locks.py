"""Locks around the sandbox runtime: one build or swap per runtime root, one pip run per generation.

Each lock is both an asyncio lock (within this process, per event loop) and an ``flock`` on a file
(across processes), polled so the event loop never blocks on another process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

__all__ = ["async_lock", "generation_lock", "root_lock"]

_async_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Path, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def async_lock(key: Path) -> asyncio.Lock:
    # asyncio locks belong to a loop; keying by loop keeps a second asyncio.run() working.
    per_loop = _async_locks.setdefault(asyncio.get_running_loop(), {})
    return per_loop.setdefault(key, asyncio.Lock())


@contextlib.asynccontextmanager
async def _file_lock(lock_file: Path, poll_s: float = 0.05) -> AsyncIterator[None]:
    """An exclusive flock held across processes, polled so the event loop never blocks on it."""
    import fcntl

    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(poll_s)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


@contextlib.asynccontextmanager
async def root_lock(root: Path) -> AsyncIterator[None]:
    """Serialise builds and swaps of one runtime root, within this process and across processes."""
    async with async_lock(root), _file_lock(root / ".lock"):
        yield


@contextlib.asynccontextmanager
async def generation_lock(gen: Path) -> AsyncIterator[None]:
    """Serialise pip runs into one runtime generation, within this process and across processes."""
    async with async_lock(gen), _file_lock(gen / ".install.lock"):
        yield
