"""Creating, repairing and retiring generations of the sandbox runtime (see :mod:`.runtime` for the layout).

A new generation is always built aside and swapped in atomically (``current`` is a symlink), so a
running zygote keeps its generation. Old generations are retired and removed later, once no lease
holds them and a grace time has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import PackageInstallError
from ..settings import Settings
from . import locks
from .fsutil import (
    ProgressCallback,
    chmod_world_readable,
    no_progress,
    read_json,
    safe_resolve,
    scaled_progress,
    write_json_atomic,
)
from .locks import root_lock
from .pip import pip_install
from .procs import run_command
from .runtime import (
    COMPLETE_FILE,
    CURRENT_LINK,
    GEN_PREFIX,
    INFO_FILE,
    LEASE_FILE,
    RETIRED_FILE,
    Runtime,
    base_interpreter,
    current_generation,
    generations,
    max_generation,
    runtime_at,
    runtime_for,
)

__all__ = [
    "RuntimeLease",
    "build_generation",
    "collect_generations",
    "ensure_runtime",
    "generation_lock",
    "lease_runtime",
    "retire_generation",
    "swap_current",
]

log = logging.getLogger(__name__)

VENV_TIMEOUT_S = 120.0
# Libraries under these prefixes are part of the base system the sandbox mount view always provides.
_SYSTEM_PREFIXES = ("/usr/", "/lib/", "/lib64/", "/lib32/", "/libx32/", "/etc/")

_INFO_SCRIPT = r"""
import json, os, sys, sysconfig
print(json.dumps({
    "version": "%d.%d" % sys.version_info[:2],
    "full_version": sys.version.split()[0],
    "base_prefix": sys.base_prefix,
    "prefix": sys.prefix,
    "real_executable": os.path.realpath(sys.executable),
    "libdir": sysconfig.get_config_var("LIBDIR") or "",
    "ldlibrary": sysconfig.get_config_var("LDLIBRARY") or "",
    "enable_shared": bool(sysconfig.get_config_var("Py_ENABLE_SHARED")),
    "stdlib": sysconfig.get_path("stdlib"),
    "platstdlib": sysconfig.get_path("platstdlib"),
    "purelib": sysconfig.get_path("purelib"),
    "platlib": sysconfig.get_path("platlib"),
    "stdlib_module_names": sorted(sys.stdlib_module_names),
}))
"""


# -- creation ------------------------------------------------------------------------------------------

_verified: set[Path] = set()  # generations whose python ran once in this process


async def ensure_runtime(settings: Settings, *, progress: ProgressCallback | None = None) -> Runtime:
    """Return the current runtime, creating it (or rebuilding a corrupt one) and its baseline if needed.

    Idempotent and safe under concurrency: builds happen under an asyncio lock and a file lock.

    Raises:
        PackageInstallError: the venv could not be created or the baseline not installed.
    """
    rt = runtime_for(settings)
    if rt.is_complete() and rt.path in _verified and _baseline_present(rt, settings):
        return rt
    async with root_lock(rt.root):
        rt = runtime_for(settings)
        if rt.is_complete() and await _python_runs(rt):
            missing = [p for p in settings.runtime_packages if not _baseline_present(rt, settings, only=p)]
            if missing:
                # The operator added baseline packages: install them into the current generation.
                _say_slow(f"installing {', '.join(missing)} into the sandbox runtime {rt.path}", progress)
                await pip_install(rt, missing, settings=settings, progress=progress)
                _mark_complete(rt, settings.runtime_packages)
            return rt
        broken = current_generation(rt.root)
        new = await build_generation(settings, progress=progress, swap=True)
        if broken is not None and broken != new.path:
            retire_generation(broken)
        return new


async def build_generation(
    settings: Settings,
    *,
    packages: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    swap: bool = True,
) -> Runtime:
    """Build a new generation aside (caller holds :func:`root_lock`) and, if ``swap``, make it current.

    ``packages`` defaults to ``settings.runtime_packages``. On failure the half-built generation is
    removed and ``current`` is untouched, so a running runtime stays usable.
    """
    report = progress or no_progress
    root = settings.runtime_path.absolute()
    root.mkdir(parents=True, exist_ok=True)
    chmod_world_readable(root, recursive=False)
    gen = root / f"{GEN_PREFIX}{max_generation(root) + 1}"
    base = base_interpreter(settings)
    wanted = list(settings.runtime_packages if packages is None else packages)
    what = f"creating the sandbox runtime in {gen} ({', '.join(wanted) or 'no baseline packages'})"
    _say_slow(what, progress)
    try:
        report(f"creating the sandbox runtime in {gen}", 0.0)
        await run_command(
            [str(base), "-I", "-m", "venv", "--without-pip", str(gen)],
            timeout=VENV_TIMEOUT_S,
            what=f"create the runtime venv with {base}",
        )
        rt = runtime_at(gen)
        rt = await _record_info(rt)
        report("runtime venv created", 0.1)
        if wanted:
            report(f"installing {len(wanted)} baseline packages: {', '.join(wanted)}", 0.15)
            await pip_install(rt, wanted, settings=settings, progress=scaled_progress(report, 0.15, 0.95))
        await asyncio.to_thread(chmod_world_readable, gen, True)
        _mark_complete(rt, wanted)
        if swap:
            swap_current(root, gen)
        _verified.add(gen)
        report("sandbox runtime ready", 1.0)
        return rt
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, gen, True)
        raise


def _say_slow(what: str, progress: ProgressCallback | None) -> None:
    """Say that a step of a minute or so starts, also to an app that configured no logging.

    Without a progress callback (a bot's first call from Python) nothing else shows why the call is
    silent: a WARNING reaches stderr through logging's last-resort handler when no handler is set up.
    """
    level = logging.INFO if progress is not None else logging.WARNING
    log.log(
        level,
        "code_interpreter: %s; this takes about a minute (pip downloads and installs wheels), once per "
        "runtime directory; later calls start in seconds (pass progress= to CodeInterpreter to follow it)",
        what,
    )


def swap_current(root: Path, gen: Path) -> None:
    """Point ``root/current`` at ``gen`` atomically (a new symlink renamed over the old one)."""
    tmp = root / f".{CURRENT_LINK}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(gen.name, tmp)
    os.replace(tmp, root / CURRENT_LINK)


async def _record_info(rt: Runtime) -> Runtime:
    out = await run_command(
        [str(rt.python), "-I", "-c", _INFO_SCRIPT], timeout=60, what="inspect the runtime python"
    )
    try:
        info = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise PackageInstallError(
            f"the runtime python at {rt.python} printed no facts: {out[-500:]}"
        ) from exc
    info["extra_paths"] = [str(p) for p in await _extra_lib_paths(Path(info["real_executable"]), info)]
    info["created_at"] = time.time()
    write_json_atomic(rt.path / INFO_FILE, info)
    return runtime_at(rt.path)


async def _extra_lib_paths(binary: Path, info: dict[str, Any]) -> list[Path]:
    """Directories of shared libraries the binary loads from outside the system dirs and the prefix."""
    prefix = str(safe_resolve(Path(info["base_prefix"]))) + "/"
    dirs: list[Path] = []

    def add(p: Path) -> None:
        rp = safe_resolve(p)
        s = str(rp) + "/"
        if not s.startswith(prefix) and not s.startswith(_SYSTEM_PREFIXES) and rp not in dirs:
            dirs.append(rp)

    if info.get("enable_shared") and info.get("libdir"):
        add(Path(info["libdir"]))
    if shutil.which("ldd"):
        try:
            out = await run_command(
                ["ldd", str(binary)], timeout=30, what="list the python binary's libraries"
            )
        except PackageInstallError:
            out = ""  # a static binary makes ldd exit 1: nothing to add
        for m in re.finditer(r"=>\s*(/\S+)\s*\(", out):
            add(Path(m.group(1)).parent)
    return dirs


async def _python_runs(rt: Runtime) -> bool:
    if rt.path in _verified:
        return True
    try:
        await run_command(
            [str(rt.python), "-I", "-c", "import sys"], timeout=60, what="run the runtime python"
        )
    except PackageInstallError:
        return False
    _verified.add(rt.path)
    return True


def _baseline_present(rt: Runtime, settings: Settings, only: str | None = None) -> bool:
    done = read_json(rt.path / COMPLETE_FILE).get("packages", [])
    wanted = [only] if only is not None else list(settings.runtime_packages)
    return all(p in done for p in wanted)


def _mark_complete(rt: Runtime, packages: Sequence[str]) -> None:
    write_json_atomic(rt.path / COMPLETE_FILE, {"packages": list(packages), "completed_at": time.time()})


@contextlib.asynccontextmanager
async def generation_lock(runtime: Runtime) -> AsyncIterator[None]:
    """Serialise pip runs into one runtime generation (the lock :func:`pip_install` takes)."""
    async with locks.generation_lock(runtime.path):
        yield


# -- generations: leases and removal -------------------------------------------------------------------


class RuntimeLease:
    """A shared lock on a generation: while any lease is held, the generation is never removed.

    The executor holds one for as long as its zygote runs from that generation (a context manager
    or ``release()``); the lock file descriptor may also be inherited by the zygote.
    """

    __slots__ = ("fd", "runtime")

    def __init__(self, runtime: Runtime) -> None:
        import fcntl

        self.runtime = runtime
        self.fd: int | None = os.open(runtime.path / LEASE_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_SH)  # only blocks while a collector is deleting this very generation

    def release(self) -> None:
        """Drop the lease (idempotent)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RuntimeLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lease_runtime(runtime: Runtime) -> RuntimeLease:
    """Take a lease on ``runtime``'s generation so no collector removes it while it is used."""
    if not runtime.path.is_dir():
        raise PackageInstallError(f"the runtime generation {runtime.path} does not exist")
    return RuntimeLease(runtime)


def retire_generation(gen: Path, now: float | None = None) -> None:
    """Mark a generation as no longer current; :func:`collect_generations` removes it after a grace time."""
    with contextlib.suppress(OSError):
        write_json_atomic(gen / RETIRED_FILE, {"retired_at": time.time() if now is None else now})


def collect_generations(root: Path, *, grace_s: float, now: float | None = None) -> list[Path]:
    """Remove retired generations older than ``grace_s`` that nobody holds a lease on; return them.

    The current generation is never removed; nor is one with a lease, nor one retired less than
    ``grace_s`` ago (covering processes that started from it without a lease, such as executions
    already forked when the runtime was swapped).
    """
    import fcntl

    now = time.time() if now is None else now
    current = current_generation(root)
    removed: list[Path] = []
    for gen in generations(root):
        if current is not None and gen.resolve() == current.resolve():
            continue
        retired = read_json(gen / RETIRED_FILE).get("retired_at")
        if not isinstance(retired, int | float) or now - retired < grace_s:
            continue
        try:
            fd = os.open(gen / LEASE_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # leased: in use
        try:
            shutil.rmtree(gen, ignore_errors=True)
            removed.append(gen)
        finally:
            os.close(fd)
    return removed
