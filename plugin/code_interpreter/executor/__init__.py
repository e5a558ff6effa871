"""The host side of running code (async): the executor, one run path for one-shot calls and sessions.

:class:`Executor` owns the zygote (``zygote.py``: its control socket), the parallel slots (``slots.py``)
and counts the processes in flight. Each execution is a :class:`SandboxProcess` (``process.py``): one
supervisor and its sandboxed child, with its own socket (``channel.py``), deadline and kill; a one-shot
call is a process of one cell, a session (``sessions.py``) keeps one for many. The supervisor's report
becomes the one result type, :class:`ExecutionResult` (``results.py``, ``report.py``). Everything that
runs on the other side — zygote, supervisor, child, the isolation layers, the code in the user's
process — is the ``runtime`` package; ``runtime/protocol.py`` declares every frame between them.

Process model: host ─(control socket: an execution id + one fd by SCM_RIGHTS)─► zygote ─fork─► warm
supervisor (unshares namespaces, builds the mount view; pid outside) ─fork─► child (pid 1 of a new PID
namespace; cgroups, /proc, pivot_root, rlimits, uid drop, no_new_privs, seccomp), all before any request.
The host then talks to that supervisor over the execution's own socket (start, cells, live events,
results and files, snapshots), so the zygote never holds user data.
"""

from __future__ import annotations

from .executor import Executor
from .isolation import isolation_problem, resolve_isolation
from .process import SandboxProcess, unique_name
from .results import (
    EventCallback,
    ExecutionEvent,
    ExecutionResult,
    FileRef,
    GeneratedFile,
    MeasuredUsage,
    SessionInfo,
)
from .slots import emit

__all__ = [
    "EventCallback",
    "ExecutionEvent",
    "ExecutionResult",
    "Executor",
    "FileRef",
    "GeneratedFile",
    "MeasuredUsage",
    "SandboxProcess",
    "SessionInfo",
    "emit",
    "isolation_problem",
    "resolve_isolation",
    "unique_name",
]
