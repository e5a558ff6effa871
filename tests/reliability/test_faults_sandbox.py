"""Faults in the sandbox: the fork server killed mid-execution, the work dir's file system filled.

Each test proves the three promises of the suite: the call in flight ends with a clear result (its
output, or an error that says what happened — never a hang, never an exception into the host),
the next call works without anyone restarting anything, and nothing acknowledged is lost (files
uploaded before and during the fault are intact, by sha256, afterwards).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from code_interpreter.interpreter import CodeInterpreter

from .conftest import OpenInterp, within

SLOW = "import time\nprint('started', flush=True)\ntime.sleep({s})\nprint('finished {tag}')"


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the zygote's supervisors and their sandboxed children)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            kids = [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            kids = []
        out.extend(kids)
        todo.extend(kids)
    return out


async def upload_many(interp: CodeInterpreter, user: int, n: int) -> dict[str, str]:
    """Upload ``n`` small distinct files; return file_id -> sha256 of those acknowledged as saved."""
    saved: dict[str, str] = {}
    for i in range(n):
        data = os.urandom(1000 + i)
        r = await interp.files.upload_file(user, data, f"during-{i}.bin")
        if r["success"]:
            assert r["sha256"] == hashlib.sha256(data).hexdigest()
            saved[r["file_id"]] = r["sha256"]
    return saved


async def assert_intact(interp: CodeInterpreter, user: int, files: dict[str, str]) -> None:
    """Every acknowledged file is still readable and its bytes hash to what was acknowledged."""
    for file_id, sha in files.items():
        data = await interp.files.read_file(file_id, user)
        assert data is not None, f"acknowledged file {file_id} is gone"
        assert hashlib.sha256(data).hexdigest() == sha, f"acknowledged file {file_id} is corrupt"


async def wait_running(interp: CodeInterpreter, n: int) -> None:
    """Wait until ``n`` executions are inside the sandbox."""
    executor = await interp.executor()
    for _ in range(500):
        if executor.status()["running"] >= n:
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"{n} executions never started")


@pytest.mark.parametrize("what", ["zygote", "zygote-and-sandboxes"])
async def test_fork_server_killed_mid_execution(open_interp: OpenInterp, what: str) -> None:
    async with open_interp(max_parallel=3, max_parallel_per_user=3, preload_modules=()) as interp:
        before_files = await upload_many(interp, 5, 3)
        assert len(before_files) == 3
        executor = await interp.executor()
        old = executor.status()
        in_flight = [
            asyncio.create_task(interp.execute(SLOW.format(s=1.5, tag=i), user_id=i, timeout=20))
            for i in range(3)
        ]
        uploads = asyncio.create_task(upload_many(interp, 5, 10))
        await wait_running(interp, 3)
        await asyncio.sleep(0.3)  # the user code is sleeping now
        zygote = old["zygote_pid"]
        tree = descendants(zygote)
        await executor.kill_zygote()
        if what == "zygote-and-sandboxes":
            for pid in tree:  # the whole fork server with every supervisor and child: a host-level crash
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        results: list[dict[str, Any]] = await within(60, asyncio.gather(*in_flight))
        during_files = await within(60, uploads)

        for i, r in enumerate(results):
            if r["success"]:
                # A started execution reports straight to the host, so it may outlive its zygote.
                assert what == "zygote", r
                assert r["output"].endswith(f"finished {i}\n"), r
            else:
                assert r["error"] and r["error"].startswith("Sandbox crashed"), r["error"]
        if what == "zygote-and-sandboxes":
            assert not any(r["success"] for r in results)

        again = await within(60, interp.execute("print(6 * 7)", user_id=1))
        assert again["success"] and again["output"] == "42\n", again
        new = executor.status()
        assert new["zygote_pid"] not in (None, zygote)
        assert new["zygote_starts"] == old["zygote_starts"] + 1
        assert new["running"] == 0 and new["queued"] == 0
        assert len(during_files) == 10  # the file store did not notice the sandbox's crash
        await assert_intact(interp, 5, {**before_files, **during_files})


async def test_work_dir_full_is_a_clear_error_and_the_next_call_works(open_interp: OpenInterp) -> None:
    # A small work dir (a tmpfs of its own per execution) and a larger per-file limit: the disk fills first.
    async with open_interp(work_dir_bytes=8 * 2**20, preload_modules=()) as interp:
        kept = await upload_many(interp, 9, 2)
        fill = (
            "chunk = b'x' * (1 << 20)\n"
            "with open('fill.bin', 'wb') as f:\n"
            "    for i in range(64):\n"
            "        f.write(chunk)\n"
            "        f.flush()\n"
            "print('never reached')\n"
        )
        r = await within(60, interp.execute(fill, user_id=9, timeout=30))
        assert not r["success"]
        assert "never reached" not in r["output"]
        assert "No space left on device" in r["error"], r["error"]
        assert "line 4" in r["error"], r["error"]  # the traceback points at the user's write

        # Each execution has its own work dir: the next one starts empty and can write again.
        code = "import os\nprint(sorted(os.listdir('.')))\nopen('ok.txt', 'w').write('ok')\nprint('written')"
        again = await within(60, interp.execute(code, user_id=9))
        assert again["success"], again
        assert "fill.bin" not in again["output"] and "written" in again["output"]
        await assert_intact(interp, 9, kept)
