"""Storage: external URI, db_handler, the embedded SecantusDB (start, reuse, stale lock, crash), retries.

Embedded tests use their own data dir with ``mongodb_uri=None`` (never the session server), and
small retry bounds so a failure is reported in seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import AutoReconnect, OperationFailure

from _embedded import gone, no_server_left
from code_interpreter.errors import ConfigurationError, StorageUnavailable
from code_interpreter.files import FileManager
from code_interpreter.settings import Settings
from code_interpreter.storage import EmbeddedServer, RetryPolicy, Storage, with_retries
from code_interpreter.storage.embedded import _pid_running

FAST = RetryPolicy(attempts=4, total_s=3.0, wait_initial_s=0.05, wait_max_s=0.3, server_selection_ms=300)
HANG_GUARD_S = 60  # not a speed assertion: only turns a hang into a failure


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def record(home: Path) -> dict[str, Any]:
    return dict(json.loads((home / "db" / "server.lock").read_text()))


# -- with_retries ---------------------------------------------------------------------------------


async def test_with_retries_retries_transient_faults_then_succeeds() -> None:
    calls: list[int] = []
    hooks: list[str] = []

    async def op() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise AutoReconnect("connection closed")
        return "ok"

    async def on_retry(exc: BaseException) -> None:
        hooks.append(type(exc).__name__)

    assert await with_retries(op, what="test op", policy=FAST, on_retry=on_retry) == "ok"
    assert len(calls) == 3
    assert hooks == ["AutoReconnect", "AutoReconnect"]


async def test_with_retries_gives_up_with_storage_unavailable_naming_the_server() -> None:
    calls: list[int] = []

    async def op() -> None:
        calls.append(1)
        raise AutoReconnect("connection refused")

    with pytest.raises(StorageUnavailable, match=r"db\.example:27017.*upload x\.csv.*AutoReconnect") as info:
        await with_retries(op, what="upload x.csv", policy=FAST, server="db.example:27017")
    assert len(calls) == FAST.attempts
    assert isinstance(info.value.__cause__, AutoReconnect)


async def test_with_retries_does_not_retry_real_answers() -> None:
    calls: list[int] = []

    async def op() -> None:
        calls.append(1)
        raise OperationFailure("not authorized", code=13)

    with pytest.raises(OperationFailure):
        await with_retries(op, what="x", policy=FAST)
    assert len(calls) == 1


async def test_with_retries_is_bounded_in_time() -> None:
    policy = RetryPolicy(attempts=1000, total_s=0.5, wait_initial_s=0.05, wait_max_s=0.1)
    calls: list[int] = []

    async def op() -> None:
        calls.append(1)
        raise AutoReconnect("down")

    async with asyncio.timeout(HANG_GUARD_S):
        with pytest.raises(StorageUnavailable):
            await with_retries(op, what="x", policy=policy)
    assert 1 < len(calls) < 1000


# -- external and handler modes --------------------------------------------------------------------


async def test_external_storage_connects_and_describes(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    storage = Storage(settings, retry=FAST)
    with pytest.raises(StorageUnavailable, match="not started"):
        _ = storage.db
    async with storage:
        db = await storage.start()  # idempotent
        assert db is storage.db
        await storage.ping()
        d = storage.describe()
        assert d["mode"] == "external"
        assert d["database"] == settings.database
        assert d["address"] in settings.mongodb_uri  # type: ignore[operator]
        await db.probe.insert_one({"a": 1})
        assert (await db.probe.find_one({}, {"_id": 0})) == {"a": 1}


def test_describe_redacts_credentials(tmp_path: Path) -> None:
    s = Settings(
        home=tmp_path, mongodb_uri="mongodb://alice:s3cret@db1.example:27017,db2.example/?replicaSet=rs"
    )
    d = Storage(s).describe()
    assert d == {
        "mode": "external",
        "address": "db1.example:27017,db2.example",
        "database": "code_interpreter",
    }
    assert "s3cret" not in json.dumps(d)


async def test_unreachable_server_fails_fast_with_its_name(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    storage = Storage(Settings(home=tmp_path, mongodb_uri=f"mongodb://127.0.0.1:{port}/"), retry=FAST)
    async with asyncio.timeout(HANG_GUARD_S):
        with pytest.raises(StorageUnavailable, match=f"127.0.0.1:{port}"):
            await storage.start()
    with pytest.raises(StorageUnavailable):
        _ = storage.db  # a failed start leaves nothing half-open


async def test_handler_modes(mongo_db: AsyncDatabase[Any], make_settings: Callable[..., Settings]) -> None:
    class Handler:  # the seed's shape: an object with a .db attribute
        def __init__(self, db: AsyncDatabase[Any]) -> None:
            self.db = db

    for handler in (mongo_db, Handler(mongo_db)):
        storage = Storage(make_settings(), handler)
        assert await storage.start() is mongo_db
        assert storage.describe()["mode"] == "handler"
        assert storage.describe()["database"] == mongo_db.name
        await storage.close()
        await mongo_db.command("ping")  # the caller's client is not ours to close
    with pytest.raises(ConfigurationError, match="AsyncDatabase"):
        Storage(make_settings(), object())


# -- embedded server -------------------------------------------------------------------------------


IDLE_S = 0.5  # the embedded server outlives its last user by this much in these tests


@pytest.fixture
async def embedded_home(tmp_path: Path) -> AsyncIterator[Path]:
    """A data dir of the test's own; a server still running there afterwards fails the test."""
    home = tmp_path / "ehome"
    yield home
    await no_server_left(home, HANG_GUARD_S)


def embedded_settings(home: Path) -> Settings:
    return Settings(home=home, mongodb_uri=None, database="emb", embedded_idle_s=IDLE_S)


async def run_snippet(code: str) -> str:
    """Run Python in a separate OS process (the same interpreter and package)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        textwrap.dedent(code),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(HANG_GUARD_S):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_embedded_start_reuse_by_another_process_and_stop(embedded_home: Path) -> None:
    storage = Storage(embedded_settings(embedded_home), retry=FAST)
    await storage.start()
    try:
        rec = record(embedded_home)
        d = storage.describe()
        assert d["mode"] == "embedded" and d["owner"] is True
        assert d["address"] == f"127.0.0.1:{rec['port']}"
        assert rec["pid"] != os.getpid() and _pid_running(rec["pid"])
        assert Path(rec["storage_path"]) == embedded_home / "db" / "data"
        fm = FileManager(storage.db, embedded_settings(embedded_home))
        up = await fm.upload_file(7, b"shared bytes", "a.txt")

        out = await run_snippet(f"""
            import asyncio, json
            from code_interpreter.settings import Settings
            from code_interpreter.storage import Storage
            from code_interpreter.files import FileManager
            async def main():
                s = Storage(Settings(home={str(embedded_home)!r}, mongodb_uri=None, database="emb",
                                     embedded_idle_s={IDLE_S}))
                await s.start()
                data = await FileManager(s.db, s.settings).read_file({up["file_id"]!r}, 7)
                print(json.dumps({{**s.describe(), "data": data.decode()}}))
                await s.close()
            asyncio.run(main())
        """)
        other = json.loads(out.strip().splitlines()[-1])
        assert other["address"] == d["address"]  # reused, not a second server
        assert other["owner"] is False
        assert other["data"] == "shared bytes"
        assert record(embedded_home)["pid"] == rec["pid"]
        await asyncio.sleep(IDLE_S * 3)
        await storage.ping()  # the other process's close() left our server running: we still use it
        assert _pid_running(rec["pid"])
    finally:
        await storage.close()
    # The last user has gone: its watchdog stops the server, and itself.
    assert await gone(rec["pid"], rec["watchdog_pid"], within_s=HANG_GUARD_S)


async def test_embedded_stale_lock_is_replaced(embedded_home: Path) -> None:
    dead = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await dead.wait()  # its pid is now free: the record below names a dead server
    (embedded_home / "db").mkdir(parents=True)
    stale = {
        "pid": dead.pid,
        "port": free_port(),
        "storage_path": str(embedded_home / "db" / "data"),
        "started_at": 0,
    }
    (embedded_home / "db" / "server.lock").write_text(json.dumps(stale))
    storage = Storage(embedded_settings(embedded_home), retry=FAST)
    try:
        await storage.start()
        rec = record(embedded_home)
        assert rec["pid"] != dead.pid and _pid_running(rec["pid"])
        assert rec["port"] == stale["port"]  # the recorded port is reused when free
        await storage.ping()
    finally:
        await storage.close()


async def test_embedded_kill_9_restarts_and_keeps_acknowledged_files(embedded_home: Path) -> None:
    settings = embedded_settings(embedded_home)
    storage = Storage(settings, retry=FAST)
    await storage.start()
    try:
        fm = FileManager(storage.db, settings)
        payloads = [os.urandom(n) for n in (0, 1, 1000, 300_000, 1_200_000)]
        ids = []
        for i, p in enumerate(payloads):
            r = await fm.upload_file(1, p, f"f{i}.bin")
            assert r["success"] and r["sha256"] == hashlib.sha256(p).hexdigest()
            ids.append(r["file_id"])
        old = record(embedded_home)
        os.kill(old["pid"], signal.SIGKILL)
        async with asyncio.timeout(HANG_GUARD_S):
            for fid, p in zip(ids, payloads, strict=True):
                data = await fm.read_file(fid, 1)
                assert data is not None and hashlib.sha256(data).hexdigest() == hashlib.sha256(p).hexdigest()
        new = record(embedded_home)
        assert new["pid"] != old["pid"] and new["port"] == old["port"]
        assert storage.describe()["owner"] is True  # this process restarted it
        assert (await fm.upload_file(1, b"after the crash", "g.txt"))["success"]
        assert len(await fm.list_user_files(1)) == len(payloads) + 1
    finally:
        await storage.close()
    assert await gone(new["pid"], new["watchdog_pid"], within_s=HANG_GUARD_S)  # a restarted one stops too


async def test_the_starter_leaving_never_cuts_off_another_user(embedded_home: Path) -> None:
    settings = embedded_settings(embedded_home)
    starter, user = Storage(settings, retry=FAST), Storage(settings, retry=FAST)
    await starter.start()
    await user.start()
    try:
        assert starter.describe()["owner"] is True and user.describe()["owner"] is False
        fm = FileManager(user.db, settings)
        r = await fm.upload_file("u", b"kept", "k.txt")
        first = record(embedded_home)
        await starter.close()  # the process that started it is done with it
        await asyncio.sleep(IDLE_S * 4)  # well past the idle time: still one user
        assert _pid_running(first["pid"]) and record(embedded_home) == first
        assert await fm.read_file(r["file_id"], "u") == b"kept"
        assert (await fm.upload_file("u", b"more", "m.txt"))["success"]
    finally:
        await user.close()
        await starter.close()
    assert await gone(first["pid"], first["watchdog_pid"], within_s=HANG_GUARD_S)


async def test_dead_external_server_gives_storage_unavailable(tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path / "ext")  # a server we control, used as an "external" one
    rec = await server.ensure()
    settings = Settings(home=tmp_path / "home", mongodb_uri=f"mongodb://127.0.0.1:{rec.port}/", database="x")
    storage = Storage(settings, retry=FAST)
    await storage.start()
    try:
        fm = FileManager(storage.db, settings)
        r = await fm.upload_file(1, b"x", "x.txt")
        os.kill(rec.pid, signal.SIGKILL)
        async with asyncio.timeout(HANG_GUARD_S):
            with pytest.raises(StorageUnavailable, match=f"127.0.0.1:{rec.port}"):
                await fm.get_file(r["file_id"], 1)
            with pytest.raises(StorageUnavailable):
                await fm.upload_file(1, b"y", "y.txt")
    finally:
        await storage.close()
        await server.stop()
