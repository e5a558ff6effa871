"""Expiry at its boundaries, with a cleanup running while executions use the files.

Three files expire 1 ms before, exactly at, and 1 ms after the instant a cleanup runs (the file
manager's clock is injected; the executions' own file lookups use real time, for which all three
are still valid). Four executions start with the three files — two run, two wait for a slot —
and the cleanup runs while they do. Proves: the boundary is exact (a file is expired from the
instant ``expires_at <= now``: the cleanup removes the "at" and "after" files, metadata, bytes and
local cache copies, and keeps the "before" one); every execution that started with a file still
reads the same bytes at its end, running or queued when the cleanup ran; the pins are released
when the executions end; and a later call naming a deleted file gets the clear "not found" answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from datetime import UTC, datetime, timedelta

from code_interpreter.files import FileManager

from .conftest import OpenInterp, within

USER = 3
READ_TWICE = """\
import hashlib, json, time
def digests():
    return {{fid: hashlib.sha256(open(path, "rb").read()).hexdigest() for fid, path in FILES.items()}}
first = digests()
print("started", flush=True)
time.sleep({sleep})
print(json.dumps({{"first": first, "last": digests()}}))
"""


async def test_cleanup_while_executions_use_expiring_files(open_interp: OpenInterp) -> None:
    async with open_interp(max_parallel=2, max_parallel_per_user=4, preload_modules=()) as interp:
        # The cleanup's "now": whole milliseconds (BSON precision), far ahead of the real clock.
        cleanup_at = (datetime.now(UTC) + timedelta(minutes=30)).replace(microsecond=0)
        ttl = timedelta(hours=interp.settings.file_expiration_hours)
        clock = [cleanup_at]
        files = FileManager(interp.db, interp.settings, clock=lambda: clock[0])
        ids: dict[str, str] = {}
        sha: dict[str, str] = {}
        for name, offset_ms in (("expired 1 ms ago", -1), ("expires exactly now", 0), ("expires in 1 ms", 1)):
            clock[0] = cleanup_at - ttl + timedelta(milliseconds=offset_ms)
            data = os.urandom(20_000)
            r = await files.upload_file(USER, data, f"{offset_ms}.bin")
            assert r["success"], r
            assert datetime.fromisoformat(r["expires_at"]) == cleanup_at + timedelta(milliseconds=offset_ms)
            ids[name], sha[r["file_id"]] = r["file_id"], hashlib.sha256(data).hexdigest()
        clock[0] = cleanup_at
        gone = [ids["expired 1 ms ago"], ids["expires exactly now"]]
        kept = ids["expires in 1 ms"]
        assert [await files.get_file(i, USER) for i in gone] == [None, None]
        assert await files.get_file(kept, USER) is not None
        clock[0] = cleanup_at - timedelta(milliseconds=2)
        assert all([await files.get_file(i, USER) for i in ids.values()])  # all valid a moment earlier
        clock[0] = cleanup_at

        executor = await interp.executor()
        runs = [
            asyncio.create_task(
                interp.execute(READ_TWICE.format(sleep=1.5), user_id=USER, user_files=list(ids.values()))
            )
            for _ in range(4)
        ]
        for _ in range(1000):  # two inside the sandbox, two queued with their files already pinned
            status = executor.status()
            if status["running"] == 2 and status["queued"] == 2:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError(f"executions never reached 2 running + 2 queued: {executor.status()}")

        assert await files.cleanup_expired_files() == 2
        for i in gone:
            assert await interp.files.get_file(i, USER) is None  # gone for real time too, not just hidden
            assert not (interp.files.cache_dir / i).exists()  # the local copy went as well
        assert await interp.files.get_file(kept, USER) is not None

        results = await within(120, asyncio.gather(*runs))
        for r in results:
            assert r["success"], r
            seen = json.loads(r["output"].splitlines()[-1])
            assert seen["first"] == sha and seen["last"] == sha  # same bytes from first to last read
        pins = interp.settings.home / "pins"
        assert not pins.exists() or not any(pins.iterdir()), list(pins.iterdir())

        later = await interp.execute("print(FILES)", user_id=USER, user_files=[gone[1]])
        assert not later["success"] and "not found" in later["error"], later
        again = await interp.execute(READ_TWICE.format(sleep=0), user_id=USER, user_files=[kept])
        assert again["success"] and json.loads(again["output"].splitlines()[-1])["last"] == {kept: sha[kept]}
