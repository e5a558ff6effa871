"""Faults in the database: the server killed with SIGKILL during uploads and during a cleanup.

The interpreter talks to a SecantusDB server process of the test's own (fixed port and storage
path), which is killed with ``kill -9`` while the operation runs and restarted on the same port and
data afterwards. Proves: the call in flight ends within the retry bounds with StorageUnavailable or
a ``{"success": False}`` result (never a hang, never a raw driver exception); the same interpreter
serves the next call once the server is back, without being restarted; and every file that
``upload_file`` acknowledged before or during the crash is still listed and readable, with the
acknowledged sha256 — the acknowledgement is durable (journaled), not just sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from _filestore import Commands, bucket_names, counts
from code_interpreter.errors import StorageUnavailable
from code_interpreter.files import FileManager
from code_interpreter.files.orphans import find_orphans
from code_interpreter.interpreter import CodeInterpreter
from code_interpreter.settings import Settings

from .conftest import OwnServer, within

# The retry policy gives up after 8 s plus one server-selection wait (2 s): far below this.
CALL_BOUND_S = 45.0


class Uploader:
    """Uploads distinct multi-chunk files in a loop and records what each call answered."""

    def __init__(self, interp: CodeInterpreter, user: int) -> None:
        self.interp = interp
        self.user = user
        self.acknowledged: dict[str, str] = {}
        self.refused: list[str] = []
        self.unavailable: list[str] = []
        self.stop = asyncio.Event()

    async def run(self) -> None:
        """Upload until stopped; a StorageUnavailable is recorded, any other exception fails the test."""
        i = 0
        while not self.stop.is_set():
            data = os.urandom(100_000 + 37 * i)  # several GridFS chunks each
            i += 1
            try:
                r = await self.interp.files.upload_file(self.user, data, f"upload-{i}.bin")
            except StorageUnavailable as exc:
                self.unavailable.append(str(exc))
                continue
            if r["success"]:
                assert r["sha256"] == hashlib.sha256(data).hexdigest()
                self.acknowledged[r["file_id"]] = r["sha256"]
            else:
                assert r.get("error"), r
                self.refused.append(r["error"])


async def assert_intact(files: FileManager, user: int, acknowledged: dict[str, str]) -> None:
    """Every acknowledged file is listed and readable with the acknowledged sha256."""
    listed = {f["file_id"] for f in await files.list_user_files(user)}
    missing = sorted(set(acknowledged) - listed)
    assert not missing, f"{len(missing)} acknowledged file(s) lost: {missing[:3]}"
    for file_id, sha in acknowledged.items():
        data = await files.read_file(file_id, user)
        assert data is not None, f"acknowledged file {file_id} is not readable"
        assert hashlib.sha256(data).hexdigest() == sha, f"acknowledged file {file_id} is corrupt"


async def test_database_killed_mid_upload(
    own_server: OwnServer, make_settings: Callable[..., Settings]
) -> None:
    async with CodeInterpreter(make_settings(mongodb_uri=own_server.uri)) as interp:
        before = Uploader(interp, 1)
        for i in range(3):
            r = await interp.files.upload_file(1, os.urandom(50_000), f"before-{i}.bin")
            assert r["success"], r
            before.acknowledged[r["file_id"]] = r["sha256"]

        uploaders = [Uploader(interp, user) for user in (2, 3, 4)]
        tasks = [asyncio.create_task(u.run()) for u in uploaders]
        # Poll the three uploaders' counters until uploads are flowing.
        while sum(len(u.acknowledged) for u in uploaders) < 6:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        own_server.kill9()
        for u in uploaders:
            u.stop.set()  # each finishes the call it has in flight, against a dead server
        await within(CALL_BOUND_S, asyncio.gather(*tasks))

        failed = [e for u in uploaders for e in (*u.unavailable, *u.refused)]
        assert failed, "no upload was in flight when the server died: the test proved nothing"
        for message in (e for u in uploaders for e in u.unavailable):
            assert f"127.0.0.1:{own_server.port}" in message, message  # names the server

        own_server.start()  # same port, same data directory
        after = await within(CALL_BOUND_S, interp.files.upload_file(5, b"after the crash", "after.txt"))
        assert after["success"], after
        for u in (before, *uploaders):
            await assert_intact(interp.files, u.user, u.acknowledged)
        # A failed upload leaves at most a blob without metadata; reconcile removes it and
        # nothing acknowledged.
        await interp.files.reconcile(grace_s=0)
        for u in (before, *uploaders):
            await assert_intact(interp.files, u.user, u.acknowledged)
        metas, blobs, _ = await counts(interp.db)
        assert blobs == metas


async def test_database_killed_mid_cleanup(
    own_server: OwnServer, make_settings: Callable[..., Settings]
) -> None:
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    now = [t0]
    async with CodeInterpreter(make_settings(mongodb_uri=own_server.uri)) as interp:
        # The interpreter's own database and retry policy, with a clock the test moves.
        files = FileManager(interp.db, interp.settings, clock=lambda: now[0], cleanup_batch=10)
        await files.ensure_indexes()
        expiring: list[str] = []
        for i in range(150):
            r = await files.upload_file(7, os.urandom(300 + i), f"old-{i}.bin")
            assert r["success"], r
            expiring.append(r["file_id"])
        now[0] = t0 + timedelta(hours=47)
        kept: dict[str, str] = {}
        for i in range(5):
            r = await files.upload_file(7, os.urandom(70_000), f"young-{i}.bin")
            assert r["success"], r
            kept[r["file_id"]] = r["sha256"]
        now[0] = t0 + timedelta(hours=48, seconds=1)  # the first 150 have expired, the 5 have not

        cleanup = asyncio.create_task(files.cleanup_expired_files())
        while await files.meta.count_documents({"file_id": {"$in": expiring}}) == len(expiring):
            assert not cleanup.done(), "cleanup ended before it deleted anything"
            await asyncio.sleep(0.005)
        own_server.kill9()  # some batches are deleted, the rest are not
        outcome: Any
        try:
            outcome = await within(CALL_BOUND_S, cleanup)
        except StorageUnavailable as exc:
            outcome = exc
        assert isinstance(outcome, StorageUnavailable), f"cleanup finished before the kill ({outcome})"

        own_server.start()
        await within(CALL_BOUND_S, files.cleanup_expired_files())  # picks up where the crash left it
        assert await files.meta.count_documents({"file_id": {"$in": expiring}}) == 0
        await assert_intact(files, 7, kept)
        # Blobs whose metadata went before the crash are orphans now; reconcile finds and removes them.
        await files.reconcile(grace_s=0)
        assert (await counts(interp.db))[:2] == (len(kept), len(kept))
        for bucket in await bucket_names(interp.db):
            assert await interp.db[f"{bucket}.chunks"].count_documents({"files_id": {"$in": expiring}}) == 0
        await assert_intact(files, 7, kept)


KILL_POINTS = {
    "after a bucket's metadata delete": ("succeeded", "delete"),
    "before the first bucket drop": ("started", "drop"),
    "between a bucket's two drops": ("succeeded", "drop"),
}


@pytest.mark.parametrize("kill_at", list(KILL_POINTS))
async def test_database_killed_mid_cleanup_of_expired_buckets(
    own_server: OwnServer, make_settings: Callable[..., Settings], kill_at: str
) -> None:
    """kill -9 at each step of a cleanup that drops whole buckets (the server dies the moment the
    command starts or is acknowledged). Nothing acknowledged is lost, no metadata is left without its
    bytes (no half-deleted file), and the next cleanup finishes the job: every expired bucket gone."""
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    now = [t0]
    armed: list[bool] = []
    stage_wanted, command_wanted = KILL_POINTS[kill_at]

    def kill(stage: str, command: str, body: dict[str, Any]) -> None:
        if armed == [True] and (stage, command) == (stage_wanted, command_wanted):
            armed.append(False)  # once
            own_server.kill9()

    settings = make_settings(mongodb_uri=own_server.uri)
    client: AsyncMongoClient[Any] = AsyncMongoClient(
        own_server.uri, tz_aware=True, serverSelectionTimeoutMS=2000, event_listeners=[Commands(kill)]
    )
    try:
        db = client[settings.database]
        files = FileManager(db, settings, clock=lambda: now[0], cleanup_batch=5)
        expiring: list[str] = []
        for hour in range(3):  # 48 h files expiring in three different hours
            now[0] = t0 + timedelta(hours=hour)
            for i in range(10):
                r = await files.upload_file(7, os.urandom(260_000 + i), f"old-{hour}-{i}.bin")
                assert r["success"], r
                expiring.append(r["file_id"])
        now[0] = t0 + timedelta(hours=47)
        kept: dict[str, str] = {}
        for i in range(4):
            r = await files.upload_file(7, os.urandom(70_000), f"young-{i}.bin")
            kept[r["file_id"]] = r["sha256"]
        forever = FileManager(db, settings.replace(file_expiration_hours=-1), clock=lambda: now[0])
        r = await forever.upload_file(7, b"never expires", "forever.txt")
        kept[r["file_id"]] = r["sha256"]
        old_buckets = [b for b in await bucket_names(db) if b.startswith("file_blobs_20300103")]
        assert len(old_buckets) == 3

        now[0] = t0 + timedelta(hours=51, minutes=10)  # all three hours ended, the margin too
        armed.append(True)
        outcome: Any
        try:
            outcome = await within(CALL_BOUND_S, files.cleanup_expired_files())
        except StorageUnavailable as exc:
            outcome = exc
        assert armed == [True, False], f"the server was never killed {kill_at}"
        assert isinstance(outcome, StorageUnavailable), f"cleanup finished despite the kill ({outcome})"

        own_server.start()
        await assert_intact(files, 7, kept)
        _, without_bytes = await find_orphans(files.meta, files.buckets, files._retry, grace_s=0)
        assert without_bytes == [], "metadata outlived its bytes: a half-deleted file"

        await within(CALL_BOUND_S, files.cleanup_expired_files())  # picks up where the crash left it
        assert await files.meta.count_documents({"file_id": {"$in": expiring}}) == 0
        assert not set(old_buckets) & set(await bucket_names(db)), "an expired bucket survived"
        assert await files.reconcile(grace_s=0) == {"orphan_blobs": 0, "orphan_metadata": 0}
        await assert_intact(files, 7, kept)
        assert (await counts(db))[:2] == (len(kept), len(kept))
    finally:
        await client.close()
