"""The executor: a warm fork server ("zygote") running each execution in a sandboxed child.

Host side (async): :class:`Executor` owns the zygote process, the parallel slots and per-user caps,
opens one socket per execution (``_channel.py``) and turns the supervisor's report into an
:class:`ExecutionResult`; ``sessions.py`` keeps live sessions. Child side (``_zygote.py``,
``_supervisor.py``, ``_watch.py``, ``_child.py``, ``_streams.py``, ``_wire.py``; stdlib only): loaded by
file path in the sandbox runtime interpreter, with ``sandbox/`` and ``inside/``.

Process model: host ─(control socket: an execution id + one fd by SCM_RIGHTS)─► zygote ─fork─► warm
supervisor (unshares namespaces, builds the mount view; pid outside) ─fork─► child (pid 1 of a new PID
namespace; cgroups, /proc, pivot_root, rlimits, uid drop, no_new_privs, seccomp), all before any request.
The host then talks to that supervisor over the execution's own socket (request, live events, result
and files), so the zygote never holds user data, an execution survives a zygote restart, and closing
the socket stops the execution.
"""

from __future__ import annotations

from ._executor import Executor, emit, unique_name
from ._isolation import isolation_problem, resolve_isolation
from ._results import EventCallback, ExecutionEvent, ExecutionResult, FileRef, GeneratedFile

__all__ = [
    "EventCallback",
    "ExecutionEvent",
    "ExecutionResult",
    "Executor",
    "FileRef",
    "GeneratedFile",
    "emit",
    "isolation_problem",
    "resolve_isolation",
    "unique_name",
]
