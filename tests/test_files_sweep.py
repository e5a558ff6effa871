"""The local cache across hosts: a host's cleanup removes its copies of files another host deleted or expired.

Several hosts share one database, each with its own ``home`` and its own local cache of file bytes.
When host A deletes a file (or A's cleanup removes it once expired), A removes only A's copy: B's copy
stays until B's ``cleanup_expired_files()`` sweeps it. Regression: a cleanup that no longer swept the
cache of files deleted elsewhere passed every test (``FileManager._sweep_cache`` had none); B kept
the bytes of deleted files on disk for ever.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from _clock import T0, Clock
from _interp_helpers import close_and_drop, started
from code_interpreter.files import FileManager
from code_interpreter.interpreter import CodeInterpreter
from code_interpreter.settings import Settings


def copies(home: Path, file_id: str) -> list[Path]:
    """Files under ``home`` that are a local copy of ``file_id`` (wherever the cache puts them)."""
    found = []
    for root, _dirs, files in os.walk(home):
        for name in files:
            path = Path(root) / name
            if file_id in str(path.relative_to(home)):
                found.append(path)
    return found


def hosts(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings], tmp_path: Path, clock: Clock
) -> tuple[FileManager, FileManager]:
    """Two file managers on one database, each with its own home (two hosts)."""
    a = FileManager(mongo_db, make_settings(home=tmp_path / "host-a", file_expiration_hours=1.0), clock=clock)
    b = FileManager(mongo_db, make_settings(home=tmp_path / "host-b", file_expiration_hours=1.0), clock=clock)
    return a, b


async def test_a_file_deleted_on_another_host_leaves_this_hosts_cache_at_cleanup(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    a, b = hosts(mongo_db, make_settings, tmp_path, Clock())
    gone = (await a.upload_file(1, b"deleted elsewhere", "gone.txt"))["file_id"]
    kept = (await a.upload_file(1, b"still wanted", "kept.txt"))["file_id"]
    assert await b.materialize(gone, 1) is not None and await b.materialize(kept, 1) is not None
    assert copies(b.settings.home, gone) and copies(b.settings.home, kept)

    assert await a.delete_user_file(gone, 1)
    assert copies(b.settings.home, gone), "host A reached into host B's cache"

    assert await b.cleanup_expired_files() == 0  # nothing expired: the file was deleted, not expired
    assert copies(b.settings.home, gone) == []
    kept_copies = copies(b.settings.home, kept)  # a live file's copy is not swept
    assert [p.read_bytes() for p in kept_copies] == [b"still wanted"]


async def test_a_file_expired_and_cleaned_on_another_host_leaves_this_hosts_cache_at_cleanup(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    clock = Clock()
    a, b = hosts(mongo_db, make_settings, tmp_path, clock)
    old = (await a.upload_file(1, b"expires first", "old.txt"))["file_id"]
    clock.now = T0 + timedelta(minutes=30)
    young = (await a.upload_file(1, b"expires later", "young.txt"))["file_id"]
    assert await b.materialize(old, 1) is not None and await b.materialize(young, 1) is not None

    clock.now = T0 + timedelta(hours=1)  # ``old`` has expired, ``young`` has not
    assert await a.cleanup_expired_files() == 1  # host A deletes it, and its own copy only
    assert copies(b.settings.home, old)

    assert await b.cleanup_expired_files() == 0  # already deleted by A: B only sweeps its cache
    assert copies(b.settings.home, old) == []
    assert [p.read_bytes() for p in copies(b.settings.home, young)] == [b"expires later"]


async def test_two_interpreters_the_reading_host_sweeps_its_copy_after_the_other_deletes(
    make_settings: Callable[..., Settings], sandbox_runtime: Any, tmp_path: Path
) -> None:
    # The user-facing version: host B runs the user's code on the file (its cache gets a copy), the
    # user deletes the file through host A, and host B's periodic cleanup removes B's copy.
    a = CodeInterpreter(make_settings(home=tmp_path / "host-a", runtime_dir=sandbox_runtime.root))
    b = await started(make_settings(home=tmp_path / "host-b", runtime_dir=sandbox_runtime.root))
    try:
        await a.start()
        fid = (await a.files.upload_file(7, b"n\n1\n2\n", "numbers.csv"))["file_id"]
        r = await b.execute(f"print(load_file({fid!r}).n.sum())", user_id=7, user_files=[fid])
        assert r["success"] and r["output"] == "3\n", r
        assert copies(b.settings.home, fid), (
            "host B ran the code without a local copy: the test proves nothing"
        )

        assert await a.files.delete_user_file(fid, 7)
        assert await b.files.cleanup_expired_files() == 0
        assert copies(b.settings.home, fid) == []
    finally:
        await a.close()
        await close_and_drop(b)
