"""Blob buckets by hour of expiry: naming, reads and deletes across buckets, whole-bucket drops, orphans.

Files that expire keep their bytes in ``file_blobs_<YYYYMMDDHH>`` (the UTC hour of ``expires_at``);
files that never expire, and documents written before buckets existed, in the legacy ``file_blobs``.
A cleanup drops a bucket whose hour ended DROP_MARGIN ago instead of deleting its bytes file by file.
The clock is injected (T0 = 2026-03-01 12:00 UTC); times in comments are that day's, UTC.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pymongo import AsyncMongoClient, MongoClient
from pymongo.asynchronous.database import AsyncDatabase

from _clock import T0, Clock
from _filestore import Commands, bucket_holding, bucket_names, counts
from code_interpreter.files import BUCKET, COLLECTION, FileManager
from code_interpreter.files.buckets import DROP_MARGIN, bucket_for, bucket_of
from code_interpreter.files.orphans import find_orphans
from code_interpreter.settings import Settings

MS = timedelta(milliseconds=1)


def at(hh: int, mm: int = 0, ss: int = 0) -> datetime:
    """That time on T0's day (UTC)."""
    return T0.replace(hour=hh, minute=mm, second=ss)


def hourly(hh: int, day: int = 1) -> str:
    """The bucket of files expiring in hour ``hh`` of March ``day``, 2026."""
    return f"file_blobs_202603{day:02d}{hh:02d}"


def manager(
    db: AsyncDatabase[Any], make_settings: Callable[..., Settings], clock: Clock, hours: float, **kw: Any
) -> FileManager:
    return FileManager(db, make_settings(file_expiration_hours=hours), clock=clock, **kw)


async def legacy_file(fm: FileManager, user: int, data: bytes, expires_at: datetime | None) -> str:
    """A file as stored before buckets existed: bytes in ``file_blobs``, its path naming that bucket."""
    await fm.ensure_indexes()
    file_id = f"user_{user}_{int(T0.timestamp())}_{secrets.token_hex(5)}"
    written = await fm.blobs.write(file_id, data, 10**9, "old.bin", {"user_id": str(user)})
    await fm.meta.insert_one(
        {
            "file_id": file_id,
            "user_id": str(user),
            "filename": "old.bin",
            "file_path": f"gridfs://file_blobs/{file_id}",
            "file_size": written.size,
            "file_type": "binary",
            "content_type": "application/octet-stream",
            "sha256": written.sha256,
            "uploaded_at": T0 - timedelta(days=1),
            "expires_at": expires_at,
        }
    )
    return file_id


# -- naming ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expires_at", "bucket"),
    [
        (datetime(2026, 11, 28, 14, 0, 0, tzinfo=UTC), "file_blobs_2026112814"),  # the hour's first instant
        (datetime(2026, 11, 28, 14, 59, 59, 999000, tzinfo=UTC), "file_blobs_2026112814"),  # its last (ms)
        (datetime(2026, 11, 28, 15, 0, 0, tzinfo=UTC), "file_blobs_2026112815"),
        (datetime(2026, 12, 31, 23, 30, tzinfo=UTC), "file_blobs_2026123123"),
        (datetime(2027, 1, 1, 0, 0, tzinfo=UTC), "file_blobs_2027010100"),
        (datetime(2026, 11, 28, 16, 30, tzinfo=timezone(timedelta(hours=2))), "file_blobs_2026112814"),  # UTC
        (None, "file_blobs"),  # never expires: the legacy bucket, never dropped
    ],
)
def test_bucket_names_by_the_utc_hour_of_expiry(expires_at: datetime | None, bucket: str) -> None:
    assert bucket_for(expires_at) == bucket


def test_a_naive_expiry_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        bucket_for(datetime(2026, 11, 28, 14))


@pytest.mark.parametrize(
    ("file_path", "bucket"),
    [
        ("gridfs://file_blobs_2026030112/user_1_1_abcd", "file_blobs_2026030112"),
        ("gridfs://file_blobs/user_1_1_abcd", "file_blobs"),
        (None, "file_blobs"),  # no path at all: where the bytes always were
        ("gridfs://user_files/user_1_1_abcd", "file_blobs"),  # never another collection
        ("gridfs://session_blobs/user_1_1_abcd", "file_blobs"),
        ("gridfs://file_blobs_20260301/user_1_1_abcd", "file_blobs"),  # not an hour
        ("gridfs://file_blobs_2026030112.chunks/x", "file_blobs"),
    ],
)
def test_the_bucket_is_read_from_the_path_and_only_ours_are_accepted(
    file_path: str | None, bucket: str
) -> None:
    assert bucket_of({"file_id": "user_1_1_abcd", "file_path": file_path}) == bucket


async def test_uploads_store_their_bytes_in_the_bucket_of_their_expiry_hour(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings]
) -> None:
    clock = Clock(at(11, 59, 59) + 999 * MS)
    fm = manager(mongo_db, make_settings, clock, hours=48)
    last = await fm.upload_file(1, os.urandom(300_000), "last.bin")  # expires 03-03 11:59:59.999
    clock.now = at(12)
    first = await fm.upload_file(1, b"first", "first.txt")  # expires 03-03 12:00:00.000
    forever = await manager(mongo_db, make_settings, clock, hours=-1).upload_file(1, b"kept", "k.txt")

    assert last["file_path"] == f"gridfs://{hourly(11, day=3)}/{last['file_id']}"
    assert first["file_path"] == f"gridfs://{hourly(12, day=3)}/{first['file_id']}"
    assert forever["file_path"] == f"gridfs://file_blobs/{forever['file_id']}"
    for up, bucket, chunks in ((last, hourly(11, 3), 2), (first, hourly(12, 3), 1), (forever, BUCKET, 1)):
        assert await mongo_db[f"{bucket}.files"].count_documents({"_id": up["file_id"]}) == 1
        assert await mongo_db[f"{bucket}.chunks"].count_documents({"files_id": up["file_id"]}) == chunks
    # A new bucket gets GridFS's indexes on first use: the unique (files_id, n) makes retries idempotent.
    index = await mongo_db[f"{hourly(12, 3)}.chunks"].index_information()
    assert any(tuple(v["key"]) == (("files_id", 1), ("n", 1)) and v.get("unique") for v in index.values())
    assert await bucket_names(mongo_db) == [BUCKET, hourly(11, 3), hourly(12, 3)]


async def test_reads_and_deletes_reach_every_bucket_and_the_legacy_one(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings]
) -> None:
    """Regression guard: a read or delete that went to one fixed bucket would miss all the others."""
    clock = Clock()
    fm = manager(mongo_db, make_settings, clock, hours=5)
    data: dict[str, bytes] = {}
    for minutes in (0, 60, 120):  # three uploads, three hours of expiry
        clock.now = T0 + timedelta(minutes=minutes)
        payload = os.urandom(280_000)
        data[(await fm.upload_file(2, payload, f"{minutes}.bin"))["file_id"]] = payload
    payload = b"stored before buckets existed"
    data[await legacy_file(fm, 2, payload, T0 + timedelta(hours=10))] = payload
    payload = b"never expires"
    data[
        (await manager(mongo_db, make_settings, clock, hours=-1).upload_file(2, payload, "n"))["file_id"]
    ] = payload
    assert len({await bucket_holding(mongo_db, f) for f in data}) == 4  # three hourly buckets + legacy

    assert sorted(f["file_id"] for f in await fm.list_user_files(2)) == sorted(data)
    for file_id, payload in data.items():
        assert await fm.read_file(file_id, 2) == payload
        path = await fm.materialize(file_id, 2)
        assert path is not None and path.read_bytes() == payload
    for file_id in data:
        assert await fm.delete_user_file(file_id, 2)
        assert not (fm.cache_dir / file_id).exists()
    assert await counts(mongo_db) == (0, 0, 0)


# -- whole-bucket drops ------------------------------------------------------------------------------


async def test_cleanup_drops_exactly_the_fully_expired_buckets(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings]
) -> None:
    clock = Clock()
    short = manager(mongo_db, make_settings, clock, hours=1)
    long = manager(mongo_db, make_settings, clock, hours=3)
    clock.now = at(11, 20)
    a = (await short.upload_file(1, os.urandom(300_000), "a.bin"))["file_id"]  # expires 12:20
    clock.now = at(12, 10)
    x = (await short.upload_file(1, b"x", "x.txt"))["file_id"]  # expires 13:10
    clock.now = at(10, 50)
    y_data = os.urandom(300_000)
    y = (await long.upload_file(1, y_data, "y.bin"))["file_id"]  # expires 13:50: same hour, longer TTL
    old = await legacy_file(short, 1, b"old", at(12, 30))  # legacy bucket, expires in a droppable hour
    n = (await manager(mongo_db, make_settings, clock, hours=-1).upload_file(1, b"n", "n.txt"))["file_id"]
    assert [await bucket_holding(mongo_db, f) for f in (a, x, y, old, n)] == [
        hourly(12),
        hourly(13),
        hourly(13),
        BUCKET,
        BUCKET,
    ]

    clock.now = at(13, 30)  # hour 12 ended 30 min ago; hour 13 still holds y, alive
    assert await short.cleanup_expired_files() == 3  # a, x and old
    assert await bucket_names(mongo_db) == [BUCKET, hourly(13)]  # hour 12 dropped, hour 13 kept
    assert await short.read_file(y, 1) == y_data
    assert await mongo_db[f"{hourly(13)}.files"].distinct("_id") == [y]  # x's bytes went one by one
    assert await mongo_db[f"{BUCKET}.files"].distinct("_id") == [n]  # legacy bytes too: never dropped
    assert await counts(mongo_db) == (2, 2, 3)

    clock.now = at(14) + DROP_MARGIN
    assert await short.cleanup_expired_files() == 1  # y
    assert await bucket_names(mongo_db) == [BUCKET]
    assert await counts(mongo_db) == (1, 1, 1)
    assert await short.read_file(n, 1) == b"n"


async def test_a_bucket_is_dropped_only_once_its_hour_is_the_margin_behind(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings]
) -> None:
    """The margin covers clock skew between hosts and uploads still streaming into the bucket."""
    assert timedelta(minutes=10) == DROP_MARGIN
    clock = Clock(at(11, 59, 59) + 999 * MS)
    fm = manager(mongo_db, make_settings, clock, hours=1)
    up = await fm.upload_file(1, os.urandom(300_000), "late.bin")  # expires 12:59:59.999: the hour's last ms
    assert await bucket_holding(mongo_db, up["file_id"]) == hourly(12)

    clock.now = at(13, 10) - MS
    assert await fm.cleanup_expired_files() == 1
    assert await counts(mongo_db) == (0, 0, 0)  # within the margin the bytes go one by one...
    assert hourly(12) in await bucket_names(mongo_db)  # ...and the bucket stays

    clock.now = at(13, 10)
    assert await fm.cleanup_expired_files() == 0
    assert hourly(12) not in await bucket_names(mongo_db)


async def test_a_bucket_named_by_metadata_that_lands_meanwhile_is_not_dropped(
    mongo_uri: str, db_name: str, mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings]
) -> None:
    """After deleting a bucket's metadata the cleanup checks the bucket's hour again before dropping it.

    Host B's clock lags host A's by 50 minutes. B's upload has written its bytes into bucket 12 (it
    expires at 12:50 by B's clock) and its metadata lands just after A's cleanup deleted the bucket's
    metadata (inserted from the command listener, between A's two steps). A's clock says the file has
    expired, so A's cleanup would delete it with the other expired files — but it is stopped (a
    shutdown) before it gets there. Until B's file expires by B's clock, B's users see it: dropping
    the bucket anyway would show them a listed file whose bytes are gone.
    """
    clock_a, clock_b = Clock(at(13, 30)), Clock(at(12, 40))
    b = manager(mongo_db, make_settings, clock_b, hours=10 / 60)
    up = await b.upload_file(1, b"alive for B", "late.txt")
    assert await bucket_holding(mongo_db, up["file_id"]) == hourly(12)
    late = await mongo_db[COLLECTION].find_one_and_delete({"file_id": up["file_id"]})  # not landed yet
    landed: list[str] = []
    task: asyncio.Task[int] | None = None

    with MongoClient(mongo_uri, tz_aware=True) as sync:

        def land_late_then_stop(stage: str, name: str, body: dict[str, Any]) -> None:
            if (stage, name) == ("succeeded", "delete") and not landed:
                sync[db_name][COLLECTION].insert_one(late)  # B's metadata insert, just now
                landed.append(name)
            elif (stage, name) == ("started", "find") and landed and task is not None:
                task.cancel()  # A is stopped at its next read of the metadata

        client: AsyncMongoClient[Any] = AsyncMongoClient(
            mongo_uri, tz_aware=True, event_listeners=[Commands(land_late_then_stop)]
        )
        try:
            a = manager(client[db_name], make_settings, clock_a, hours=1)
            task = asyncio.create_task(a.cleanup_expired_files())
            with pytest.raises(asyncio.CancelledError):
                await task
            assert landed == ["delete"]
            assert hourly(12) in await bucket_names(mongo_db)
            assert [f["file_id"] for f in await b.list_user_files(1)] == [up["file_id"]]
            assert await b.read_file(up["file_id"], 1) == b"alive for B"

            task = None
            assert await a.cleanup_expired_files() == 1  # A's next cleanup: expired by A's clock
            assert hourly(12) not in await bucket_names(mongo_db)
            assert await counts(mongo_db) == (0, 0, 0)
        finally:
            await client.close()


async def test_cleanup_drops_buckets_instead_of_deleting_their_bytes(
    mongo_uri: str, db_name: str, make_settings: Callable[..., Settings]
) -> None:
    """Command monitoring on the real server: a fully expired hour goes by one journaled delete of its
    metadata on the expires_at index, then two drops; no per-file deletes. A bucket whose hour has not
    ended gets the windows: metadata first, then its bytes file by file.
    """
    listener = Commands()
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri, tz_aware=True, event_listeners=[listener])
    try:
        db = client[db_name]
        clock = Clock()
        fm = manager(db, make_settings, clock, hours=1, cleanup_batch=4)
        for start, n in ((at(10, 10), 5), (at(11, 20), 4), (at(12, 40), 3)):  # hours 11, 12 and 13
            clock.now = start
            for i in range(n):
                assert (await fm.upload_file(i, os.urandom(300_000), f"{i}.bin"))["success"]
        clock.now = at(13, 45)  # everything expired; hours 11 and 12 ended over 10 minutes ago
        listener.seen.clear()
        assert await fm.cleanup_expired_files() == 12
        seen = listener.seen

        def touching(bucket: str, command: str) -> list[int]:
            colls = (f"{bucket}.files", f"{bucket}.chunks")
            return [i for i, (name, c) in enumerate(seen) if name == command and c[command] in colls]

        meta_deletes = [
            i for i, (name, c) in enumerate(seen) if name == "delete" and c["delete"] == COLLECTION
        ]
        assert len(meta_deletes) == 3  # hour 11, hour 12, one window of hour 13's three files
        assert all(seen[i][1]["writeConcern"]["j"] is True for i in meta_deletes)  # durable first
        for bucket, delete in zip((hourly(11), hourly(12)), meta_deletes, strict=False):
            (statement,) = seen[delete][1]["deletes"]
            assert set(statement["q"]["expires_at"]) == {"$gte", "$lt"}  # the hour, on the index
            assert bucket in statement["q"]["file_path"]["$regex"]  # its files only
            assert touching(bucket, "delete") == []  # not one per-file delete
            drops = touching(bucket, "drop")
            assert [seen[i][1]["drop"] for i in drops] == [f"{bucket}.files", f"{bucket}.chunks"]
            assert delete < min(drops)
        (window,) = seen[meta_deletes[2]][1]["deletes"]
        assert set(window["q"]["file_id"]) == {"$gte", "$lte"}
        assert min(touching(hourly(13), "delete")) > meta_deletes[2]  # its bytes after its metadata
        assert touching(hourly(13), "drop") == []
        assert await counts(db) == (0, 0, 0)
        assert await bucket_names(db) == [BUCKET, hourly(13)]
    finally:
        await client.drop_database(db_name)
        await client.close()


# -- cancellation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stage_and_command",
    [("succeeded", "delete"), ("started", "drop")],
    ids=["after-its-metadata-delete", "at-its-first-drop"],
)
async def test_a_cleanup_cancelled_inside_a_bucket_finishes_that_bucket(
    mongo_uri: str, db_name: str, make_settings: Callable[..., Settings], stage_and_command: tuple[str, str]
) -> None:
    """Cancelled (a shutdown) anywhere in a bucket's delete-then-drop, the cleanup finishes that bucket
    and stops: no bytes without metadata, no metadata without bytes, no half-dropped bucket."""
    task: asyncio.Task[int] | None = None

    def cancel(stage: str, name: str, body: dict[str, Any]) -> None:
        if (stage, name) == stage_and_command and task is not None and not task.cancelling():
            task.cancel()

    client: AsyncMongoClient[Any] = AsyncMongoClient(
        mongo_uri, tz_aware=True, event_listeners=[Commands(cancel)]
    )
    try:
        db = client[db_name]
        clock = Clock(at(9))
        fm = manager(db, make_settings, clock, hours=1)
        for i in range(30):
            clock.now = at(9) + timedelta(minutes=4 * i)  # 15 expiries in hour 10, 15 in hour 11
            await fm.upload_file(1, os.urandom(300_000 + i), f"{i}.bin")
        clock.now = at(13)
        task = asyncio.create_task(fm.cleanup_expired_files())
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await bucket_names(db) == [BUCKET, hourly(11)]  # hour 10 went whole, hour 11 waits
        assert await counts(db) == (15, 15, 30)
        assert await find_orphans(fm.meta, fm.buckets, fm._retry, grace_s=0) == ([], [])

        task = None
        assert await fm.cleanup_expired_files() == 15
        assert await counts(db) == (0, 0, 0)
        assert await bucket_names(db) == [BUCKET]
    finally:
        await client.drop_database(db_name)
        await client.close()


# -- reconcile ---------------------------------------------------------------------------------------


async def test_reconcile_finds_orphans_in_every_bucket_dropped_or_not(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings]
) -> None:
    clock = Clock()
    fm = manager(mongo_db, make_settings, clock, hours=1)
    good = await fm.upload_file(1, os.urandom(300_000), "good.bin")  # hour 13
    # A blob in an hourly bucket whose metadata never came (a crash between the two writes).
    stray = await fm.buckets.for_writing(hourly(13))
    await stray.write("user_1_1_aaaaaaaa", os.urandom(300_000), 10**9, "o.bin", {})
    # Metadata whose bucket was dropped (by a host whose clock ran far ahead).
    clock.now = at(10)
    lost = await fm.upload_file(1, b"lost", "lost.txt")  # hour 11
    await mongo_db.drop_collection(f"{hourly(11)}.files")
    await mongo_db.drop_collection(f"{hourly(11)}.chunks")
    # Chunks of a bucket whose files collection was dropped, not yet its chunks (kill -9 mid-drop).
    clock.now = at(9)
    half = await fm.upload_file(1, os.urandom(300_000), "half.bin")  # hour 10
    await mongo_db[COLLECTION].delete_one({"file_id": half["file_id"]})
    await mongo_db.drop_collection(f"{hourly(10)}.files")

    blobs, metas = await find_orphans(fm.meta, fm.buckets, fm._retry, grace_s=0)
    assert sorted(blobs) == [(hourly(10), half["file_id"]), (hourly(13), "user_1_1_aaaaaaaa")]
    assert metas == [lost["file_id"]]
    assert await fm.reconcile(grace_s=0) == {"orphan_blobs": 2, "orphan_metadata": 1}
    assert await fm.reconcile(grace_s=0) == {"orphan_blobs": 0, "orphan_metadata": 0}
    assert await counts(mongo_db) == (1, 1, 2)  # only the good file is left, in bucket 13
    assert await mongo_db[COLLECTION].distinct("file_id") == [good["file_id"]]
    clock.now = T0
    assert [f["file_id"] for f in await fm.list_user_files(1)] == [good["file_id"]]
    assert await fm.read_file(good["file_id"], 1) is not None
