"""Stateful sessions through the real sandbox and the real database.

State kept between cells (variables, imports, functions, files), notebook display, inputs by name,
per-user separation, cells in arrival order, interrupt at the deadline (state kept) and the kill
path ("restarted"), idle expiry and LRU eviction with a save, restore on a second interpreter with
its own home sharing the database, and bad snapshots refused without a crash.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from _interp_helpers import close_and_drop, started
from code_interpreter.interpreter import CodeInterpreter
from code_interpreter.settings import Settings
from code_interpreter.tools import tool_definitions


def _settings(home: Path, mongo_uri: str, database: str, runtime: Any, **kw: Any) -> Settings:
    values: dict[str, Any] = {
        "home": home,
        "mongodb_uri": mongo_uri,
        "database": database,
        "runtime_dir": runtime.root,
        "cleanup_interval_s": 0,
        "max_parallel": 4,
    }
    values.update(kw)
    return Settings(**values)


@pytest.fixture(scope="module")
def database() -> str:
    return f"ci_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
async def interp(
    tmp_path_factory: pytest.TempPathFactory, mongo_uri: str, sandbox_runtime: Any, database: str
) -> AsyncIterator[CodeInterpreter]:
    interpreter = await started(
        _settings(tmp_path_factory.mktemp("sess") / "home", mongo_uri, database, sandbox_runtime)
    )
    yield interpreter
    await close_and_drop(interpreter)


def _uid() -> str:
    return f"u{uuid.uuid4().hex[:10]}"


def _ok(result: dict[str, Any]) -> dict[str, Any]:
    assert result["success"], (result["error"], result["stderr"], result["notes"])
    return result


async def test_state_is_kept_like_notebook_cells(interp: CodeInterpreter) -> None:
    user, sid = _uid(), "chan-1"
    first = _ok(
        await interp.execute(
            "import pandas as pd\nx = 41\ndef double(v):\n    return 2 * v", user, session_id=sid
        )
    )
    assert first["session"] == {"id": sid, "state": "new", "cell": 1}
    second = _ok(await interp.execute("x += 1\ndouble(x)", user, session_id=sid))
    assert second["output"] == "84\n"  # the trailing expression is shown
    assert second["session"] == {"id": sid, "state": "live", "cell": 2}
    third = _ok(
        await interp.execute("df = pd.DataFrame({'a': range(1000), 'b': 1})\ndf.shape", user, session_id=sid)
    )
    assert third["output"] == "(1000, 2)\n"
    none_shown = _ok(await interp.execute("y = df.a.sum()\nNone", user, session_id=sid))
    assert none_shown["output"] == ""
    assert _ok(await interp.execute("print(y, x)", user, session_id=sid))["output"] == "499500 42\n"


async def test_files_stay_and_only_new_or_changed_ones_return(interp: CodeInterpreter) -> None:
    user, sid = _uid(), "files"
    a = _ok(await interp.execute("open('notes.txt', 'w').write('v1')", user, session_id=sid))
    assert [f["filename"] for f in a["generated_files"]] == ["notes.txt"]
    b = _ok(await interp.execute("print(open('notes.txt').read())", user, session_id=sid))
    assert b["output"] == "v1\n" and b["generated_files"] == []  # unchanged: not returned again
    c = _ok(
        await interp.execute(
            "open('notes.txt', 'w').write('v2, longer')\nopen('b.csv', 'w').write('x')", user, session_id=sid
        )
    )
    assert sorted(f["filename"] for f in c["generated_files"]) == ["b.csv", "notes.txt"]
    chart = _ok(
        await interp.execute(
            "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nNone", user, session_id=sid
        )
    )
    assert [f["filename"] for f in chart["generated_files"]] == ["figure_1.png"]
    again = _ok(await interp.execute("plt.plot([3, 2, 1])\nNone", user, session_id=sid))
    # A new figure each cell (the previous one was closed after it was saved).
    assert [f["filename"] for f in again["generated_files"]] == ["figure_2.png"] or [
        f["filename"] for f in again["generated_files"]
    ] == ["figure_1.png"]


async def test_a_chart_it_made_passed_back_as_an_input_is_not_a_name_clash(interp: CodeInterpreter) -> None:
    """#25: the call after a chart noted "the upload 'figure_1.png' is not in the working directory"
    when the host passed the stored chart back (as MCP and chat do with a user's files): the file there
    is that upload. A different file under an upload's name still gets the note."""
    user, sid = _uid(), "chart-back"
    chart = _ok(
        await interp.execute("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nNone", user, session_id=sid)
    )
    file_id = chart["generated_files"][0]["file_id"]
    back = _ok(await interp.execute("import os\nprint(os.path.getsize('figure_1.png'))", user, [file_id],
                                    session_id=sid))  # fmt: skip
    assert int(back["output"]) == chart["generated_files"][0]["size"]
    assert not any("figure_1.png" in n for n in back["notes"]), back["notes"]
    _ok(await interp.execute("open('report.txt', 'w').write('mine')", user, session_id=sid))
    other = await interp.files.upload_file(user, b"theirs", "report.txt")
    clash = _ok(await interp.execute("print(open('report.txt').read())", user, [other], session_id=sid))
    assert clash["output"] == "mine\n"
    assert any("'report.txt' is not in the working directory" in n for n in clash["notes"]), clash["notes"]


async def test_inputs_appear_by_name_one_shot_and_in_sessions(interp: CodeInterpreter) -> None:
    user = _uid()
    up = await interp.files.upload_file(user, b"city,sales\nOslo,3\nLima,5\n", "sales.csv")
    dup = await interp.files.upload_file(user, b"city,sales\nRome,7\n", "sales.csv")
    code = (
        "import pandas as pd\n"
        "print(pd.read_csv('sales.csv').sales.sum(), pd.read_csv('sales (2).csv').sales.sum())"
    )
    one_shot = _ok(await interp.execute(code, user, [up["file_id"], dup["file_id"]]))
    assert one_shot["output"] == "8 7\n" and one_shot["session"] is None
    sid = "by-name"
    _ok(
        await interp.execute(
            "import os\nprint(sorted(os.listdir('.')))", user, [up["file_id"]], session_id=sid
        )
    )
    later = _ok(await interp.execute(code, user, [up["file_id"], dup["file_id"]], session_id=sid))
    assert later["output"] == "8 7\n"
    # not returned as a generated file while unchanged; the mount under the link is read-only
    r = await interp.execute(
        "print(open('sales.csv').read().count(','))", user, [up["file_id"]], session_id=sid
    )
    assert r["output"] == "3\n" and r["generated_files"] == []
    w = await interp.execute(f"open(FILES[{up['file_id']!r}], 'a')", user, [up["file_id"]], session_id=sid)
    assert not w["success"] and ("Read-only file system" in w["error"] or "Permission denied" in w["error"])


async def test_the_same_session_id_under_another_user_is_another_session(interp: CodeInterpreter) -> None:
    alice, bob, sid = _uid(), _uid(), "shared-channel-id"
    _ok(await interp.execute("secret = 'alice-only'", alice, session_id=sid))
    r = await interp.execute("print(secret)", bob, session_id=sid)
    assert not r["success"] and "NameError" in r["error"]
    assert r["session"]["state"] == "new"
    assert _ok(await interp.execute("print(secret)", alice, session_id=sid))["output"] == "alice-only\n"


async def test_concurrent_cells_of_one_session_run_in_arrival_order(interp: CodeInterpreter) -> None:
    user, sid = _uid(), "order"
    _ok(await interp.execute("log = []", user, session_id=sid))
    cells = [f"import time\ntime.sleep(0.05)\nlog.append({i})" for i in range(6)]
    results = await asyncio.gather(*(interp.execute(c, user, session_id=sid) for c in cells))
    assert all(r["success"] for r in results)
    assert [r["session"]["cell"] for r in results] == [2, 3, 4, 5, 6, 7]
    assert _ok(await interp.execute("print(log)", user, session_id=sid))["output"] == "[0, 1, 2, 3, 4, 5]\n"


async def test_a_cell_past_its_timeout_is_interrupted_and_the_state_survives(interp: CodeInterpreter) -> None:
    user, sid = _uid(), "interrupt"
    _ok(await interp.execute("kept = [1, 2, 3]", user, session_id=sid))
    r = await interp.execute(
        "import time\nprint('working', flush=True)\ntime.sleep(60)", user, session_id=sid, timeout=1
    )
    assert not r["success"] and r["error"].startswith("Execution interrupted after 1 seconds")
    assert "variables are kept" in r["error"] and "KeyboardInterrupt" in r["stderr"]
    assert r["output"] == "working\n" and r["session"]["state"] == "live"
    after = _ok(await interp.execute("print(kept)", user, session_id=sid))
    assert after["output"] == "[1, 2, 3]\n" and after["session"]["state"] == "live"


async def test_a_cell_that_ignores_the_interrupt_is_killed_and_the_next_says_restarted(
    interp: CodeInterpreter,
) -> None:
    user, sid = _uid(), "stubborn"
    _ok(await interp.execute("lost = 1", user, session_id=sid))
    code = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)"
    r = await interp.execute(code, user, session_id=sid, timeout=1)
    assert not r["success"] and r["error"].startswith("Execution timeout after 1 seconds")
    assert "variables are gone" in r["error"]
    nxt = await interp.execute("print(lost)", user, session_id=sid)
    assert nxt["session"] == {"id": sid, "state": "restarted", "cell": 1}
    assert not nxt["success"] and "NameError" in nxt["error"]
    assert any("variables are gone" in n for n in nxt["notes"])


async def test_close_saves_and_the_next_call_restores(interp: CodeInterpreter) -> None:
    user, sid = _uid(), "saved"
    code = (
        "import numpy as np\nimport pandas as pd\nrate = 3\n"
        "def scaled(v):\n    return v * rate\n"
        "class Point:\n    def __init__(self, x):\n        self.x = x\n"
        "p = Point(5)\ndf = pd.DataFrame({'a': [1, 2, 3]})\nopen('kept.txt', 'w').write('file')\n"
        "gen = (i for i in range(3))\nfh = open('log.txt', 'w')\nimport threading\nlock = threading.Lock()"
    )
    _ok(await interp.execute(code, user, session_id=sid))
    assert await interp.sessions.close(user, sid) is True
    # Issue #23: list shows saved sessions too (it showed live ones only).
    assert [(s["id"], s["state"], s["host"]) for s in await interp.sessions.list(user)] == [
        (sid, "saved", None)
    ]
    r = _ok(
        await interp.execute(
            "rate = 10\nprint(scaled(2), p.x, df.a.sum(), np.pi > 3, open('kept.txt').read())",
            user,
            session_id=sid,
        )
    )
    assert r["session"] == {"id": sid, "state": "restored", "cell": 2}  # issue #23: the count continues
    assert r["output"] == "20 5 6 True file\n"  # the restored function reads the session's globals
    notes = " ".join(r["notes"])
    assert "not saved: fh" in notes and "not saved: gen" in notes and "not saved: lock" in notes


async def test_reset_forgets_live_and_saved(interp: CodeInterpreter) -> None:
    user, sid = _uid(), "forget"
    _ok(await interp.execute("v = 1", user, session_id=sid))
    await interp.sessions.close(user, sid)
    assert await interp.sessions.reset(user, sid) is True
    r = await interp.execute("print(v)", user, session_id=sid)
    assert r["session"]["state"] == "new" and "NameError" in r["error"]
    assert await interp.sessions.reset(_uid(), "never-existed") is False


async def test_idle_expiry_and_lru_eviction_save_the_session(
    tmp_path: Path, mongo_uri: str, sandbox_runtime: Any, database: str
) -> None:
    settings = _settings(tmp_path / "home", mongo_uri, database, sandbox_runtime, max_sessions_per_user=1,
                         session_idle_s=300)  # fmt: skip
    interp = await started(settings)
    try:
        now = [1000.0]
        interp.sessions.clock = lambda: now[0]
        user = _uid()
        _ok(await interp.execute("a = 'first'", user, session_id="one"))
        _ok(
            await interp.execute("b = 'second'", user, session_id="two")
        )  # the user's cap is 1: "one" is evicted
        listed = [(s["id"], s["state"]) for s in await interp.sessions.list(user)]
        assert listed == [("one", "saved"), ("two", "live")]
        back = _ok(await interp.execute("print(a)", user, session_id="one"))
        assert back["session"]["state"] == "restored" and back["output"] == "first\n"
        now[0] += 5 * 60 + 1
        assert await interp.sessions.expire_idle() == 1
        assert [(s["id"], s["state"]) for s in await interp.sessions.list(user)] == [
            ("one", "saved"),
            ("two", "saved"),
        ]
        again = _ok(await interp.execute("print(a)", user, session_id="one"))
        assert again["session"]["state"] == "restored" and again["output"] == "first\n"
    finally:
        await interp.close()


async def test_a_second_host_sharing_the_database_continues_the_session(
    interp: CodeInterpreter, tmp_path: Path, mongo_uri: str, sandbox_runtime: Any, database: str
) -> None:
    user, sid = _uid(), "moves"
    _ok(
        await interp.execute(
            "import pandas as pd\ndf = pd.DataFrame({'v': range(10)})\nopen('w.txt', 'w').write('x')",
            user,
            session_id=sid,
        )
    )
    await interp.sessions.close(user, sid)
    other = await started(_settings(tmp_path / "other-home", mongo_uri, database, sandbox_runtime))
    try:
        r = _ok(await other.execute("print(df.v.sum(), open('w.txt').read())", user, session_id=sid))
        assert r["session"]["state"] == "restored" and r["output"] == "45 x\n"
        # another user cannot load it, nor learn that it exists: same session id, a plain new session
        stranger_id = _uid()
        assert await other.files.session_store.find(stranger_id, sid) is None
        stranger = await other.execute("print(df)", stranger_id, session_id=sid)
        assert stranger["session"]["state"] == "new" and "NameError" in stranger["error"]
        assert not any("saved session" in n for n in stranger["notes"]), stranger["notes"]
    finally:
        await other.close()


async def test_a_corrupt_or_foreign_snapshot_gives_a_fresh_session_with_a_note(
    interp: CodeInterpreter,
) -> None:
    user, sid = _uid(), "tampered"
    _ok(await interp.execute("z = 1", user, session_id=sid))
    await interp.sessions.close(user, sid)
    snaps = interp.files.session_store
    doc = await snaps.meta.find_one({"user_id": user, "session_id": sid})
    assert doc is not None
    await snaps.meta.update_one({"_id": doc["_id"]}, {"$set": {"sha256": "0" * 64}})
    r = await interp.execute("print(z)", user, session_id=sid)
    assert r["session"]["state"] == "new" and "NameError" in r["error"]
    assert any("corrupt" in n for n in r["notes"])
    # a snapshot document pointing at another user's blob is refused as foreign
    other = _uid()
    _ok(await interp.execute("w = 2", other, session_id="theirs"))
    await interp.sessions.close(other, "theirs")
    theirs = await snaps.meta.find_one({"user_id": other, "session_id": "theirs"})
    assert theirs is not None
    await interp.sessions.close(user, sid)
    await snaps.meta.update_one(
        {"user_id": user, "session_id": sid}, {"$set": {k: theirs[k] for k in ("blob_id", "size", "sha256")}}
    )
    r2 = await interp.execute("print(w)", user, session_id=sid)
    assert r2["session"]["state"] == "new" and any("does not belong" in n for n in r2["notes"])


async def test_an_oversized_snapshot_leaves_out_its_largest_values(
    tmp_path: Path, mongo_uri: str, sandbox_runtime: Any, database: str
) -> None:
    interp = await started(
        _settings(tmp_path / "home", mongo_uri, database, sandbox_runtime, max_snapshot_bytes=2**20)
    )
    try:
        user, sid = _uid(), "big"
        _ok(await interp.execute("small = 'keep me'\nbig = b'x' * (3 * 2**20)", user, session_id=sid))
        await interp.sessions.close(user, sid)
        r = await interp.execute("print(small)\nprint(big)", user, session_id=sid)
        assert r["session"]["state"] == "restored" and r["output"].startswith("keep me\n")
        assert "NameError" in r["error"]
        assert any("not saved: big" in n and "cap" in n for n in r["notes"])
    finally:
        await interp.close()


async def test_a_snapshot_is_unpickled_inside_the_sandbox_never_by_the_host(
    interp: CodeInterpreter, tmp_path: Path
) -> None:
    marker = tmp_path / "host-marker"
    user, sid = _uid(), "evil"
    # A value whose unpickling runs code: it must run (if at all) in the sandbox, never here.
    payload = (
        f"open('/mnt/data/ran.txt', 'w').write('x')\ntry:\n    open({str(marker)!r}, 'w')\n"
        "except OSError:\n    pass"
    )
    code = f"class Evil:\n    def __reduce__(self):\n        return (exec, ({payload!r},))\nbomb = Evil()"
    _ok(await interp.execute(code, user, session_id=sid))
    await interp.sessions.close(user, sid)
    data = await interp.files.session_store.load(user, sid)
    assert data and data[:2] == b"PK"  # the host only ever holds the bytes
    r = await interp.execute("import os\nprint(os.path.exists('ran.txt'))", user, session_id=sid)
    assert r["session"]["state"] == "restored"
    assert r["output"] == "True\n"  # it ran, in the restored session's own sandbox
    assert not marker.exists()


def test_the_tool_description_tells_the_model_whether_state_persists() -> None:
    one_shot = tool_definitions("chat")[0]["function"]["description"]
    session = tool_definitions("chat", sessions=True)[0]["function"]["description"]
    assert "variables do not persist between calls" in one_shot
    assert "State persists between calls" in session and "do not persist" not in session
    assert "under their own names" in one_shot and "under their own names" in session


async def test_a_large_state_is_saved_and_restored_whole(interp: CodeInterpreter) -> None:
    """Regression: a snapshot of tens of MB was cut off by a save deadline counted per chunk read."""
    user, sid = _uid(), "large"
    code = "import hashlib, os\nblob = os.urandom(24 * 2**20)\nprint(hashlib.sha256(blob).hexdigest())"
    digest = _ok(await interp.execute(code, user, session_id=sid))["output"]
    await interp.sessions.close(user, sid)
    doc = await interp.files.session_store.find(user, sid)
    assert doc is not None and doc["size"] > 20 * 2**20  # random bytes do not compress
    r = _ok(await interp.execute("print(hashlib.sha256(blob).hexdigest())", user, session_id=sid))
    assert r["session"]["state"] == "restored" and r["output"] == digest


async def test_writing_over_an_input_of_the_same_name_writes_a_copy(interp: CodeInterpreter) -> None:
    """Inputs by name must not make a file name unwritable: re-running savefig('chart.png') or saving a
    cleaned sales.csv over the upload works as with a copy; the stored input never changes."""
    user = _uid()
    up = await interp.files.upload_file(user, b"city,sales\nOslo,3\n", "sales.csv")
    chart = await interp.files.upload_file(user, b"\x89PNG\r\n\x1a\nold", "chart.png")
    ids = [up["file_id"], chart["file_id"]]
    code = (
        "import pandas as pd\ndf = pd.read_csv('sales.csv')\ndf['sales'] *= 10\n"
        "df.to_csv('sales.csv', index=False)\n"
        "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.savefig('chart.png')\nplt.close('all')\n"
        "with open('sales.csv', 'a') as fh:\n    fh.write('Lima,5\\n')\nprint(open('sales.csv').read())"
    )
    for session_id in (None, "copy-up"):
        r = _ok(await interp.execute(code, user, ids, session_id=session_id))
        assert r["output"] == "city,sales\nOslo,30\nLima,5\n\n"
        assert sorted(f["filename"] for f in r["generated_files"]) == ["chart.png", "sales.csv"]
    assert await interp.files.read_file(up["file_id"], user) == b"city,sales\nOslo,3\n"
    assert await interp.files.read_file(chart["file_id"], user) == b"\x89PNG\r\n\x1a\nold"


async def test_a_cancelled_cell_is_stopped_before_the_next_one_runs(interp: CodeInterpreter) -> None:
    """Regression: a call cancelled mid-cell (a client timeout) let the next call read the old result."""
    user, sid = _uid(), "cancelled"
    _ok(await interp.execute("kept = 'still here'", user, session_id=sid))
    started = asyncio.Event()
    slow = asyncio.create_task(
        interp.execute(
            "import time\nprint('slow', flush=True)\ntime.sleep(60)\nprint('late')",
            user,
            session_id=sid,
            on_event=lambda event: started.set(),
        )
    )
    await asyncio.wait_for(started.wait(), 60)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    nxt = _ok(await asyncio.wait_for(interp.execute("print(kept)", user, session_id=sid), 60))
    assert nxt["output"] == "still here\n" and nxt["session"]["state"] == "live"
