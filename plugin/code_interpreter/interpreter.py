"""CodeInterpreter: owns the settings, storage, file store, package manager, executor and token bookkeeping.

One tool call flows through :meth:`CodeInterpreter.execute` (the seed's dict) or :meth:`CodeInterpreter.run`
(the typed result): the request is validated once (``request.py``) → policy (a courtesy for the model) →
packages (install approved imports) → pin the user's files (``executor/pins.py``) → a sandboxed process
(``executor/process.py``): a fresh one for a one-shot call, the user's live session otherwise
(``executor/sessions.py``) → store generated files → record what it used (``ledger/``: the sandbox's
measures, the bytes stored, linked to the tool call and model request that asked).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from .errors import CodeInterpreterError, PackageNotApproved, PolicyViolation, StorageUnavailable
from .executor import (
    EventCallback,
    ExecutionEvent,
    ExecutionResult,
    Executor,
    FileRef,
    emit,
    resolve_isolation,
)
from .executor.pins import PINS_DIR, STALE_PIN_MARGIN_S, pin_files, sweep_stale_pins
from .executor.sessions import SessionManager
from .files import FileManager
from .ledger import ExecutionLink, ExecutionUsage, linked
from .packages import PackageManager, ProgressCallback
from .policy import check_code, policy_message
from .request import ExecutionRequest
from .settings import Settings
from .storage import Storage
from .tokens import TokenCounter, UsageStore

__all__ = ["CodeInterpreter"]

log = logging.getLogger(__name__)

_MAX_OWNERS = 10_000  # sessions remembered for their snapshot's usage record (the oldest forgotten past it)


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
        self._upkeep: asyncio.Task[None] | None = None
        self._start_lock = asyncio.Lock()
        self._executor_lock = asyncio.Lock()
        self._started = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.isolation = resolve_isolation(self.settings.isolation)
        """(mode, reason): the sandbox this host gives, resolved from ``settings.isolation``."""
        self.sessions = SessionManager(self.settings, None, self.executor)
        """Live sessions (``list``, ``reset``, ``close``); saved to the file store once started."""
        self.sessions.on_saved = self._record_snapshot
        self._owners: dict[tuple[str, str], int | str] = {}  # (user, session) → the user id as given

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> CodeInterpreter:
        """Connect to MongoDB (or start the embedded server) and create indexes. Idempotent."""
        if self._started:  # every call comes through here: no lock once started
            return self
        async with self._start_lock:
            if self._started:
                return self
            db = await self._storage.start()
            self._files = FileManager(db, self.settings)
            await self._files.ensure_indexes()
            self.sessions.store = self._files.session_store
            self._usage = UsageStore.from_settings(db, self.settings)
            await self._usage.ensure_indexes()
            await asyncio.to_thread(
                sweep_stale_pins,
                self.settings.home / PINS_DIR,
                self.settings.max_timeout + STALE_PIN_MARGIN_S,
            )
            if self.settings.cleanup_interval_s is not None:
                self._files.start_cleanup_task(self.settings.cleanup_interval_s)
            self._started = True
            self._loop = asyncio.get_running_loop()
            return self

    async def close(self) -> None:
        """Save and stop live sessions, stop the executor and the cleanup task, close the database."""
        if self._upkeep is not None:
            self._upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._upkeep
            self._upkeep = None
        if self._executor is not None:
            await self.sessions.close_all()
            await self._executor.close()
            self._executor = None
        if self._files is not None:
            await self._files.stop_cleanup_task()
        if self._usage is not None:  # after the sessions (their last cells are recorded), before the database
            await self._usage.close()
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
        """Token and sandbox usage records, summaries and budgets; available after :meth:`start`."""
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
                if (
                    self.settings.cleanup_interval_s is not None
                    and self.settings.runtime_rebuild_days is not None
                ):
                    self._upkeep = asyncio.create_task(
                        self._rebuild_when_due(), name="code-interpreter-upkeep"
                    )
            return self._executor

    async def _rebuild_when_due(self) -> None:
        """Rebuild the runtime aside and swap it in every ``runtime_rebuild_days`` (checked on the cleanup
        cadence): fresh wheels, packages nobody used since dropped; running executions finish on the old."""
        assert self.settings.cleanup_interval_s is not None
        while True:
            await asyncio.sleep(self.settings.cleanup_interval_s)
            try:
                new = await self.packages.maybe_rebuild(self._progress)
            except CodeInterpreterError as exc:  # a failed rebuild keeps the current runtime
                log.warning("rebuilding the sandbox runtime failed (the current one stays): %s", exc)
            else:
                if new is not None:
                    log.info("the sandbox runtime was rebuilt: %s", new.path)

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
            on_event: called with each :class:`~code_interpreter.ExecutionEvent` as it happens:
                ``stdout``/``stderr`` chunks, each stored ``file``, then ``done``.

        Returns:
            :meth:`ExecutionResult.to_dict`: ``{success, output, error, execution_time, return_code,
            generated_files, stderr, truncated, isolation, notes, session, error_type}``;
            ``generated_files`` items carry ``filename, data, type, mime, size, file_id``; ``session`` is
            ``{"id", "state", "cell"}`` (state ``new``, ``live``, ``restored`` or ``restarted``), None for a
            one-shot call. Errors in the user's code, refusals and sandbox failures are results, not
            exceptions.
        """
        try:
            request = ExecutionRequest.build(
                self.settings, code, user_id, user_files, install_packages, timeout, session_id
            )
        except CodeInterpreterError as exc:
            if on_event is not None:
                await emit(on_event, ExecutionEvent("done", success=False))
            return ExecutionResult.failed(exc, isolation=self.isolation[0]).to_dict()
        return (await self.run(request, on_event=on_event)).to_dict()

    async def run(
        self, request: ExecutionRequest, *, on_event: EventCallback | None = None
    ) -> ExecutionResult:
        """Run a validated request: the one run path behind :meth:`execute`, the dispatcher and integrations.

        Every refusal and failure is a result (its ``error_type`` names why); ``on_event`` receives the
        live output, each stored file, then ``done``.
        """
        started = time.perf_counter()
        try:
            await self.start()
            result = await self._run(request, on_event)
        except CodeInterpreterError as exc:  # refused, storage down, no sandbox: a result, not a raise
            notes = [*request.notes, *getattr(exc, "__notes__", ())]
            elapsed = time.perf_counter() - started
            result = ExecutionResult.failed(exc, isolation=self.isolation[0], notes=notes, elapsed=elapsed)
        if on_event is not None:
            await emit(on_event, ExecutionEvent("done", success=result.success))
        return result

    async def _run(self, request: ExecutionRequest, on_event: EventCallback | None) -> ExecutionResult:
        findings = check_code(request.code, self.settings.policy)
        if findings:
            raise PolicyViolation(policy_message(findings))
        notes = [*request.notes, *await self._prepare_packages(request)]
        if request.file_ids:
            async with self._pinned(request) as refs:
                result = await self._sandboxed(request, refs, on_event)
        else:
            result = await self._sandboxed(request, [], on_event)
        result = result.with_notes(*notes, first=True)
        result, stored = await self._store_generated(request.user_id, result, on_event)
        return await self._record_usage(request, result, stored)

    async def _sandboxed(
        self, request: ExecutionRequest, refs: list[FileRef], on_event: EventCallback | None
    ) -> ExecutionResult:
        """The code run in a one-shot sandbox, or as a cell of the request's session."""
        if request.session_id is None:
            executor = await self.executor()
            return await executor.execute(request.code, user_id=request.user_id, files=refs,
                                          timeout=request.timeout, on_event=on_event)  # fmt: skip
        return await self.sessions.run_cell(
            request.user_id, request.session_id, request.code, refs, request.timeout, (), on_event
        )

    async def _prepare_packages(self, request: ExecutionRequest) -> list[str]:
        """Install what the code imports (approved only); the notes to add. PackageNotApproved if refused."""
        prepared = await self.packages.prepare(
            request.code, request.install_packages, progress=self._progress
        )
        if prepared.refused:
            exc = PackageNotApproved(prepared.refusal_message())
            for note in prepared.notes:
                exc.add_note(note)
            raise exc
        installed = (
            [f"installed for this call: {', '.join(prepared.installed)}"] if prepared.installed else []
        )
        return [*installed, *prepared.notes]

    @contextlib.asynccontextmanager
    async def _pinned(self, request: ExecutionRequest) -> AsyncIterator[list[FileRef]]:
        """The request's files, hard-linked for the call (FileNotFound when one is not the user's)."""
        pin_dir = self.settings.home / PINS_DIR / f"{os.getpid()}-{uuid.uuid4().hex[:16]}"
        # Without a sandbox (isolation "none") a session reads its inputs at their pinned host paths.
        keep = request.session_id is not None and self.isolation[0] == "none"
        try:
            yield await pin_files(self.files, request.file_ids, request.user_id, pin_dir)
        finally:
            if not keep:
                await asyncio.to_thread(shutil.rmtree, pin_dir, True)

    async def _store_generated(
        self, user_id: str, result: ExecutionResult, on_event: EventCallback | None
    ) -> tuple[ExecutionResult, int]:
        """Store each generated file in the file store: the result with their file ids, and the bytes added
        (a file the store already held, deduplicated, adds none)."""
        if not result.generated:
            return result, 0
        stored = []
        notes: list[str] = []
        added = 0
        for generated in result.generated:
            saved = await self.files.upload_file(user_id, generated.data, generated.filename)
            file_id = saved.get("file_id") if saved.get("success") else None
            stored.append(dataclasses.replace(generated, file_id=file_id))
            if file_id is None:
                notes.append(f"{generated.filename} was not stored: {saved.get('error')}")
                continue
            if not saved.get("deduplicated"):
                added += generated.size
            if on_event is not None:
                event = ExecutionEvent(
                    "file", filename=generated.filename, file_id=file_id, mime=generated.mime
                )
                await emit(on_event, event)
        return result.with_files(stored).with_notes(*notes), added

    async def _record_usage(
        self, request: ExecutionRequest, result: ExecutionResult, stored_bytes: int
    ) -> ExecutionResult:
        """Record what the execution used (``interp.usage``); the result carries the record as ``usage``.

        The record is linked to the tool call and model request that asked for it when the dispatcher
        runs it (:func:`~code_interpreter.ledger.current_link`). Nothing is recorded for a call no
        sandbox measured (refused before it ran, or lost before its report).
        """
        measured = result.measured
        if measured is None:
            return result
        owner = request.owner if request.owner is not None else request.user_id
        if request.session_id is not None:  # its snapshot's record names the same user (_record_snapshot)
            self._owners[(request.user_id, request.session_id)] = owner
            if len(self._owners) > _MAX_OWNERS:
                del self._owners[next(iter(self._owners))]
        usage = ExecutionUsage(
            user_id=owner,
            cpu_seconds=measured.cpu_seconds,
            peak_memory_mb=measured.peak_memory_mb,
            wall_seconds=measured.wall_seconds,
            stored_bytes=stored_bytes,
            session_id=request.session_id,
            isolation=result.isolation,
            success=result.success,
            measured_by=measured.measured_by,
        )
        # What ``usage.record_execution`` does, called without its coroutine (once per call).
        return result.with_usage(self.usage.executions.record(usage))

    async def _record_snapshot(self, user_id: str, session_id: str, size: int) -> None:
        """A session's snapshot was stored: a usage record of its bytes (no tool call asked for it)."""
        if self._usage is None:
            return
        owner = self._owners.pop((user_id, session_id), user_id)
        with linked(ExecutionLink()):  # it ends a session, maybe inside another call's task: link to none
            snapshot = ExecutionUsage(user_id=owner, cpu_seconds=0.0, peak_memory_mb=0.0, wall_seconds=0.0,
                                      stored_bytes=size, session_id=session_id, isolation=self.isolation[0],
                                      measured_by="snapshot")  # fmt: skip
            await self._usage.record_execution(snapshot)

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
            "file_expiration_hours": _whole(
                self.settings.file_expiration_hours or -1
            ),  # the seed's never: -1
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
