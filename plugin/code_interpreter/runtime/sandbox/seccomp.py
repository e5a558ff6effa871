"""The seccomp allowlist, built with pyseccomp in the zygote and loaded raw in each child (stdlib only).

Only the system calls in :data:`ALLOWED` run; every other one is refused with EPERM. The list comes from
a census of what real data-science code calls in the sandbox (``python -m
code_interpreter.executor.census``; the reviewed result is in SECURITY.md). A few calls have argument
rules instead: ``clone`` only without namespace flags, ``clone3`` fails with ENOSYS (its flags live in
a struct seccomp cannot read, and glibc then falls back to ``clone``), ``socket`` only for AF_UNIX,
AF_INET and AF_INET6 (the sandbox's own network namespace has nothing but its loopback), ``socketpair``
only for AF_UNIX. Foreign architectures (32-bit entry points) are killed by libseccomp's bad-arch action.

The refusal is made by the execution's supervisor, not by the filter: the filter's default action hands
the call to the supervisor (a seccomp *user notification*), which answers EPERM and counts it, so the
result can say which sandbox rule blocked what (:mod:`.notify`). Where the kernel has no user
notification (before Linux 5.0) a plain EPERM filter is loaded instead and nothing is counted.

Census mode (a diagnostic, never a sandbox): every call but the hand-over goes to the supervisor, which
lets it run and records it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from . import _libc as c

#: What needs each group of system calls: group -> (the calls the census saw, the calls allowed on review
#: without being seen: the same operations by other entry points — ``*at`` variants, the older or newer
#: spelling another C library, Python or architecture picks — and harmless controls of the code's own
#: processes). The census and its review are in SECURITY.md.
GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "files: open, read, write, stat, list, link, rename, remove (every workload; shutil, zipfile, "
    "tarfile, sqlite3, numpy.memmap, pandas and pyarrow I/O)": (
        ("read", "write", "pread64", "pwrite64", "open", "openat", "close", "close_range", "lseek",
         "stat", "fstat", "newfstatat", "statfs", "access", "getdents64", "getcwd", "chdir", "mkdir",
         "rmdir", "unlink", "unlinkat", "rename", "link", "symlink", "readlink", "ftruncate",
         "fdatasync", "fadvise64", "chmod", "utimensat", "flock", "sendfile", "listxattr"),
        ("readv", "writev", "preadv", "pwritev", "creat", "lstat", "statx", "fstatfs", "faccessat",
         "faccessat2", "fchdir", "mkdirat", "renameat", "renameat2", "linkat", "symlinkat",
         "readlinkat", "truncate", "fsync", "fchmod", "fchmodat", "copy_file_range", "getxattr",
         "lgetxattr", "fgetxattr", "llistxattr", "flistxattr", "umask"),
    ),
    "file descriptors and waiting: pipes, dup, fcntl, ioctl, poll and epoll (subprocess, asyncio, "
    "multiprocessing, sqlite3 locks, isatty)": (
        ("pipe2", "dup2", "fcntl", "ioctl", "poll", "epoll_create1", "epoll_ctl", "epoll_wait"),
        ("pipe", "dup", "dup3", "ppoll", "select", "pselect6", "epoll_create", "epoll_pwait",
         "epoll_pwait2"),
    ),
    "memory: the allocator, numpy, mmap'd and memmap'd files (every workload)": (
        ("brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "msync"),
        (),
    ),
    "processes and threads: fork, exec, wait, signals inside the sandbox (threads, multiprocessing "
    "with fork, spawn and forkserver, joblib/loky, concurrent.futures, subprocess of python)": (
        ("clone", "vfork", "execve", "wait4", "exit", "exit_group", "kill", "rt_sigaction",
         "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "set_tid_address", "set_robust_list", "rseq",
         "futex", "arch_prctl", "prctl", "gettid", "sched_getaffinity"),
        ("fork", "waitid", "tgkill", "tkill", "rt_sigsuspend", "rt_sigtimedwait", "sched_yield",
         "setsid", "setpgid", "getpgid", "getpgrp", "getsid", "getpriority", "setpriority",
         "pidfd_open", "pidfd_send_signal"),
    ),
    "identity and limits, of the code's own process (os, getpass, resource, platform, "
    "multiprocessing)": (
        ("getpid", "getppid", "getuid", "geteuid", "getgid", "getegid", "getgroups", "prlimit64",
         "getrusage", "times", "uname", "sysinfo"),
        ("getresuid", "getresgid", "getrlimit", "setrlimit"),
    ),
    "time: clocks, sleeps, timers (time, datetime, signal.alarm/setitimer, asyncio)": (
        ("clock_nanosleep", "alarm", "setitimer"),
        ("clock_gettime", "clock_getres", "gettimeofday", "time", "nanosleep", "getitimer"),
    ),
    "randomness (random, secrets, uuid, tempfile, numpy)": (("getrandom",), ()),
    "sockets: AF_UNIX, and AF_INET/AF_INET6 on the sandbox's own loopback (multiprocessing, asyncio, "
    "http.server and urllib on 127.0.0.1; sendmsg also hands the filter's listener over)": (
        ("socket", "socketpair", "bind", "listen", "accept4", "connect", "getsockname", "getpeername",
         "getsockopt", "setsockopt", "sendto", "recvfrom", "sendmsg", "recvmsg", "shutdown"),
        ("accept",),
    ),
}  # fmt: skip

#: Calls the census saw that stay refused after review, and why the code that makes them works without.
REVIEWED_REFUSALS: dict[str, str] = {
    "mbind": "OpenBLAS (numpy's BLAS) in a fresh interpreter asks for NUMA placement of its buffers and "
    "carries on without it; memory-policy calls stay refused, as in Docker's default profile",
    "fchown": "sqlite3 running as uid 0 (namespaces mode: root of its own user namespace) gives a new "
    "journal the database's owner and ignores a failure; without CAP_CHOWN no chown could do more",
    "chown": "tarfile extracting as uid 0 (namespaces mode) sets each member's owner and, at its default "
    "errorlevel, ignores a failure; without CAP_CHOWN no chown could do more",
}

#: Every allowed system call and its group (what needs it).
ALLOWED: dict[str, str] = {name: g for g, (seen, extra) in GROUPS.items() for name in (*seen, *extra)}
#: The allowed calls no census workload made (allowed on review; see :data:`GROUPS`).
UNSEEN: frozenset[str] = frozenset(name for _seen, extra in GROUPS.values() for name in extra)

#: clone(2) flags that create namespaces (CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET).
NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
SOCKET_FAMILIES = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6)
#: Calls with argument rules (see the module docstring); the rest of :data:`ALLOWED` is unconditional.
_CONDITIONAL = frozenset({"clone", "socket", "socketpair"})
#: The child passes its listener fd to the supervisor with this call: it must never wait on the listener.
HAND_OVER = "sendmsg"

#: Host environment variables of the census tool: the log file, and census mode (nothing refused) when
#: the second is "1". Diagnostics only; unset in production.
LOG_ENV = "CODE_INTERPRETER_SECCOMP_LOG"
CENSUS_ENV = "CODE_INTERPRETER_SECCOMP_CENSUS"

_SECCOMP_SET_MODE_FILTER = 1
_FLAG_NEW_LISTENER = 1 << 3


@dataclass(frozen=True, slots=True)
class Program:
    """The filter as BPF, ready to load in a child: with user notification, and a plain fallback."""

    notify: bytes
    """The filter whose default action is a user notification (the supervisor refuses, and counts)."""
    fallback: bytes
    """The same filter refusing with EPERM itself, for kernels without user notification."""
    seccomp_nr: int
    """seccomp(2)'s number on this architecture."""
    census: bool = False
    """Census mode: nothing is refused, every call is recorded (diagnostics only)."""
    names: dict[int, str] = field(default_factory=dict)
    """System call numbers to names, for the supervisor's counts."""


def build(pyseccomp: ModuleType, *, census: bool = False) -> Program:
    """Build the allowlist (or, with ``census``, the record-everything filter) as loadable BPF."""
    s = pyseccomp
    if census:
        notify = _census_filter(s, s.NOTIFY)
        fallback = _census_filter(s, s.LOG)
    else:
        notify = _allowlist(s, s.NOTIFY)
        fallback = _allowlist(s, s.ERRNO(errno.EPERM))
    nr = int(s.resolve_syscall(s.Arch.NATIVE, "seccomp"))
    return Program(_bpf(notify), _bpf(fallback), nr, census, _names(s))


def _allowlist(s: ModuleType, default: int) -> Any:
    f = s.SyscallFilter(defaction=default)
    for name in ALLOWED:
        if name not in _CONDITIONAL:
            _add(f, s.ALLOW, name)
    # clone(2) without any namespace flag: fork and threads pass, a new namespace is refused.
    f.add_rule(s.ALLOW, "clone", s.Arg(0, s.MASKED_EQ, NAMESPACE_FLAGS, 0))
    for family in SOCKET_FAMILIES:
        f.add_rule(s.ALLOW, "socket", s.Arg(0, s.EQ, family))
    f.add_rule(s.ALLOW, "socketpair", s.Arg(0, s.EQ, socket.AF_UNIX))
    f.add_rule(s.ERRNO(errno.ENOSYS), "clone3")
    return f


def _census_filter(s: ModuleType, default: int) -> Any:
    f = s.SyscallFilter(defaction=default)
    f.add_rule(s.ALLOW, HAND_OVER)
    f.add_rule(s.ERRNO(errno.ENOSYS), "clone3")  # as enforced: glibc falls back to clone
    return f


def _add(f: Any, action: int, name: str) -> None:
    try:
        f.add_rule(action, name)
    except (OSError, ValueError, RuntimeError):
        pass  # not a system call on this architecture (open, fork … on aarch64)


def _bpf(f: Any) -> bytes:
    fd = os.memfd_create("seccomp-bpf")
    try:
        with open(fd, "wb", closefd=False) as fh:
            f.export_bpf(fh)
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _names(s: ModuleType) -> dict[int, str]:
    names: dict[int, str] = {}
    for nr in range(1024):
        try:
            raw = s.resolve_syscall(s.Arch.NATIVE, nr)
        except (OSError, ValueError, RuntimeError):
            continue
        if raw:
            names[nr] = raw.decode() if isinstance(raw, bytes) else str(raw)
    return names


class _Fprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def load(program: Program) -> int:
    """Load the filter into this (single-threaded) process; the listener's fd, or -1 for the fallback.

    no_new_privs must be set already. Raises OSError when neither filter loads.
    """
    for bpf, flags in ((program.notify, _FLAG_NEW_LISTENER), (program.fallback, 0)):
        buf = ctypes.create_string_buffer(bpf, len(bpf))
        prog = _Fprog(len(bpf) // 8, ctypes.addressof(buf))
        fd = c.raw_syscall(program.seccomp_nr, _SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(prog))
        if fd >= 0:
            return fd if flags else -1
        err = ctypes.get_errno()
        if err != errno.EINVAL or not flags:
            raise OSError(err, f"seccomp: {os.strerror(err)}")
    raise OSError(errno.EINVAL, "seccomp: no filter could be loaded")  # pragma: no cover
