"""Executor: the async front of the sandbox — slots, per-user caps, the zygote, channels, results."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import itertools
import logging
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ..errors import FileNotFound, IsolationUnavailable, SandboxCrashed, SandboxError
from ..files.names import safe_filename
from ..packages.runtime import Runtime
from ..sandbox import cgroups
from ..sandbox.mounts import INPUTS_DIR
from ..settings import Settings
from ._channel import ExecChannel
from ._client import ZygoteProcess
from ._isolation import isolation_problem, resolve_isolation
from ._results import EventCallback, ExecutionEvent, ExecutionResult, FileRef, Outcome, failure, from_report

__all__ = ["Executor", "emit", "isolation_problem", "unique_name"]

log = logging.getLogger("code_interpreter.executor")

START_TIMEOUT_S = 120.0  # the first start may build matplotlib's font cache
RESULT_GRACE_S = 5.0  # the supervisor enforces the timeout; the host waits this much longer at most
KILL_VERIFY_S = 2.0  # after a kill, every process of the execution must be gone within this
SESSION_CPU_S = 3600  # CPU seconds a session's process may use in all (each cell has its own budget too)
LAYER_NAMES = ("netns", "mountns", "pidns", "ipcns", "utsns", "userns", "uid_drop", "seccomp", "rlimits",
               "cgroup_memory", "cgroup_pids", "no_new_privs")  # fmt: skip
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class Executor:
    """Runs untrusted Python in sandboxed children of a warm zygote; many at once from one event loop."""

    def __init__(self, settings: Settings, runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime
        self.mode, self.mode_reason = resolve_isolation(settings.isolation)
        self._zygote: ZygoteProcess | None = None
        self._start_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(settings.max_parallel)
        self._user_slots: dict[str, tuple[asyncio.Semaphore, int]] = {}
        self._ids = itertools.count(1)
        self._running = 0
        self._queued = 0
        self._starts = 0
        self._closed = False
        self._retired: set[asyncio.Task[None]] = set()
        self._inflight: set[ExecChannel] = set()
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

    def _config(self, runtime: Runtime) -> dict[str, Any]:
        s = self.settings
        spec = importlib.util.find_spec("pyseccomp") if self.mode != "none" else None
        return {
            "mode": self.mode,
            "uid": s.sandbox_uid,
            "gid": s.sandbox_gid,
            "memory_mb": s.memory_limit_mb,
            "max_processes": s.max_processes,
            "max_parallel": s.max_parallel,
            "max_open_files": s.max_open_files,
            "max_write_mb": s.max_write_mb,
            "work_mb": s.work_dir_mb,
            "tmp_mb": s.work_dir_mb,
            "max_output_bytes": s.max_output_bytes,
            "max_generated_files": s.max_generated_files,
            "max_generated_bytes": s.max_generated_bytes,
            "readonly_paths": [str(p) for p in runtime.readonly_paths()],
            "root_dir": str(self._dir / "root"),
            "stage_dir": str(self._dir / "stage"),
            "work_root": str(self._dir / "work"),
            "pool_size": min(4, s.max_parallel),
            "max_timeout": s.max_timeout,
            "session_cpu_s": SESSION_CPU_S,
            "preload": list(s.preload_modules),
            "pyseccomp": spec.origin if spec is not None else None,
        }

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
        task = asyncio.create_task(zygote.shutdown(), name=f"retire-zygote-{zygote.pid}")
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
        """Stop the zygote; executions already running finish (bounded by their timeouts)."""
        async with self._start_lock:
            self._closed = True
            zygote, self._zygote = self._zygote, None
        if zygote is not None:
            await zygote.shutdown()
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
        return [(c.supervisor_pid, c.child_pid) for c in self._inflight if c.supervisor_pid and c.child_pid]

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
            "running": self._running,
            "queued": self._queued,
            "max_parallel": self.settings.max_parallel,
            "per_user_parallel": self.settings.per_user_parallel,
            "runtime": str(self.runtime.path),
        }

    # -- executions --------------------------------------------------------------
    async def execute(
        self,
        code: str,
        *,
        user_id: str,
        files: Sequence[FileRef] = (),
        timeout: float | None,  # noqa: ASYNC109 - the public contract: a per-call wall-clock limit
        on_event: EventCallback | None = None,
    ) -> ExecutionResult:
        """Run ``code`` for ``user_id`` with ``files`` visible read-only; user errors come back as data.

        Args:
            code: Python source (any text; NUL bytes and syntax errors give a failed result).
            user_id: whose execution this is (per-user parallel cap).
            files: the user's files, shown read-only at ``FILES[file_id]`` and by name in the work dir.
            timeout: wall-clock seconds; clamped to settings (None → default), with a note.
            on_event: called with each chunk of stdout/stderr as the sandbox prints it.
        Returns:
            ExecutionResult. Raises SandboxError only when the sandbox itself cannot be started.
        """
        effective, note = self.settings.clamp_timeout(timeout)
        notes = [note] if note else []
        refusal = self.code_refusal(code)
        if refusal:
            return failure(refusal, self.mode, notes)
        inputs = self.inputs(files, {})
        async with self.slot(user_id):
            started = time.perf_counter()
            try:
                channel = await self.open_channel()
            except SandboxCrashed as exc:
                return failure(f"Sandbox crashed: {exc}", self.mode, notes, time.perf_counter() - started)
            try:
                stream = on_event is not None
                start = {"op": "start", "kind": "oneshot", "code": code, "timeout": effective,
                         "files": inputs, "stream": stream}  # fmt: skip
                await channel.send(start)
                result, _header = await self.await_result(
                    channel, self.outcome(effective, notes), on_event, started
                )
                return result
            finally:
                await self.close_channel(channel)

    def code_refusal(self, code: str) -> str | None:
        """Why ``code`` is not even sent to the sandbox (too large), or None."""
        size = len(code.encode("utf-8", "surrogatepass"))
        if size > self.settings.max_code_bytes:
            return (
                f"Code too large: {size} bytes (the maximum is {self.settings.max_code_bytes}); "
                "load data from files instead of embedding it in the code"
            )
        return None

    def outcome(self, timeout: float, notes: list[str]) -> Outcome:
        """What turning a report into a result needs to know of this call."""
        s = self.settings
        return Outcome(self.mode, timeout, s.max_timeout, s.max_output_bytes, s.memory_limit_mb, notes)

    @contextlib.asynccontextmanager
    async def slot(self, user_id: str) -> AsyncIterator[None]:
        """Hold one of the parallel slots (and one of the user's) while running."""
        user_sem = self._user_semaphore(str(user_id))
        self._queued += 1
        try:
            await user_sem.acquire()
            try:
                await self._slots.acquire()
            except BaseException:
                user_sem.release()
                raise
        finally:
            self._queued -= 1
        self._running += 1
        try:
            yield
        finally:
            self._running -= 1
            self._slots.release()
            user_sem.release()
            self._user_release(str(user_id))

    async def open_channel(self) -> ExecChannel:
        """A new execution socket to a warm supervisor (SandboxCrashed if the zygote is gone).

        The channel counts as in flight (:meth:`processes`) until :meth:`close_channel`.
        """
        zygote = await self._ensure_zygote()
        channel = await zygote.open_channel(f"{os.getpid()}-{next(self._ids)}")
        self._inflight.add(channel)
        return channel

    async def close_channel(self, channel: ExecChannel) -> None:
        """Close an execution socket: a supervisor still running stops its child and exits."""
        self._inflight.discard(channel)
        await channel.aclose()

    async def await_result(
        self,
        channel: ExecChannel,
        outcome: Outcome,
        on_event: EventCallback | None,
        started: float,
        *,
        session: bool = False,
    ) -> tuple[ExecutionResult, dict[str, Any]]:
        """Read the channel until the cell's ``result``; live events go to ``on_event`` on the way.

        On a timeout of the supervisor itself, or when the channel ends early, the execution's processes
        are killed and their end verified; the result then says what happened.
        """
        wait = outcome.timeout + RESULT_GRACE_S + (2.0 if session else 0.0)
        try:
            async with asyncio.timeout(wait):
                while True:
                    frame, blobs = await channel.receive()
                    op = frame.get("op")
                    if op == "event" and on_event is not None:
                        text = str(frame.get("text", ""))
                        event = ExecutionEvent(
                            "stderr" if frame.get("stream") == "stderr" else "stdout", text
                        )
                        await emit(on_event, event)
                    elif op == "result":
                        frame["session"] = session
                        return from_report(frame, blobs, outcome, time.perf_counter() - started), frame
                    elif op == "ended":
                        raise SandboxCrashed(str(frame.get("reason") or "the session's process is gone"))
        except TimeoutError:
            await self.kill_and_verify(channel)
            error = f"Sandbox did not report within {wait:.0f} s and was killed; run the code again"
        except SandboxCrashed as exc:
            await self.kill_and_verify(channel)
            error = f"Sandbox crashed: {exc}"
        return failure(error, self.mode, outcome.notes, time.perf_counter() - started), {"alive": False}

    async def kill_and_verify(self, channel: ExecChannel) -> bool:
        """Kill an execution's supervisor and child, then check every one of them is gone; False if not."""
        pids = [p for p in (channel.supervisor_pid, channel.child_pid) if p]
        if channel.zygote is not None and channel.zygote.alive:
            await channel.zygote.kill(channel.exec_id)
        pidfds: list[int] = []
        for pid in pids:
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue  # already gone (and reaped)
            pidfds.append(fd)
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        try:
            gone = await asyncio.to_thread(_wait_all_exited, pidfds, KILL_VERIFY_S)
        finally:
            for fd in pidfds:
                os.close(fd)
        if not gone:
            log.error("processes %s of a killed execution were still alive after %.0f s", pids, KILL_VERIFY_S)
        return gone

    def _user_semaphore(self, user_id: str) -> asyncio.Semaphore:
        sem, refs = self._user_slots.get(user_id, (None, 0))
        if sem is None:
            sem = asyncio.Semaphore(self.settings.per_user_parallel)
        self._user_slots[user_id] = (sem, refs + 1)
        return sem

    def _user_release(self, user_id: str) -> None:
        sem, refs = self._user_slots[user_id]
        if refs <= 1:
            del self._user_slots[user_id]
        else:
            self._user_slots[user_id] = (sem, refs - 1)

    def inputs(self, files: Sequence[FileRef], names: dict[str, str]) -> list[dict[str, str]]:
        """The supervisor's view of ``files``: host path, path inside, and a unique name in the work dir.

        ``names`` maps file ids already shown (in earlier cells of a session) to their names; it is
        extended with the new ones.
        """
        out: list[dict[str, str]] = []
        seen: set[str] = set()
        for ref in files:
            if ref.file_id in seen:
                continue
            seen.add(ref.file_id)
            try:
                st = os.stat(ref.path)
            except OSError:
                raise FileNotFound(
                    f"file {ref.file_id} is not available on this host; upload it again"
                ) from None
            if self.mode == "strict" and not st.st_mode & 0o004:
                raise SandboxError(
                    f"the local copy of file {ref.file_id} ({ref.path}) is not world-readable; "
                    "the sandbox uid cannot read it — create cached copies with mode 0644"
                )
            safe_id = _SAFE.sub("_", ref.file_id)[:80] or "file"
            name = (
                _SAFE.sub("_", os.path.basename(ref.filename.replace("\x00", ""))).lstrip(".")[:120] or "data"
            )
            inside = str(ref.path) if self.mode == "none" else f"{INPUTS_DIR}/{safe_id}/{name}"
            if ref.file_id not in names:
                names[ref.file_id] = unique_name(ref.filename, set(names.values()))
            out.append({"file_id": ref.file_id, "host_path": str(ref.path), "path": inside,
                        "filename": ref.filename, "type": ref.file_type,
                        "name": names[ref.file_id]})  # fmt: skip
        return out


def unique_name(filename: str, taken: set[str]) -> str:
    """The input's name in the work dir: its own sanitised name, ``name (2).ext`` when that is taken."""
    name = safe_filename(os.path.basename(filename.replace("\\", "/")), default="data")
    if name.startswith("."):
        name = "_" + name[1:]
    stem, ext = os.path.splitext(name)
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{stem} ({n}){ext}", n + 1
    return candidate


async def emit(on_event: EventCallback, event: ExecutionEvent) -> None:
    """Give ``event`` to the host's callback; a failing callback is logged, never fatal to the execution."""
    try:
        result = on_event(event)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("the on_event callback failed for a %s event", event.kind)


def _wait_all_exited(pidfds: list[int], wait_s: float) -> bool:
    import select

    deadline = time.monotonic() + wait_s
    pending = list(pidfds)
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        ready, _, _ = select.select(pending, [], [], left)
        pending = [fd for fd in pending if fd not in ready]
    return True
