"""The sandbox runtime venv: creation, idempotence, concurrency, repair, pip (real venvs, real pip)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from code_interpreter.errors import PackageInstallError
from code_interpreter.packages import generations, procs
from code_interpreter.packages.generations import ensure_runtime
from code_interpreter.packages.locks import root_lock
from code_interpreter.packages.pip import pip_install
from code_interpreter.packages.runtime import Runtime, runtime_for
from code_interpreter.packages.runtime import generations as list_generations
from code_interpreter.settings import Settings

SYSTEM_DIRS = ("/usr/", "/lib/", "/lib64/", "/etc/", "/proc/", "/dev/", "/sys/")


@pytest.fixture
def small_settings(tmp_path: Path) -> Settings:
    """Settings whose runtime has no baseline packages (a bare venv builds in a fraction of a second)."""
    return Settings(home=tmp_path / "home", runtime_dir=tmp_path / "rt", runtime_packages=())


def run_py(rt: Runtime, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(rt.python), "-I", "-c", code], capture_output=True, text=True, timeout=60)


def test_runtime_for_is_pure(small_settings: Settings) -> None:
    rt = runtime_for(small_settings)
    assert rt.path == (small_settings.runtime_path / "gen-1").absolute()
    assert rt.python == rt.path / "bin" / "python"
    assert rt.version == f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert rt.base_prefix == Path(sys.base_prefix)
    assert not rt.exists()
    assert not small_settings.runtime_path.exists()


async def test_creates_a_venv_without_pip_or_host_packages(small_settings: Settings) -> None:
    messages: list[tuple[str, float | None]] = []
    rt = await ensure_runtime(small_settings, progress=lambda m, f: messages.append((m, f)))
    assert rt.exists() and rt.is_complete()
    assert (small_settings.runtime_path / "current").resolve() == rt.path.resolve()
    r = run_py(rt, "import sys, importlib.util as u; print(sys.prefix); print(u.find_spec('pip'))")
    prefix, pip_spec = r.stdout.split()
    assert Path(prefix) == rt.path
    assert pip_spec == "None"  # no pip inside: the host's pip installs into it
    # the host's own packages (pymongo is in the dev venv) are not visible
    assert run_py(rt, "import pymongo").returncode != 0
    assert messages[0][1] == 0.0 and messages[-1] == ("sandbox runtime ready", 1.0)
    assert rt.stdlib_module_names() >= {"os", "json", "asyncio", "wave"}


async def test_tree_is_world_readable(small_settings: Settings) -> None:
    rt = await ensure_runtime(small_settings)
    for dirpath, dirnames, filenames in os.walk(rt.path):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISLNK(st.st_mode):
                continue
            assert st.st_mode & stat.S_IROTH, os.path.join(dirpath, name)
            if stat.S_ISDIR(st.st_mode):
                assert st.st_mode & stat.S_IXOTH, os.path.join(dirpath, name)


async def test_idempotent(small_settings: Settings) -> None:
    first = await ensure_runtime(small_settings)
    mtime = first.python.lstat().st_mtime_ns
    second = await ensure_runtime(small_settings)
    assert second == first
    assert first.python.lstat().st_mtime_ns == mtime
    assert [p.name for p in list_generations(small_settings.runtime_path)] == ["gen-1"]


async def test_concurrent_calls_build_once(small_settings: Settings) -> None:
    results = await asyncio.gather(*(ensure_runtime(small_settings) for _ in range(4)))
    assert len(set(results)) == 1
    assert [p.name for p in list_generations(small_settings.runtime_path)] == ["gen-1"]


async def test_two_processes_build_once(small_settings: Settings) -> None:
    """A second process racing this one waits on the file lock and reuses the runtime it built."""
    script = (
        "import asyncio, sys; from pathlib import Path; from code_interpreter.settings import Settings;"
        "from code_interpreter.packages.generations import ensure_runtime;"
        f"s = Settings(home=Path({str(small_settings.home)!r}),"
        f" runtime_dir=Path({str(small_settings.runtime_path)!r}), runtime_packages=());"
        "print(asyncio.run(ensure_runtime(s)).path)"
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE)
    mine = await ensure_runtime(small_settings)
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert Path(out.decode().strip()) == mine.path
    assert [p.name for p in list_generations(small_settings.runtime_path)] == ["gen-1"]


async def test_deleted_python_is_detected_and_rebuilt(small_settings: Settings) -> None:
    old = await ensure_runtime(small_settings)
    old.python.unlink()
    assert not old.exists()
    assert runtime_for(small_settings) == old  # still "current", but broken
    new = await ensure_runtime(small_settings)
    assert new.exists() and new.path != old.path
    assert runtime_for(small_settings) == new
    assert run_py(new, "print(6 * 7)").stdout.strip() == "42"


async def test_broken_python_is_detected_and_rebuilt(small_settings: Settings) -> None:
    old = await ensure_runtime(small_settings)
    # replace the interpreter with one that cannot start; a fresh process has not verified it yet
    old.python.unlink()
    old.python.write_text("#!/bin/sh\nexit 3\n")
    old.python.chmod(0o755)
    generations._verified.discard(old.path)
    assert old.exists()  # the cheap check passes: only running it shows the damage
    new = await ensure_runtime(small_settings)
    assert new.path != old.path
    assert run_py(new, "print('ok')").stdout.strip() == "ok"


async def test_readonly_paths_cover_everything_python_loads(small_settings: Settings) -> None:
    """Every file the interpreter maps or imports (C extensions included) lies under readonly_paths."""
    rt = await ensure_runtime(small_settings)
    paths = rt.readonly_paths()
    assert rt.path in paths
    assert Path(sys.base_prefix).resolve() in [p.resolve() for p in paths]  # noqa: ASYNC240
    code = (
        "import json, sys, sqlite3, ssl, ctypes, lzma, decimal, wave, encodings.idna, zoneinfo;"
        "mods = [m.__file__ for m in list(sys.modules.values()) if getattr(m, '__file__', None)];"
        "maps = [l.split()[-1] for l in open('/proc/self/maps') if l.split()[-1].startswith('/')];"
        "print(json.dumps(mods + maps + [sys.executable]))"
    )
    r = run_py(rt, code)
    assert r.returncode == 0, r.stderr
    used = {os.path.realpath(p) for p in json.loads(r.stdout)}  # noqa: ASYNC240 | set(json.loads(r.stdout))
    roots = [str(p) for p in paths] + [str(p.resolve()) for p in paths]
    outside = [
        p
        for p in used
        if not p.startswith(SYSTEM_DIRS) and not any(p == r or p.startswith(r + "/") for r in roots)
    ]
    assert outside == []


async def test_pip_install_a_small_wheel(small_settings: Settings) -> None:
    rt = await ensure_runtime(small_settings)
    messages: list[str] = []
    out = await pip_install(rt, ["toml"], settings=small_settings, progress=lambda m, f: messages.append(m))
    assert "Successfully installed" in out
    assert any("toml" in m for m in messages)
    r = run_py(rt, "import toml; print(toml.loads('a = 1')['a'])")
    assert r.stdout.strip() == "1", r.stderr
    assert run_py(rt, "import pip").returncode != 0  # pip was not installed into the runtime


@pytest.mark.parametrize("bad", ["-e .", "--index-url=http://x", "toml\nsix", "toml\tsix", ""])
async def test_pip_install_refuses_options(small_settings: Settings, bad: str) -> None:
    rt = await ensure_runtime(small_settings)
    with pytest.raises(PackageInstallError, match="refusing"):
        await pip_install(rt, [bad], settings=small_settings)


async def test_pip_install_unknown_package_names_it(small_settings: Settings) -> None:
    rt = await ensure_runtime(small_settings)
    with pytest.raises(PackageInstallError, match="code-interpreter-no-such-dist-4711") as ei:
        await pip_install(rt, ["code-interpreter-no-such-dist-4711"], settings=small_settings)
    assert "no wheel was found" in str(ei.value)
    assert "pip output" in str(ei.value)


async def test_unreachable_index_is_a_clear_error(
    small_settings: Settings, cut_package_index: Callable[[], str]
) -> None:
    rt = await ensure_runtime(small_settings)
    cut_package_index()
    t = time.monotonic()
    with pytest.raises(PackageInstallError, match="funcy") as ei:
        await pip_install(rt, ["funcy"], settings=small_settings)
    assert "could not be reached" in str(ei.value)
    assert time.monotonic() - t < 60
    assert run_py(rt, "print('still usable')").stdout.strip() == "still usable"


async def test_pip_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time;"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    )
    t = time.monotonic()
    with pytest.raises(PackageInstallError, match="did not finish within"):
        await procs.run_streaming([sys.executable, "-c", script], timeout=1.0)
    assert time.monotonic() - t < 10
    pid = int(pidfile.read_text())
    for _ in range(100):  # the grandchild got SIGKILL with its group; wait until it is gone or a zombie
        try:
            status = Path(f"/proc/{pid}/status").read_text()  # noqa: ASYNC240
            state = status.split("State:")[1].split()[0]
        except (FileNotFoundError, IndexError):
            break
        if state == "Z":
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail(f"grandchild {pid} survived the timeout")


async def test_failed_build_leaves_current_untouched(
    small_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = await ensure_runtime(small_settings)
    bad = small_settings.replace(runtime_packages=("code-interpreter-no-such-dist-4711",))
    async with root_lock(good.root):
        with pytest.raises(PackageInstallError):
            await generations.build_generation(bad)
    assert runtime_for(small_settings) == good
    assert [p.name for p in list_generations(small_settings.runtime_path)] == ["gen-1"]


async def test_runtime_python_setting_is_used(tmp_path: Path) -> None:
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    settings = Settings(
        home=tmp_path / "h", runtime_dir=tmp_path / "rt", runtime_packages=(), runtime_python=str(base)
    )
    rt = await ensure_runtime(settings)
    assert rt.python.resolve() == base.resolve()


def test_bad_runtime_python_setting(tmp_path: Path) -> None:
    from code_interpreter.errors import ConfigurationError

    settings = Settings(home=tmp_path, runtime_python="/nonexistent/python9")
    with pytest.raises(ConfigurationError, match="RUNTIME_PYTHON"):
        runtime_for(settings)


async def test_shared_sandbox_runtime_has_the_baseline(sandbox_runtime: Runtime) -> None:
    code = "import numpy, pandas, matplotlib, seaborn, scipy, openpyxl, pyarrow, PIL; print('ok')"
    r = run_py(sandbox_runtime, code)
    assert r.stdout.strip() == "ok", r.stderr
