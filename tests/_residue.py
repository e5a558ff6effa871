"""Nothing of a session is left: one check for every way a session ends (issue #22).

:func:`footprint` records, while a session is live, everything of it the host can see from ``/proc`` and
``/sys``: its supervisor and sandboxed child (host pids with their start times, so a reused pid is not
mistaken for them), the child's PID namespace (every grandchild lives there) and the mount namespaces,
the filesystems the session mounted for itself (tmpfs, proc: those no process outside it has), its
cgroup directories, and the host's own descriptors for it (its execution socket and pidfds: the Unix
sockets and pidfds that appeared when it started). The namespaces are held open (``/proc/PID/ns/*``)
until the check ends: a freed namespace's inode number, and a freed tmpfs's device number, are given to
the next one made, which would otherwise look like the old one. :func:`assert_gone` then requires, within a
deadline, that no process of it runs (zombies count as gone: only their pid is left), no process of
any namespace still shows one of its mounts in ``/proc/*/mountinfo`` and the host shows none under its
executor's directory, its cgroup directories are removed, and the host holds none of its descriptors.

Works as root (strict mode) and as an unprivileged user (namespaces mode: the session's processes run
under the test's own uid, in namespaces the test's uid owns, so their ``/proc`` entries are readable;
processes of other users that cannot be read are not the session's).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: How long after an end path returns everything of the session must be gone.
GONE_WITHIN_S = 2.0


@dataclass(frozen=True)
class Proc:
    """A host process, named by its pid and start time (a pid alone may be reused)."""

    pid: int
    start: str
    comm: str


@dataclass
class Footprint:
    """What one live session holds on this machine (see the module doc)."""

    procs: list[Proc]
    pid_ns: str | None
    mnt_ns: set[str]
    mounts: set[tuple[str, str]]
    """(device, mount point) of the filesystems the session mounted for itself, as its processes see them."""
    cgroups: list[str]
    executor_dir: str
    host_fds: dict[int, str] = field(default_factory=dict)
    """The host's descriptors for the session: fd -> ``unix:INODE`` or ``pidfd:PID``."""
    whole_host: bool = False
    """Set when the end path ends the host's sandbox service too: then its cgroup bases must go as well."""
    pinned: list[int] = field(default_factory=list)
    """Open descriptors of its namespaces (so their numbers are not reused while it is checked)."""

    def without_host_fds(self) -> Footprint:
        """The same footprint, but for the host's descriptors (to check the processes alone)."""
        return Footprint(self.procs, self.pid_ns, self.mnt_ns, self.mounts, self.cgroups, self.executor_dir)

    def release(self) -> None:
        """Close the namespace descriptors (idempotent)."""
        pinned, self.pinned = self.pinned, []
        for fd in pinned:
            os.close(fd)


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def proc_of(pid: int) -> Proc | None:
    """The process ``pid`` now (None when there is none, or it is a zombie: only its pid is left)."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return Proc(pid, fields[19], comm)


def _pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def _unix_inodes() -> set[str]:
    text = _read("/proc/net/unix") or ""
    return {line.split()[6] for line in text.splitlines()[1:] if len(line.split()) >= 7}


def host_descriptors() -> dict[int, str]:
    """This process's Unix sockets and pidfds: fd -> ``unix:INODE`` / ``pidfd:PID`` (PID -1: it exited)."""
    unix = _unix_inodes()
    out: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        target = _link(f"/proc/self/fd/{name}")
        if target is None:
            continue
        if target.startswith("socket:[") and target[8:-1] in unix:
            out[int(name)] = f"unix:{target[8:-1]}"
        elif target == "anon_inode:[pidfd]":
            info = _read(f"/proc/self/fdinfo/{name}") or ""
            pid = next((ln.split()[1] for ln in info.splitlines() if ln.startswith("Pid:")), "?")
            out[int(name)] = f"pidfd:{pid}"
    return out


def _own_mounts(pid: int) -> set[tuple[str, str]]:
    """(device, mount point) of ``pid``'s mounts whose device the host does not have (its own filesystems)."""
    host_devs = {line.split()[2] for line in (_read("/proc/self/mountinfo") or "").splitlines()}
    mine = set()
    for line in (_read(f"/proc/{pid}/mountinfo") or "").splitlines():
        parts = line.split()
        if parts[2] not in host_devs:
            mine.add((parts[2], parts[4]))
    return mine


def _cgroup_dirs(pid: int) -> list[str]:
    dirs = []
    for line in (_read(f"/proc/{pid}/cgroup") or "").splitlines():
        _num, controllers, path = line.split(":", 2)
        if "code-interpreter" in path:
            for ctrl in controllers.split(","):
                dirs.append(f"/sys/fs/cgroup/{ctrl}{path}")
    return dirs


def capture(supervisor: int, child: int, executor_dir: Path, before: dict[int, str] | None) -> Footprint:
    """The footprint of the session whose processes are ``supervisor`` and ``child`` (both must run).

    ``before``: :func:`host_descriptors` taken before the session started, in the host's own process;
    None when the host is another process (its descriptors die with it).
    """
    pinned = []
    for pid, kind in ((supervisor, "mnt"), (child, "mnt"), (child, "pid")):
        with contextlib.suppress(OSError):
            pinned.append(os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC))
    procs = [p for p in (proc_of(supervisor), proc_of(child)) if p is not None]
    assert len(procs) == 2, f"the session's processes {supervisor}, {child} are not both running"
    pid_ns = _link(f"/proc/{child}/ns/pid")
    assert pid_ns is not None, f"cannot read the PID namespace of the sandboxed child {child}"
    mnt_ns = {ns for ns in (_link(f"/proc/{p}/ns/mnt") for p in (supervisor, child)) if ns is not None}
    own_mnt = _link("/proc/self/ns/mnt")
    mnt_ns.discard(own_mnt or "")
    fds: dict[int, str] = {}
    if before is not None:
        pids = {str(supervisor), str(child)}
        for fd, what in host_descriptors().items():
            new_socket = what.startswith("unix:") and what not in before.values()
            if new_socket or (what.startswith("pidfd:") and what.split(":")[1] in pids):
                fds[fd] = what
        assert any(w.startswith("unix:") for w in fds.values()), (
            "the host holds no new Unix socket for the session: is it live in this process?"
        )
    mounts = _own_mounts(supervisor) | _own_mounts(child)
    return Footprint(
        procs, pid_ns, mnt_ns, mounts, _cgroup_dirs(child), str(executor_dir), fds, pinned=pinned
    )


async def footprint(interp: Any, user: str, session_id: str, before: dict[int, str] | None) -> Footprint:
    """The footprint of a live session of ``interp`` (pids from ``sessions.list()``, checked against the
    executor's processes)."""
    listed = [s for s in await interp.sessions.list(user) if s["id"] == session_id]
    assert len(listed) == 1, (user, session_id, listed)
    pids = listed[0]["pids"]
    ex = await interp.executor()
    assert (pids["supervisor"], pids["child"]) in ex.processes(), (pids, ex.processes())
    return capture(pids["supervisor"], pids["child"], interp.settings.home / "executor", before)


def leftovers(fp: Footprint) -> list[str]:
    """What of the footprint is still there (empty: nothing)."""
    left: list[str] = []
    known = {(p.pid, p.start) for p in fp.procs}
    for pid in _pids():
        now = proc_of(pid)
        if now is None or pid == os.getpid():
            continue
        why = []
        if (now.pid, now.start) in known:
            why.append("the session's own process")
        if fp.pid_ns is not None and _link(f"/proc/{pid}/ns/pid") == fp.pid_ns:
            why.append("in its PID namespace")
        if _link(f"/proc/{pid}/ns/mnt") in fp.mnt_ns:
            why.append("in its mount namespace")
        if why:
            left.append(f"process {pid} ({now.comm}): {', '.join(why)}")
        elif fp.mounts:
            shown = _mountinfo_pairs(pid) & fp.mounts
            if shown:
                left.append(f"process {pid} ({now.comm}) still has the session's mounts {sorted(shown)}")
    for line in (_read("/proc/self/mountinfo") or "").splitlines():
        point = line.split()[4]
        if point.startswith(fp.executor_dir):
            left.append(f"the host has a mount at {point}")
    dirs = list(fp.cgroups)
    if fp.whole_host:
        dirs += sorted({os.path.dirname(d) for d in fp.cgroups})
    left += [f"cgroup {d}" for d in dirs if os.path.isdir(d)]
    if fp.host_fds:
        now_fds = host_descriptors()
        gone_pids = {"-1", "0"} | {str(p.pid) for p in fp.procs}
        for fd, what in fp.host_fds.items():
            current = now_fds.get(fd)
            if what.startswith("unix:") and what in now_fds.values():
                left.append(f"the host's socket {what}")
            elif what.startswith("pidfd:") and current and current.removeprefix("pidfd:") in gone_pids:
                left.append(f"the host's pidfd {fd} ({current})")
    return left


def _mountinfo_pairs(pid: int) -> set[tuple[str, str]]:
    text = _read(f"/proc/{pid}/mountinfo")
    if not text:
        return set()
    return {(p[2], p[4]) for p in (line.split() for line in text.splitlines())}


async def assert_gone(fp: Footprint, what: str, within: float = GONE_WITHIN_S) -> None:
    """Fail unless nothing of ``fp`` is left within ``within`` seconds (``what`` names the end path).

    Releases the footprint's namespace descriptors.
    """
    deadline = time.monotonic() + within
    try:
        while left := await asyncio.to_thread(leftovers, fp):
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{within:g} s after {what}, the session left behind:\n  " + "\n  ".join(left)
                )
            await asyncio.sleep(0.05)
    finally:
        fp.release()


def named(prefix: str) -> list[Proc]:
    """Running processes whose name starts with ``prefix`` (user code names itself with prctl)."""
    found = []
    for pid in _pids():
        p = proc_of(pid)
        if p is not None and p.comm.startswith(prefix):
            found.append(p)
    return found


def status_kb(pid: int, keys: Iterable[str] = ("VmRSS", "VmHWM")) -> dict[str, int]:
    """Fields of ``/proc/PID/status`` in kB (empty when the process is gone)."""
    out: dict[str, int] = {}
    for line in (_read(f"/proc/{pid}/status") or "").splitlines():
        name, _, value = line.partition(":")
        if name in keys:
            out[name] = int(value.split()[0])
    return out


def host_uids(pid: int) -> list[int]:
    """The real, effective, saved and filesystem uids of ``pid`` as the host sees them (empty: gone)."""
    for line in (_read(f"/proc/{pid}/status") or "").splitlines():
        if line.startswith("Uid:"):
            return [int(u) for u in line.split()[1:]]
    return []
