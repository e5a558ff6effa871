"""CodeInterpreter end to end: the real sandbox (strict), the policy on, files in GridFS on the real server.

Most tests share one interpreter for the module (a warm zygote costs seconds to start); they use user
ids of their own so their files never meet. Tests that need other settings make their own.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from _executor_fixtures import REQUIRED_LAYERS, sandbox_mode
from _interp_helpers import close_and_drop, started
from code_interpreter.executor.pins import PINS_DIR
from code_interpreter.interpreter import CodeInterpreter
from code_interpreter.settings import Settings

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NOT_FOUND = "was not found, has expired, or is not yours"


@pytest.fixture(scope="module")
async def interp(
    tmp_path_factory: pytest.TempPathFactory, mongo_uri: str, sandbox_runtime: Any
) -> AsyncIterator[CodeInterpreter]:
    """One started interpreter for this module: default settings (strict isolation, policy on)."""
    settings = Settings(
        home=tmp_path_factory.mktemp("interp") / "home",
        mongodb_uri=mongo_uri,
        database=f"ci_test_{uuid.uuid4().hex[:12]}",
        runtime_dir=sandbox_runtime.root,
    )
    assert settings.isolation == "auto" and settings.policy == "default"
    interpreter = await started(settings)
    yield interpreter
    await close_and_drop(interpreter)


async def until(condition: Callable[[], bool], limit_s: float = 30.0) -> None:
    """Poll ``condition`` until it holds (a bounded wait: a hang becomes a failure)."""
    for _ in range(int(limit_s / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"condition not met within {limit_s} s")


def _uid() -> str:
    return f"u{uuid.uuid4().hex[:10]}"


def _ok(result: dict[str, Any]) -> dict[str, Any]:
    assert result["success"], (result["error"], result["stderr"], result["notes"])
    assert result["error"] == "" and result["return_code"] == 0  # the seed documents "" on success
    return result


# -- the policy must not refuse ordinary code ----------------------------------------------------------

PANDAS = 'import pandas as pd\ndf = pd.DataFrame({"a": [1], "b": [2]})\n'
MUST_RUN = [
    ("re.compile", 'import re\nprint(re.compile(r"a+").findall("caaab"))', "['aaa']"),
    ("str.replace", 'print("a-b".replace("-", "+"))', "a+b"),
    ("df.rename", PANDAS + 'print(list(df.rename(columns={"a": "c"}).columns))', "['c', 'b']"),
    ("df.eval", PANDAS + 'print(df.eval("a + b").tolist())', "[3]"),
    (
        "model.eval()",
        "class Model:\n    training = True\n\n"
        "    def eval(self):\n        self.training = False\n        return self\n\n"
        "model = Model()\nmodel.eval()\nprint(model.training)",
        "False",
    ),
    (
        "os.path",
        'import os\nprint(os.path.join("a", "b"), os.path.basename("/x/y.csv"), os.path.splitext("f.tar")[1],'
        ' os.path.exists("/nonexistent"))',
        "a/b y.csv .tar False",
    ),
    (
        "os.makedirs",
        'import os\nos.makedirs("out", exist_ok=True)\nos.makedirs("out", exist_ok=True)\n'
        'print(os.path.isdir("out"))',
        "True",
    ),
    ("import sys", "import sys\nprint(sys.version_info >= (3, 8), sys.platform)", "True linux"),
    ("id(x)", "x = object()\nprint(id(x) == id(x), type(id(x)).__name__)", "True int"),
    (
        "plt.grid()",
        'import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.grid(True)\nprint("grid ok")',
        "grid ok",
    ),
    ("names with gc", "import gc\ngc_total = 2\nlogcount = 3\ngc.collect()\nprint(gc_total + logcount)", "5"),
]


@pytest.mark.parametrize(("name", "code", "expected"), MUST_RUN, ids=[m[0] for m in MUST_RUN])
async def test_policy_does_not_refuse_ordinary_code(
    interp: CodeInterpreter, name: str, code: str, expected: str
) -> None:
    result = _ok(await interp.execute(code, user_id=_uid()))
    assert result["output"].strip() == expected
    assert result["isolation"] == sandbox_mode()  # isolation="auto": strict as root, namespaces otherwise


REFUSED = [
    ("network import", 'print("ran")\nimport socket\n', 2, "network access is not available"),
    ("os.system", 'import os\nprint("ran")\nos.system("ls")', 3, "starting processes"),
    ("subprocess", 'print("ran")\nimport subprocess', 2, "starting processes"),
    ("ctypes", 'print("ran")\n\nimport ctypes', 3, "native code"),
    ("subclasses", 'print("ran")\nprint(().__class__.__bases__[0].__subclasses__())', 2, "internals"),
]


@pytest.mark.parametrize(("name", "code", "line", "phrase"), REFUSED, ids=[r[0] for r in REFUSED])
async def test_policy_refusal_is_a_result_naming_the_line(
    interp: CodeInterpreter, name: str, code: str, line: int, phrase: str
) -> None:
    result = await interp.execute(code, user_id=_uid())
    assert result["success"] is False
    assert result["error"].startswith("Security validation failed:")
    assert f"line {line}" in result["error"] and phrase in result["error"]
    assert result["output"] == "" and result["generated_files"] == []  # refused before anything ran


# -- user files ----------------------------------------------------------------------------------------


async def test_owner_reads_file_through_load_file_and_files(interp: CodeInterpreter) -> None:
    owner = _uid()
    up = await interp.files.upload_file(owner, b"city,temp\nOslo,4\nRome,18\n", "weather.csv")
    fid = up["file_id"]
    code = (
        f"df = load_file({fid!r})\n"
        "print(int(df['temp'].sum()), list(df.columns))\n"
        f"print(open(FILES[{fid!r}], 'rb').read().count(b'\\n'), sorted(FILES) == [{fid!r}])\n"
    )
    result = _ok(await interp.execute(code, user_id=owner, user_files=[fid]))
    assert result["output"].splitlines() == ["22 ['city', 'temp']", "3 True"]
    # The seed's form of user_files (the file dicts) works too.
    again = _ok(await interp.execute(f"print(load_file({fid!r}).shape)", user_id=owner, user_files=[up]))
    assert again["output"].strip() == "(2, 2)"


async def test_other_users_file_is_indistinguishable_from_a_missing_one(interp: CodeInterpreter) -> None:
    owner, other = _uid(), _uid()
    fid = (await interp.files.upload_file(owner, b"secret\n", "secret.txt"))["file_id"]
    missing = fid[:-4] + ("0000" if not fid.endswith("0000") else "1111")  # well-formed, never issued
    code = "print('ran')"
    stolen = await interp.execute(code, user_id=other, user_files=[fid])
    unknown = await interp.execute(code, user_id=other, user_files=[missing])
    assert stolen["success"] is False and NOT_FOUND in stolen["error"]
    assert stolen["output"] == "" and unknown["output"] == ""
    # Same words, same shape: only the id each caller passed differs.
    assert stolen["error"].replace(fid, "<id>") == unknown["error"].replace(missing, "<id>")
    assert {k: v for k, v in stolen.items() if k not in ("error", "execution_time")} == {
        k: v for k, v in unknown.items() if k not in ("error", "execution_time")
    }
    # The owner still has it.
    _ok(await interp.execute(code, user_id=owner, user_files=[fid]))


@pytest.mark.parametrize(
    ("entry", "phrase"),
    [
        ("../../etc/passwd", NOT_FOUND),
        ("user_1_1_zz", NOT_FOUND),
        ({"filename": "x.csv"}, "must be file id strings"),
        ("", "must be file id strings"),
        (12345, "must be file id strings"),
    ],
)
async def test_bad_user_files_entries_are_refused(interp: CodeInterpreter, entry: Any, phrase: str) -> None:
    result = await interp.execute("print('ran')", user_id=_uid(), user_files=[entry])
    assert result["success"] is False and result["output"] == ""
    assert phrase in result["error"]


# -- generated files -----------------------------------------------------------------------------------


async def test_plot_show_returns_a_png_stored_for_the_user(interp: CodeInterpreter) -> None:
    user = _uid()
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 4, 9])\nplt.title('squares')\nplt.show()"
    result = _ok(await interp.execute(code, user_id=user))
    pngs = [g for g in result["generated_files"] if g["mime"] == "image/png"]
    assert len(pngs) == 1
    png = pngs[0]
    assert png["data"].startswith(PNG_MAGIC) and png["size"] == len(png["data"]) and png["type"] == "image"
    assert png["file_id"]
    assert await interp.files.read_file(png["file_id"], user) == png["data"]
    assert await interp.files.read_file(png["file_id"], _uid()) is None  # stored for this user only
    listed = {f["file_id"]: f for f in await interp.files.list_user_files(user)}
    assert listed[png["file_id"]]["file_size"] == png["size"]


async def test_generated_files_in_nested_folders(interp: CodeInterpreter) -> None:
    user = _uid()
    code = (
        "import os\n"
        "os.makedirs('out/tables/2024', exist_ok=True)\n"
        "open('out/tables/2024/summary.csv', 'w').write('a,b\\n1,2\\n')\n"
        "open('out/readme.txt', 'w').write('hello')\n"
    )
    result = _ok(await interp.execute(code, user_id=user))
    by_name = {g["filename"]: g for g in result["generated_files"]}
    assert set(by_name) == {"out/tables/2024/summary.csv", "out/readme.txt"}
    assert by_name["out/tables/2024/summary.csv"]["data"] == b"a,b\n1,2\n"
    for g in by_name.values():
        assert await interp.files.read_file(g["file_id"], user) == g["data"]


# -- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["", "   \n\t\n"])
async def test_empty_code_is_refused(interp: CodeInterpreter, code: str) -> None:
    result = await interp.execute(code, user_id=_uid())
    assert result["success"] is False and "code is empty" in result["error"]


async def test_non_string_code_is_refused(interp: CodeInterpreter) -> None:
    result = await interp.execute(b"print(1)", user_id=_uid())  # type: ignore[arg-type]
    assert result["success"] is False and "must be a string" in result["error"]


async def test_code_size_limit(interp: CodeInterpreter) -> None:
    limit = interp.settings.max_code_bytes
    tail = "\nprint('ran', len(__doc__ or ''))\n"

    def code_of(size: int) -> str:
        return "#" + "x" * (size - 1 - len(tail)) + tail

    at_limit = code_of(limit)
    assert len(at_limit.encode()) == limit
    assert _ok(await interp.execute(at_limit, user_id=_uid()))["output"].startswith("ran")
    for size in (limit + 1, 5 * 2**20):
        over = await interp.execute(code_of(size), user_id=_uid())
        assert over["success"] is False and over["output"] == ""
        assert f"{size:,} bytes" in over["error"] and f"{limit:,} bytes" in over["error"]
        assert "load_file" in over["error"]  # says how to fix it


@pytest.mark.parametrize("code", ["print(1)\x00", "x = 'a\x00b'\nprint(x)"])
async def test_nul_bytes_give_a_clear_error(interp: CodeInterpreter, code: str) -> None:
    result = await interp.execute(code, user_id=_uid())
    assert result["success"] is False and result["output"] == ""
    assert "null bytes" in result["error"]


async def test_lone_surrogate_is_refused_naming_the_line(interp: CodeInterpreter) -> None:
    result = await interp.execute("print('ok')\nx = '\ud800'\nprint(x)", user_id=_uid())
    assert result["success"] is False and result["output"] == ""
    assert "U+D800" in result["error"] and "line 2" in result["error"]
    # An escape sequence in the source is plain ASCII and runs.
    escaped = _ok(await interp.execute("print(len('\\ud800'))", user_id=_uid()))
    assert escaped["output"].strip() == "1"


async def test_syntax_error_names_the_line(interp: CodeInterpreter) -> None:
    result = await interp.execute("x = 1\nprint(x)\nif x\n    print(2)\n", user_id=_uid())
    assert result["success"] is False and result["return_code"] != 0
    assert "SyntaxError" in result["error"] and "line 3" in result["error"]


@pytest.mark.parametrize(
    ("requested", "phrase"),
    [(0, "not positive"), (-5, "not positive"), (10**9, "exceeds the maximum")],
)
async def test_out_of_range_timeout_is_clamped_with_a_note(
    interp: CodeInterpreter, requested: float, phrase: str
) -> None:
    result = _ok(await interp.execute("print('ran')", user_id=_uid(), timeout=requested))
    assert result["output"] == "ran\n"
    assert any(phrase in note for note in result["notes"]), result["notes"]


async def test_in_range_timeout_adds_no_note(interp: CodeInterpreter) -> None:
    assert _ok(await interp.execute("print(1)", user_id=_uid(), timeout=30))["notes"] == []


async def test_timeout(interp: CodeInterpreter) -> None:
    code = "import time\nprint('start', flush=True)\ntime.sleep(30)"
    result = await interp.execute(code, user_id=_uid(), timeout=1)
    assert result["success"] is False and result["return_code"] == -1
    assert result["error"].startswith("Execution timeout after 1 seconds")
    assert result["execution_time"] < 10
    # The interpreter is fine afterwards.
    assert _ok(await interp.execute("print(2)", user_id=_uid()))["output"] == "2\n"


# -- several interpreters, one server ------------------------------------------------------------------


async def test_two_interpreters_with_their_own_homes_share_files(
    make_settings: Callable[..., Settings], sandbox_runtime: Any, tmp_path: Path
) -> None:
    data = bytes(range(256)) * 64 + b"tail"
    first = CodeInterpreter(make_settings(home=tmp_path / "host-a", runtime_dir=sandbox_runtime.root))
    second = await started(make_settings(home=tmp_path / "host-b", runtime_dir=sandbox_runtime.root))
    try:
        await first.start()
        up = await first.files.upload_file(5, data, "blob.bin")
        fid = up["file_id"]
        code = f"import hashlib\nprint(hashlib.sha256(open(FILES[{fid!r}], 'rb').read()).hexdigest())"
        result = _ok(await second.execute(code, user_id=5, user_files=[fid]))
        assert result["output"].strip() == hashlib.sha256(data).hexdigest()
        assert (tmp_path / "host-b" / "cache" / fid).is_dir()  # the second host made its own copy
        assert not (tmp_path / "host-a" / "cache" / fid).exists()
    finally:
        await second.close()
        await first.close()


# -- expiry while an execution uses the file -----------------------------------------------------------

TTL_S = 2.0


@pytest.fixture(scope="module")
async def short_lived(
    tmp_path_factory: pytest.TempPathFactory, mongo_uri: str, sandbox_runtime: Any
) -> AsyncIterator[CodeInterpreter]:
    """An interpreter whose files expire TTL_S seconds after upload (one execution per user at a time)."""
    settings = Settings(
        home=tmp_path_factory.mktemp("short-lived") / "home",
        mongodb_uri=mongo_uri,
        database=f"ci_test_{uuid.uuid4().hex[:12]}",
        runtime_dir=sandbox_runtime.root,
        file_expiration_hours=TTL_S / 3600,
        max_parallel=2,
        max_parallel_per_user=1,
    )
    interpreter = await started(settings)
    yield interpreter
    await close_and_drop(interpreter)


async def _expire_and_clean(interp: CodeInterpreter, up: dict[str, Any], task: asyncio.Task[Any]) -> None:
    """Wait until the file has expired, run the cleanup while ``task`` still runs, check it was cleaned."""
    expires = datetime.fromisoformat(up["expires_at"]).timestamp()
    await asyncio.sleep(max(0.0, expires - time.time()) + 0.2)
    assert not task.done(), "the execution ended before the file expired; the test proves nothing"
    assert await interp.files.cleanup_expired_files() == 1
    assert await interp.files.get_file(up["file_id"], up["user_id"]) is None
    assert not (interp.files.cache_dir / up["file_id"]).exists()


async def test_file_stays_readable_while_its_execution_runs(short_lived: CodeInterpreter) -> None:
    user, data = _uid(), b"n\n" + b"1\n" * 1000
    up = await short_lived.files.upload_file(user, data, "numbers.csv")
    fid = up["file_id"]
    code = (
        "import hashlib, time\n"
        f"first = hashlib.sha256(open(FILES[{fid!r}], 'rb').read()).hexdigest()\n"
        f"time.sleep({TTL_S + 1.5})\n"  # the host expires and cleans the file meanwhile
        f"print(first == hashlib.sha256(open(FILES[{fid!r}], 'rb').read()).hexdigest())\n"
        f"print(int(load_file({fid!r})['n'].sum()))\n"
    )
    task = asyncio.create_task(short_lived.execute(code, user_id=user, user_files=[fid], timeout=20))
    await _expire_and_clean(short_lived, up, task)
    result = _ok(await task)
    assert result["output"].splitlines() == ["True", "1000"]
    pins = short_lived.settings.home / PINS_DIR
    assert pins.is_dir() and not any(pins.iterdir())  # pinned during the execution, unpinned after it
    # The next execution no longer sees it.
    after = await short_lived.execute("print('ran')", user_id=user, user_files=[fid])
    assert after["success"] is False and NOT_FOUND in after["error"]


async def test_file_stays_readable_while_its_execution_is_queued(short_lived: CodeInterpreter) -> None:
    user, data = _uid(), b"queued bytes\n" * 100
    up = await short_lived.files.upload_file(user, data, "notes.txt")
    fid = up["file_id"]
    # The user's one slot is taken until after the cleanup, so the second call waits in the queue.
    blocker = asyncio.create_task(
        short_lived.execute(f"import time\ntime.sleep({TTL_S + 1.5})", user_id=user, timeout=20)
    )
    executor = await short_lived.executor()
    await until(lambda: executor.status()["running"] > 0)
    code = f"import hashlib\nprint(hashlib.sha256(open(FILES[{fid!r}], 'rb').read()).hexdigest())"
    task = asyncio.create_task(short_lived.execute(code, user_id=user, user_files=[fid], timeout=20))
    await until(lambda: executor.status()["queued"] > 0)
    await _expire_and_clean(short_lived, up, task)
    _ok(await blocker)
    result = _ok(await task)
    assert result["output"].strip() == hashlib.sha256(data).hexdigest()


# -- status --------------------------------------------------------------------------------------------


async def test_status_reports_the_verified_layers_or_skips_starting_the_sandbox(
    interp: CodeInterpreter, make_settings: Callable[..., Settings], sandbox_runtime: Any
) -> None:
    status = await interp.status()
    mode = sandbox_mode()
    assert status["isolation"] == mode and status["executor"]["started"] is True
    assert status["layers"] == status["executor"]["layers"]
    active = {k for k, v in status["layers"].items() if v}
    assert REQUIRED_LAYERS[mode] <= active
    assert ("uid_drop" in active) is (mode == "strict") and ("userns" in active) is (mode == "namespaces")
    fresh = CodeInterpreter(make_settings(runtime_dir=sandbox_runtime.root))
    try:
        quick = await fresh.status(start_sandbox=False)
        assert quick["venv_exists"] is True and quick["layers"] is None
        assert quick["executor"] == {
            "started": False,
            "reason": "the sandbox starts with the first execution",
        }
        assert quick["storage"]["reachable"] is True
    finally:
        await fresh.close()
