"""The executor: a warm fork server ("zygote") running each execution in a sandboxed child.

Host side (this package, async): :class:`Executor` owns the zygote process, the parallel slots and
per-user caps, and turns the supervisor's report into an :class:`ExecutionResult`. Child side
(``_zygote.py``, ``_supervisor.py``, ``_streams.py``, ``_wire.py``; stdlib only): loaded by file path in
the sandbox runtime interpreter, together with ``code_interpreter/sandbox`` and ``code_interpreter/inside``.

Process model: host ─(Unix socket, frames + SCM_RIGHTS)─► zygote ─fork─► supervisor (root; unshares
namespaces, builds the mount view, enforces the timeout, captures output, collects files) ─fork─►
child (pid 1 of a new PID namespace; cgroups, /proc, pivot_root, rlimits, uid drop, no_new_privs,
seccomp, then the user's code). The supervisor writes its result straight to a pipe the host created,
so an execution survives a zygote restart and the zygote never buffers output or files.
"""

from __future__ import annotations

from ._executor import Executor, isolation_problem
from ._results import ExecutionResult, FileRef, GeneratedFile

__all__ = ["ExecutionResult", "Executor", "FileRef", "GeneratedFile", "isolation_problem"]
