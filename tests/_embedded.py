"""Watching the embedded server's processes from a test: gone within a bound, none left behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path

import pytest

from code_interpreter.storage.embedded import _pid_running


async def gone(*pids: int, within_s: float) -> bool:
    """True once none of ``pids`` runs (polled; ``within_s`` only bounds a hang)."""
    deadline = asyncio.get_running_loop().time() + within_s
    while any(_pid_running(p) for p in pids):
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def no_server_left(home: Path, within_s: float) -> None:
    """Fail if the server (or its watchdog) recorded under ``home`` still runs after ``within_s``.

    What is still running is killed first, so one failing test does not leave a server behind.
    """
    lock = home / "db" / "server.lock"
    if not (lock.exists() and lock.read_text().strip()):
        return
    rec = json.loads(lock.read_text())
    pids = [p for p in (rec["pid"], rec.get("watchdog_pid")) if p]
    if not await gone(*pids, within_s=within_s):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        pytest.fail(f"the embedded server {pids} outlived its last user")
