"""Saved sessions are storage (issue #22, item 5): the quota, the per-user cap, totals, refusals, cleanup.

A FileManager and its SessionStore on the real server, time from the test's clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from _clock import T0, Clock
from code_interpreter.errors import LeaseLost, QuotaExceeded, SnapshotRefused
from code_interpreter.files import FileManager
from code_interpreter.files.session_store import SNAPSHOT_BUCKET, SessionStore, blob_prefix
from code_interpreter.settings import Settings


@pytest.fixture
def clock() -> Clock:
    return Clock()


def manager(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings], clock: Clock, **settings: Any
) -> FileManager:
    return FileManager(mongo_db, make_settings(**settings), clock=clock)


async def saved(store: SessionStore, user: str, sid: str, data: bytes, *, release: bool = True) -> None:
    """A host takes the session, saves ``data`` and (by default) releases it."""
    lease = await store.acquire(user, sid, "host-a")
    assert lease.held
    lease = await store.save_snapshot(lease, data, [], cell=1)
    if release:
        await store.release(lease)


async def blobs(db: AsyncDatabase[Any]) -> int:
    return await db[f"{SNAPSHOT_BUCKET}.files"].count_documents({})


async def test_saved_sessions_count_against_the_upload_quota(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings], clock: Clock
) -> None:
    """The break: closed sessions kept hundreds of MB while a small upload was refused by the quota."""
    fm = manager(mongo_db, make_settings, clock, max_bytes_per_user=1000)
    await fm.ensure_indexes()
    await saved(fm.session_store, "u", "big", b"s" * 700)
    refused = await fm.upload_file("u", b"f" * 400, "f.txt")
    assert refused["success"] is False
    assert (
        "1 saved sessions, 700 bytes" in refused["error"]
        and "delete some files or saved sessions" in refused["error"]
    )
    assert (await fm.upload_file("u", b"f" * 300, "g.txt"))["success"]  # 700 + 300 fits exactly
    assert (await fm.upload_file("someone-else", b"f" * 900, "h.txt"))["success"]  # per user


async def test_under_the_evict_policy_an_upload_expires_the_oldest_saved_session(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings], clock: Clock
) -> None:
    fm = manager(mongo_db, make_settings, clock, max_bytes_per_user=1000, quota_policy="evict")
    await fm.ensure_indexes()
    await saved(fm.session_store, "u", "old", b"s" * 500)
    clock.now = T0 + timedelta(minutes=1)
    first = await fm.upload_file("u", b"f" * 400, "newer.txt")
    clock.now = T0 + timedelta(minutes=2)
    assert (await fm.upload_file("u", b"g" * 400, "newest.txt"))["success"]
    assert await fm.session_store.load("u", "old") is None  # older than the file: it went first
    assert await fm.session_store.list_saved("u") == [] and await blobs(mongo_db) == 0
    assert await fm.get_file(first["file_id"], "u") is not None


async def test_a_live_sessions_snapshot_is_never_evicted_to_make_room(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings], clock: Clock
) -> None:
    fm = manager(mongo_db, make_settings, clock, max_bytes_per_user=1000, quota_policy="evict")
    await fm.ensure_indexes()
    await saved(fm.session_store, "u", "live", b"s" * 700, release=False)  # host-a still holds it
    refused = await fm.upload_file("u", b"f" * 400, "f.txt")
    assert refused["success"] is False and "quota" in refused["error"].lower()
    assert await fm.session_store.load("u", "live") == b"s" * 700


async def test_a_snapshot_that_does_not_fit_is_refused_and_nothing_is_kept(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings], clock: Clock
) -> None:
    fm = manager(mongo_db, make_settings, clock, max_bytes_per_user=1000)
    await fm.ensure_indexes()
    assert (await fm.upload_file("u", b"f" * 600, "f.txt"))["success"]
    store = fm.session_store
    lease = await store.acquire("u", "s", "host-a")
    await store.save_snapshot(lease, b"s" * 400, [], cell=1)  # 600 + 400 fits
    with pytest.raises(QuotaExceeded, match=r"not saved: its snapshot \(500 bytes\).*1 files, 600 bytes"):
        await store.save_snapshot(lease, b"t" * 500, [], cell=2)  # replacing 400 by 500 does not
    assert await store.load("u", "s") == b"s" * 400 and await blobs(mongo_db) == 1


async def test_under_the_evict_policy_a_snapshot_makes_room_by_evicting_the_oldest_file(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings], clock: Clock
) -> None:
    fm = manager(mongo_db, make_settings, clock, max_bytes_per_user=1000, quota_policy="evict")
    await fm.ensure_indexes()
    old = await fm.upload_file("u", b"f" * 600, "old.txt")
    clock.now = T0 + timedelta(minutes=1)
    await saved(fm.session_store, "u", "s", b"s" * 500)
    assert await fm.get_file(old["file_id"], "u") is None
    assert await fm.session_store.load("u", "s") == b"s" * 500


async def test_over_the_saved_session_cap_the_oldest_saved_session_expires_first(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings], clock: Clock
) -> None:
    fm = manager(mongo_db, make_settings, clock, max_saved_sessions_per_user=2, session_lease_s=3600.0)
    await fm.ensure_indexes()
    store = fm.session_store
    await saved(store, "u", "live", b"1", release=False)  # live: counted, never expired by the cap
    for minute, sid in enumerate(("a", "b", "c"), start=1):
        clock.now = T0 + timedelta(minutes=minute)
        await saved(store, "u", sid, sid.encode())
    # "live" and "a" were older than "b"; the cap of 2 left "c" and the live one, whose lease holds.
    assert [s.session_id for s in await store.list_saved("u")] == ["c", "live"]
    assert await store.load("u", "a") is None and await store.load("u", "b") is None
    await saved(store, "other", "x", b"x")  # per user
    assert len(await store.list_saved("other")) == 1 and await blobs(mongo_db) == 3


async def test_a_host_that_lost_the_session_evicts_and_writes_nothing_when_it_tries_to_save(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings], clock: Clock
) -> None:
    fm = manager(mongo_db, make_settings, clock, max_saved_sessions_per_user=1)
    await fm.ensure_indexes()
    store = fm.session_store
    await saved(store, "u", "older", b"older")
    stale = await store.acquire("u", "s", "host-a")
    clock.now = T0 + timedelta(minutes=1)  # host-a's lease ran out; host-b takes the session
    assert (await store.acquire("u", "s", "host-b")).held
    with pytest.raises(LeaseLost, match="host host-b took it over"):
        await store.save_snapshot(stale, b"stale", [], cell=9)
    listed = [(s.session_id, s.state, s.owner) for s in await store.list_saved("u")]
    assert listed == [("older", "saved", None), ("s", "live", "host-b")]  # the cap took nothing
    assert await blobs(mongo_db) == 1


async def test_storage_totals_count_saved_sessions(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings], clock: Clock
) -> None:
    fm = manager(mongo_db, make_settings, clock)
    await fm.ensure_indexes()
    assert await fm.storage_totals() == {
        "files": 0,
        "bytes": 0,
        "saved_sessions": 0,
        "saved_session_bytes": 0,
    }
    await fm.upload_file("u", b"f" * 10, "f.txt")
    await saved(fm.session_store, "u", "s1", b"s" * 100)
    await saved(fm.session_store, "v", "s2", b"s" * 50)
    assert await fm.storage_totals() == {
        "files": 1,
        "bytes": 10,
        "saved_sessions": 2,
        "saved_session_bytes": 150,
    }


async def test_load_refuses_a_corrupt_foreign_or_missing_snapshot(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings], clock: Clock
) -> None:
    fm = manager(mongo_db, make_settings, clock)
    await fm.ensure_indexes()
    store = fm.session_store
    await saved(store, "u", "s", b"mine")
    await saved(store, "stranger", "s", b"theirs")
    mine = await store.find("u", "s")
    theirs = await store.find("stranger", "s")
    assert mine is not None and theirs is not None and mine["blob_id"].startswith(blob_prefix("u", "s"))
    await store.meta.update_one({"_id": mine["_id"]}, {"$set": {"sha256": "0" * 64}})
    with pytest.raises(SnapshotRefused, match="corrupt"):
        await store.load("u", "s")
    forged = {k: theirs[k] for k in ("blob_id", "size", "sha256")}
    await store.meta.update_one({"_id": mine["_id"]}, {"$set": forged})
    with pytest.raises(SnapshotRefused, match="does not belong"):
        await store.load("u", "s")
    await store.meta.update_one(
        {"_id": mine["_id"]}, {"$set": {k: mine[k] for k in ("blob_id", "size", "sha256")}}
    )
    assert await store.load("u", "s") == b"mine"
    await store.blobs.delete([mine["blob_id"]])
    with pytest.raises(SnapshotRefused, match="missing"):
        await store.load("u", "s")
    assert await store.load("u", "never-saved") is None


async def test_a_snapshot_over_its_cap_is_refused(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings], clock: Clock
) -> None:
    fm = manager(mongo_db, make_settings, clock, max_snapshot_bytes=2**20)
    lease = await fm.session_store.acquire("u", "s", "host-a")
    with pytest.raises(SnapshotRefused, match="over the 1 MB cap"):
        await fm.session_store.save_snapshot(lease, b"x" * (2**20 + 1), [])
    assert await blobs(mongo_db) == 0


async def test_cleanup_deletes_expired_saved_sessions_and_orphan_blobs_but_not_live_ones(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings], clock: Clock
) -> None:
    fm = manager(mongo_db, make_settings, clock, file_expiration_hours=1.0)
    await fm.ensure_indexes()
    store = fm.session_store
    await saved(store, "u", "idle", b"idle")
    live = await store.acquire("u", "live", "host-b")
    await store.save_snapshot(live, b"live", [], cell=1)
    stray = blob_prefix("u", "idle") + "0123456789abcdef"  # a save interrupted before its record named it
    await store.blobs.write(stray, b"orphan", 100, "session idle", {"user_id": "u"})
    clock.now = T0 + timedelta(minutes=59)
    assert await store.cleanup_expired() == 0 and await blobs(mongo_db) == 3  # the stray is not old yet
    clock.now = T0 + timedelta(hours=2)
    live = await store.renew(live, cells=2)  # still live: the record stays however old it is
    assert await fm.cleanup_expired_files() == 0  # (files); sessions are cleaned in the same pass
    assert [s.session_id for s in await store.list_saved("u")] == ["live"]
    assert await store.find("u", "idle") is None
    assert await store.cleanup_expired(orphan_grace_s=0) == 0
    assert await blobs(mongo_db) == 1 and await store.load("u", "live") == b"live"


async def test_status_reports_saved_sessions_beside_files(
    make_settings: Callable[..., Settings], sandbox_runtime: Any
) -> None:
    from code_interpreter.interpreter import CodeInterpreter

    interp = CodeInterpreter(make_settings(runtime_dir=sandbox_runtime.root))
    try:
        await interp.start()
        await saved(interp.files.session_store, "u", "s", b"s" * (2**20 + 2**19))
        status = await interp.status(start_sandbox=False)
        assert status["total_saved_sessions"] == 1 and status["total_saved_session_mb"] == 1.5
        assert status["total_user_files"] == 0
    finally:
        await interp.close()
