"""One host of the lease tests, as its own OS process with its own MongoDB client.

``python _lease_host.py URI DATABASE HOST_ID LEASE_S [--server-time]`` prints ``ready`` once connected,
then answers one JSON command per stdin line with one JSON line on stdout, until stdin closes. Without
``--server-time`` every command carries ``now`` (ISO 8601): the test moves one clock for all hosts.

Commands: ``acquire`` / ``handoff`` / ``renew`` / ``save`` / ``release`` / ``load`` (``user``, ``sid``;
``save`` also ``data`` and ``cell``), ``handoffs``, and ``race``: take one session ``rounds`` times
against the other hosts (take, save ``HOST:EPOCH`` fenced, release), reporting every epoch it held.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from code_interpreter.errors import CodeInterpreterError
from code_interpreter.files.leases import Lease
from code_interpreter.files.session_store import SessionStore
from code_interpreter.settings import Settings


class Host:
    """A SessionStore as one host, remembering the last lease it got per session."""

    def __init__(self, store: SessionStore, host: str) -> None:
        self.store = store
        self.host = host
        self.leases: dict[tuple[str, str], Lease] = {}

    async def run(self, cmd: dict[str, Any]) -> Any:
        op = cmd["op"]
        key = (str(cmd.get("user", "")), str(cmd.get("sid", "")))
        if op in ("acquire", "handoff"):
            take = self.store.acquire if op == "acquire" else self.store.request_handoff
            lease = await take(key[0], key[1], self.host)
            self.leases[key] = lease
            return lease.to_dict()
        if op == "renew":
            self.leases[key] = await self.store.renew(self.leases[key], cmd.get("cells"))
            return self.leases[key].to_dict()
        if op == "save":
            data = str(cmd["data"]).encode()
            self.leases[key] = await self.store.save_snapshot(self.leases[key], data, [], cmd.get("cell"))
            return self.leases[key].to_dict()
        if op == "release":
            return await self.store.release(self.leases[key], cmd.get("cells"))
        if op == "load":
            data = await self.store.load(key[0], key[1])
            return None if data is None else data.decode()
        if op == "handoffs":
            owned = await self.store.owned_by(self.host)
            return [lease.to_dict() for lease in owned if lease.handoff_wanted_by]
        if op == "race":
            return await self.race(key, int(cmd["rounds"]))
        raise ValueError(f"unknown op {op!r}")

    async def race(self, key: tuple[str, str], rounds: int) -> dict[str, Any]:
        """Take the session ``rounds`` times; every take saves ``HOST:EPOCH`` under its lease."""
        first = await self.store.acquire(key[0], key[1], self.host)
        held = [first.epoch] if first.held else []
        lease: Lease | None = first if first.held else None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if lease is not None:
                await self.store.save_snapshot(lease, f"{self.host}:{lease.epoch}".encode(), [], lease.epoch)
                assert await self.store.release(lease), "a held lease must release"
                lease = None
                if len(held) >= rounds:
                    break
                await asyncio.sleep(0.001)  # let the others in
            taken = await self.store.acquire(key[0], key[1], self.host)
            if taken.held:
                held.append(taken.epoch)
                lease = taken
            else:
                await asyncio.sleep(0.002)
        return {"first_held": first.held, "held": held}


async def main(uri: str, database: str, host: str, lease_s: float, server_time: bool) -> None:
    now: list[datetime] = []
    settings = Settings(
        home=Path(tempfile.gettempdir()) / "unused-home",
        mongodb_uri=uri,
        database=database,
        session_lease_s=lease_s,
    )
    client: AsyncMongoClient[Any] = AsyncMongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=5000)
    try:
        store = SessionStore(client[database], settings, clock=None if server_time else (lambda: now[-1]))
        me = Host(store, host)
        await client.admin.command("ping")
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            cmd = json.loads(line)
            if "now" in cmd:
                now.append(datetime.fromisoformat(cmd["now"]))
            try:
                reply = {"ok": True, "result": await me.run(cmd)}
            except CodeInterpreterError as exc:
                reply = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
            print(json.dumps(reply), flush=True)
    finally:
        await client.close()


if __name__ == "__main__":
    uri, database, host, lease_s = sys.argv[1:5]
    asyncio.run(main(uri, database, host, float(lease_s), "--server-time" in sys.argv[5:]))
