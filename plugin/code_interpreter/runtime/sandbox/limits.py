"""Resource limits (setrlimit) applied in the child before user code runs."""

from __future__ import annotations

import resource
from collections.abc import Mapping


def rlimits_for(
    *,
    cpu_seconds: int,
    max_write_bytes: int,
    max_open_files: int,
    max_processes: int,
    address_space_mb: int | None,
) -> dict[int, int]:
    """The limits of one execution; ``address_space_mb`` is None when a memory cgroup bounds memory."""
    limits = {
        resource.RLIMIT_CPU: max(1, cpu_seconds),
        resource.RLIMIT_FSIZE: max_write_bytes,
        resource.RLIMIT_NOFILE: max_open_files,
        resource.RLIMIT_NPROC: max_processes,
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_MEMLOCK: 0,
        resource.RLIMIT_MSGQUEUE: 0,
    }
    if address_space_mb is not None:
        limits[resource.RLIMIT_AS] = address_space_mb * 2**20
    return limits


def apply(limits: Mapping[int, int]) -> None:
    """Set soft and hard limits (never above the current hard limit)."""
    for which, value in limits.items():
        _soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))


def current_vm_mb() -> int:
    """Virtual size of this process in MiB (the warm zygote maps a lot before any user allocation)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[0])
        return pages * resource.getpagesize() // 2**20
    except (OSError, ValueError, IndexError):
        return 0
