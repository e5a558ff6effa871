"""CodeInterpreter: owns the settings, storage, file store, package manager, executor and token bookkeeping.

One tool call flows through :meth:`CodeInterpreter.execute`:
validate → policy (a courtesy for the model) → packages (install approved imports) →
pin the user's files → executor (the OS sandbox is the wall) → store generated files.

Pinning. The sandbox sees a user file through a read-only bind of a host path. The FileManager's
cache copy (``home/cache/<file_id>/``) may be removed at any moment by ``cleanup_expired_files`` once
the file expires, also while an execution that started with it is queued or running. So each
execution gets hard links of its files under ``home/pins/<execution>/`` — cleanup never looks
there, and a hard link keeps the bytes even after the cache name is gone — removed when the
execution ends (a crashed host's leftovers are swept at the next start).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from .errors import CodeInterpreterError, PackageError, StorageUnavailable
from .executor import Executor, FileRef
from .files import FileManager
from .packages import PackageManager, ProgressCallback
from .policy import check_code, policy_message
from .settings import Settings
from .storage import Storage
from .tokens import TokenCounter, UsageStore

__all__ = ["CodeInterpreter"]

log = logging.getLogger(__name__)

PINS_DIR = "pins"
# Pin dirs older than the longest execution plus this margin belong to no running execution.
STALE_PIN_MARGIN_S = 600.0


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

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> CodeInterpreter:
        """Connect to MongoDB (or start the embedded server) and create indexes. Idempotent."""
        async with self._start_lock:
            if self._started:
                return self
            db = await self._storage.start()
            self._files = FileManager(db, self.settings)
            await self._files.ensure_indexes()
            self._usage = UsageStore(db, daily_budget_usd=self.settings.daily_budget_usd)
            await self._usage.ensure_indexes()
            await asyncio.to_thread(
                _sweep_stale_pins,
                self.settings.home / PINS_DIR,
                self.settings.max_timeout + STALE_PIN_MARGIN_S,
            )
            if self.settings.cleanup_interval_s > 0:
                self._files.start_cleanup_task(self.settings.cleanup_interval_s)
            self._started = True
            return self

    async def close(self) -> None:
        """Stop the executor and the cleanup task, close the database connection."""
        if self._executor is not None:
            await self._executor.close()
            self._executor = None
        if self._files is not None:
            await self._files.stop_cleanup_task()
        await self._storage.close()
        self._started = False

    async def __aenter__(self) -> CodeInterpreter:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

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
    ) -> dict[str, Any]:
        """Run ``code`` for ``user_id`` in the sandbox and return the seed's result dict.

        Args:
            code: Python source written by the model.
            user_id: the trusted user id (from the host application, never from the model).
            user_files: file ids (or the seed's file dicts with ``file_id``) the code may read.
            install_packages: extra approved packages to install before running.
            timeout: wall-clock seconds, clamped to ``settings.max_timeout``.

        Returns:
            ``{success, output, error, execution_time, return_code, generated_files, stderr, truncated,
            isolation, notes}``; ``generated_files`` items carry
            ``filename, data, type, mime, size, file_id``.
            Errors in the user's code, refusals and sandbox failures are results, not exceptions.
        """
        started = time.perf_counter()
        await self.start()
        isolation = self.settings.isolation
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
        try:
            refs = await self._pin_files(user_files or (), user_id, pin_dir)
            if isinstance(refs, str):
                return _failure(refs, notes=notes, isolation=isolation, started=started)
            executor = await self.executor()
            result = await executor.execute(code, user_id=str(user_id), files=refs, timeout=effective_timeout)
        except CodeInterpreterError as exc:  # storage down, corrupt bytes, no sandbox: a result, not a raise
            return _failure(str(exc), notes=notes, isolation=isolation, started=started)
        finally:
            if user_files:
                await asyncio.to_thread(shutil.rmtree, pin_dir, True)

        out = result.to_dict()
        out["notes"] = [*notes, *out.get("notes", [])]
        for generated in out["generated_files"]:
            saved = await self.files.upload_file(user_id, generated["data"], generated["filename"])
            generated["file_id"] = saved.get("file_id") if saved.get("success") else None
            if not saved.get("success"):
                out["notes"].append(f"{generated['filename']} was not stored: {saved.get('error')}")
        return out

    async def _pin_files(
        self, user_files: Sequence[str | dict[str, Any]], user_id: int | str, pin_dir: Path
    ) -> list[FileRef] | str:
        """Hard-link each visible file of the user under ``pin_dir``; an error message if one is not found."""
        refs: list[FileRef] = []
        seen: set[str] = set()
        for item in user_files:
            file_id = item.get("file_id") if isinstance(item, dict) else item
            if not isinstance(file_id, str) or not file_id:
                return f"user_files entries must be file id strings, got {item!r}"
            if file_id in seen:
                continue
            seen.add(file_id)
            meta = await self.files.get_file(file_id, user_id)
            pinned: Path | None = None
            # Two tries: a cleanup may remove the cache copy between materialize and the link.
            for _ in range(2):
                if meta is None:
                    break
                path = await self.files.materialize(file_id, user_id)
                if path is None:
                    break
                pinned = await asyncio.to_thread(_pin, path, pin_dir / file_id)
                if pinned is not None:
                    break
            if meta is None or pinned is None:
                # The same words whether the id is unknown, expired or another user's: no existence leak.
                return (
                    f"File '{file_id}' was not found, has expired, or is not yours. "
                    "Ask the user to upload it again and use the new file id"
                )
            refs.append(
                FileRef(file_id=file_id, path=pinned, filename=meta["filename"], file_type=meta["file_type"])
            )
        return refs

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
        stored: dict[str, int | None] = {"files": None, "bytes": None}
        if storage["reachable"]:
            try:
                stored = {**await self.files.storage_totals()}
            except CodeInterpreterError as exc:  # the server went away since the ping
                storage["error"] = str(exc)
        mb = None if stored["bytes"] is None else round(stored["bytes"] / 2**20, 2)
        return {
            **self.packages.status(),
            "total_user_files": stored["files"],
            "total_file_size_mb": mb,
            "file_expiration_hours": _whole(self.settings.file_expiration_hours),
            "max_file_size_mb": _whole(round(self.settings.max_file_size / 2**20, 2)),
            "storage": storage,
            "isolation": self.settings.isolation,
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


def _pin(path: Path, dest_dir: Path) -> Path | None:
    """Hard-link (or copy, across filesystems) ``path`` into ``dest_dir``; None if ``path`` vanished."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    for d in (dest_dir.parent, dest_dir):
        d.chmod(0o755)  # traversable by the sandbox uid (mode "none" reads the host path directly)
    dest = dest_dir / path.name
    try:
        os.link(path, dest)
    except FileNotFoundError:
        return None
    except OSError:  # another filesystem, or hard links not allowed here: a copy pins as well
        try:
            shutil.copyfile(path, dest)
        except FileNotFoundError:
            return None
        dest.chmod(0o444)
    return dest


def _sweep_stale_pins(root: Path, older_than_s: float) -> None:
    """Remove pin dirs left by a host that died mid-execution (older than any execution can be)."""
    cutoff = time.time() - older_than_s
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                shutil.rmtree(entry.path, ignore_errors=True)
        except OSError:
            continue
