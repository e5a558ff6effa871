"""PackageManager: approval, import mapping, import scan, prepare/install (real venv, real pip), rebuild."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tarfile
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from code_interpreter.errors import PackageInstallError, PackageNotApproved
from code_interpreter.packages import PackageManager, generations, runtime
from code_interpreter.packages import pip as _pip
from code_interpreter.packages.approval import name_problem
from code_interpreter.packages.imports import canonicalize, import_map
from code_interpreter.packages.runtime import Runtime
from code_interpreter.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A small runtime of the test's own (no baseline: a bare venv builds in a fraction of a second)."""
    return Settings(home=tmp_path / "home", runtime_dir=tmp_path / "rt", runtime_packages=())


@pytest.fixture
def pm(settings: Settings) -> PackageManager:
    return PackageManager(settings)


def run_py(rt: Runtime, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(rt.python), "-I", "-c", code], capture_output=True, text=True, timeout=60)


# -- approval ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["numpy", "NumPy", "scikit-learn", "scikit_learn", "Scikit.Learn", "more_itertools", "python-dateutil",
     "pyarrow", "toml", "PyYAML", "pillow", "toolz"],
)  # fmt: skip
def test_approved_names(pm: PackageManager, name: str) -> None:
    ok, reason = pm.is_package_approved(name)
    assert ok, reason
    assert canonicalize(name) in reason


@pytest.mark.parametrize("name", ["flask", "evilpkg", "pip", "setuptools", "os-sys", "numpyy", "scrapy"])
def test_unapproved_names(pm: PackageManager, name: str) -> None:
    ok, reason = pm.is_package_approved(name)
    assert not ok
    assert "not on the approved package list" in reason and "numpy" in reason


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("numpy; id", "marker"),
        ("numpy;id", "marker"),
        ("-e .", "option"),
        ("--index-url x", "option"),
        ("--index-url=http://evil/simple", "option"),
        ("-r requirements.txt", "option"),
        ("numpy @ file:///tmp/x", "URL"),
        ("numpy@https://evil/x.whl", "URL"),
        ("git+https://github.com/x/y", "URL"),
        ("numpy==1.0", "version"),
        ("numpy>=1", "version"),
        ("numpy~=1.0", "version"),
        ("numpy!=1", "version"),
        ("numpy[extra]", "extras"),
        ("../x", "path"),
        ("./numpy", "path"),
        ("/tmp/numpy", "path"),
        ("C:\\numpy", "path"),
        (".numpy", "path"),
        ("numpy\nrequests", "whitespace"),
        ("num py", "whitespace"),
        ("numpy ", "whitespace"),
        ("numpy$(id)", "metacharacter"),
        ("numpy`id`", "metacharacter"),
        ("numpy|id", "metacharacter"),
        ("numpy&&id", "metacharacter"),
        ("numpy'", "metacharacter"),
        ("nump\u0443", "non-ASCII"),  # Cyrillic u
        ("\uff4e\uff55\uff4d\uff50\uff59", "non-ASCII"),  # fullwidth "numpy"
        ("numpy\u200b", "non-ASCII"),  # zero-width space
        ("", "empty"),
        ("-", "option"),
        ("numpy-", "PEP 508"),
        ("numpy,pandas", "PEP 508"),
        ("x" * 101, "longer"),
    ],
)
def test_injection_attempts_are_refused_with_a_reason(pm: PackageManager, name: str, why: str) -> None:
    ok, reason = pm.is_package_approved(name)
    assert not ok
    assert why.lower() in reason.lower(), reason


def test_non_string_name_is_refused(pm: PackageManager) -> None:
    ok, reason = pm.is_package_approved(123)  # type: ignore[arg-type]
    assert not ok and "string" in reason


def test_operator_approved_list(tmp_path: Path) -> None:
    pm = PackageManager(Settings(home=tmp_path, approved_packages=("Toml", "my_pkg")))
    assert pm.is_package_approved("toml")[0]
    assert pm.is_package_approved("my-pkg")[0]
    assert not pm.is_package_approved("numpy")[0]


def test_shipped_approved_list_is_valid_data() -> None:
    raw = json.loads(resources.files("code_interpreter").joinpath("data/approved_packages.json").read_text())
    names = raw["packages"] + raw["dependencies"]
    assert {"numpy", "pandas", "scikit-learn", "pyarrow", "pillow", "toml", "funcy", "more-itertools"} <= set(
        names
    )
    for n in names:
        assert name_problem(n) is None and canonicalize(n) == n, n
    for baseline in Settings().runtime_packages:
        assert canonicalize(baseline) in names


def test_the_dependencies_of_approved_packages_are_approved(pm: PackageManager) -> None:
    """import joblib must not be refused while scikit-learn, which requires it, is approved."""
    for name in ("joblib", "threadpoolctl", "cloudpickle", "patsy", "contourpy", "kiwisolver"):
        ok, reason = pm.is_package_approved(name)
        assert ok, reason
    for tool in ("pip", "setuptools", "wheel"):  # packaging tools some wheels require: never
        assert not pm.is_package_approved(tool)[0]


async def test_import_joblib_alone_installs_it(tmp_path: Path, sandbox_runtime: Any) -> None:
    pm = PackageManager(Settings(home=tmp_path, runtime_dir=sandbox_runtime.root))
    result = await pm.prepare("import joblib\nprint(joblib.__version__)")
    assert result.ok and not result.refused, result.refusal_message()
    assert "joblib" in pm.available_modules()


# -- import mapping ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "dist"),
    [
        ("sklearn", "scikit-learn"),
        ("sklearn.linear_model", "scikit-learn"),
        ("PIL", "pillow"),
        ("PIL.Image", "pillow"),
        ("skimage", "scikit-image"),
        ("yaml", "pyyaml"),
        ("cv2", "opencv-python-headless"),
        ("dateutil", "python-dateutil"),
        ("bs4", "beautifulsoup4"),
        ("mpl_toolkits", "matplotlib"),
        ("more_itertools", "more-itertools"),
        ("progressbar", "progressbar2"),
        ("numpy", "numpy"),
        ("Foo_Bar", "foo-bar"),
        ("os", None),
        ("json", None),
        ("os.path", None),
        ("", None),
        ("1abc", None),
    ],
)
def test_distribution_for_import(pm: PackageManager, module: str, dist: str | None) -> None:
    assert pm.distribution_for_import(module) == dist


def test_import_map_data_is_valid() -> None:
    mapping = import_map()
    assert len(mapping) >= 20
    for module, dist in mapping.items():
        assert module.isidentifier(), module
        assert name_problem(dist) is None, dist


# -- import scan ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "required", "optional"),
    [
        ("import numpy as np\nfrom pandas.io import json", {"numpy", "pandas"}, set()),
        ("from x.y import z", {"x"}, set()),
        ("import os, sys", {"os", "sys"}, set()),
        ("def f():\n    import toolz\n    return toolz", {"toolz"}, set()),
        ("class A:\n    import toml", {"toml"}, set()),
        ("try:\n    import toml\nexcept ImportError:\n    toml = None", set(), {"toml"}),
        ("try:\n    import a\nexcept ModuleNotFoundError:\n    pass", set(), {"a"}),
        ("try:\n    import a\nexcept (ValueError, ImportError):\n    pass", set(), {"a"}),
        ("try:\n    import a\nexcept Exception:\n    pass", set(), {"a"}),
        ("try:\n    import a\nexcept:\n    pass", set(), {"a"}),
        ("try:\n    import a\nexcept builtins.ImportError:\n    pass", set(), {"a"}),
        ("try:\n    import a\nexcept* ImportError:\n    pass", set(), {"a"}),
        ("try:\n    import a\nexcept ValueError:\n    pass", {"a"}, set()),
        ("try:\n    import a\nfinally:\n    pass", {"a"}, set()),
        ("try:\n    pass\nexcept ImportError:\n    import b", {"b"}, set()),
        ("try:\n    import a\nexcept ImportError:\n    pass\nelse:\n    import c", {"c"}, {"a"}),
        ("try:\n    import a\nexcept ImportError:\n    pass\nimport a", {"a"}, set()),
        ("try:\n    def f():\n        import a\nexcept ImportError:\n    pass", {"a"}, set()),
        ("from . import x\nfrom .mod import y", set(), set()),
        ("__import__('funcy')", {"funcy"}, set()),
        ("import importlib\nimportlib.import_module('toolz.curried')", {"importlib", "toolz"}, set()),
        ("name = 'x'\n__import__(name)", set(), set()),
        ("import a\nx = [__import__('b') for _ in ()]", {"a", "b"}, set()),
        ("__\uff49\uff4d\uff50\uff4f\uff52\uff54__('toml')", {"toml"}, set()),  # NFKC-folded __import__
        ("x = 1\ny = f(x)", set(), set()),
        ("s = 'import requests'\n# import flask", set(), set()),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import foo", {"typing"}, set()),
        ("from __future__ import annotations", set(), set()),
        ("import a.b.c\nfrom d.e import (f, g)", {"a", "d"}, set()),
        ("def f(:\n  import numpy", set(), set()),  # syntax error: empty scan
        ("import a\x00", set(), set()),  # NUL byte: empty scan, no crash
        ("", set(), set()),
    ],
)
def test_scan_imports(pm: PackageManager, code: str, required: set[str], optional: set[str]) -> None:
    scan = pm.scan_imports(code)
    assert set(scan.required) == required
    assert set(scan.optional) == optional
    assert set(scan.modules) == required | optional


def test_scan_records_first_line(pm: PackageManager) -> None:
    scan = pm.scan_imports("x = 1\n\nimport toml\nimport toml")
    assert scan.line_of("toml") == 3
    assert scan.to_dict()["lines"] == {"toml": 3}


# -- prepare and install (real runtime, real pip) -------------------------------------------------------


async def test_two_missing_packages_installed_in_one_pip_call(pm: PackageManager) -> None:
    code = "import toml\nfrom more_itertools import chunked\nimport json\nprint(list(chunked([1, 2, 3], 2)))"
    result = await pm.prepare(code)
    assert result.ok and result.refused == ()
    assert result.installed == ("more-itertools", "toml")
    assert pm.pip_calls == 1
    r = run_py(pm.runtime, code)
    assert r.stdout.strip() == "[[1, 2], [3]]", r.stderr
    names = {p["name"]: p for p in pm.installed_packages()}
    assert set(names) == {"more-itertools", "toml"}
    assert names["toml"]["version"] == "0.10.2"
    assert names["toml"]["installed_at"] and names["toml"]["last_used"]
    # second call: everything present, no pip
    again = await pm.prepare(code)
    assert again.installed == () and pm.pip_calls == 1


async def test_concurrent_prepares_install_once(pm: PackageManager) -> None:
    code = "import toolz"
    a, b = await asyncio.gather(pm.prepare(code), pm.prepare(code))
    assert a.ok and b.ok
    assert sorted([a.installed, b.installed]) == [(), ("toolz",)]
    assert pm.pip_calls == 1
    assert run_py(pm.runtime, "import toolz").returncode == 0


async def test_two_managers_on_one_runtime_install_once(settings: Settings) -> None:
    one, two = PackageManager(settings), PackageManager(settings)
    results = await asyncio.gather(one.prepare("import toml"), two.prepare("import toml"))
    assert all(r.ok for r in results)
    assert one.pip_calls + two.pip_calls == 1


async def test_unapproved_missing_module_is_refused(pm: PackageManager) -> None:
    result = await pm.prepare("import numpy\nimport requests_oauthlib_xyz\n")
    assert not result.ok
    refused = dict(result.refused)
    assert set(refused) == {"requests_oauthlib_xyz"}  # numpy is missing too, but approved
    assert "requests_oauthlib_xyz" in refused
    assert "line 2" in refused["requests_oauthlib_xyz"]
    assert "approved" in refused["requests_oauthlib_xyz"]
    assert "requests_oauthlib_xyz" in result.refusal_message()
    assert pm.pip_calls == 0  # nothing installed when the code cannot run anyway


async def test_optional_missing_is_not_an_error(pm: PackageManager) -> None:
    code = "try:\n    import not_a_real_module_xyz\nexcept ImportError:\n    not_a_real_module_xyz = None\n"
    result = await pm.prepare(code)
    assert result.ok and result.refusal_message() == ""
    assert result.optional_missing == ("not_a_real_module_xyz",)
    assert pm.pip_calls == 0


async def test_stdlib_only_code_needs_nothing(pm: PackageManager) -> None:
    result = await pm.prepare("import os, sys, json, wave, sqlite3\nfrom collections import deque")
    assert result.ok and result.installed == () and pm.pip_calls == 0


async def test_syntax_error_code_is_left_to_the_executor(pm: PackageManager) -> None:
    result = await pm.prepare("import toml\ndef f(:")
    assert result.ok and result.installed == () and pm.pip_calls == 0


async def test_install_packages_argument_goes_through_approval(pm: PackageManager) -> None:
    result = await pm.prepare("print(1)", install_packages=["toml", "numpy; id"])
    assert [name for name, _ in result.refused] == ["numpy; id"]
    assert "marker" in dict(result.refused)["numpy; id"]
    assert pm.pip_calls == 0
    ok = await pm.prepare("print(1)", install_packages=["toml"])
    assert ok.installed == ("toml",) and pm.pip_calls == 1


async def test_install(pm: PackageManager) -> None:
    with pytest.raises(PackageNotApproved, match="flask"):
        await pm.install(["toml", "flask"])
    assert pm.pip_calls == 0
    assert await pm.install(["Toml"]) == ["toml"]
    assert await pm.install(["toml"]) == []
    assert pm.pip_calls == 1


async def test_network_failure_names_the_package(
    pm: PackageManager, cut_package_index: Callable[[], str]
) -> None:
    await pm.ensure_runtime()
    cut_package_index()
    with pytest.raises(PackageInstallError, match="toolz") as ei:
        await pm.prepare("import toolz")
    assert "could not be reached" in str(ei.value)
    # the same package imported optionally: the code may still run
    optional = await pm.prepare("try:\n    import toolz\nexcept ImportError:\n    toolz = None\n")
    assert optional.ok and optional.optional_missing == ("toolz",)
    assert any("optional packages not installed" in n for n in optional.notes)


async def test_sdist_only_package_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    links = tmp_path / "links"
    links.mkdir()
    src = tmp_path / "sdist" / "ci-sdist-only-1.0"
    src.mkdir(parents=True)
    (src / "setup.py").write_text("raise SystemExit('setup.py must never run')\n")
    with tarfile.open(links / "ci-sdist-only-1.0.tar.gz", "w:gz") as tar:
        tar.add(src, arcname=src.name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    settings = Settings(home=tmp_path / "h", runtime_dir=tmp_path / "rt", runtime_packages=(),
                        approved_packages=("ci-sdist-only",))  # fmt: skip
    pm = PackageManager(settings)
    with pytest.raises(PackageInstallError, match="ci-sdist-only") as ei:
        await pm.prepare("import ci_sdist_only")
    assert "no wheel was found" in str(ei.value)


async def test_deleted_python_is_rebuilt_and_hooks_fire(pm: PackageManager) -> None:
    swaps: list[Runtime] = []
    pm.on_swap.append(swaps.append)
    old = await pm.ensure_runtime()
    old.python.unlink()
    result = await pm.prepare("import toml")
    assert result.installed == ("toml",)
    assert pm.runtime.path != old.path and pm.runtime.exists()
    assert swaps == [pm.runtime]
    assert run_py(pm.runtime, "import toml").returncode == 0


async def test_rebuild_swaps_while_the_old_generation_keeps_working(pm: PackageManager) -> None:
    async_swaps: list[Runtime] = []

    async def hook(new: Runtime) -> None:
        await asyncio.sleep(0)
        async_swaps.append(new)

    pm.on_swap.append(hook)
    await pm.prepare("import toml")
    old = pm.runtime
    lease = generations.lease_runtime(old)
    # a long-running process started from the old generation (as a zygote would be)
    late_import = "import sys; sys.stdin.readline(); import toml; print(toml.__file__)"
    proc = await asyncio.create_subprocess_exec(
        str(old.python),
        "-I",
        "-c",
        late_import,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    new = await pm.rebuild_runtime()
    assert new.path != old.path
    assert runtime.runtime_for(pm.settings) == new
    assert async_swaps == [new]
    assert run_py(new, "import toml").returncode == 0  # in use: reinstalled in the new generation
    assert [p["name"] for p in pm.installed_packages()] == ["toml"]
    assert pm.status()["last_cleanup"] is not None
    # the process in the old generation finishes, importing lazily from its own generation
    out, _ = await proc.communicate(b"go\n")
    assert proc.returncode == 0 and out.decode().startswith(str(old.path))
    # removal: not within the grace time, not while leased; then yes
    far = time.time() + 10 * 86400
    assert pm.collect_old_runtimes() == []
    assert pm.collect_old_runtimes(now=far) == []
    lease.release()
    assert pm.collect_old_runtimes(now=far) == [old.path]
    assert not old.path.exists() and new.exists()


async def test_rebuild_drops_packages_not_used_recently(pm: PackageManager) -> None:
    await pm.prepare("import toml\nimport toolz")
    record = pm._record
    record.reload()
    stale = time.time() - 30 * 86400
    record._load()["packages"]["toolz"]["last_used"] = stale
    record.save()
    new = await pm.rebuild_runtime()
    assert [p["name"] for p in pm.installed_packages()] == ["toml"]
    assert run_py(new, "import toolz").returncode != 0
    assert pm.pip_calls == 1  # the rebuild's pip run is the builder's, not a prepare


def test_needs_rebuild(tmp_path: Path) -> None:
    pm = PackageManager(Settings(home=tmp_path, runtime_packages=(), runtime_rebuild_days=7))
    assert not pm.needs_rebuild()  # nothing built yet
    gen = tmp_path / "runtime" / "gen-1"
    gen.mkdir(parents=True)
    created = time.time()
    (gen / ".runtime-info.json").write_text(
        json.dumps({"version": "3.11", "base_prefix": "/usr", "purelib": str(gen), "created_at": created})
    )
    os.symlink("gen-1", tmp_path / "runtime" / "current")
    assert not pm.needs_rebuild(now=created + 6 * 86400)
    assert pm.needs_rebuild(now=created + 7 * 86400 + 1)
    never = PackageManager(Settings(home=tmp_path, runtime_packages=(), runtime_rebuild_days=-1))
    assert not never.needs_rebuild(now=created + 1000 * 86400)


async def test_status(pm: PackageManager) -> None:
    before = pm.status()
    assert before["venv_exists"] is False and before["package_count"] == 0
    await pm.prepare("import toml")
    status = pm.status()
    assert status["venv_exists"] is True
    assert status["python_path"] == str(pm.runtime.python)
    assert "toml" in status["installed_packages"]  # everything in the runtime, by name
    assert status["package_count"] == len(status["installed_packages"])
    assert [p["name"] for p in status["on_demand_packages"]] == ["toml"]  # installed for a call
    assert status["last_cleanup"] is None
    json.dumps(status)


async def test_pip_timeout_setting_is_honoured(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # a index that accepts the connection and never answers: pip hangs, our timeout stops it
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    try:
        monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
        monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
        monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
        monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{srv.getsockname()[1]}/simple")
        monkeypatch.setenv("PIP_TIMEOUT", "120")
        monkeypatch.setattr(_pip, "NETWORK_RETRY_WAIT_S", 0.0)
        pm = PackageManager(settings.replace(pip_timeout=3))
        t = time.monotonic()
        with pytest.raises(PackageInstallError, match="did not finish within 3 s"):
            await pm.install(["toml"])
        assert time.monotonic() - t < 30
    finally:
        srv.close()
