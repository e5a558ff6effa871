"""Executor: the host's sandbox service — the zygote's life, the parallel slots, the processes in flight.

It starts (and restarts) the zygote, hands out execution sockets to :class:`SandboxProcess` objects
(:meth:`Executor.connect`), and keeps count of them. Running code is the processes' business: a
one-shot call (:meth:`Executor.execute`) is a process of one cell.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import logging
import os
import signal
from collections.abc import Sequence
from typing import Any

from ..errors import IsolationUnavailable, SandboxError
from ..packages.runtime import Runtime
from ..runtime.config import RuntimeConfig
from ..runtime.sandbox import cgroups, seccomp
from ..settings import Settings
from .channel import ExecChannel
from .isolation import isolation_problem, resolve_isolation
from .process import SandboxProcess
from .results import EventCallback, ExecutionResult, FileRef
from .slots import Slots
from .zygote import ZygoteProcess

__all__ = ["Executor"]

log = logging.getLogger("code_interpreter.executor")

START_TIMEOUT_S = 120.0  # the first start may build matplotlib's font cache
SESSION_CPU_S = 3600  # CPU seconds a session's process may use in all (each cell has its own budget too)
LAYER_NAMES = ("netns", "mountns", "pidns", "ipcns", "utsns", "userns", "uid_drop", "seccomp", "rlimits",
               "cgroup_memory", "cgroup_pids", "no_new_privs")  # fmt: skip


class Executor:
    """Runs untrusted Python in sandboxed children of a warm zygote; many at once from one event loop."""

    def __init__(self, settings: Settings, runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime
        self.mode, self.mode_reason = resolve_isolation(settings.isolation)
        self.slots = Slots(settings.max_parallel, settings.per_user_parallel)
        """The parallel slots every cell (and save) holds while it runs."""
        self._zygote: ZygoteProcess | None = None
        self._start_lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._starts = 0
        self._closed = False
        self._retired: set[asyncio.Task[None]] = set()
        self._live: dict[SandboxProcess, ExecChannel] = {}
        self._closing: set[asyncio.Task[bool]] = set()
        self._dir = settings.home / "executor"

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        """Start the zygote (idempotent); IsolationUnavailable if the configured isolation cannot be had."""
        await self._ensure_zygote()

    async def _ensure_zygote(self) -> ZygoteProcess:
        zygote = self._zygote
        if zygote is not None and zygote.alive:
            return zygote
        async with self._start_lock:
            if self._zygote is not None and self._zygote.alive:
                return self._zygote
            if self._closed:
                raise SandboxError("the executor is closed")
            if self._zygote is not None:
                log.warning("the zygote (pid %s) died; starting a new one", self._zygote.pid)
                self._retire(self._zygote)
            self._zygote = await self._spawn(self.runtime)
            return self._zygote

    async def _spawn(self, runtime: Runtime) -> ZygoteProcess:
        if self.mode == "unavailable":
            raise IsolationUnavailable(
                f"{self.mode_reason}. Executions are refused rather than run without a sandbox; run as root "
                "(strict), enable unprivileged user namespaces, or set isolation='none' explicitly "
                "(CODE_INTERPRETER_ISOLATION=none; no sandbox, logs a warning)."
            )
        problem = isolation_problem(self.mode)
        if problem:
            raise IsolationUnavailable(
                f"{problem}. To run without a sandbox, set isolation='none' explicitly "
                "(CODE_INTERPRETER_ISOLATION=none); that logs a warning."
            )
        if self.mode == "none":
            log.warning(
                "isolation='none': user code runs WITHOUT a sandbox, as uid %d, "
                "with this host's files and network",
                os.geteuid(),
            )
        if not runtime.exists():
            raise SandboxError(
                f"the sandbox runtime at {runtime.path} is missing; call ensure_runtime() first"
            )
        await asyncio.to_thread(self._prepare_dirs)
        zygote = ZygoteProcess(
            runtime.python, self._config(runtime), self._zygote_env(), self._dir / "zygote.log"
        )
        ready = await zygote.start(START_TIMEOUT_S)
        self._starts += 1
        if not ready.get("ok"):
            await zygote.terminate()
            probe = ready.get("probe") or {}
            reason = ready.get("error") or probe.get("error") or probe.get("stderr") or "unknown"
            raise IsolationUnavailable(
                f"{self.mode} isolation failed its self-test here: {reason}. Fix the host, choose another "
                "isolation mode, or set isolation='none' explicitly (no sandbox; logs a warning)."
            )
        return zygote

    def _prepare_dirs(self) -> None:
        for sub in ("root", "work", "stage"):
            (self._dir / sub).mkdir(parents=True, exist_ok=True)
        # The mount points of each execution's tmpfs root and input staging; the mounts live only in
        # private namespaces.
        os.chmod(self._dir / "root", 0o755)
        os.chmod(self._dir / "stage", 0o700)
        (self._dir / "mpl").mkdir(exist_ok=True)
        (self._dir / "work" / "probe").mkdir(exist_ok=True)

    def _config(self, runtime: Runtime) -> RuntimeConfig:
        s = self.settings
        spec = importlib.util.find_spec("pyseccomp") if self.mode != "none" else None
        census = os.environ.get(seccomp.CENSUS_ENV) == "1"
        if census:
            log.warning("%s=1: seccomp census mode, no system call is refused (diagnostics only)",
                        seccomp.CENSUS_ENV)  # fmt: skip
        return RuntimeConfig(
            mode=self.mode, uid=s.sandbox_uid, gid=s.sandbox_gid, memory_mb=s.memory_limit_mb,
            max_processes=s.max_processes, max_parallel=s.max_parallel, max_open_files=s.max_open_files,
            work_bytes=s.work_dir_bytes, max_output_bytes=s.max_output_bytes,
            max_generated_files=s.max_generated_files, max_generated_bytes=s.max_generated_bytes,
            max_snapshot_bytes=s.max_snapshot_bytes, max_timeout=float(s.max_timeout),
            session_cpu_s=SESSION_CPU_S, save_timeout=float(s.session_save_timeout_s),
            root_dir=str(self._dir / "root"), stage_dir=str(self._dir / "stage"),
            work_root=str(self._dir / "work"),
            readonly_paths=tuple(str(p) for p in runtime.readonly_paths()),
            preload=tuple(s.preload_modules), pool_size=min(4, s.max_parallel),
            pyseccomp=spec.origin if spec is not None else None, seccomp_census=census,
            seccomp_log=os.environ.get(seccomp.LOG_ENV) or None,
        )  # fmt: skip

    def _zygote_env(self) -> dict[str, str]:
        # Built from nothing: the host's variables (API keys, database URIs) never reach the zygote.
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(self._dir / "work" / "probe"),
            "MPLBACKEND": "Agg",
            "MPLCONFIGDIR": str(self._dir / "mpl"),
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }

    def _retire(self, zygote: ZygoteProcess) -> None:
        # A retired zygote exits once its running executions (sessions included) have ended.
        task = asyncio.create_task(zygote.shutdown(wait=None), name=f"retire-zygote-{zygote.pid}")
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def restart(self, runtime: Runtime | None = None) -> None:
        """Start a fresh zygote (on ``runtime`` if given), retire the old one; running executions finish."""
        async with self._start_lock:
            if self._closed:
                return
            new_runtime = runtime or self.runtime
            fresh = await self._spawn(new_runtime)
            old, self._zygote, self.runtime = self._zygote, fresh, new_runtime
            if old is not None:
                self._retire(old)

    async def close(self) -> None:
        """Stop the zygote and every process still in flight (killed and verified)."""
        async with self._start_lock:
            self._closed = True
            zygote, self._zygote = self._zygote, None
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        if self._live:
            await asyncio.gather(*(p.close(polite=False) for p in list(self._live)))
        if zygote is not None:
            await zygote.shutdown()
        for task in list(self._retired):
            task.cancel()
        if self._retired:
            await asyncio.gather(*self._retired, return_exceptions=True)
        if self.mode == "strict":
            # Bases of zygotes that died (killed, crashed) are removed once their executions ended.
            await asyncio.to_thread(cgroups.sweep_stale)

    async def kill_zygote(self) -> None:
        """SIGKILL the zygote (tests and operators: simulate a crash; the next call restarts it)."""
        if self._zygote is not None and self._zygote.pid is not None:
            os.kill(self._zygote.pid, signal.SIGKILL)
            assert self._zygote.proc is not None
            await self._zygote.proc.wait()

    def processes(self) -> list[tuple[int, int]]:
        """(supervisor pid, sandboxed child pid) of each execution and session in flight, host pids."""
        return [
            (c.supervisor_pid, c.child_pid) for c in self._live.values() if c.supervisor_pid and c.child_pid
        ]

    def status(self) -> dict[str, Any]:
        """Mode (and why it was chosen), each isolation layer and whether it is active, the zygote, slots."""
        zygote = self._zygote
        ready = zygote.ready if zygote is not None else {}
        probe_layers = (ready.get("probe") or {}).get("layers", {})
        return {
            "mode": self.mode,
            "mode_reason": self.mode_reason,
            "layers": {name: bool(probe_layers.get(name, False)) for name in LAYER_NAMES},
            "zygote_pid": zygote.pid if zygote is not None and zygote.alive else None,
            "zygote_starts": self._starts,
            "preloaded": list(ready.get("preloaded", [])),
            "hidden_host_packages": list(ready.get("hidden", [])),
            "running": self.slots.running,
            "queued": self.slots.queued,
            "max_parallel": self.settings.max_parallel,
            "per_user_parallel": self.settings.per_user_parallel,
            "runtime": str(self.runtime.path),
        }

    # -- processes ----------------------------------------------------------------
    def process(self, user_id: str, *, keep_state: bool) -> SandboxProcess:
        """A sandboxed process for ``user_id`` (started by its first cell): one-shot, or a session's."""
        return SandboxProcess(self, str(user_id), keep_state=keep_state)

    async def execute(
        self,
        code: str,
        *,
        user_id: str,
        files: Sequence[FileRef] = (),
        timeout: float | None,  # noqa: ASYNC109 - the public contract: a per-call wall-clock limit
        on_event: EventCallback | None = None,
    ) -> ExecutionResult:
        """Run ``code`` once for ``user_id`` with ``files`` visible read-only (a process of one cell).

        The request is taken as it is (the interpreter's entrance validates it): ``timeout`` None is the
        default, and a value over the maximum is the maximum. User errors come back as data; raises
        SandboxError only when the sandbox itself cannot be started.
        """
        limit, note = self.settings.clamp_timeout(timeout)
        process = self.process(user_id, keep_state=False)
        try:
            return await process.run(code, limit, files, notes=[note] if note else [], on_event=on_event)
        finally:
            self.close_later(process)

    def close_later(self, process: SandboxProcess) -> None:
        """Close ``process`` in the background: a one-shot supervisor exits on its own after its result
        (tearing a namespace down can take a while); this verifies it did, and kills what did not."""
        self._live.pop(process, None)  # its cell is over: no longer in flight
        task = asyncio.create_task(process.close(polite=True), name="close-sandbox-process")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def connect(self, process: SandboxProcess) -> ExecChannel:
        """A new execution socket to a warm supervisor for ``process`` (SandboxCrashed: no zygote)."""
        zygote = await self._ensure_zygote()
        channel = await zygote.open_channel(f"{os.getpid()}-{next(self._ids)}")
        self._live[process] = channel
        return channel

    def disconnect(self, process: SandboxProcess, channel: ExecChannel) -> None:
        """``process`` ended: it no longer counts as in flight."""
        if self._live.get(process) is channel:
            del self._live[process]
