"""Process memory from /proc: RSS, PSS and USS (smaps_rollup), peak RSS (VmHWM), and process trees.

PSS divides each shared page among the processes mapping it, so the PSS of the forked children of
one zygote sums to what they really cost; USS (private pages) is what one more execution adds.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

MB = 1024.0  # /proc reports kB
# nanosleep and clock_nanosleep: how a process blocked in time.sleep() is told from one blocked in read()
_SLEEP_SYSCALLS = {"x86_64": {"35", "230"}, "aarch64": {"101", "115"}}.get(platform.machine(), set())


@dataclass(frozen=True, slots=True)
class Mem:
    """Memory of one process in MB."""

    rss: float
    """Resident set size."""
    pss: float
    """Proportional set size (shared pages divided among their sharers)."""
    uss: float
    """Private pages only (Private_Clean + Private_Dirty)."""
    peak_rss: float
    """VmHWM: the highest RSS the process ever had."""


def read_mem(pid: int) -> Mem | None:
    """The memory of ``pid``, or None when it is gone or /proc does not say."""
    try:
        rollup = _fields(Path(f"/proc/{pid}/smaps_rollup").read_text())
        status = _fields(Path(f"/proc/{pid}/status").read_text())
    except (OSError, ValueError):
        return None
    return Mem(
        rss=rollup.get("Rss", 0) / MB,
        pss=rollup.get("Pss", 0) / MB,
        uss=(rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0)) / MB,
        peak_rss=status.get("VmHWM", 0) / MB,
    )


def _fields(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            out[key.strip()] = int(parts[0])
    return out


def parent(pid: int) -> int | None:
    """The parent of ``pid`` (from /proc/<pid>/stat), or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may contain spaces and parentheses: fields start after the last ')'
    return int(stat.rsplit(")", 1)[1].split()[1])


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (a scan of /proc/*/stat)."""
    return [int(e.name) for e in os.scandir("/proc") if e.name.isdigit() and parent(int(e.name)) == pid]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, at any depth."""
    out: list[int] = []
    todo = [pid]
    while todo:
        kids = children(todo.pop())
        out.extend(kids)
        todo.extend(kids)
    return out


def is_sleeping(pid: int) -> bool:
    """True when ``pid`` is blocked in nanosleep/clock_nanosleep (that is, in ``time.sleep``)."""
    try:
        syscall = Path(f"/proc/{pid}/syscall").read_text().split()
        if syscall and syscall[0] in _SLEEP_SYSCALLS:
            return True
        return "nanosleep" in Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False
