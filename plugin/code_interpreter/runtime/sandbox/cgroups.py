"""Per-execution cgroup v1 ``memory``, ``pids`` and ``cpuacct`` controllers, nested under the zygote's own.

RLIMIT_NPROC counts every process of the sandbox uid system-wide, so concurrent executions would
share it; a ``pids`` cgroup per execution gives each its own process budget, and a ``memory`` cgroup
bounds RSS plus tmpfs pages (the work dir) without the address-space limit that breaks numpy.
``cpuacct`` limits nothing: it counts the CPU time of every process of the execution, exited ones
included, for the meter (``runtime/meter.py``, which also reads the memory cgroup's peak).
Nesting under the cgroup the zygote already lives in keeps the host's accounting intact.
"""

from __future__ import annotations

import contextlib
import os

CGROUP_ROOT = "/sys/fs/cgroup"
CONTROLLERS = ("memory", "pids", "cpuacct")
LIMITS = ("memory", "pids")
"""The controllers that limit (reported as layers); ``cpuacct`` only counts."""
BASE_PREFIX = "code-interpreter-"
_OOM_FILES = ("memory.oom_control", "memory.failcnt")


def _own_path(controller: str) -> str | None:
    try:
        with open("/proc/self/cgroup") as fh:
            for line in fh:
                _, names, path = line.rstrip("\n").split(":", 2)
                if controller in names.split(","):
                    return path
    except OSError:
        return None
    return None


def _write(path: str, value: str, dir_fd: int | None = None) -> None:
    fd = os.open(path, os.O_WRONLY, dir_fd=dir_fd)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def create_base(owner_pid: int) -> dict[str, str]:
    """Create ``code-interpreter-<pid>`` under this process's v1 cgroup of each controller it can write.

    Returns {controller: base dir}; a controller that is missing or read-only is left out (the
    executor then reports that layer inactive and falls back to rlimits).
    """
    sweep_stale()
    bases: dict[str, str] = {}
    for ctrl in CONTROLLERS:
        own = _own_path(ctrl)
        mount = os.path.join(CGROUP_ROOT, ctrl)
        if own is None or not os.path.isfile(os.path.join(mount, "cgroup.procs")):
            continue
        base = os.path.join(mount + own, f"{BASE_PREFIX}{owner_pid}")
        try:
            os.makedirs(base, exist_ok=True)
            probe = os.path.join(base, "probe")
            os.mkdir(probe)
            os.rmdir(probe)
        except OSError:
            continue
        bases[ctrl] = base
    return bases


def sweep_stale() -> None:
    """Remove base dirs left by zygotes that died (their pid is gone); only empty cgroups are removed."""
    for ctrl in CONTROLLERS:
        own = _own_path(ctrl)
        if own is None:
            continue
        parent = os.path.join(CGROUP_ROOT, ctrl) + own
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            pid = name.removeprefix(BASE_PREFIX)
            if name.startswith(BASE_PREFIX) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                remove_tree(os.path.join(parent, name))


def remove_tree(path: str) -> bool:
    """rmdir a cgroup and its children bottom-up; False if some still hold processes."""
    ok = True
    try:
        entries = list(os.scandir(path))
    except OSError:
        return not os.path.exists(path)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            ok = remove_tree(entry.path) and ok
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError:
        ok = False
    return ok


def kill_and_remove(path: str, wait_s: float = 2.0) -> bool:
    """SIGKILL every process left in a cgroup tree, wait until it is empty, then remove it."""
    import signal
    import time

    deadline = time.monotonic() + wait_s
    while True:
        pids = _procs(path)
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if not pids or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return remove_tree(path)


def _procs(path: str) -> list[int]:
    pids: list[int] = []
    for dirpath, _dirs, _files in os.walk(path):
        try:
            with open(os.path.join(dirpath, "cgroup.procs")) as fh:
                pids.extend(int(line) for line in fh if line.strip())
        except (OSError, ValueError):
            continue
    return pids


def _open_all(names: tuple[str, ...], dir_fd: int) -> list[int]:
    """Every one of ``names`` open for reading, or none (an empty list) when one cannot be opened."""
    fds: list[int] = []
    try:
        for name in names:
            fds.append(os.open(name, os.O_RDONLY, dir_fd=dir_fd))
    except OSError:
        for fd in fds:
            os.close(fd)
        return []
    return fds


class ExecCgroup:
    """The cgroups of one execution: created by the supervisor, joined by the child before the uid drop."""

    def __init__(self, bases: dict[str, str], name: str, memory_mb: int, max_pids: int) -> None:
        self.dirs: dict[str, str] = {}
        self.procs_fds: list[int] = []
        self.dir_fds: dict[str, int] = {}
        """Open directories of the controllers read later (``memory``, ``cpuacct``), by controller."""
        self._oom_fds: list[int] = []
        """``memory.oom_control`` and ``memory.failcnt``, open from the start (read as each one-shot ends)."""
        for ctrl, base in bases.items():
            path = os.path.join(base, name)
            try:
                os.mkdir(path)
                self.dirs[ctrl] = path
                if ctrl == "memory":
                    limit = str(memory_mb * 2**20)
                    _write(os.path.join(path, "memory.limit_in_bytes"), limit)
                    with contextlib.suppress(OSError):
                        _write(os.path.join(path, "memory.memsw.limit_in_bytes"), limit)
                elif ctrl == "pids":
                    _write(os.path.join(path, "pids.max"), str(max_pids))
                if ctrl != "pids":
                    self.dir_fds[ctrl] = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
                if ctrl == "memory":
                    self._oom_fds = _open_all(_OOM_FILES, self.dir_fds[ctrl])
                self.procs_fds.append(os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY))
            except OSError:
                # A controller we cannot configure is dropped rather than half-applied.
                self.dirs.pop(ctrl, None)
                opened = self.dir_fds.pop(ctrl, None)
                if opened is not None:
                    os.close(opened)
                if ctrl == "memory":
                    for fd in self._oom_fds:
                        os.close(fd)
                    self._oom_fds = []
                with contextlib.suppress(OSError):
                    os.rmdir(path)

    @property
    def memory_fd(self) -> int | None:
        """The open directory of the memory cgroup, None without one."""
        return self.dir_fds.get("memory")

    @property
    def active(self) -> dict[str, bool]:
        """Which controllers this execution is limited by."""
        return {f"cgroup_{ctrl}": ctrl in self.dirs for ctrl in LIMITS}

    def join(self) -> None:
        """Move the calling process (the child, still root) into every controller, then drop the fds."""
        for fd in self.procs_fds:
            os.write(fd, b"0")
        self.close_fds()

    def close_fds(self) -> None:
        """Close the cgroup.procs fds (the child must not keep them)."""
        for fd in self.procs_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.procs_fds = []

    def oom_killed(self) -> bool:
        """True when the memory controller killed a process of this execution (False when its counters
        could not be opened or read)."""
        if len(self._oom_fds) != len(_OOM_FILES):
            return False
        oom_control, failcnt = self._oom_fds
        try:
            for line in os.pread(oom_control, 4096, 0).decode().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and value.strip() != "0":
                    return True
            return int(os.pread(failcnt, 64, 0) or b"0") > 0
        except (OSError, ValueError):
            return False

    def remove(self) -> None:
        """Remove the execution's cgroups (every process in them is gone by now)."""
        self.close_fds()
        for fd in (*self.dir_fds.values(), *self._oom_fds):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.dir_fds = {}
        self._oom_fds = []
        for path in self.dirs.values():
            remove_tree(path)
        self.dirs = {}
