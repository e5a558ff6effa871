"""The embedded server's lifecycle across real processes: it outlives its last user, and only it.

Each "user" is a separate Python process that opens the embedded storage on a shared home. The
tests end them the ways processes end — a clean close, returning without closing, kill -9 — and
check that the server (and its watchdog) stops once no process uses it, that a process still
using it is never cut off, that one arriving while the last leaves gets a working server, and
that no acknowledged file is lost on the way.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from _embedded import gone, no_server_left
from code_interpreter.files import FileManager
from code_interpreter.settings import Settings
from code_interpreter.storage import RetryPolicy, Storage
from code_interpreter.storage.embedded import _pid_running

IDLE_S = 0.5
HANG_GUARD_S = 90  # bounds a hang only; the loaded 2-core machine may need seconds per server start
FAST = RetryPolicy(attempts=4, total_s=3.0, wait_initial_s=0.05, wait_max_s=0.3, server_selection_ms=300)

USER = """
import asyncio, json, os, sys
from code_interpreter.files import FileManager
from code_interpreter.settings import Settings
from code_interpreter.storage import Storage

async def main():
    idle = float(sys.argv[2])
    settings = Settings(home=sys.argv[1], mongodb_uri=None, database="emb", embedded_idle_s=idle)
    storage = Storage(settings)
    await storage.start()
    data = b"acknowledged by " + str(os.getpid()).encode()
    up = await FileManager(storage.db, settings).upload_file(7, data, "a.txt")
    rec = json.loads(open(os.path.join(sys.argv[1], "db", "server.lock")).read())
    print(json.dumps({"file_id": up["file_id"], "server": rec}), flush=True)
    how = (await asyncio.to_thread(sys.stdin.readline)).strip()
    if how == "close":
        await storage.close()
    os._exit(0)  # "exit": gone without closing anything, as a crashing bot would

asyncio.run(main())
"""


class UserProcess:
    """A separate process using the embedded server until told to close, to exit, or killed."""

    def __init__(self, proc: asyncio.subprocess.Process, hello: dict[str, Any]) -> None:
        self.proc = proc
        self.file_id: str = hello["file_id"]
        self.server: dict[str, Any] = hello["server"]

    @classmethod
    async def start(cls, home: Path) -> UserProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            textwrap.dedent(USER),
            str(home),
            str(IDLE_S),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        async with asyncio.timeout(HANG_GUARD_S):
            line = await proc.stdout.readline()
        if not line:
            err = await proc.stderr.read() if proc.stderr else b""
            raise AssertionError(f"the user process failed: {err.decode()}")
        return cls(proc, json.loads(line))

    async def end(self, how: str) -> None:
        """``close`` (closes its storage), ``exit`` (never closes) or ``kill`` (SIGKILL)."""
        if how == "kill":
            self.proc.kill()
        else:
            assert self.proc.stdin is not None
            self.proc.stdin.write(how.encode() + b"\n")
            await self.proc.stdin.drain()
        async with asyncio.timeout(HANG_GUARD_S):
            await self.proc.communicate()
        assert self.proc.returncode == (-signal.SIGKILL if how == "kill" else 0)


def settings_for(home: Path) -> Settings:
    return Settings(home=home, mongodb_uri=None, database="emb", embedded_idle_s=IDLE_S)


def current(home: Path) -> dict[str, Any]:
    return dict(json.loads((home / "db" / "server.lock").read_text()))


@pytest.fixture
async def home(tmp_path: Path) -> AsyncIterator[Path]:
    """A shared home; after the test no server or watchdog may still run there."""
    path = tmp_path / "shared"
    yield path
    await no_server_left(path, HANG_GUARD_S)


async def read_back(home: Path, file_ids: dict[str, int]) -> None:
    """Every acknowledged file is there, byte for byte (from a process of our own)."""
    settings = settings_for(home)
    async with Storage(settings, retry=FAST) as storage:
        fm = FileManager(storage.db, settings)
        for file_id, pid in file_ids.items():
            assert await fm.read_file(file_id, 7) == b"acknowledged by " + str(pid).encode()


@pytest.mark.parametrize("how", ["kill", "exit", "close"])
async def test_no_server_outlives_its_last_user(home: Path, how: str) -> None:
    """Regression (#15): a process that was killed, or never closed its storage, left its server running."""
    user = await UserProcess.start(home)
    server = user.server
    assert _pid_running(server["pid"]) and _pid_running(server["watchdog_pid"])
    await user.end(how)
    assert await gone(server["pid"], server["watchdog_pid"], within_s=HANG_GUARD_S)
    await read_back(home, {user.file_id: user.proc.pid})  # a new server; nothing acknowledged lost


async def test_a_live_user_is_never_cut_off(home: Path) -> None:
    settings = settings_for(home)
    async with Storage(settings, retry=FAST) as storage:
        fm = FileManager(storage.db, settings)
        mine = await fm.upload_file(7, b"mine", "mine.txt")
        first = current(home)
        others = [await UserProcess.start(home) for _ in range(3)]
        assert all(o.server["pid"] == first["pid"] for o in others)  # they share our server
        for other, how in zip(others, ["kill", "exit", "close"], strict=True):
            await other.end(how)
        await asyncio.sleep(IDLE_S * 4)  # far past the idle time: we still hold our share
        assert current(home) == first and _pid_running(first["pid"])
        assert await fm.read_file(mine["file_id"], 7) == b"mine"
        for other in others:
            assert await fm.read_file(other.file_id, 7) == b"acknowledged by " + str(other.proc.pid).encode()
        assert (await fm.upload_file(7, b"still served", "late.txt"))["success"]
    assert await gone(first["pid"], first["watchdog_pid"], within_s=HANG_GUARD_S)


@pytest.mark.parametrize("delay", [0.0, IDLE_S / 2, IDLE_S * 1.2, IDLE_S * 3])
async def test_a_user_arriving_while_the_last_one_leaves(home: Path, delay: float) -> None:
    """However the arrival falls (before the idle time, during the stop, after it), it gets a server
    that stays up for as long as it is used, and sees what the one leaving acknowledged."""
    leaving = await UserProcess.start(home)
    old = leaving.server
    await leaving.end("kill")
    await asyncio.sleep(delay)
    settings = settings_for(home)
    async with Storage(settings, retry=FAST) as storage:
        mine = current(home)
        if mine["pid"] != old["pid"]:
            assert not _pid_running(old["pid"])  # never two servers on one data dir
        fm = FileManager(storage.db, settings)
        assert await fm.read_file(leaving.file_id, 7) == b"acknowledged by " + str(leaving.proc.pid).encode()
        await asyncio.sleep(IDLE_S * 3)
        assert current(home) == mine and _pid_running(mine["pid"])  # not stopped under us, not replaced
        assert (await fm.upload_file(7, b"arrived", "b.txt"))["success"]
    assert await gone(mine["pid"], mine["watchdog_pid"], within_s=HANG_GUARD_S)


async def test_a_killed_watchdog_takes_its_server_along_and_users_get_a_new_one(home: Path) -> None:
    """kill -9 of the watchdog: its server gets SIGTERM (parent-death signal) and stops cleanly; the
    live user's next call starts a new server on the same port and finds every acknowledged file."""
    settings = settings_for(home)
    async with Storage(settings, retry=FAST) as storage:
        fm = FileManager(storage.db, settings)
        kept = await fm.upload_file(7, b"kept across", "k.txt")
        first = current(home)
        os.kill(first["watchdog_pid"], signal.SIGKILL)
        assert await gone(first["pid"], within_s=HANG_GUARD_S)  # not orphaned: it followed its watchdog
        async with asyncio.timeout(HANG_GUARD_S):
            assert await fm.read_file(kept["file_id"], 7) == b"kept across"
        second = current(home)
        assert second["pid"] != first["pid"] and second["port"] == first["port"]
        assert _pid_running(second["watchdog_pid"])
        assert (await fm.upload_file(7, b"after", "a.txt"))["success"]
    assert await gone(second["pid"], second["watchdog_pid"], within_s=HANG_GUARD_S)
