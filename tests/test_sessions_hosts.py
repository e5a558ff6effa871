"""One session, any host (issue #23): hosts as separate OS processes sharing one database.

Each host is ``tests/_session_host.py`` in its own process (its own home, zygote and sandboxes), all on the
session's database and the shared sandbox runtime. A session is live on one host at a time; a cell that
reaches another host has it handed over through the database; a host that dies or stalls loses its
sessions when their leases run out, and the next host says what it restored and what was lost.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

HOST_SCRIPT = Path(__file__).with_name("_session_host.py")
LEASE_S = 2.0  # short leases: expiry tests wait seconds, not the default 10
START_S = 120.0


class Host:
    """One host process; ``run`` sends a cell and waits for its result."""

    def __init__(self, proc: asyncio.subprocess.Process, host_id: str, log: Path) -> None:
        self.proc = proc
        self.host_id = host_id
        self.log = log
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, settings: dict[str, Any], log: Path) -> Host:
        with open(log, "ab") as err:  # noqa: ASYNC230 - a local file, once per host
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(HOST_SCRIPT), json.dumps(settings),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err,
            )  # fmt: skip
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), START_S)
        assert line.startswith(b"ready "), f"the host did not start: {line!r}; see {log}"
        return cls(proc, line.split()[1].decode(), log)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            message = json.loads(line)
            future = self._waiting.pop(message["id"], None)
            if future is not None and not future.done():
                future.set_result(message["result"])
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(EOFError(f"host {self.host_id} ended; see {self.log}"))

    async def send(self, request: dict[str, Any], wait: float = 90.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        rid = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        self.proc.stdin.write((json.dumps({"id": rid, **request}) + "\n").encode())
        await self.proc.stdin.drain()
        return await asyncio.wait_for(future, wait)

    async def run(self, user: str, sid: str, code: str, timeout: float = 30) -> dict[str, Any]:  # noqa: ASYNC109
        return await self.send({"op": "run", "user": user, "sid": sid, "code": code, "timeout": timeout})

    async def quit(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            with contextlib_suppress():
                self.proc.stdin.write(b'{"op": "quit"}\n')
                await self.proc.stdin.drain()
            try:
                await asyncio.wait_for(self.proc.wait(), 60)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()
        with contextlib_suppress(asyncio.CancelledError):
            await self._reader

    async def kill(self, sig: int = signal.SIGKILL) -> None:
        os.kill(self.proc.pid, sig)
        if sig == signal.SIGKILL:
            await self.proc.wait()


def contextlib_suppress(*exc: type[BaseException]) -> Any:
    import contextlib

    return contextlib.suppress(*(exc or (OSError, ConnectionError)))


@pytest.fixture
async def hosts(tmp_path: Path, mongo_uri: str, sandbox_runtime: Any) -> AsyncIterator[Callable[..., Any]]:
    """A factory of hosts on one database (closed, and the database dropped, afterwards)."""
    database = f"ci_test_{uuid.uuid4().hex[:12]}"
    started: list[Host] = []

    async def start(name: str, **overrides: Any) -> Host:
        """A new host process named ``name`` (its own home); ``start.database`` is the shared database."""
        settings = {"home": str(tmp_path / name), "mongodb_uri": mongo_uri, "database": database,
                    "runtime_dir": str(sandbox_runtime.root), "session_lease_s": LEASE_S,
                    "session_checkpoint_s": 0.3, "max_parallel": 4, "preload_modules": ["numpy"],
                    "cleanup_interval_s": None, **overrides}  # fmt: skip
        host = await Host.start(settings, tmp_path / f"{name}.log")
        started.append(host)
        return host

    start.database = database  # type: ignore[attr-defined]
    yield start
    await asyncio.gather(*(h.quit() for h in started))
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri)
    try:
        await client.drop_database(database)
    finally:
        await client.close()


def _ok(r: dict[str, Any]) -> dict[str, Any]:
    assert r["success"], r
    return r


async def test_alternating_cells_over_two_and_three_hosts_see_each_others_effects(
    hosts: Callable[..., Any],
) -> None:
    a, b, c = await asyncio.gather(hosts("a"), hosts("b"), hosts("c"))
    user, sid = "alice", "conv-1"
    first = _ok(await a.run(user, sid, "x = 1\nprint(x)"))
    assert first["session"] == {"id": sid, "state": "new", "cell": 1}
    second = _ok(await b.run(user, sid, "x += 10\nprint(x)"))
    assert second["output"] == "11\n"  # B did not start a fresh session: A handed it over
    handoff = second["session"]["handoff"]
    assert handoff["from"] == a.host_id and handoff["expired"] is False and handoff["ms"] > 0
    assert second["session"]["cell"] == 2 and second["session"]["state"] == "restored"
    assert any("handed over from host" in n for n in second["notes"])
    third = _ok(await a.run(user, sid, "x += 100\nprint(x)"))
    assert third["output"] == "111\n" and third["session"]["handoff"]["from"] == b.host_id
    fourth = _ok(await c.run(user, sid, "x += 1000\nprint(x)"))
    assert fourth["output"] == "1111\n" and fourth["session"]["cell"] == 4
    # Two cells in a row on one host need no hand-off, and pay no database trip for one.
    fifth = _ok(await c.run(user, sid, "print(x)"))
    assert fifth["output"] == "1111\n" and "handoff" not in fifth["session"]


async def test_cells_sent_at_once_from_two_hosts_leave_the_acknowledged_count(
    hosts: Callable[..., Any],
) -> None:
    a, b = await asyncio.gather(hosts("a"), hosts("b"))
    user, sid = "bob", "counter"
    _ok(await a.run(user, sid, "n = 0"))
    cell = "n += 1\nprint(n)"
    sends = [(a if i % 2 else b).run(user, sid, cell, timeout=30) for i in range(12)]
    results = await asyncio.gather(*sends)
    acknowledged = [r for r in results if r["success"]]
    assert len(acknowledged) == 12, [r["error"] for r in results if not r["success"]]
    # Every acknowledged cell ran once, on the one live copy: each saw a different count.
    seen = sorted(int(r["output"]) for r in acknowledged)
    assert seen == list(range(1, len(acknowledged) + 1))
    c = await hosts("c")
    final = _ok(await c.run(user, sid, "print(n)"))
    assert int(final["output"]) == len(acknowledged)


async def test_the_owner_killed_another_host_continues_after_the_lease_and_says_what_was_lost(
    hosts: Callable[..., Any],
) -> None:
    a, b = await asyncio.gather(hosts("a"), hosts("b", session_checkpoint_s=None))
    user, sid = "carol", "crash"
    _ok(await a.run(user, sid, "x = 'checkpointed'"))
    await asyncio.sleep(1.5)  # quiet for longer than the checkpoint delay: cell 1 is saved
    # A burst of cells, never quiet long enough for a checkpoint, for longer than a renewal period: the
    # lease's record learns the cells ran, the snapshot does not. The host is killed mid-burst.
    burst_ends = time.monotonic() + LEASE_S / 3 + 0.6
    while time.monotonic() < burst_ends:
        _ok(await a.run(user, sid, "x = 'lost'\ny = 2"))
    await a.kill()
    t0 = time.monotonic()
    r = _ok(await b.run(user, sid, "print(x, 'y' in globals())"))
    waited = time.monotonic() - t0
    assert r["output"] == "checkpointed False\n"
    assert r["session"]["handoff"]["from"] == a.host_id and r["session"]["handoff"]["expired"] is True
    assert r["session"]["cell"] == 2  # the count continues from the snapshot's cell
    note = " ".join(r["notes"])
    assert "stopped answering" in note and "saved after cell 1" in note and "lost (at least" in note, note
    assert waited < LEASE_S + 15  # taken once the lease ran out, not sooner than it could


async def test_the_owner_stalled_past_its_lease_and_resumed_writes_nothing(
    hosts: Callable[..., Any], mongo_uri: str
) -> None:
    a, b = await asyncio.gather(hosts("a"), hosts("b"))
    user, sid = "dave", "stall"
    _ok(await a.run(user, sid, "x = 1"))
    await asyncio.sleep(1.0)  # checkpointed
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri)
    records = client[hosts.database]["session_snapshots"]  # type: ignore[attr-defined]
    fenced = ("owner", "epoch", "blob_id", "sha256")
    try:
        await a.kill(signal.SIGSTOP)
        try:
            taken = _ok(await b.run(user, sid, "x += 5\nprint(x)"))
            assert taken["output"] == "6\n" and taken["session"]["handoff"]["expired"] is True
            await asyncio.sleep(1.0)  # B checkpoints x = 6
            before = await records.find_one({"user_id": user, "session_id": sid})
            assert before is not None and before["owner"] == b.host_id
        finally:
            await a.kill(signal.SIGCONT)
        await asyncio.sleep(LEASE_S * 2)  # A's keeper runs: it learns it lost the session
        after = await records.find_one({"user_id": user, "session_id": sid})
        # A wrote nothing: the owner, the epoch and the snapshot are B's, as B left them.
        assert after is not None and {k: after[k] for k in fenced} == {k: before[k] for k in fenced}
    finally:
        await client.close()
    # A cell sent to A now is handed over from B: A's stale copy (x = 1) is never used again.
    back = _ok(await a.run(user, sid, "print(x)"))
    assert back["output"] == "6\n" and back["session"]["handoff"]["from"] == b.host_id
