"""Expiry at the exact boundary (injected clock); cleanup: one pass, windowed, idempotent, two processes."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import textwrap
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bson import Binary
from pymongo.asynchronous.database import AsyncDatabase

from _clock import T0, Clock
from _filestore import bucket_holding, bucket_names, counts
from code_interpreter.files import BUCKET, COLLECTION, FileManager
from code_interpreter.settings import Settings

HANG_GUARD_S = 60


async def test_expiry_at_the_exact_boundary(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings]
) -> None:
    clock = Clock()
    fm = FileManager(mongo_db, make_settings(file_expiration_hours=1.0), clock=clock)
    up = await fm.upload_file(1, b"x" * 300_000, "e.bin")
    fid = up["file_id"]
    cached = await fm.materialize(fid, 1)
    assert cached is not None and cached.exists()
    expires = T0 + timedelta(hours=1)
    assert up["expires_at"] == expires.isoformat()

    clock.now = expires - timedelta(milliseconds=1)  # the last visible instant (BSON keeps milliseconds)
    assert await fm.get_file(fid, 1) is not None
    assert len(await fm.list_user_files(1)) == 1
    assert await fm.cleanup_expired_files() == 0

    clock.now = expires  # expired from this instant on
    assert await fm.get_file(fid, 1) is None
    assert await fm.read_file(fid, 1) is None
    assert await fm.materialize(fid, 1) is None
    assert await fm.list_user_files(1) == []
    assert await fm.cleanup_expired_files() == 1
    assert await counts(mongo_db) == (0, 0, 0)
    assert not cached.exists()
    assert await fm.cleanup_expired_files() == 0  # idempotent


async def test_cleanup_counts_and_removes_everything(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings]
) -> None:
    clock = Clock()
    fm = FileManager(mongo_db, make_settings(file_expiration_hours=2.0), clock=clock, cleanup_batch=3)
    old = [(await fm.upload_file(1, os.urandom(1000), f"{i}.bin"))["file_id"] for i in range(7)]
    for fid in old[:2]:
        assert await fm.materialize(fid, 1) is not None
    clock.now = T0 + timedelta(hours=1)
    young = (await fm.upload_file(1, b"young", "y.txt"))["file_id"]
    clock.now = T0 + timedelta(hours=2, seconds=1)
    assert await fm.cleanup_expired_files() == 7  # batches of 3: 3 + 3 + 1
    assert [f["file_id"] for f in await fm.list_user_files(1)] == [young]
    assert await counts(mongo_db) == (1, 1, 1)
    assert [p.name for p in fm.cache_dir.iterdir()] == []
    assert await fm.cleanup_expired_files() == 0


async def test_windows_delete_only_what_matched(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings]
) -> None:
    """A window is a range of file ids: files of other lifetimes whose ids fall inside it stay whole."""
    clock = Clock()
    short = FileManager(mongo_db, make_settings(file_expiration_hours=1.0), clock=clock, cleanup_batch=4)
    long = FileManager(mongo_db, make_settings(file_expiration_hours=100.0), clock=clock)
    gone, kept = [], {}
    for i in range(12):  # same second, random suffixes: the two kinds interleave in id order
        gone.append((await short.upload_file(5, os.urandom(300), f"s{i}.bin"))["file_id"])
        data = os.urandom(300_000)  # two chunks each
        kept[(await long.upload_file(5, data, f"l{i}.bin"))["file_id"]] = data
    ids = sorted([*gone, *kept])
    assert any(a in kept and b in gone for a, b in itertools.pairwise(ids)), "no interleaving"
    clock.now = T0 + timedelta(hours=2)
    assert await short.cleanup_expired_files() == len(gone)
    assert sorted(f["file_id"] for f in await long.list_user_files(5)) == sorted(kept)
    for file_id, data in kept.items():
        assert await long.read_file(file_id, 5) == data
    assert await counts(mongo_db) == (len(kept), len(kept), 2 * len(kept))


async def test_cleanup_reads_the_expired_metadata_once(
    mongo_uri: str, db_name: str, make_settings: Callable[..., Settings]
) -> None:
    """Regression (#15): each batch re-ran the expired-files query (quadratic on SecantusDB, 1,128 s for
    100,000 files) and deleted by ``$in`` lists, which SecantusDB matches candidate by candidate."""
    from pymongo import AsyncMongoClient, monitoring

    class Commands(monitoring.CommandListener):
        def __init__(self) -> None:
            self.seen: list[tuple[str, dict[str, Any]]] = []

        def started(self, event: monitoring.CommandStartedEvent) -> None:
            self.seen.append((event.command_name, dict(event.command)))

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            pass

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            pass

    listener = Commands()
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri, tz_aware=True, event_listeners=[listener])
    try:
        clock = Clock()
        fm = FileManager(
            client[db_name], make_settings(file_expiration_hours=1.0), clock=clock, cleanup_batch=5
        )
        await fm.ensure_indexes()
        for i in range(23):
            assert (await fm.upload_file(i % 3, os.urandom(100), f"{i}.bin"))["success"]
        clock.now = T0 + timedelta(hours=2)
        listener.seen.clear()
        assert await fm.cleanup_expired_files() == 23
        finds = [c for name, c in listener.seen if name == "find" and c["find"] == COLLECTION]
        assert len(finds) == 1  # one pass; the rest of the stream comes by getMore
        meta_deletes = [c for name, c in listener.seen if name == "delete" and c["delete"] == COLLECTION]
        assert len(meta_deletes) == 5  # windows of 5: 5 + 5 + 5 + 5 + 3
        for command in meta_deletes:
            (statement,) = command["deletes"]
            assert set(statement["q"]["file_id"]) == {"$gte", "$lte"}  # a range on the unique index
            assert command["writeConcern"]["j"] is True  # durable before any byte is deleted
        assert await counts(client[db_name]) == (0, 0, 0)
    finally:
        await client.drop_database(db_name)
        await client.close()


async def test_deleting_an_expired_file_reports_not_found_but_removes_it(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings]
) -> None:
    clock = Clock()
    fm = FileManager(mongo_db, make_settings(file_expiration_hours=1.0), clock=clock)
    fid = (await fm.upload_file(1, b"x", "x"))["file_id"]
    clock.now = T0 + timedelta(hours=5)
    assert await fm.delete_user_file(fid, 1) is False
    assert await counts(mongo_db) == (0, 0, 0)


async def test_never_expiring_files(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings]
) -> None:
    clock = Clock()
    fm = FileManager(mongo_db, make_settings(file_expiration_hours=-1), clock=clock)
    up = await fm.upload_file(1, b"forever", "f.txt")
    assert up["expires_at"] is None
    raw = await mongo_db[COLLECTION].find_one({"file_id": up["file_id"]})
    assert raw is not None and raw["expires_at"] is None
    clock.now = T0 + timedelta(days=365 * 30)
    assert await fm.cleanup_expired_files() == 0
    assert await fm.read_file(up["file_id"], 1) == b"forever"
    assert [f["file_id"] for f in await fm.list_user_files(1)] == [up["file_id"]]


async def test_fractional_hours_expiry(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings]
) -> None:
    clock = Clock()
    fm = FileManager(mongo_db, make_settings(file_expiration_hours=2 / 3600), clock=clock)  # two seconds
    up = await fm.upload_file(1, b"x", "x")
    assert up["expires_at"] == (T0 + timedelta(seconds=2)).isoformat()


async def test_delete_all_user_files(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings]
) -> None:
    fm = FileManager(mongo_db, make_settings(), cleanup_batch=2)
    for i in range(5):
        await fm.upload_file(1, b"x" * i, f"{i}")
    keep = (await fm.upload_file(2, b"keep", "k"))["file_id"]
    assert await fm.delete_all_user_files(1) == 5
    assert await fm.list_user_files(1) == []
    assert await fm.read_file(keep, 2) == b"keep"
    assert await fm.delete_all_user_files(1) == 0


CLEANER = """
import asyncio, json, sys, time
from datetime import datetime
from pathlib import Path
from pymongo import AsyncMongoClient
from code_interpreter.files import FileManager
from code_interpreter.settings import Settings

async def main(uri, dbname, home, now, go):
    client = AsyncMongoClient(uri, tz_aware=True)
    fm = FileManager(client[dbname], Settings(home=Path(home), mongodb_uri=uri, database=dbname),
                     clock=lambda: datetime.fromisoformat(now), cleanup_batch=7)
    await client.admin.command("ping")
    print("ready", flush=True)
    while not Path(go).exists():  # a barrier, so both cleaners really overlap
        time.sleep(0.005)
    n = await fm.cleanup_expired_files()
    print(json.dumps({"deleted": n}), flush=True)
    await client.close()

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.mark.parametrize(
    "hours_later",
    [2, 3],  # the files' bucket (expiries at 13:00) deleted file by file at 14:00, dropped whole at 15:00
)
async def test_concurrent_cleanup_from_two_processes(
    mongo_db: AsyncDatabase[Any],
    make_settings: Callable[..., Settings],
    mongo_uri: str,
    tmp_path: Path,
    hours_later: int,
) -> None:
    clock = Clock()
    settings = make_settings(file_expiration_hours=1.0)
    fm = FileManager(mongo_db, settings, clock=clock)
    n = 150
    for i in range(n):
        await fm.upload_file(i % 3, os.urandom(300 + i), f"{i}.bin")
    survivor = (await FileManager(mongo_db, settings).upload_file(9, b"now", "now.txt"))["file_id"]
    now = (T0 + timedelta(hours=hours_later)).isoformat()
    go = tmp_path / "go"
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            textwrap.dedent(CLEANER),
            mongo_uri,
            mongo_db.name,
            str(tmp_path / f"h{k}"),
            now,
            str(go),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for k in range(2)
    ]
    try:
        async with asyncio.timeout(HANG_GUARD_S):
            for p in procs:  # wait until both are connected
                assert p.stdout is not None
                line = await p.stdout.readline()
                assert line.strip() == b"ready"
            go.touch()
            results = [await p.communicate() for p in procs]
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err.decode()  # neither cleaner errored on the other's deletes
    deleted = [json.loads(out.decode().strip().splitlines()[-1])["deleted"] for out, _ in results]
    assert sum(deleted) == n  # every file counted exactly once between the two
    assert await counts(mongo_db) == (1, 1, 1)
    assert ("file_blobs_2026030113" in await bucket_names(mongo_db)) == (hours_later == 2)
    assert await fm.cleanup_expired_files() == 0
    assert await FileManager(mongo_db, settings).read_file(survivor, 9) == b"now"


async def test_cleanup_task_runs_and_stops(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings]
) -> None:
    clock = Clock()
    fm = FileManager(mongo_db, make_settings(file_expiration_hours=1.0), clock=clock)
    for i in range(3):
        await fm.upload_file(1, b"x", f"{i}")
    clock.now = T0 + timedelta(hours=1)
    task = fm.start_cleanup_task(interval_s=0.05)
    assert fm.start_cleanup_task(interval_s=0.05) is task  # one task per manager
    async with asyncio.timeout(HANG_GUARD_S):
        while (await counts(mongo_db))[0]:  # noqa: ASYNC110 - polling the database: no event to await
            await asyncio.sleep(0.02)
    await fm.stop_cleanup_task()
    assert task.done() and task.cancelled()
    await fm.stop_cleanup_task()  # stopping twice is fine
    assert await counts(mongo_db) == (0, 0, 0)


async def test_reconcile_removes_orphans_both_ways(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings]
) -> None:
    fm = FileManager(mongo_db, make_settings())
    good = await fm.upload_file(1, os.urandom(400_000), "good.bin")
    # What crashes leave: a complete blob whose metadata never came, chunks whose files
    # document never came, and metadata whose blob is gone.
    await fm.blobs.write("user_1_1_aaaaaaaa", os.urandom(300_000), 10**9, "o.bin", {})
    await mongo_db[f"{BUCKET}.chunks"].insert_one(
        {"files_id": "user_1_1_bbbbbbbb", "n": 0, "data": Binary(b"x")}
    )
    lost = await fm.upload_file(1, b"lost bytes", "lost.txt")
    bucket = await bucket_holding(mongo_db, lost["file_id"])
    await mongo_db[f"{bucket}.files"].delete_one({"_id": lost["file_id"]})
    await mongo_db[f"{bucket}.chunks"].delete_many({"files_id": lost["file_id"]})

    assert await fm.reconcile() == {
        "orphan_blobs": 0,
        "orphan_metadata": 1,
    }  # young blobs may be uploads in flight
    assert await fm.reconcile(grace_s=0) == {"orphan_blobs": 2, "orphan_metadata": 0}
    assert await fm.reconcile(grace_s=0) == {"orphan_blobs": 0, "orphan_metadata": 0}
    assert await counts(mongo_db) == (1, 1, 2)  # only the good file (two chunks) is left
    assert [f["file_id"] for f in await fm.list_user_files(1)] == [good["file_id"]]
    assert await fm.read_file(good["file_id"], 1) is not None


async def test_clock_must_be_aware(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings]
) -> None:
    fm = FileManager(mongo_db, make_settings(), clock=lambda: datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        await fm.upload_file(1, b"x", "x")


async def test_interpreter_runs_the_cleanup_in_the_background(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings]
) -> None:
    from code_interpreter.interpreter import CodeInterpreter

    settings = make_settings(file_expiration_hours=0.5 / 3600, cleanup_interval_s=0.1)
    async with CodeInterpreter(settings) as interp:
        saved = await interp.files.upload_file(7, b"short-lived", "a.txt")
        assert saved["success"]
        async with asyncio.timeout(HANG_GUARD_S):
            while (await counts(mongo_db))[0]:  # noqa: ASYNC110 - polling the database: no event to await
                await asyncio.sleep(0.05)
    assert await counts(mongo_db) == (0, 0, 0)  # metadata, GridFS files and chunks all gone


async def test_no_background_cleanup_at_interval_zero(make_settings: Callable[..., Settings]) -> None:
    from code_interpreter.interpreter import CodeInterpreter

    async with CodeInterpreter(make_settings(cleanup_interval_s=0)) as interp:
        assert interp.files._cleanup_task is None


async def test_a_cleanup_cancelled_mid_batch_leaves_no_orphans(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings]
) -> None:
    """Cancelling a cleanup (shutdown) finishes the batch it is deleting: every file is whole or gone."""
    clock = Clock()
    fm = FileManager(mongo_db, make_settings(file_expiration_hours=1.0), clock=clock, cleanup_batch=20)
    for i in range(60):
        await fm.upload_file(1, b"x", f"{i}.txt")
    clock.now = T0 + timedelta(hours=1)
    task = asyncio.create_task(fm.cleanup_expired_files())
    async with asyncio.timeout(HANG_GUARD_S):
        while (await counts(mongo_db))[0] == 60:  # noqa: ASYNC110 - polling the database: no event to await
            await asyncio.sleep(0.001)
    task.cancel()  # the first batch's metadata is gone: its bytes are being deleted right now
    with pytest.raises(asyncio.CancelledError):
        await task
    meta, files, chunks = await counts(mongo_db)
    assert meta == files == chunks and meta % 20 == 0 and meta < 60
    assert await fm.reconcile(grace_s=0) == {"orphan_blobs": 0, "orphan_metadata": 0}
