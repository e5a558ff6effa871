"""What one cell used — CPU seconds, peak memory, wall time — read by its supervisor from the kernel (stdlib).

The sandboxed child runs the user's code, so no figure is ever taken from it: the supervisor reads
the kernel's own counters for the execution's processes, between :meth:`Meter.begin` (just before
the cell is handed to the child) and :meth:`Meter.end` (as its report arrives, or at its deadline,
before anything is killed).

**With cgroups** (strict mode as root: the execution's own v1 ``cpuacct`` and ``memory`` cgroups).
CPU is the growth of ``cpuacct.usage``: nanoseconds of user + system time of every process that ever
ran in the execution, exited ones included. Peak memory is ``memory.max_usage_in_bytes``, reset when
the previous cell's result has been sent (or at the cell's start, for the first), minus
``memory.usage_in_bytes`` then: what the cell added at its peak. The pages the
child shares with the warm zygote it was forked from are charged to the zygote's cgroup, not this one;
the copies it makes of them (copy-on-write), its tmpfs files and the page cache it fills are charged
here.

**Without** (namespaces mode, or a controller that could not be created): procfs. CPU is the growth
of the execution's process tree's ``utime + stime + cutime + cstime`` (``/proc/<pid>/stat``, clock
ticks: 10 ms resolution): the child, every live or not yet reaped descendant (found through
``/proc/<pid>/task/<tid>/children``), and whatever they reaped. Peak memory: each process's
high-water mark (``VmHWM``) is reset when the peaks are (``clear_refs`` 5) and read again at the cell's
end and every :data:`SAMPLE_S` seconds while it runs; their sum minus the resident memory at the reset.
What this cannot see, said plainly: a process that ends unreaped (its parent ignores SIGCHLD) takes
its CPU time with it; a short-lived process that ends between two samples is not in the peak; pages
shared between processes of the execution (a ``fork`` without ``exec``) count once per process; a
page copied on write from the zygote does not raise the resident size; and the code can reset its own
process's high-water mark (it owns ``/proc/self/clear_refs``), which only the samples then bound.
The limits (rlimits) hold regardless: this is the bill, not the wall.

Both: CPU used between two cells of a session (a background thread) counts in the next cell, so a
session's cells add up to everything it used; so does memory a background thread takes between two
cells, for the next cell's peak. Wall time is each cell's own.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from .sandbox.cgroups import ExecCgroup

__all__ = ["MAX_PROCESSES", "SAMPLE_S", "Meter", "process_tree"]

#: How often the process tree is sampled while a cell runs, when its figures come from procfs.
SAMPLE_S = 0.2
#: Most processes read per sample (the pids cgroup or RLIMIT_NPROC keeps a sandbox far below this).
MAX_PROCESSES = 4096
_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
_PAGE_READ = 4096


def _read(path: str, dir_fd: int | None = None) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        return os.read(fd, _PAGE_READ)
    except OSError:
        return None
    finally:
        os.close(fd)


def _write(path: str, data: bytes, dir_fd: int | None = None) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        os.write(fd, data)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _int(data: bytes | None) -> int | None:
    try:
        return int(data) if data is not None else None
    except ValueError:
        return None


def _stat(pid: int) -> tuple[int, int] | None:
    """(start time, utime + stime + cutime + cstime) of ``pid`` in clock ticks; None when it is gone."""
    data = _read(f"/proc/{pid}/stat")
    if not data:
        return None
    # The command name (field 2) is the process's own choice: split after its last ")".
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return int(fields[19]), sum(int(f) for f in fields[11:15])
    except (IndexError, ValueError):
        return None


def _memory(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) of ``pid`` in bytes; None when it has no memory (exited, or a kernel thread)."""
    data = _read(f"/proc/{pid}/status")
    if not data:
        return None
    values: dict[bytes, int] = {}
    for line in data.splitlines():
        if line.startswith((b"VmHWM:", b"VmRSS:")):
            key, _, rest = line.partition(b":")
            with contextlib.suppress(ValueError, IndexError):
                values[key] = int(rest.split()[0]) * 1024
    if b"VmRSS" not in values:
        return None
    rss = values[b"VmRSS"]
    return rss, max(rss, values.get(b"VmHWM", rss))


def _children(pid: int) -> list[int]:
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    out: list[int] = []
    for tid in tids:
        data = _read(f"/proc/{pid}/task/{tid}/children")
        if data:
            out.extend(int(p) for p in data.split() if p.isdigit())
    return out


def process_tree(root: int, limit: int = MAX_PROCESSES) -> list[int]:
    """``root`` and its descendants (zombies included), parents first, at most ``limit`` of them."""
    tree = [root]
    seen = {root}
    i = 0
    while i < len(tree) and len(tree) < limit:
        for child in _children(tree[i]):
            if child not in seen and len(tree) < limit:
                seen.add(child)
                tree.append(child)
        i += 1
    return tree


class Meter:
    """One execution's meter: :meth:`begin` and :meth:`end` around each cell (see the module doc)."""

    def __init__(self, pid: int, cgroup: ExecCgroup | None) -> None:
        """Meter the child ``pid`` and its descendants, from ``cgroup``'s counters where it has them."""
        self.pid = pid
        self.cpu_fd = cgroup.dir_fds.get("cpuacct") if cgroup is not None else None
        self.memory_fd = cgroup.dir_fds.get("memory") if cgroup is not None else None
        # Fixed for the meter's life: said in every cell's figures without a lookup each time.
        self.cpu_source = "cgroup" if self.cpu_fd is not None else "procfs"
        self.memory_source = "cgroup" if self.memory_fd is not None else "procfs"
        self.samples = self.memory_fd is None
        """Whether the peaks come from sampling the process tree while a cell runs (:meth:`sample_if_due`)."""
        self._cpu_mark: float | None = None  # CPU seconds at the end of the previous cell
        self._started = 0.0
        self._memory_base = 0
        self._peaks: dict[tuple[int, int], int] = {}  # procfs: (pid, start time) → highest VmHWM seen
        self._next_sample = float("inf")
        self._armed = False  # reset() ran since the last cell ended
        # The cgroup counters stay open: each cell then reads and resets them in a syscall each.
        self._counters: dict[str, int] = {}
        for name, dir_fd, flags in (
            ("cpuacct.usage", self.cpu_fd, os.O_RDONLY),
            ("memory.usage_in_bytes", self.memory_fd, os.O_RDONLY),
            ("memory.max_usage_in_bytes", self.memory_fd, os.O_RDWR),
        ):
            if dir_fd is not None:
                with contextlib.suppress(OSError):
                    self._counters[name] = os.open(name, flags | os.O_CLOEXEC, dir_fd=dir_fd)

    def _counter(self, name: str) -> int | None:
        """A cgroup counter's value now (None when it cannot be read)."""
        fd = self._counters.get(name)
        if fd is None:
            return None
        try:
            return _int(os.pread(fd, _PAGE_READ, 0))
        except OSError:
            return None

    def reset(self) -> None:
        """Restart the peaks from what is resident now: between cells, once a result is sent (off the next
        cell's path), or by :meth:`begin` when nothing did since the last cell."""
        self._armed = True
        if self.memory_fd is not None:
            try:  # the peak restarts from the usage now (a plain try: no context manager built per cell)
                os.pwrite(self._counters["memory.max_usage_in_bytes"], b"0", 0)
            except (OSError, KeyError):
                pass
            self._memory_base = self._counter("memory.usage_in_bytes") or 0
            return
        self._peaks = {}
        self._memory_base = 0
        for pid in process_tree(self.pid):
            _write(f"/proc/{pid}/clear_refs", b"5")  # VmHWM restarts from VmRSS
            start, memory = _stat(pid), _memory(pid)
            if start is not None and memory is not None:
                self._peaks[(pid, start[0])] = memory[0]
                self._memory_base += memory[0]

    def begin(self) -> None:
        """The cell starts now: (first cell) the CPU so far, and the peaks reset unless :meth:`reset` ran."""
        if self._cpu_mark is None:
            self._cpu_mark = self._cpu_seconds()
        if not self._armed:
            self.reset()
        self._armed = False
        self._started = time.monotonic()
        if self.memory_fd is None:
            self._next_sample = self._started + SAMPLE_S

    def sample_if_due(self, now: float) -> float:
        """Sample the process tree's peaks when it is time; seconds until the next sample (inf: never)."""
        if now >= self._next_sample:
            self._sample()
            self._next_sample = now + SAMPLE_S
        return max(0.0, self._next_sample - now)

    def end(self) -> dict[str, Any]:
        """The cell's figures: ``cpu_seconds``, ``peak_memory_bytes``, ``wall_seconds`` and their sources."""
        wall = time.monotonic() - self._started
        self._next_sample = float("inf")
        cpu = self._cpu_seconds()
        used = max(0.0, cpu - (self._cpu_mark if self._cpu_mark is not None else cpu))
        self._cpu_mark = cpu
        if self.memory_fd is not None:
            peak = self._counter("memory.max_usage_in_bytes") or 0
        else:
            self._sample()
            peak = sum(self._peaks.values())
        return {
            "cpu_seconds": round(used, 6),
            "peak_memory_bytes": max(0, peak - self._memory_base),
            "wall_seconds": round(wall, 6),
            "cpu_source": self.cpu_source,
            "memory_source": self.memory_source,
        }

    def _cpu_seconds(self) -> float:
        if self.cpu_fd is not None:
            usage = self._counter("cpuacct.usage")
            # An unreadable counter adds nothing (never a figure from the other source: they differ).
            return usage / 1e9 if usage is not None else (self._cpu_mark or 0.0)
        ticks = 0
        for pid in process_tree(self.pid):
            stat = _stat(pid)
            if stat is not None:
                ticks += stat[1]
        return ticks * _TICK_S

    def _sample(self) -> None:
        for pid in process_tree(self.pid):
            start, memory = _stat(pid), _memory(pid)
            if start is None or memory is None:
                continue
            key = (pid, start[0])
            self._peaks[key] = max(self._peaks.get(key, 0), memory[1])
