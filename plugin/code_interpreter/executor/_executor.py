"""Executor: the async front of the sandbox — slots, per-user caps, the zygote's lifecycle, results."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import FileNotFound, IsolationUnavailable, SandboxCrashed, SandboxError
from ..files.names import safe_filename
from ..packages.runtime import Runtime
from ..sandbox import cgroups
from ..sandbox.mounts import INPUTS_DIR
from ..settings import Settings
from ._client import ZygoteProcess
from ._results import ExecutionResult, FileRef, GeneratedFile

log = logging.getLogger("code_interpreter.executor")

START_TIMEOUT_S = 120.0  # the first start may build matplotlib's font cache
RESULT_GRACE_S = 5.0  # the supervisor enforces the timeout; the host waits this much longer at most
LAYER_NAMES = ("netns", "mountns", "pidns", "ipcns", "utsns", "userns", "uid_drop", "seccomp", "rlimits",
               "cgroup_memory", "cgroup_pids", "no_new_privs")  # fmt: skip
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def isolation_problem(mode: str) -> str | None:
    """Why ``mode`` cannot be had on this host, or None when it can (the zygote's probe confirms)."""
    if mode == "none":
        return None
    if not sys.platform.startswith("linux"):
        return f"{mode} isolation needs Linux namespaces (this is {sys.platform})"
    if mode == "strict" and os.geteuid() != 0:
        return (
            f"strict isolation needs root (a real uid switch to the sandbox uid); this process runs as uid "
            f"{os.geteuid()} — use isolation='namespaces' (user namespaces)"
        )
    if mode == "namespaces":
        try:
            if int(Path("/proc/sys/user/max_user_namespaces").read_text()) == 0:
                return "user namespaces are disabled (user.max_user_namespaces = 0)"
            flag = Path("/proc/sys/kernel/unprivileged_userns_clone")
            if os.geteuid() != 0 and flag.exists() and flag.read_text().strip() == "0":
                return "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0)"
        except (OSError, ValueError):
            return "cannot read the user-namespace settings under /proc/sys"
    return None


def _relative_name(name: object) -> str:
    """A generated file's path relative to the work dir, from the sandboxed process's own report.

    That report is plain data the user's code could forge: every component is made harmless, and
    nothing absolute or climbing out (``..``) survives.
    """
    parts = [p for p in str(name).replace("\\", "/").split("/") if p.strip() not in ("", ".", "..")]
    return "/".join(safe_filename(p) for p in parts) or "file"


def _fmt_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


class Executor:
    """Runs untrusted Python in sandboxed children of a warm zygote; many at once from one event loop."""

    def __init__(self, settings: Settings, runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime
        self.mode = settings.isolation
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
        for sub in ("root", "work"):
            (self._dir / sub).mkdir(parents=True, exist_ok=True)
        # The mount point of each execution's tmpfs root; the mounts live only in private namespaces.
        os.chmod(self._dir / "root", 0o755)
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
            "work_root": str(self._dir / "work"),
            "pool_size": min(4, s.max_parallel),
            "max_timeout": s.max_timeout,
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

    def status(self) -> dict[str, Any]:
        """Mode, each isolation layer and whether it is active, the zygote, slot usage."""
        zygote = self._zygote
        ready = zygote.ready if zygote is not None else {}
        probe_layers = (ready.get("probe") or {}).get("layers", {})
        return {
            "mode": self.mode,
            "layers": {name: bool(probe_layers.get(name, False)) for name in LAYER_NAMES},
            "zygote_pid": zygote.pid if zygote is not None and zygote.alive else None,
            "zygote_starts": self._starts,
            "preloaded": list(ready.get("preloaded", [])),
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
    ) -> ExecutionResult:
        """Run ``code`` for ``user_id`` with ``files`` visible read-only; user errors come back as data.

        Args:
            code: Python source (any text; NUL bytes and syntax errors give a failed result).
            user_id: whose execution this is (per-user parallel cap).
            files: the user's files, shown read-only at ``FILES[file_id]``.
            timeout: wall-clock seconds; clamped to settings (None → default), with a note.
        Returns:
            ExecutionResult. Raises SandboxError only when the sandbox itself cannot be started.
        """
        effective, note = self.settings.clamp_timeout(timeout)
        notes = [note] if note else []
        size = len(code.encode("utf-8", "surrogatepass"))
        if size > self.settings.max_code_bytes:
            return self._failure(
                f"Code too large: {size} bytes (the maximum is {self.settings.max_code_bytes}); "
                "load data from files instead of embedding it in the code",
                notes,
            )
        inputs = self._inputs(files)
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
            return await self._run(code, inputs, effective, notes)
        finally:
            self._running -= 1
            self._slots.release()
            user_sem.release()
            self._user_release(str(user_id))

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

    def _inputs(self, files: Sequence[FileRef]) -> list[dict[str, str]]:
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
                    "the sandbox uid "
                    "cannot read it — create cached copies with mode 0644"
                )
            safe_id = _SAFE.sub("_", ref.file_id)[:80] or "file"
            name = (
                _SAFE.sub("_", os.path.basename(ref.filename.replace("\x00", ""))).lstrip(".")[:120] or "data"
            )
            inside = str(ref.path) if self.mode == "none" else f"{INPUTS_DIR}/{safe_id}/{name}"
            out.append({"file_id": ref.file_id, "host_path": str(ref.path), "path": inside,
                        "filename": ref.filename, "type": ref.file_type})  # fmt: skip
        return out

    async def _run(
        self, code: str, inputs: list[dict[str, str]], limit_s: float, notes: list[str]
    ) -> ExecutionResult:
        exec_id = f"{os.getpid()}-{next(self._ids)}"
        request: dict[str, Any] = {"id": exec_id, "code": code, "timeout": limit_s, "files": inputs}
        started = time.perf_counter()
        try:
            zygote = await self._ensure_zygote()
            header, blobs = await zygote.run(request, limit_s + RESULT_GRACE_S)
        except SandboxCrashed as exc:
            return self._failure(f"Sandbox crashed: {exc}", notes, time.perf_counter() - started)
        except TimeoutError:
            return self._failure(
                f"Sandbox did not report within {limit_s + RESULT_GRACE_S:.0f} s and was killed; "
                "run the code again",
                notes,
                time.perf_counter() - started,
            )
        return self._result(header, blobs, limit_s, notes, time.perf_counter() - started)

    def _failure(self, error: str, notes: list[str], elapsed: float = 0.0) -> ExecutionResult:
        return ExecutionResult(
            success=False, output="", error=error, stderr="", execution_time=elapsed, return_code=-1,
            truncated=False, isolation=self.mode, generated=(), notes=tuple(notes),
        )  # fmt: skip

    def _result(
        self, header: dict[str, Any], blobs: list[bytes], timeout: float, notes: list[str], elapsed: float
    ) -> ExecutionResult:
        status = header.get("status")
        stdout = str(header.get("stdout", ""))
        stderr = str(header.get("stderr", ""))
        rc = int(header.get("exit_code", -1))
        notes = notes + [str(n) for n in header.get("notes", [])]
        truncated = bool(header.get("stdout_dropped") or header.get("stderr_dropped"))
        if truncated:
            notes.append(f"output was longer than {self.settings.max_output_bytes} bytes; head and tail kept")
        error: str | None = None
        if status == "timeout":
            rc = -1
            error = (
                f"Execution timeout after {_fmt_seconds(timeout)} seconds — pass timeout= up to "
                f"{self.settings.max_timeout}, or process the data in chunks"
            )
        elif status == "bad_report":
            rc = -1
            error = (
                f"Execution stopped: {header.get('error', 'invalid report')} — the code wrote into the "
                "sandbox's own status channel (an inherited file descriptor); write only to your own files"
            )
        elif status != "ok":
            rc = -1
            error = f"Sandbox setup failed: {header.get('error', 'unknown error')}"
        elif header.get("oom"):
            error = (
                f"Memory limit exceeded ({self.settings.memory_limit_mb} MB): the process was killed — "
                "process the data in chunks or use smaller dtypes"
            )
        elif "signal" in header:
            sig = int(header["signal"])
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
            reason = " (CPU time limit)" if sig == signal.SIGXCPU else ""
            error = f"Process killed by signal {name}{reason}"
            if stderr.strip():
                error += "\n" + stderr.strip()
        elif rc != 0:
            error = stderr.strip() or f"Process exited with code {rc}"
        generated = tuple(
            GeneratedFile(
                filename=_relative_name(f["filename"]), data=blob, mime=str(f.get("mime", "")), size=len(blob)
            )
            for f, blob in zip(header.get("files", []), blobs, strict=False)
        )
        return ExecutionResult(
            success=error is None, output=stdout, error=error, stderr=stderr, execution_time=elapsed,
            return_code=rc, truncated=truncated, isolation=self.mode, generated=generated, notes=tuple(notes),
        )  # fmt: skip
