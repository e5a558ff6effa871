"""FileManager on the real server: upload, list, get, read, materialize, delete, quotas, limits."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from _clock import T0, Clock
from _filestore import bucket_holding, counts
from code_interpreter.errors import FileStoreError
from code_interpreter.files import BUCKET, COLLECTION, FileManager
from code_interpreter.settings import Settings

MB = 2**20


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fm(mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings], clock: Clock) -> FileManager:
    return FileManager(mongo_db, make_settings(), clock=clock)


async def stream(parts: list[bytes]) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


# -- the basic lifecycle ---------------------------------------------------------------------------


async def test_upload_list_get_read_delete(fm: FileManager, mongo_db: AsyncDatabase[Any]) -> None:
    data = b"a,b\n1,2\n" * 1000
    up = await fm.upload_file(123456789012345678, data, "table.csv")
    assert up["success"] is True
    assert up["filename"] == "table.csv"
    assert up["file_size"] == len(data)
    assert up["sha256"] == hashlib.sha256(data).hexdigest()
    assert (up["file_type"], up["content_type"]) == ("csv", "text/csv")
    assert up["file_id"].startswith("user_123456789012345678_")
    assert up["uploaded_at"] == T0.isoformat()
    assert up["expires_at"] == (T0 + timedelta(hours=48)).isoformat()

    raw = await mongo_db[COLLECTION].find_one({"file_id": up["file_id"]})
    assert raw is not None
    assert raw["user_id"] == "123456789012345678"  # ids are stored as strings
    assert raw["uploaded_at"] == T0 and raw["expires_at"] == T0 + timedelta(hours=48)  # BSON datetimes

    listed = await fm.list_user_files("123456789012345678")  # int and str name the same user
    assert [f["file_id"] for f in listed] == [up["file_id"]]
    got = await fm.get_file(up["file_id"], 123456789012345678)
    assert got is not None and got["sha256"] == up["sha256"] and got["file_path"].startswith("gridfs://")
    assert await fm.read_file(up["file_id"], 123456789012345678) == data

    assert await fm.delete_user_file(up["file_id"], 123456789012345678) is True
    assert await fm.get_file(up["file_id"], 123456789012345678) is None
    assert await fm.delete_user_file(up["file_id"], 123456789012345678) is False
    assert await counts(mongo_db) == (0, 0, 0)  # metadata, GridFS file and chunks all gone


async def test_list_is_newest_first(fm: FileManager, clock: Clock) -> None:
    ids = []
    for i in range(3):
        clock.now = T0 + timedelta(minutes=i)
        ids.append((await fm.upload_file(1, b"x", f"{i}.txt"))["file_id"])
    assert [f["file_id"] for f in await fm.list_user_files(1)] == ids[::-1]


async def test_another_users_file_is_invisible(fm: FileManager, tmp_path: Path) -> None:
    up = await fm.upload_file(1, b"secret", "mine.txt")
    fid = up["file_id"]
    assert await fm.get_file(fid, 2) is None
    assert await fm.read_file(fid, 2) is None
    assert await fm.materialize(fid, 2) is None
    assert await fm.list_user_files(2) == []
    assert await fm.delete_user_file(fid, 2) is False
    assert await fm.delete_all_user_files(2) == 0
    assert await fm.read_file(fid, 1) == b"secret"  # untouched for its owner


@pytest.mark.parametrize(
    "bad_id", ["../../etc/passwd", "", "user_1_2_zz", None, 42, "user_1_1_abcd; rm -rf /"]
)
async def test_malformed_file_ids_are_not_found(fm: FileManager, bad_id: Any) -> None:
    assert await fm.get_file(bad_id, 1) is None
    assert await fm.read_file(bad_id, 1) is None
    assert await fm.materialize(bad_id, 1) is None
    assert await fm.delete_user_file(bad_id, 1) is False


async def test_ensure_indexes_is_idempotent(fm: FileManager, mongo_db: AsyncDatabase[Any]) -> None:
    await fm.ensure_indexes()
    await fm.ensure_indexes()
    meta = await mongo_db[COLLECTION].index_information()
    keys = {tuple(v["key"]): v.get("unique", False) for v in meta.values()}
    assert keys[(("user_id", 1), ("expires_at", -1))] is False
    assert keys[(("file_id", 1),)] is True
    assert (("expires_at", 1),) in keys
    assert not any("expireAfterSeconds" in v for v in meta.values())  # no TTL index, by design
    chunks = await mongo_db[f"{BUCKET}.chunks"].index_information()
    assert any(tuple(v["key"]) == (("files_id", 1), ("n", 1)) and v.get("unique") for v in chunks.values())


# -- names, types, sizes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("../../etc/passwd", "passwd"),
        ("/abs/path/x.csv", "x.csv"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("..", "file"),
    ],
)
async def test_traversal_filenames_are_neutralised(fm: FileManager, name: str, shown: str) -> None:
    up = await fm.upload_file(1, b"data", name)
    assert up["filename"] == shown
    path = await fm.materialize(up["file_id"], 1)
    assert path is not None and path.name == shown
    assert path.resolve().parent == (fm.cache_dir / up["file_id"]).resolve()


@pytest.mark.parametrize("name", ["données €.csv", "日本語.txt", "🐍 snake.json", "Ünïcödé name.parquet"])
async def test_unicode_names_are_kept(fm: FileManager, name: str) -> None:
    up = await fm.upload_file("u", b"x", name)
    assert up["filename"] == name
    assert [f["filename"] for f in await fm.list_user_files("u")] == [name]
    path = await fm.materialize(up["file_id"], "u")
    assert path is not None and path.name == name and path.read_bytes() == b"x"


async def test_content_sniff_beats_the_extension(fm: FileManager) -> None:
    zip_bytes = b"PK\x03\x04" + os.urandom(100)
    up = await fm.upload_file(1, zip_bytes, "really_a_zip.csv")
    assert (up["file_type"], up["content_type"]) == ("zip", "application/zip")
    png = await fm.upload_file(1, stream([b"\x89PNG\r\n", b"\x1a\n", os.urandom(50)]), "img.dat")
    assert png["file_type"] == "png"  # the sniff works on a stream split mid-magic too


@pytest.mark.parametrize("source", ["bytes", "stream", "empty-stream"])
async def test_zero_byte_files(fm: FileManager, source: str) -> None:
    data: Any = {"bytes": b"", "stream": stream([b"", b""]), "empty-stream": stream([])}[source]
    up = await fm.upload_file(1, data, "empty.csv")
    assert up["success"] and up["file_size"] == 0 and up["sha256"] == hashlib.sha256(b"").hexdigest()
    assert await fm.read_file(up["file_id"], 1) == b""
    path = await fm.materialize(up["file_id"], 1)
    assert path is not None and path.read_bytes() == b""


async def test_stream_upload_matches_bytes_upload(fm: FileManager) -> None:
    data = os.urandom(3 * MB + 12345)
    parts = [data[i : i + 100_000] for i in range(0, len(data), 100_000)]
    a = await fm.upload_file(1, data, "a.bin")
    b = await fm.upload_file(1, stream(parts), "b.bin")
    assert a["sha256"] == b["sha256"] == hashlib.sha256(data).hexdigest()
    assert await fm.read_file(b["file_id"], 1) == data


async def test_50mb_plus_one_stream_is_refused_without_holding_it(
    fm: FileManager, mongo_db: AsyncDatabase[Any]
) -> None:
    limit = fm.settings.max_file_size
    assert limit == 50 * MB
    consumed = 0
    block = b"\x00" * MB

    async def source(total: int) -> AsyncIterator[bytes]:
        nonlocal consumed
        sent = 0
        while sent < total:
            part = block[: min(MB, total - sent)]
            sent += len(part)
            consumed += len(part)
            yield part

    tracing = tracemalloc.is_tracing()  # the suite traces allocations to name leaks (tests/_leaks.py)
    if tracing:
        tracemalloc.reset_peak()
    else:
        tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        result = await fm.upload_file(1, source(limit + 1), "big.bin")
        _, peak = tracemalloc.get_traced_memory()
        peak -= before
    finally:
        if not tracing:
            tracemalloc.stop()
    assert result == {"success": False, "error": "File too large. Maximum size is 50MB"}
    assert consumed == limit + 1
    assert peak < 16 * MB  # a few chunks in flight, never the whole 50 MB
    assert await counts(mongo_db) == (0, 0, 0)  # the chunks already written were removed

    consumed = 0
    result = await fm.upload_file(1, source(2 * 2**30), "huge.bin")  # a 2 GB stream
    assert result["success"] is False
    assert consumed <= limit + MB  # reading stopped at the first part over the cap
    assert await counts(mongo_db) == (0, 0, 0)


async def test_oversized_bytes_are_refused_before_any_write(
    fm: FileManager, mongo_db: AsyncDatabase[Any]
) -> None:
    small = FileManager(mongo_db, fm.settings.replace(max_file_size=1000))
    assert (await small.upload_file(1, b"x" * 1000, "ok.bin"))["success"]
    assert await small.upload_file(1, b"x" * 1001, "no.bin") == {
        "success": False,
        "error": "File too large. Maximum size is 1000 bytes",
    }
    assert (await counts(mongo_db))[0] == 1


# -- consistency -------------------------------------------------------------------------------------


async def test_interrupted_stream_leaves_nothing(fm: FileManager, mongo_db: AsyncDatabase[Any]) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield os.urandom(MB)
        yield os.urandom(MB)
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await fm.upload_file(1, broken(), "partial.bin")
    assert await counts(mongo_db) == (0, 0, 0)
    assert await fm.list_user_files(1) == []


async def test_failed_metadata_write_removes_the_blob(fm: FileManager, mongo_db: AsyncDatabase[Any]) -> None:
    await fm.ensure_indexes()
    # A real server-side refusal: a validator the metadata document cannot satisfy.
    await mongo_db.command("collMod", COLLECTION, validator={"$jsonSchema": {"required": ["no_such_field"]}})
    with pytest.raises(FileStoreError, match="refused"):
        await fm.upload_file(1, os.urandom(600_000), "x.bin")
    assert await counts(mongo_db) == (0, 0, 0)


async def test_corrupt_bytes_are_detected(fm: FileManager, mongo_db: AsyncDatabase[Any]) -> None:
    up = await fm.upload_file(1, b"original bytes", "c.txt")
    bucket = await bucket_holding(mongo_db, up["file_id"])
    await mongo_db[f"{bucket}.chunks"].update_one(
        {"files_id": up["file_id"]}, {"$set": {"data": b"tampered bytes"}}
    )
    with pytest.raises(FileStoreError, match="corrupt"):
        await fm.read_file(up["file_id"], 1)
    with pytest.raises(FileStoreError, match="corrupt"):
        await fm.materialize(up["file_id"], 1)
    assert not (fm.cache_dir / up["file_id"] / "c.txt").exists()  # no unverified copy left behind


# -- local cache ---------------------------------------------------------------------------------------


async def test_materialize_verifies_and_repairs_the_cache(fm: FileManager) -> None:
    data = os.urandom(700_000)
    up = await fm.upload_file(1, data, "m.bin")
    path = await fm.materialize(up["file_id"], 1)
    assert path is not None and path.read_bytes() == data
    assert path.is_relative_to(fm.settings.home / "cache")
    path.chmod(0o644)
    path.write_bytes(b"x" * len(data))  # same size, wrong bytes
    again = await fm.materialize(up["file_id"], 1)
    assert again == path and path.read_bytes() == data
    assert await fm.delete_user_file(up["file_id"], 1)
    assert not path.exists() and not path.parent.exists()


async def test_two_managers_with_different_homes_share_one_server(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    a = FileManager(mongo_db, make_settings(home=tmp_path / "host-a"))
    b = FileManager(mongo_db, make_settings(home=tmp_path / "host-b"))
    data = os.urandom(2 * MB + 7)
    up = await a.upload_file(42, data, "shared.bin")
    assert await b.read_file(up["file_id"], 42) == data
    path = await b.materialize(up["file_id"], 42)
    assert path is not None and path.is_relative_to(tmp_path / "host-b") and path.read_bytes() == data
    assert await b.delete_user_file(up["file_id"], 42)
    assert await a.get_file(up["file_id"], 42) is None


# -- quotas ------------------------------------------------------------------------------------------------


async def test_quota_refuse(fm: FileManager, mongo_db: AsyncDatabase[Any]) -> None:
    q = FileManager(mongo_db, fm.settings.replace(max_files_per_user=2, max_bytes_per_user=1000))
    assert (await q.upload_file(1, b"a" * 400, "1"))["success"]
    assert (await q.upload_file(1, b"b" * 400, "2"))["success"]
    third = await q.upload_file(1, b"c", "3")
    assert third["success"] is False and "quota" in third["error"].lower() and "delete" in third["error"]
    assert (await q.upload_file(2, b"other user", "x"))["success"]  # quotas are per user
    await q.delete_user_file((await q.list_user_files(1))[0]["file_id"], 1)
    too_big = await q.upload_file(1, stream([b"d" * 700]), "4")  # a stream: checked once its size is known
    assert too_big["success"] is False
    assert (await counts(mongo_db))[:2] == (2, 2)  # the refused stream's blob was removed


async def test_quota_evict_removes_the_oldest(
    mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings], clock: Clock
) -> None:
    q = FileManager(mongo_db, make_settings(max_files_per_user=2, quota_policy="evict"), clock=clock)
    ids = []
    for i in range(3):
        clock.now = T0 + timedelta(seconds=i)
        ids.append((await q.upload_file(1, f"file {i}".encode(), f"{i}.txt"))["file_id"])
    assert [f["file_id"] for f in await q.list_user_files(1)] == [ids[2], ids[1]]
    assert await q.read_file(ids[0], 1) is None
    assert (await counts(mongo_db))[:2] == (2, 2)
