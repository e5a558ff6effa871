"""Session ownership across hosts, on the real server: one owner per epoch, fencing, expiry, hand-off.

Hosts are separate OS processes (``_lease_host.py``), each with its own client, sharing one database.
Time is one clock the test moves and sends with every command, except where the server's own clock
(``$$NOW``) is the thing under test.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from _clock import T0, Clock
from _filestore import Commands
from code_interpreter.errors import LeaseLost
from code_interpreter.files.session_store import SNAPSHOT_BUCKET, SessionStore
from code_interpreter.settings import Settings

HOST_SCRIPT = Path(__file__).with_name("_lease_host.py")
LEASE_S = 10.0


class HostProcess:
    """A host in its own process: ``await host.call(op, ...)`` runs one command there."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.now: datetime | None = None  # sent with every command when set

    async def send(self, op: str, **args: Any) -> None:
        assert self.proc.stdin is not None
        cmd = {"op": op, **args}
        if self.now is not None:
            cmd["now"] = self.now.isoformat()
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()

    async def reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 90)
        assert line, f"host {self.name} died"
        out: dict[str, Any] = json.loads(line)
        return out

    async def call(self, op: str, **args: Any) -> Any:
        await self.send(op, **args)
        out = await self.reply()
        assert out["ok"], out
        return out["result"]

    async def refused(self, op: str, **args: Any) -> dict[str, Any]:
        await self.send(op, **args)
        out = await self.reply()
        assert not out["ok"], out
        return out


@asynccontextmanager
async def hosts(
    mongo_uri: str, db_name: str, *names: str, lease_s: float = LEASE_S, server_time: bool = False
) -> AsyncIterator[list[HostProcess]]:
    """Start one process per name, connected and ready; stop them all at the end."""
    extra = ["--server-time"] if server_time else []
    procs: list[HostProcess] = []
    try:
        for name in names:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(HOST_SCRIPT), mongo_uri, db_name, name, str(lease_s), *extra,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            procs.append(HostProcess(name, proc))
        for host in procs:
            assert host.proc.stdout is not None
            assert (await asyncio.wait_for(host.proc.stdout.readline(), 60)) == b"ready\n"
        yield procs
    finally:
        for host in procs:
            if host.proc.stdin is not None:
                host.proc.stdin.close()
        for host in procs:
            try:
                await asyncio.wait_for(host.proc.communicate(), 30)
            except TimeoutError:
                host.proc.kill()
                await host.proc.wait()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


# -- across processes ----------------------------------------------------------------------------------


async def test_hosts_racing_for_one_session_get_one_owner_per_epoch(
    mongo_uri: str, db_name: str, mongo_db: AsyncDatabase[Any]
) -> None:
    """Three processes take one session 15 times each, as fast as they can, on the server's clock."""
    async with hosts(mongo_uri, db_name, "A", "B", "C", server_time=True) as procs:
        for host in procs:  # all at once: each first takes before any has released
            await host.send("race", user="u1", sid="contended", rounds=15)
        results = {host.name: (await host.reply())["result"] for host in procs}
        last = await procs[0].call("load", user="u1", sid="contended")
    assert sum(r["first_held"] for r in results.values()) == 1, results  # one winner of the first race
    held = sorted(e for r in results.values() for e in r["held"])
    assert held == list(range(1, 46)), held  # every epoch taken exactly once, none lost
    record = await mongo_db["session_snapshots"].find_one({"user_id": "u1", "session_id": "contended"})
    assert record is not None and record["epoch"] == 45 and record["owner"] is None
    winner = next(name for name, r in results.items() if 45 in r["held"])
    assert (
        last == f"{winner}:45" and record["saved_epoch"] == 45
    )  # the last owner's fenced save is the one kept
    assert await mongo_db[f"{SNAPSHOT_BUCKET}.files"].count_documents({}) == 1  # every replaced blob deleted


async def test_a_taken_over_host_cannot_save_and_the_new_owners_snapshot_is_intact(
    mongo_uri: str, db_name: str, mongo_db: AsyncDatabase[Any]
) -> None:
    async with hosts(mongo_uri, db_name, "A", "B") as (a, b):
        a.now = b.now = at(0)
        first = await a.call("acquire", user="u", sid="s")
        assert first["held"] and first["epoch"] == 1 and first["previous_owner"] is None
        a.now = at(1)
        await a.call("save", user="u", sid="s", data="A after cell 3", cell=3)  # a save renews: until 11 s
        a.now = at(2)
        await a.call("renew", user="u", sid="s", cells=5)  # two more cells ran, not saved: until 12 s
        b.now = at(11)
        early = await b.call("acquire", user="u", sid="s")
        assert not early["held"] and early["owner"] == "A" and early["expires_at"] == at(12).isoformat()
        b.now = at(12)
        taken = await b.call("acquire", user="u", sid="s")
        assert taken["held"] and taken["epoch"] == 2
        assert taken["previous_owner"] == "A" and taken["previous_expired"] is True
        assert taken["saved_after_cell"] == 3 and taken["cells"] == 5  # cells 4 and 5 were lost
        assert await b.call("load", user="u", sid="s") == "A after cell 3"
        await b.call("save", user="u", sid="s", data="B after cell 4", cell=4)
        # A wakes up (as from a SIGSTOP) and tries to write: refused, and says who holds it now.
        a.now = at(13)
        late = await a.refused("save", user="u", sid="s", data="A, stale", cell=6)
        assert late["error"] == "LeaseLost" and "host B took it over (epoch 2)" in late["message"]
        assert "Stop this copy" in late["message"]
        assert (await a.refused("renew", user="u", sid="s", cells=6))["error"] == "LeaseLost"
        assert await a.call("release", user="u", sid="s") is False
        assert await b.call("load", user="u", sid="s") == "B after cell 4"
    record = await mongo_db["session_snapshots"].find_one({"user_id": "u", "session_id": "s"})
    assert record is not None and (record["owner"], record["epoch"], record["saved_epoch"]) == ("B", 2, 2)
    assert await mongo_db[f"{SNAPSHOT_BUCKET}.files"].count_documents({}) == 1  # A's refused blob is gone


async def test_a_handoff_request_reaches_the_owner_and_the_requester_takes_over(
    mongo_uri: str, db_name: str
) -> None:
    async with hosts(mongo_uri, db_name, "A", "B") as (a, b):
        a.now = b.now = at(0)
        for sid in ("s1", "s2", "s3"):
            assert (await a.call("acquire", user="u", sid=sid))["held"]
        assert await a.call("handoffs") == []
        b.now = at(1)
        for sid in ("s1", "s3"):
            asked = await b.call("handoff", user="u", sid=sid)
            assert not asked["held"] and asked["owner"] == "A" and asked["handoff_wanted_by"] == "B"
        b.now = at(2)
        again = await b.call("handoff", user="u", sid="s1")  # polling keeps the first request's time
        assert again["handoff_wanted_at"] == at(1).isoformat()
        a.now = at(3)
        wanted = await a.call("handoffs")  # one query for all of A's sessions
        assert sorted((w["session_id"], w["handoff_wanted_by"]) for w in wanted) == [("s1", "B"), ("s3", "B")]
        renewed = await a.call("renew", user="u", sid="s3", cells=2)  # a renewal carries the request too
        assert renewed["handoff_wanted_by"] == "B"
        await a.call("save", user="u", sid="s1", data="A's s1 after cell 2", cell=2)
        assert await a.call("release", user="u", sid="s1", cells=2) is True
        b.now = at(4)
        took = await b.call("handoff", user="u", sid="s1")
        assert took["held"] and took["epoch"] == 2 and took["handoff_wanted_by"] is None
        assert (
            took["previous_owner"] is None and took["previous_expired"] is False
        )  # handed over: nothing lost
        assert took["saved_after_cell"] == 2 and took["cells"] == 2
        assert await b.call("load", user="u", sid="s1") == "A's s1 after cell 2"
        assert [w["session_id"] for w in await a.call("handoffs")] == ["s3"]


async def test_the_servers_clock_decides_when_a_lease_runs_out(mongo_uri: str, db_name: str) -> None:
    """No injected clock: $$NOW on the server (SecantusDB needs it normalised to compare at all)."""
    async with hosts(mongo_uri, db_name, "A", "B", lease_s=1.0, server_time=True) as (a, b):
        assert (await a.call("acquire", user="u", sid="s"))["held"]
        held = await b.call("acquire", user="u", sid="s")
        assert not held["held"] and held["owner"] == "A"
        await asyncio.sleep(1.2)  # the server's clock cannot be moved: wait out a 1 s lease
        taken = await b.call("acquire", user="u", sid="s")
        assert taken["held"] and taken["epoch"] == 2 and taken["previous_expired"] is True


# -- one process, two clients --------------------------------------------------------------------------


@pytest.fixture
async def two_stores(
    mongo_uri: str, db_name: str, make_settings: Callable[..., Settings], clock: Clock
) -> AsyncIterator[tuple[SessionStore, SessionStore]]:
    """Two hosts' stores in this process, each on its own client, on the test's clock."""
    settings = make_settings(session_lease_s=LEASE_S)
    clients: list[AsyncMongoClient[Any]] = [AsyncMongoClient(mongo_uri, tz_aware=True) for _ in range(2)]
    try:
        stores = [SessionStore(c[db_name], settings, clock=clock) for c in clients]
        await stores[0].ensure_indexes()
        yield stores[0], stores[1]
    finally:
        for c in clients:
            await c.close()


async def test_a_renewed_lease_holds_and_an_unrenewed_one_is_taken_after_its_length(
    two_stores: tuple[SessionStore, SessionStore], clock: Clock
) -> None:
    a, b = two_stores
    lease = await a.acquire(7, "s", "A")
    assert lease.held and lease.expires_at == at(10) and lease.user_id == "7"
    clock.now = at(8)
    lease = await a.renew(lease, cells=4)
    assert lease.expires_at == at(18) and lease.cells == 4
    clock.now = at(17.999)
    assert not (await b.acquire(7, "s", "B")).held
    clock.now = at(18)
    taken = await b.acquire(7, "s", "B")
    assert taken.held and taken.epoch == 2 and taken.lost_cells == 4  # nothing was saved
    with pytest.raises(LeaseLost) as lost:
        await a.renew(lease)
    assert lost.value.owner == "B" and lost.value.epoch == 2


async def test_a_renewal_past_the_expiry_holds_while_nobody_took_it(
    two_stores: tuple[SessionStore, SessionStore], clock: Clock
) -> None:
    a, b = two_stores
    lease = await a.acquire("u", "s", "A")
    clock.now = at(30)  # A was paused past its lease; nobody came
    renewed = await a.renew(lease, cells=1)
    assert renewed.held and renewed.epoch == 1 and renewed.expires_at == at(40)
    assert not (await b.acquire("u", "s", "B")).held


async def test_released_sessions_are_free_at_once_and_a_retake_by_the_same_host_fences_its_old_lease(
    two_stores: tuple[SessionStore, SessionStore],
) -> None:
    a, b = two_stores
    first = await a.acquire("u", "s", "A")
    again = await a.acquire("u", "s", "A")  # e.g. the host restarted its copy
    assert again.held and again.epoch == first.epoch + 1
    with pytest.raises(LeaseLost, match="this host took it again"):
        await a.save_snapshot(first, b"stale", [], 1)
    assert await a.release(again) is True
    taken = await b.acquire("u", "s", "B")
    assert taken.held and taken.epoch == 3 and taken.previous_owner is None and not taken.previous_expired


async def test_reset_ends_a_live_lease_keeps_the_epochs_and_leaves_the_listing(
    two_stores: tuple[SessionStore, SessionStore],
) -> None:
    a, b = two_stores
    lease = await a.acquire("u", "s", "A")
    lease = await a.save_snapshot(lease, b"state", ["note"], cell=2)
    assert [(s.session_id, s.state, s.owner, s.size) for s in await b.list_saved("u")] == [
        ("s", "live", "A", 5)
    ]
    assert await b.delete("u", "s") is True  # reset from another host
    with pytest.raises(LeaseLost, match="released or reset"):
        await a.renew(lease)
    assert await b.list_saved("u") == [] and await b.load("u", "s") is None
    assert await b.delete("u", "s") is False
    fresh = await b.acquire("u", "s", "B")
    assert fresh.epoch == 2 and fresh.cells == 0 and fresh.saved_after_cell is None


async def test_list_saved_shows_live_and_saved_sessions_with_their_cell_and_size(
    two_stores: tuple[SessionStore, SessionStore], clock: Clock
) -> None:
    a, b = two_stores
    live = await a.acquire("u", "live", "A")
    await a.renew(live, cells=3)
    saved = await a.acquire("u", "saved", "A")
    saved = await a.save_snapshot(saved, b"x" * 100, [], cell=7)
    await a.release(saved)
    crashed = await a.acquire("u", "crashed", "A")
    await a.save_snapshot(crashed, b"y" * 10, [], cell=1)
    await a.acquire("other-user", "s", "A")
    clock.now = at(5)
    rows = {s.session_id: s for s in await b.list_saved("u")}
    assert sorted(rows) == ["crashed", "live", "saved"]
    assert (rows["live"].state, rows["live"].owner, rows["live"].cells, rows["live"].size) == (
        "live",
        "A",
        3,
        None,
    )
    assert (rows["saved"].state, rows["saved"].owner, rows["saved"].saved_after_cell) == ("saved", None, 7)
    assert rows["saved"].size == 100 and rows["saved"].saved_at == T0
    clock.now = at(60)  # the crashed host's lease ran out: its last snapshot is what is left
    rows = {s.session_id: s for s in await b.list_saved("u")}
    assert sorted(rows) == ["crashed", "saved"] and rows["crashed"].state == "saved"
    assert rows["crashed"].to_dict()["saved_at"] == T0.isoformat()


async def test_lease_and_snapshot_writes_ask_for_majority_and_the_journal(
    mongo_uri: str, db_name: str, make_settings: Callable[..., Settings]
) -> None:
    seen = Commands()
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri, tz_aware=True, event_listeners=[seen])
    try:
        store = SessionStore(client[db_name], make_settings())
        lease = await store.acquire("u", "s", "A")
        lease = await store.renew(lease)
        lease = await store.save_snapshot(lease, b"data", [])
        await store.release(lease)
        await store.delete("u", "s")
    finally:
        await client.close()
    writes = [
        (name, body)
        for name, body in seen.seen
        if name in ("findAndModify", "update", "delete", "insert") and body[name] == "session_snapshots"
    ]
    assert {name for name, _ in writes} == {
        "findAndModify",
        "update",
    }  # take, renew, save, reset; create, release
    majority = {"w": "majority", "j": True, "wtimeout": 10000}
    assert all(body["writeConcern"] == majority for _, body in writes), writes
