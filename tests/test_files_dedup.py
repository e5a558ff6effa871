"""Uploads deduplicated per user by name and content (#25): running again with the same data file stored
it again under a new id, each copy counting against the quota.

The clock is injected (T0 = 2026-03-01 12:00 UTC): expiry refreshes that cross an hour move a file's
bytes into the next hour's bucket, and a cleanup of the old hour must not take them along.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from _clock import T0, Clock
from _filestore import bucket_holding, counts
from code_interpreter.files import COLLECTION, FileManager
from code_interpreter.files.buckets import DROP_MARGIN, bucket_for
from code_interpreter.settings import Settings

DATA = b"city,sales\nOslo,3\nLima,5\n"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fm(mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings], clock: Clock) -> FileManager:
    return FileManager(mongo_db, make_settings(), clock=clock)


async def stream(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 7):
        yield data[i : i + 7]


async def test_the_same_name_and_bytes_are_one_file_with_its_expiry_refreshed(
    fm: FileManager, clock: Clock, mongo_db: AsyncDatabase[Any]
) -> None:
    first = await fm.upload_file(42, DATA, "sales.csv")
    clock.now = T0 + timedelta(minutes=20)  # the same hour of expiry: only the expiry moves
    again = await fm.upload_file("42", DATA, "sales.csv")  # int and str: the same user
    assert first["success"] and again["success"]
    assert (first["deduplicated"], again["deduplicated"]) == (False, True)
    assert again["file_id"] == first["file_id"] and again["uploaded_at"] == first["uploaded_at"]
    assert again["expires_at"] == (T0 + timedelta(minutes=20, hours=48)).isoformat()
    streamed = await fm.upload_file(42, stream(DATA), "sales.csv")  # a stream of the same bytes too
    assert streamed["file_id"] == first["file_id"] and streamed["deduplicated"]
    assert [f["file_id"] for f in await fm.list_user_files(42)] == [first["file_id"]]
    assert await counts(mongo_db) == (1, 1, 1)  # one metadata document, one blob, one chunk
    assert await fm.read_file(first["file_id"], 42) == DATA


@pytest.mark.parametrize(
    ("user", "data", "name"),
    [(43, DATA, "sales.csv"), (42, DATA + b"Rome,1\n", "sales.csv"), (42, DATA, "sales-copy.csv")],
)
async def test_another_user_content_or_name_is_another_file(
    fm: FileManager, user: int, data: bytes, name: str
) -> None:
    first = await fm.upload_file(42, DATA, "sales.csv")
    other = await fm.upload_file(user, data, name)
    assert other["success"] and not other["deduplicated"] and other["file_id"] != first["file_id"]


async def test_a_duplicate_counts_once_against_the_quota(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings], clock: Clock
) -> None:
    fm = FileManager(mongo_db, make_settings(max_files_per_user=1), clock=clock)
    first = await fm.upload_file(7, DATA, "sales.csv")
    for _ in range(3):  # the user is at the quota: the same file again is not a new file
        again = await fm.upload_file(7, DATA, "sales.csv")
        assert again["success"] and again["file_id"] == first["file_id"], again
    refused = await fm.upload_file(7, b"other", "other.csv")
    assert not refused["success"] and "Storage quota reached (1 files" in refused["error"]


async def test_a_refresh_into_the_next_hour_moves_the_bytes_and_survives_the_old_hours_cleanup(
    fm: FileManager, clock: Clock, mongo_db: AsyncDatabase[Any]
) -> None:
    first = await fm.upload_file(42, DATA, "sales.csv")
    old_bucket = await bucket_holding(mongo_db, first["file_id"])
    clock.now = T0 + timedelta(hours=3)
    again = await fm.upload_file(42, DATA, "sales.csv")
    assert again["file_id"] == first["file_id"] and again["deduplicated"]
    new_bucket = await bucket_holding(mongo_db, first["file_id"])
    assert new_bucket == bucket_for(T0 + timedelta(hours=51)) != old_bucket
    assert await mongo_db[f"{old_bucket}.files"].count_documents({"_id": first["file_id"]}) == 0
    clock.now = T0 + timedelta(hours=49) + DROP_MARGIN  # the first expiry's hour is over: its bucket goes
    assert await fm.cleanup_expired_files() == 0
    assert await fm.read_file(first["file_id"], 42) == DATA  # the refreshed file kept its bytes
    assert await counts(mongo_db) == (1, 1, 1)


async def test_an_expired_copy_awaiting_cleanup_gives_way_to_a_new_upload(
    fm: FileManager, clock: Clock, mongo_db: AsyncDatabase[Any]
) -> None:
    first = await fm.upload_file(42, DATA, "sales.csv")
    clock.now = T0 + timedelta(hours=49)  # expired, not cleaned up yet
    again = await fm.upload_file(42, DATA, "sales.csv")
    assert again["success"] and not again["deduplicated"] and again["file_id"] != first["file_id"]
    assert await fm.read_file(again["file_id"], 42) == DATA
    assert await fm.get_file(first["file_id"], 42) is None


async def test_concurrent_uploads_of_one_file_in_one_process_store_it_once(
    mongo_uri: str, db_name: str, make_settings: Callable[..., Settings], mongo_db: AsyncDatabase[Any]
) -> None:
    """Each upload misses the others' (not yet stored) copy; the unique key lets exactly one in."""
    clients: list[AsyncMongoClient[Any]] = [AsyncMongoClient(mongo_uri, tz_aware=True) for _ in range(4)]
    try:
        managers = [FileManager(c[db_name], make_settings()) for c in clients]
        await managers[0].ensure_indexes()
        ups = await asyncio.gather(*(m.upload_file(9, DATA, "sales.csv") for m in managers * 2))
    finally:
        for c in clients:
            await c.close()
    assert all(u["success"] for u in ups), ups
    assert len({u["file_id"] for u in ups}) == 1
    assert [u["deduplicated"] for u in ups].count(False) == 1  # stored once; the others adopted it
    assert await counts(mongo_db) == (1, 1, 1)  # the losers' bytes are gone too


async def test_an_upload_that_finds_its_file_stored_meanwhile_adopts_it_and_drops_its_own_bytes(
    fm: FileManager, clock: Clock, mongo_db: AsyncDatabase[Any]
) -> None:
    """The race, made deterministic: this upload looked before the other one stored (it saw nothing)."""
    first = await fm.upload_file(42, DATA, "sales.csv")
    clock.now = T0 + timedelta(hours=2)
    late = await fm._store_new("42", "sales.csv", DATA, None, len(DATA))  # past the look-up, into the insert
    assert late["file_id"] == first["file_id"] and late["deduplicated"]
    assert late["expires_at"] == (T0 + timedelta(hours=50)).isoformat()
    assert await counts(mongo_db) == (1, 1, 1)
    assert await fm.read_file(first["file_id"], 42) == DATA


UPLOADER = textwrap.dedent(
    """
    import asyncio, json, sys
    from pymongo import AsyncMongoClient
    from code_interpreter.files import FileManager
    from code_interpreter.settings import Settings

    async def main() -> None:
        uri, db, home, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
        client = AsyncMongoClient(uri, tz_aware=True)
        fm = FileManager(client[db], Settings(home=home, mongodb_uri=uri, database=db))
        await fm.ensure_indexes()
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # both processes start together
        ids = []
        for i in range(rounds):
            ids.append((await fm.upload_file(5, b"round %d\\n" % i * 1000, f"r{i}.csv"))["file_id"])
        print(json.dumps(ids), flush=True)
        await client.close()

    asyncio.run(main())
    """
)


async def test_two_processes_uploading_the_same_files_at_once_get_the_same_ids(
    mongo_uri: str, db_name: str, tmp_path: Any, mongo_db: AsyncDatabase[Any]
) -> None:
    rounds = 8
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            UPLOADER,
            mongo_uri,
            db_name,
            str(tmp_path / f"h{i}"),
            str(rounds),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for i in range(2)
    ]
    try:
        async with asyncio.timeout(120):
            for p in procs:
                assert p.stdout is not None and (await p.stdout.readline()).strip() == b"ready"
            for p in procs:
                assert p.stdin is not None
                p.stdin.write(b"go\n")
                await p.stdin.drain()
            outs = [await p.communicate() for p in procs]
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err.decode()
    first, second = (json.loads(out) for out, _ in outs)
    assert first == second  # every file has one id, whichever process stored it
    assert await mongo_db[COLLECTION].count_documents({}) == rounds
    assert (await counts(mongo_db))[1] == rounds  # and one blob each
