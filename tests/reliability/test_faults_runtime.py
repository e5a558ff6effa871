"""Faults in the sandbox runtime: the package index unreachable, the runtime's python deleted.

Each test builds a small package-free runtime of its own in a temp dir (the shared test runtime is
never changed). Proves: with the index unreachable, a call that needs a missing approved package
ends quickly with an error that names the package and says the index could not be reached, while
code whose only missing import is optional (``try/except ImportError``) still runs, and the next
ordinary call works; with the runtime's interpreter deleted, the next call notices, rebuilds the
runtime as a new generation, moves the fork server onto it and succeeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from code_interpreter.interpreter import CodeInterpreter
from code_interpreter.settings import Settings

from .conftest import small_runtime_settings, within


async def test_package_index_unreachable(
    make_settings: Callable[..., Settings], tmp_path: Path, cut_package_index: Callable[[], str]
) -> None:
    settings = make_settings(**small_runtime_settings(tmp_path))
    async with CodeInterpreter(settings) as interp:
        warm = await interp.execute("print('runtime built')", user_id=1)  # build before cutting the network
        assert warm["success"], warm
        cut_package_index()

        started = time.monotonic()
        r = await within(120, interp.execute("import funcy\nprint(funcy.first([3, 4]))", user_id=1))
        assert not r["success"]
        assert "funcy" in r["error"], r["error"]
        assert "could not be reached" in r["error"], r["error"]
        assert time.monotonic() - started < 90

        optional = (
            "try:\n    import toolz\nexcept ImportError:\n    toolz = None\n"
            "print('ran without toolz' if toolz is None else 'toolz present')"
        )
        r = await within(120, interp.execute(optional, user_id=1))
        assert r["success"], r
        assert r["output"] == "ran without toolz\n"

        r = await within(60, interp.execute("import json\nprint(json.dumps([1, 2]))", user_id=1))
        assert r["success"] and r["output"] == "[1, 2]\n", r


async def test_deleted_runtime_python_is_rebuilt_on_the_next_call(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(**small_runtime_settings(tmp_path))
    async with CodeInterpreter(settings) as interp:
        first = await interp.execute("import sys\nprint(sys.prefix)", user_id=1)
        assert first["success"], first
        old_runtime = interp.packages.runtime
        assert first["output"].strip() == str(old_runtime.path)
        old_zygote = (await interp.executor()).status()["zygote_pid"]

        old_runtime.python.unlink()  # the venv's bin/python
        assert not old_runtime.exists()

        again = await within(180, interp.execute("import sys\nprint(sys.prefix)", user_id=1))
        assert again["success"], again
        new_runtime = interp.packages.runtime
        assert new_runtime.path != old_runtime.path and new_runtime.exists()
        assert again["output"].strip() == str(new_runtime.path)  # runs in the new generation
        status = (await interp.executor()).status()
        assert status["zygote_pid"] not in (None, old_zygote)
        assert status["runtime"] == str(new_runtime.path)
