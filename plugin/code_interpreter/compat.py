"""The seed-compatible module functions: a default CodeInterpreter per database handle and event loop.

Each default interpreter is built from :meth:`Settings.from_env` and is replaced (the old one closed)
when the environment has changed since, so ``CODE_INTERPRETER_*``/``MONGODB_URI`` set later take
effect. :func:`aclose_default_interpreters` closes them at shutdown (and between tests).
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from .files import FileManager
from .interpreter import CodeInterpreter
from .packages import PackageManager
from .settings import ENV_PREFIX, Settings
from .storage import unwrap_handler


@dataclass(slots=True)
class _Default:
    """One default interpreter and what it is bound to."""

    loop: weakref.ref[asyncio.AbstractEventLoop]
    db: AsyncDatabase[Any] | None
    interp: CodeInterpreter


_interpreters: dict[tuple[int, int], _Default] = {}
_package_manager: PackageManager | None = None
_env_settings: tuple[tuple[tuple[str, str], ...], Settings] | None = None

# Variables Settings.from_env reads (HOME and XDG_DATA_HOME decide the default home directory).
_ENV_EXTRA = ("MONGODB_URI", "HOME", "XDG_DATA_HOME")


def _settings_from_env() -> Settings:
    """Settings.from_env(), rebuilt only when a variable it reads has changed (building one costs ms)."""
    global _env_settings
    snapshot = tuple(
        sorted((k, v) for k, v in os.environ.items() if k.startswith(ENV_PREFIX) or k in _ENV_EXTRA)
    )
    if _env_settings is None or _env_settings[0] != snapshot:
        _env_settings = (snapshot, Settings.from_env())
    return _env_settings[1]


async def default_interpreter(db_handler: Any = None) -> CodeInterpreter:
    """The started default interpreter for this event loop (and ``db_handler``, when given)."""
    # AsyncMongoClient is bound to the loop it first ran on, so each loop gets its own interpreter.
    loop = asyncio.get_running_loop()
    db = None if db_handler is None else unwrap_handler(db_handler)
    key = (id(loop), 0 if db is None else id(db))
    settings = _settings_from_env()
    stale: CodeInterpreter | None = None
    entry = _interpreters.get(key)
    if entry is not None and (entry.loop() is not loop or entry.db is not db):
        # The ids were reused after the old loop was collected: that interpreter cannot be closed here.
        entry = None
    elif entry is not None and entry.interp.settings != settings:
        stale, entry = entry.interp, None  # the environment changed since it was made
    if entry is None:
        entry = _Default(weakref.ref(loop), db, CodeInterpreter(settings, db_handler=db_handler))
        _interpreters[key] = entry
    if stale is not None:
        await stale.close()
    return await entry.interp.start()


async def aclose_default_interpreters() -> int:
    """Close the default interpreters of the running event loop and forget all; returns how many closed.

    Call it at shutdown (and between tests) so no executor or connection outlives its use. Default
    interpreters of other, finished event loops cannot be closed from here and are only forgotten.
    """
    global _package_manager
    loop = asyncio.get_running_loop()
    entries = list(_interpreters.values())
    _interpreters.clear()
    _package_manager = None
    mine = [e.interp for e in entries if e.loop() is loop]
    for interp in mine:
        await interp.close()
    return len(mine)


async def execute_code(
    code: str,
    user_id: int | str,
    user_files: Sequence[str | dict[str, Any]] | None = None,
    install_packages: Sequence[str] | None = None,
    timeout: float | None = None,  # noqa: ASYNC109 - the seed's contract: a per-call wall-clock limit
    db_handler: Any = None,
    session_id: str | None = None,
) -> dict[str, Any]:
    """Run code in the sandbox for a user (the seed's ``execute_code``); see CodeInterpreter.execute.

    ``session_id`` (a conversation id from the host) keeps state between calls; None runs one-shot.
    """
    interp = await default_interpreter(db_handler)
    return await interp.execute(code, user_id, user_files, install_packages, timeout, session_id=session_id)


async def upload_file(
    user_id: int | str, file_data: bytes, filename: str, file_type: str | None = None, db_handler: Any = None
) -> dict[str, Any]:
    """Store a user's file (kept 48 hours by default; the seed's ``upload_file``); see FileManager."""
    interp = await default_interpreter(db_handler)
    return await interp.files.upload_file(user_id, file_data, filename, file_type)


async def list_user_files(user_id: int | str, db_handler: Any = None) -> list[dict[str, Any]]:
    """The user's unexpired files, newest first."""
    interp = await default_interpreter(db_handler)
    return await interp.files.list_user_files(user_id)


async def delete_user_file(file_id: str, user_id: int | str, db_handler: Any = None) -> bool:
    """Delete one of the user's files; False if it is not theirs or does not exist."""
    interp = await default_interpreter(db_handler)
    return await interp.files.delete_user_file(file_id, user_id)


async def cleanup_expired_files(db_handler: Any = None) -> int:
    """Delete expired files (metadata, GridFS content, local copies); returns how many."""
    interp = await default_interpreter(db_handler)
    return await interp.files.cleanup_expired_files()


async def get_interpreter_status(db_handler: Any = None) -> dict[str, Any]:
    """Storage, isolation mode and layers, runtime and installed packages (see CodeInterpreter.status)."""
    interp = await default_interpreter(db_handler)
    return await interp.status()


def get_package_manager() -> PackageManager:
    """The default PackageManager (approval checks need no database); follows environment changes."""
    global _package_manager
    settings = _settings_from_env()
    if _package_manager is None or _package_manager.settings != settings:
        _package_manager = PackageManager(settings)
    return _package_manager


def get_file_manager(db_handler: Any = None) -> FileManager:
    """A FileManager on ``db_handler`` (an AsyncDatabase or an object with ``.db``), else the default store.

    Without a handler, the default interpreter must have been started in this event loop
    (any of the async module functions does that); its FileManager is returned.

    Raises:
        RuntimeError: no handler and no default interpreter started in this event loop yet.
    """
    if db_handler is not None:
        return FileManager(unwrap_handler(db_handler), _settings_from_env())
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    for entry in _interpreters.values():
        if entry.db is None and entry.interp._files is not None and (loop is None or entry.loop() is loop):
            return entry.interp.files
    raise RuntimeError(
        "no default file store yet: pass db_handler=, or await any module function "
        "(e.g. list_user_files) first so the default interpreter connects"
    )
