"""CodeInterpreter: owns the settings, storage, file store, package manager, executor and token bookkeeping.

One tool call flows through :meth:`CodeInterpreter.execute`:
validate → policy (a courtesy for the model) → packages (install approved imports) →
pin the user's files (``files/pins.py``) → the executor (the OS sandbox is the wall): a fresh child
for a one-shot call, or the user's live session (``executor/sessions.py``) → store generated files.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from .errors import CodeInterpreterError, PackageError, StorageUnavailable
from .executor import EventCallback, ExecutionEvent, Executor, emit, resolve_isolation
from .executor.sessions import MAX_SESSION_ID, SessionManager
from .files import FileManager
from .files.pins import PINS_DIR, STALE_PIN_MARGIN_S, pin_files, sweep_stale_pins
from .packages import PackageManager, ProgressCallback
from .policy import check_code, policy_message
from .settings import Settings
from .storage import Storage
from .tokens import TokenCounter, UsageStore

__all__ = ["CodeInterpreter"]

log = logging.getLogger(__name__)


def _failure(
    error: str, *, notes: Sequence[str] = (), isolation: str = "", started: float | None = None
) -> dict[str, Any]:
    """A result in the seed's shape for a call refused before it ran."""
    return {
        "success": False,
        "output": "",
        "error": error,
        "stderr": "",
        "execution_time": 0.0 if started is None else round(time.perf_counter() - started, 4),
        "return_code": 1,
        "generated_files": [],
        "truncated": False,
        "isolation": isolation,
        "notes": list(notes),
    }


class CodeInterpreter:
    """The plugin's entry point: ``async with CodeInterpreter() as interp: await interp.execute(code)``."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        db_handler: Any = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        """Create an interpreter; nothing starts until :meth:`start` (or ``async with``).

        Args:
            settings: configuration; default :meth:`Settings.from_env`.
            db_handler: the seed's database handle (an AsyncDatabase or an object with ``.db``);
                when given, it is used instead of ``settings.mongodb_uri`` and is not closed by us.
            progress: callback for long steps (creating the runtime, installing packages).
        """
        self.settings = settings if settings is not None else Settings.from_env()
        self.packages = PackageManager(self.settings)
        self._storage = Storage(self.settings, db_handler)
        self._progress = progress
        self._files: FileManager | None = None
        self._usage: UsageStore | None = None
        self.token_counter = TokenCounter(settings=self.settings)
        self._executor: Executor | None = None
        self._start_lock = asyncio.Lock()
        self._executor_lock = asyncio.Lock()
        self._started = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.isolation = resolve_isolation(self.settings.isolation)
        """(mode, reason): the sandbox this host gives, resolved from ``settings.isolation``."""
        self.sessions = SessionManager(self.settings, None, self.executor)
        """Live sessions (``list``, ``reset``, ``close``); saved to the file store once started."""

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> CodeInterpreter:
        """Connect to MongoDB (or start the embedded server) and create indexes. Idempotent."""
        async with self._start_lock:
            if self._started:
                return self
            db = await self._storage.start()
            self._files = FileManager(db, self.settings)
            await self._files.ensure_indexes()
            self.sessions.store = self._files.snapshots
            self._usage = UsageStore(db, daily_budget_usd=self.settings.daily_budget_usd)
            await self._usage.ensure_indexes()
            await asyncio.to_thread(
                sweep_stale_pins,
                self.settings.home / PINS_DIR,
                self.settings.max_timeout + STALE_PIN_MARGIN_S,
            )
            if self.settings.cleanup_interval_s > 0:
                self._files.start_cleanup_task(self.settings.cleanup_interval_s)
            self._started = True
            self._loop = asyncio.get_running_loop()
            return self

    async def close(self) -> None:
        """Save and stop live sessions, stop the executor and the cleanup task, close the database."""
        if self._executor is not None:
            await self.sessions.close_all()
            await self._executor.close()
            self._executor = None
        if self._files is not None:
            await self._files.stop_cleanup_task()
        await self._storage.close()
        self._started = False
        self._loop = None

    async def __aenter__(self) -> CodeInterpreter:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop :meth:`start` ran on (its database client and pipes are bound to it), or None."""
        return self._loop

    # -- components ----------------------------------------------------------------
    @property
    def files(self) -> FileManager:
        """The user file store (GridFS); available after :meth:`start`."""
        if self._files is None:
            raise StorageUnavailable(
                "CodeInterpreter is not started: use `async with CodeInterpreter()` or await start()"
            )
        return self._files

    @property
    def usage(self) -> UsageStore:
        """Token usage records and budgets; available after :meth:`start`."""
        if self._usage is None:
            raise StorageUnavailable(
                "CodeInterpreter is not started: use `async with CodeInterpreter()` or await start()"
            )
        return self._usage

    @property
    def db(self) -> AsyncDatabase[Any]:
        """The AsyncDatabase in use."""
        return self._storage.db

    async def executor(self) -> Executor:
        """The executor, creating the sandbox runtime and starting the fork server on first use."""
        if self._executor is not None:
            return self._executor
        async with self._executor_lock:
            if self._executor is None:
                runtime = await self.packages.ensure_runtime(progress=self._progress)
                executor = Executor(self.settings, runtime)
                await executor.start()
                self.packages.on_swap.append(executor.restart)
                self._executor = executor
            return self._executor

    # -- the tool call ---------------------------------------------------------------
    async def execute(
        self,
        code: str,
        user_id: int | str = 1,
        user_files: Sequence[str | dict[str, Any]] | None = None,
        install_packages: Sequence[str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the seed's contract: a per-call wall-clock limit
        *,
        session_id: str | None = None,
        on_event: EventCallback | None = None,
    ) -> dict[str, Any]:
        """Run ``code`` for ``user_id`` in the sandbox and return the seed's result dict.

        Args:
            code: Python source written by the model.
            user_id: the trusted user id (from the host application, never from the model).
            user_files: file ids (or the seed's file dicts with ``file_id``) the code may read; they
                appear read-only in the working directory under their own names, and in ``FILES``.
            install_packages: extra approved packages to install before running.
            timeout: wall-clock seconds, clamped to ``settings.max_timeout``.
            session_id: None runs the code in a fresh process (nothing persists). A session id (trusted,
                from the host: a channel or conversation id) runs it in that user's live session, like a
                notebook cell: variables, imports and files persist, and a saved session is restored.
            on_event: called with each :class:`~code_interpreter.executor.ExecutionEvent` as it
                happens: ``stdout``/``stderr`` chunks, each stored ``file``, then ``done``.

        Returns:
            ``{success, output, error, execution_time, return_code, generated_files, stderr, truncated,
            isolation, notes, session}``; ``generated_files`` items carry
            ``filename, data, type, mime, size, file_id``; ``session`` is ``{"id", "state", "cell"}``
            (state ``new``, ``live``, ``restored`` or ``restarted``), None for a one-shot call.
            Errors in the user's code, refusals and sandbox failures are results, not exceptions.
        """
        started = time.perf_counter()
        await self.start()
        isolation = self.isolation[0]
        if not isinstance(code, str):
            return _failure(
                f"code must be a string of Python source, got {type(code).__name__}", isolation=isolation
            )
        try:
            size = len(code.encode("utf-8"))
        except UnicodeEncodeError as exc:  # lone surrogates: not text any interpreter can run
            return _failure(_invalid_character(code, exc), isolation=isolation)
        if size > self.settings.max_code_bytes:
            return _failure(
                f"code is {size:,} bytes; the limit is {self.settings.max_code_bytes:,} bytes. "
                "Put large data in a file (upload it) and load it with load_file()",
                isolation=isolation,
            )
        if not code.strip():
            return _failure("code is empty: send the Python source to run", isolation=isolation)
        if session_id is not None and (
            not isinstance(session_id, str) or not session_id or len(session_id) > MAX_SESSION_ID
        ):
            return _failure(
                f"session_id must be a non-empty string of at most {MAX_SESSION_ID} characters "
                f"(a conversation or channel id), got {session_id!r:.80}; pass None for a one-shot call",
                isolation=isolation,
            )
        effective_timeout, timeout_note = self.settings.clamp_timeout(timeout)
        notes = [timeout_note] if timeout_note else []

        findings = check_code(code, self.settings.policy)
        if findings:
            return _failure(policy_message(findings), notes=notes, isolation=isolation, started=started)

        try:
            prepared = await self.packages.prepare(code, install_packages, progress=self._progress)
        except PackageError as exc:
            return _failure(str(exc), notes=notes, isolation=isolation, started=started)
        if prepared.refused:
            return _failure(
                prepared.refusal_message(),
                notes=[*notes, *prepared.notes],
                isolation=isolation,
                started=started,
            )
        if prepared.installed:
            notes.append(f"installed for this call: {', '.join(prepared.installed)}")
        notes.extend(prepared.notes)

        pin_dir = self.settings.home / PINS_DIR / f"{os.getpid()}-{uuid.uuid4().hex[:16]}"
        # Without a sandbox (isolation "none") a session reads its inputs at their pinned host paths.
        keep_pins = session_id is not None and isolation == "none"
        try:
            refs = await pin_files(self.files, user_files or (), user_id, pin_dir)
            if isinstance(refs, str):
                return _failure(refs, notes=notes, isolation=isolation, started=started)
            if session_id is None:
                executor = await self.executor()
                result = await executor.execute(
                    code, user_id=str(user_id), files=refs, timeout=effective_timeout, on_event=on_event
                )
            else:
                result = await self.sessions.run_cell(
                    str(user_id), session_id, code, refs, effective_timeout, on_event
                )
        except CodeInterpreterError as exc:  # storage down, corrupt bytes, no sandbox: a result, not a raise
            return _failure(str(exc), notes=notes, isolation=isolation, started=started)
        finally:
            if user_files and not keep_pins:
                await asyncio.to_thread(shutil.rmtree, pin_dir, True)

        out = result.to_dict()
        out["notes"] = [*notes, *out.get("notes", [])]
        for generated in out["generated_files"]:
            saved = await self.files.upload_file(user_id, generated["data"], generated["filename"])
            generated["file_id"] = saved.get("file_id") if saved.get("success") else None
            if not saved.get("success"):
                out["notes"].append(f"{generated['filename']} was not stored: {saved.get('error')}")
            elif on_event is not None:
                event = ExecutionEvent("file", filename=generated["filename"], file_id=generated["file_id"],
                                       mime=generated["mime"])  # fmt: skip
                await emit(on_event, event)
        if on_event is not None:
            await emit(on_event, ExecutionEvent("done", success=bool(out["success"])))
        return out

    async def status(self, *, start_sandbox: bool = True) -> dict[str, Any]:
        """What is running and how: storage, isolation mode and layers, runtime and packages.

        The layers are those the sandbox's self-test confirmed, so the executor is started here when
        the runtime already exists (a status call never creates the runtime: that can take minutes).
        ``start_sandbox=False`` skips that (seconds); ``layers`` is then None until the first execution.
        """
        await self.start()
        storage = self._storage.describe()
        try:
            await self._storage.ping()
            storage["reachable"] = True
        except StorageUnavailable as exc:
            storage["reachable"] = False
            storage["error"] = str(exc)
        runtime_ready = self.packages.runtime.is_complete()
        executor_status: dict[str, Any] = {
            "started": False,
            "reason": "the sandbox starts with the first execution"
            if runtime_ready
            else "the sandbox runtime is not created yet; the first execution creates it",
        }
        if start_sandbox and self._executor is None and runtime_ready:
            try:
                await self.executor()
            except CodeInterpreterError as exc:
                executor_status = {"started": False, "error": str(exc)}
        if self._executor is not None:
            executor_status = {"started": True, **self._executor.status()}
        stored: dict[str, int | None] = dict.fromkeys(
            ("files", "bytes", "saved_sessions", "saved_session_bytes")
        )
        if storage["reachable"]:
            try:
                stored = {**await self.files.storage_totals()}
            except CodeInterpreterError as exc:  # the server went away since the ping
                storage["error"] = str(exc)
        mb = None if stored["bytes"] is None else round(stored["bytes"] / 2**20, 2)
        saved = stored["saved_session_bytes"]
        return {
            **self.packages.status(),
            "total_user_files": stored["files"],
            "total_file_size_mb": mb,
            "total_saved_sessions": stored["saved_sessions"],
            "total_saved_session_mb": None if saved is None else round(saved / 2**20, 2),
            "file_expiration_hours": _whole(self.settings.file_expiration_hours),
            "max_file_size_mb": _whole(round(self.settings.max_file_size / 2**20, 2)),
            "storage": storage,
            "isolation": self.isolation[0],
            "isolation_reason": self.isolation[1],
            "sessions": self.sessions.status(),
            "layers": executor_status.get("layers"),
            "executor": executor_status,
            "policy": self.settings.policy,
            "settings": self.settings.to_dict(),
        }


def _whole(value: float) -> float | int:
    """An int when the value is whole (the seed reported 48 and 50, not 48.0)."""
    return int(value) if float(value).is_integer() else value


def _invalid_character(code: str, exc: UnicodeEncodeError) -> str:
    """The refusal for text that is not valid Unicode (a lone surrogate), naming the line."""
    line = code.count("\n", 0, exc.start) + 1
    return (
        f"code contains an invalid character (lone surrogate U+{ord(code[exc.start]):04X}) at line "
        f"{line}: send plain UTF-8 text, e.g. write the character as an escape like '\\u00e9'"
    )
