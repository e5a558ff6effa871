"""Packages through CodeInterpreter.execute (issue #4's "Must show"): install on import, one pip run, rebuild.

These tests never touch the shared test runtime: each interpreter here has a small runtime of its own
(no baseline packages, nothing preloaded: a bare venv builds in a fraction of a second) and installs
small pure-Python wheels (toml, more-itertools, toolz, funcy) into it with the real pip.
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
from code_interpreter.packages.runtime import RETIRED_FILE
from code_interpreter.settings import Settings


def _small_settings(root: Path, mongo_uri: str) -> Settings:
    return Settings(
        home=root / "home",
        mongodb_uri=mongo_uri,
        database=f"ci_test_{uuid.uuid4().hex[:12]}",
        runtime_dir=root / "runtime",
        runtime_packages=(),
        preload_modules=(),
        max_parallel=2,
        max_parallel_per_user=2,
    )


@pytest.fixture(scope="module")
async def interp(tmp_path_factory: pytest.TempPathFactory, mongo_uri: str) -> AsyncIterator[CodeInterpreter]:
    """One interpreter on a bare runtime of its own; each test imports packages no other test uses."""
    interpreter = await started(_small_settings(tmp_path_factory.mktemp("pkg-interp"), mongo_uri))
    yield interpreter
    await close_and_drop(interpreter)


def _ok(result: dict[str, Any]) -> dict[str, Any]:
    assert result["success"], (result["error"], result["stderr"], result["notes"])
    return result


def _missing(interp: CodeInterpreter, *dists: str) -> None:
    """Precondition: none of ``dists`` is in the runtime yet (else the test would prove nothing)."""
    have = interp.packages.installed_distributions()
    assert not set(dists) & set(have), f"already installed: {set(dists) & set(have)}"


async def test_the_shared_runtime_is_not_used(interp: CodeInterpreter, sandbox_runtime: Any) -> None:
    assert interp.packages.runtime.root != sandbox_runtime.root
    assert interp.packages.runtime.root == interp.settings.runtime_path.absolute()


async def test_missing_approved_package_is_installed_before_the_first_run(interp: CodeInterpreter) -> None:
    _missing(interp, "toml")
    calls = interp.packages.pip_calls
    code = "import toml\nprint(toml.loads('a = 1\\n[t]\\nb = \"x\"'))"
    result = _ok(await interp.execute(code, user_id=1))
    assert result["output"].strip() == "{'a': 1, 't': {'b': 'x'}}"
    assert interp.packages.pip_calls == calls + 1
    assert "installed for this call: toml" in result["notes"]
    # The next call finds it installed: no pip run, no note.
    again = _ok(await interp.execute("import toml\nprint(toml.dumps({'k': 2}).strip())", user_id=1))
    assert again["output"].strip() == "k = 2" and interp.packages.pip_calls == calls + 1
    assert not any("installed" in n for n in again["notes"])


async def test_two_missing_packages_are_installed_in_one_pip_call(interp: CodeInterpreter) -> None:
    _missing(interp, "more-itertools", "toolz")
    calls = interp.packages.pip_calls
    code = (
        "from more_itertools import chunked\n"
        "def f():\n"
        "    import toolz  # an import inside a function counts too\n"
        "    return toolz.frequencies('abca')\n"
        "print(list(chunked(range(5), 2)), f())\n"
    )
    result = _ok(await interp.execute(code, user_id=2))
    assert result["output"].strip() == "[[0, 1], [2, 3], [4]] {'a': 2, 'b': 1, 'c': 1}"
    assert interp.packages.pip_calls == calls + 1
    assert "installed for this call: more-itertools, toolz" in result["notes"]


async def test_concurrent_executions_needing_one_new_package_install_it_once(interp: CodeInterpreter) -> None:
    _missing(interp, "funcy")
    calls = interp.packages.pip_calls
    code = "import funcy\nprint(funcy.first(funcy.remove(lambda x: x < {n}, range(10))))"
    results = await asyncio.gather(
        interp.execute(code.format(n=3), user_id=3), interp.execute(code.format(n=7), user_id=4)
    )
    assert [_ok(r)["output"].strip() for r in results] == ["3", "7"]
    assert interp.packages.pip_calls == calls + 1
    noted = [r for r in results if "installed for this call: funcy" in r["notes"]]
    assert len(noted) == 1  # the second caller waited for the first install and found it done


async def test_unapproved_import_is_refused_with_one_clear_message(interp: CodeInterpreter) -> None:
    calls = interp.packages.pip_calls
    result = await interp.execute("import json\nprint('ran')\nimport flask\n", user_id=5)
    assert result["success"] is False and result["output"] == ""
    error = result["error"]
    assert error.startswith("Package not available:") and "\n" not in error
    assert "'flask' (line 3)" in error and "not on the approved package list" in error
    assert "approved:" in error and "numpy" in error and "toolz" in error  # points to the approved list
    assert interp.packages.pip_calls == calls  # nothing was installed


async def test_optional_unapproved_import_runs(interp: CodeInterpreter) -> None:
    calls = interp.packages.pip_calls
    code = (
        "try:\n"
        "    import flask\n"
        "except ImportError:\n"
        "    flask = None\n"
        "print('without flask' if flask is None else 'with flask')\n"
    )
    result = _ok(await interp.execute(code, user_id=6))
    assert result["output"].strip() == "without flask"
    assert interp.packages.pip_calls == calls


async def test_install_packages_argument_is_approved_and_installed(interp: CodeInterpreter) -> None:
    refused = await interp.execute("print('ran')", user_id=7, install_packages=["numpy; id"])
    assert refused["success"] is False and refused["output"] == "" and "numpy; id" in refused["error"]
    unapproved = await interp.execute("print('ran')", user_id=7, install_packages=["flask"])
    assert unapproved["success"] is False and "flask" in unapproved["error"]


async def test_recreation_while_an_execution_runs(tmp_path: Path, mongo_uri: str) -> None:
    interp = await started(_small_settings(tmp_path, mongo_uri))
    try:
        await interp.packages.install(["toml"])
        old = interp.packages.runtime
        # The execution waits until the host has retired its generation (the marker is written into
        # the old generation, which the sandbox sees through its read-only bind), then imports.
        code = (
            "import os, sys, time\n"
            f"marker = os.path.join(sys.prefix, {RETIRED_FILE!r})\n"
            "deadline = time.monotonic() + 60\n"
            "while not os.path.exists(marker) and time.monotonic() < deadline:\n"
            "    time.sleep(0.05)\n"
            "import toml\n"
            "print(os.path.exists(marker), sys.prefix)\n"
            "print(toml.__file__.startswith(sys.prefix), toml.dumps({'gen': 'old'}).strip())\n"
        )
        running = asyncio.create_task(interp.execute(code, user_id=1, timeout=90))
        executor = await interp.executor()
        for _ in range(1500):  # bounded: a hang becomes a failure
            if executor.status()["running"]:
                break
            await asyncio.sleep(0.02)
        new = await interp.packages.rebuild_runtime()
        assert new.path != old.path
        result = _ok(await running)
        assert result["output"].splitlines() == [f"True {old.path}", 'True gen = "old"']
        # The next execution runs in the new generation, which kept the package in use.
        after = _ok(await interp.execute("import sys, toml\nprint(sys.prefix)", user_id=1))
        assert after["output"].strip() == str(new.path)
        assert (await interp.status())["executor"]["runtime"] == str(new.path)
        assert "toml" in interp.packages.installed_distributions(new)
        assert old.path.is_dir()  # kept for a grace time past the longest execution
    finally:
        await close_and_drop(interp)


async def test_the_runtime_is_rebuilt_when_due_and_executions_move_to_it(
    tmp_path: Path, mongo_uri: str
) -> None:
    """runtime_rebuild_days is kept: a runtime older than it is rebuilt aside (on the cleanup cadence)."""
    settings = _small_settings(tmp_path, mongo_uri).replace(runtime_rebuild_days=1e-6, cleanup_interval_s=0.5)
    interp = await started(settings)
    try:
        old = interp.packages.runtime
        for _ in range(600):  # bounded: a rebuild builds a small venv (seconds)
            if interp.packages.runtime.path != old.path:
                break
            await asyncio.sleep(0.1)
        new = interp.packages.runtime
        assert new.path != old.path, "the runtime was never rebuilt"
        for _ in range(600):  # the executor moves to it once the swap hooks ran
            if (await interp.status(start_sandbox=False))["executor"].get("runtime") == str(new.path):
                break
            await asyncio.sleep(0.1)
        after = _ok(await interp.execute("import sys\nprint(sys.prefix)", user_id=1))
        assert after["output"].strip() != str(old.path)  # (it may have been rebuilt again since: 1e-6 days)
    finally:
        await close_and_drop(interp)
