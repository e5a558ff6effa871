"""The executor's contract: results, bad input, timeouts, generated files, concurrency, zygote lifecycle."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import _running as running
from _executor_fixtures import alive, require_root, small_settings, started_executor
from code_interpreter.errors import IsolationUnavailable
from code_interpreter.executor import ExecutionResult, Executor, FileRef, isolation_problem, resolve_isolation


@pytest.fixture(scope="module")
async def executor(sandbox_runtime: Any, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Executor]:
    require_root()
    async for ex in started_executor(small_settings(tmp_path_factory.mktemp("exec-home")), sandbox_runtime):
        yield ex


async def run(ex: Executor, code: str, **kw: Any) -> ExecutionResult:
    kw.setdefault("timeout", 5)
    return await ex.execute(code, user_id=kw.pop("user_id", "u1"), **kw)


async def test_status_reports_every_layer_active(executor: Executor) -> None:
    st = executor.status()
    assert st["mode"] == "strict" and st["zygote_pid"]
    expected = {"netns", "mountns", "pidns", "ipcns", "utsns", "uid_drop", "seccomp", "rlimits"}
    expected |= {"cgroup_memory", "cgroup_pids", "no_new_privs"}
    assert {k for k, v in st["layers"].items() if v} == expected
    assert st["max_parallel"] == 6 and st["running"] == 0 and st["queued"] == 0
    assert "pandas" in st["preloaded"]


async def test_stdout_stderr_apart_and_result_dict_shape(executor: Executor) -> None:
    r = await run(executor, "import sys\nprint('out')\nprint('err', file=sys.stderr)")
    assert (r.success, r.output, r.stderr, r.error, r.return_code) == (True, "out\n", "err\n", None, 0)
    d = r.to_dict()
    assert set(d) == {"success", "output", "error", "execution_time", "return_code", "stderr", "truncated",
                      "isolation", "notes", "generated_files", "session", "error_type", "usage"}  # fmt: skip
    assert d["isolation"] == "strict" and d["generated_files"] == []
    # The executor measures; the interpreter's run path records (and then fills "usage").
    assert d["usage"] is None and r.measured is not None and r.measured.measured_by == "cgroup"


async def test_traceback_points_at_user_lines(executor: Executor) -> None:
    r = await run(executor, "x = 1\ny = 2\nz = x / (y - 2)\n")
    assert not r.success and r.return_code == 1
    assert r.error is not None and 'File "<code>", line 3' in r.error and "ZeroDivisionError" in r.error
    assert "_supervisor" not in r.error and "runtime" not in r.error


async def test_syntax_error_is_a_normal_failed_result(executor: Executor) -> None:
    r = await run(executor, "print('a')\ndef f(:\n")
    assert not r.success and r.return_code == 1
    assert r.error is not None and "SyntaxError" in r.error and "line 2" in r.error


@pytest.mark.parametrize(
    ("code", "ok", "needle"),
    [
        ("", True, ""),
        ("   \n\n", True, ""),
        ("print('a\x00b')", False, "null"),
        ("print('\udcff')", False, "surrogates not allowed"),
        ("import sys; sys.exit(3)", False, "code 3"),
        ("raise SystemExit(0)", True, ""),
    ],
)
async def test_bad_and_odd_input(executor: Executor, code: str, ok: bool, needle: str) -> None:
    r = await run(executor, code)
    assert r.success is ok, (r.output, r.error)
    assert needle in (r.output + (r.error or "")).lower() or needle in r.output


async def test_several_megabytes_of_code(executor: Executor) -> None:
    code = (
        "rows = [\n"
        + "    'abcdefghij',\n" * 90_000
        + "]\nblob = '"
        + "z" * 300_000
        + "'\nprint(len(rows), len(blob))\n"
    )
    assert 1_800_000 < len(code) <= executor.settings.max_code_bytes
    r = await run(executor, code, timeout=10)
    assert r.success and r.output == "90000 300000\n", r.error


@pytest.mark.parametrize(
    ("timeout", "note"),
    [(0, "not positive"), (-5, "not positive"), (10**6, "exceeds the maximum"), (None, None), (2.5, None)],
)
async def test_timeout_clamping_is_said(executor: Executor, timeout: Any, note: str | None) -> None:  # noqa: ASYNC109
    r = await executor.execute("print(1)", user_id="u1", timeout=timeout)
    assert r.success
    if note is None:
        assert r.notes == ()
    else:
        assert len(r.notes) == 1 and note in r.notes[0]


async def test_timeout_message_and_partial_output(executor: Executor) -> None:
    r = await run(executor, "import time\nprint('before', flush=True)\ntime.sleep(30)", timeout=1)
    assert not r.success and r.return_code == -1
    assert (
        r.error == "Execution timeout after 1 seconds — pass timeout= up to 10, or process the data in chunks"
    )
    assert r.output == "before\n"


async def test_plt_show_without_savefig_returns_a_png(executor: Executor) -> None:
    r = await run(
        executor, "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('t')\nplt.show()"
    )
    assert r.success, r.error
    assert [g.filename for g in r.generated] == ["figure_1.png"]
    png = r.generated[0]
    assert png.data.startswith(b"\x89PNG\r\n\x1a\n") and png.mime == "image/png" and png.size == len(png.data)
    assert r.to_dict()["generated_files"][0]["type"] == "image"


async def test_nested_generated_files_and_input_files(executor: Executor, tmp_path: Path) -> None:
    src = tmp_path / "sales.csv"
    src.write_text("region,amount\nn,1\ns,2\nn,3\n")
    os.chmod(src, 0o644)
    ref = FileRef(file_id="65f0c0ffee", path=src, filename="sales.csv", file_type="csv")
    code = """
import os
df = load_file('65f0c0ffee')
os.makedirs('out/deep', exist_ok=True)
df.groupby('region').amount.sum().to_csv('out/deep/summary.csv')
print(sorted(FILES), get_file_path('65f0c0ffee'))
"""
    r = await run(executor, code, files=[ref])
    assert r.success, r.error
    assert "['65f0c0ffee'] /mnt/inputs/65f0c0ffee/sales.csv" in r.output
    files = {g.filename: g.data for g in r.generated}
    assert files == {"out/deep/summary.csv": b"region,amount\nn,4\ns,2\n"}


async def test_missing_input_file_is_a_clear_error(executor: Executor, tmp_path: Path) -> None:
    from code_interpreter.errors import FileNotFound

    ref = FileRef(file_id="gone", path=tmp_path / "nope.csv", filename="nope.csv", file_type="csv")
    with pytest.raises(FileNotFound, match="gone"):
        await run(executor, "pass", files=[ref])


async def test_sixteen_concurrent_executions(executor: Executor) -> None:
    code = "import pandas as pd\nprint(pd.Series(range({n})).sum())"
    results = await asyncio.gather(
        *(executor.execute(code.format(n=i), user_id=f"user{i}", timeout=20) for i in range(16))
    )
    assert [r.output for r in results] == [f"{sum(range(i))}\n" for i in range(16)]
    assert executor.status()["running"] == 0 and executor.status()["queued"] == 0


async def test_per_user_cap_queues_the_rest(executor: Executor) -> None:
    cap = executor.settings.per_user_parallel
    tasks = [
        asyncio.create_task(run(executor, "import time; time.sleep(0.6)", user_id="greedy"))
        for _ in range(cap + 2)
    ]
    other = asyncio.create_task(run(executor, "print('me too')", user_id="polite"))
    for _ in range(100):
        await asyncio.sleep(0.02)
        if executor.status()["running"] >= cap:
            break
    st = executor.status()
    assert st["running"] <= cap + 1 and st["queued"] >= 2
    assert (await other).output == "me too\n"  # not stuck behind the greedy user's queue
    assert all(r.success for r in await asyncio.gather(*tasks))


async def test_zygote_killed_mid_execution_then_recovery(executor: Executor) -> None:
    before = executor.status()["zygote_pid"]
    marker = running.new_marker()
    slow = asyncio.create_task(run(executor, running.latched(marker, "print('finished')"), timeout=10))
    await running.wait_for(marker)  # the child runs the user's code now, and waits for us
    [(supervisor, child)] = executor.processes()
    await executor.kill_zygote()
    # Issue #22: nothing outlives what ends it. The supervisor dies with its zygote (parent-death signal),
    # the child with its supervisor; the caller gets a clear result, and the next call a new zygote.
    r = await slow
    assert not r.success and r.error_type == "SandboxCrashed", r
    assert not alive(supervisor) and not alive(child)
    again = await run(executor, "print('recovered')")
    assert again.success and again.output == "recovered\n"
    after = executor.status()["zygote_pid"]
    assert after and after != before


async def test_restart_lets_running_executions_finish(executor: Executor) -> None:
    marker = running.new_marker()
    slow = asyncio.create_task(run(executor, running.latched(marker, "print('old zygote')"), timeout=10))
    pid = await running.wait_for(marker)  # the child runs the user's code now, and waits for us
    before = executor.status()["zygote_pid"]
    await executor.restart()
    assert executor.status()["zygote_pid"] != before
    assert running.find(marker) == pid, "the child was gone before the restart"
    running.release(pid)
    assert (await slow).output == "old zygote\n"
    assert (await run(executor, "print('new')")).output == "new\n"


async def test_supervisor_killed_gives_sandbox_crashed(executor: Executor) -> None:
    running = asyncio.Event()
    task = asyncio.create_task(
        executor.execute(
            "import time\nprint('x', flush=True)\ntime.sleep(30)",
            user_id="u1",
            timeout=40,
            on_event=lambda event: running.set(),
        )
    )
    await asyncio.wait_for(running.wait(), 60)  # the child runs user code: it printed
    [(supervisor, child)] = executor.processes()
    os.kill(supervisor, signal.SIGKILL)
    r = await asyncio.wait_for(task, 30)
    assert not r.success and r.error is not None and r.error.startswith("Sandbox crashed"), r.error
    assert not alive(supervisor) and not alive(child)


async def test_isolation_none_warns_and_runs(
    sandbox_runtime: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="code_interpreter.executor")
    settings = small_settings(tmp_path / "home", isolation="none", preload_modules=())
    async for ex in started_executor(settings, sandbox_runtime):
        r = await ex.execute("open('x.txt', 'w').write('hi')\nprint('ran')", user_id="u", timeout=5)
        assert r.success and r.output == "ran\n" and r.isolation == "none"
        assert [g.filename for g in r.generated] == ["x.txt"]
        assert ex.status()["layers"]["netns"] is False
    assert any("WITHOUT a sandbox" in rec.getMessage() for rec in caplog.records)


def test_isolation_problem_explains_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isolation_problem("none") is None
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    problem = isolation_problem("strict")
    assert problem is not None and "needs root" in problem and "namespaces" in problem


async def test_start_refuses_unavailable_isolation(
    sandbox_runtime: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    ex = Executor(small_settings(tmp_path / "home"), sandbox_runtime)
    with pytest.raises(IsolationUnavailable, match="isolation='none' explicitly"):
        await ex.start()
    await ex.close()


def test_auto_isolation_is_strict_as_root_namespaces_otherwise_and_fails_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from code_interpreter.executor import isolation as _isolation

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert resolve_isolation("auto") == (
        "strict",
        "auto: running as root, so namespaces plus a real switch to the sandbox uid",
    )
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    mode, reason = resolve_isolation("auto")
    assert (mode, reason) == ("namespaces", "auto: running as uid 1000 (not root), so user namespaces")
    monkeypatch.setattr(
        _isolation,
        "isolation_problem",
        lambda m: "user namespaces are disabled (user.max_user_namespaces = 0)",
    )
    mode, reason = resolve_isolation("auto")
    assert mode == "unavailable" and "not root" in reason and "max_user_namespaces = 0" in reason
    assert resolve_isolation("none") == ("none", "isolation='none' was set explicitly")


async def test_auto_without_any_sandbox_refuses_to_run_and_says_what_is_missing(
    sandbox_runtime: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from code_interpreter.executor import isolation as _isolation

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(_isolation, "isolation_problem", lambda m: "user namespaces are disabled (test)")
    ex = Executor(small_settings(tmp_path / "home", isolation="auto"), sandbox_runtime)
    assert ex.mode == "unavailable" and ex.status()["mode_reason"].startswith(
        "isolation='auto' found no sandbox"
    )
    with pytest.raises(IsolationUnavailable, match="not root, and user namespaces are disabled") as err:
        await ex.start()
    assert "isolation='none' explicitly" in str(err.value)
    await ex.close()
