"""Knowing, from the host, that a sandboxed child is running the test's own code — and holding it there.

A fixed sleep before "kill it mid-execution" passes vacuously on a slow machine: the child may not have
started yet, or may have finished. Instead the user code names its own process (``prctl(PR_SET_NAME)``:
the sandbox uid cannot write ``/proc/self/comm``, a non-dumpable process' files belong to root) and then
waits for SIGUSR1 from the test. The test finds the named process in ``/proc`` (whatever the process
tree looks like), does what it came to do, checks the process is still there, and releases it.

The code loads native code through ctypes, so it runs without the policy (``Executor.execute``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

#: How long the child waits to be released before giving up (it prints "never released" then).
LATCH_S = 8.0


def new_marker() -> str:
    """A process name no other process has (at most 15 bytes: the kernel's limit)."""
    return f"ci-{uuid.uuid4().hex[:12]}"


def latched(marker: str, then: str) -> str:
    """User code: name the process ``marker``, wait for SIGUSR1 (up to LATCH_S), then run ``then``."""
    return (
        "import ctypes, signal, time\n"
        "_released = []\n"
        "signal.signal(signal.SIGUSR1, lambda *_: _released.append(1))\n"
        f"ctypes.CDLL(None).prctl(15, {marker.encode()!r}, 0, 0, 0)\n"
        f"_deadline = time.monotonic() + {LATCH_S}\n"
        "while not _released and time.monotonic() < _deadline:\n"
        "    time.sleep(0.01)\n"
        "if not _released:\n"
        "    raise SystemExit('never released')\n"
        f"{then}\n"
    )


def find(marker: str) -> int | None:
    """The host pid of the process named ``marker``, or None."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == marker:
                    return int(entry)
            except OSError:
                continue
    return None


async def wait_for(marker: str, limit_s: float = 30.0) -> int:
    """Wait until the process named ``marker`` runs (the user's code has started); its pid."""
    for _ in range(int(limit_s / 0.01)):
        pid = find(marker)
        if pid is not None:
            return pid
        await asyncio.sleep(0.01)
    raise AssertionError(f"no process named {marker} within {limit_s} s: the user code never started")


def release(pid: int) -> None:
    """Let the latched child go on."""
    os.kill(pid, signal.SIGUSR1)
