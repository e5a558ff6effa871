"""The sandbox runtime: a virtual environment, separate from the host's, that sandboxed code runs in.

Layout under ``settings.runtime_path`` (the runtime *root*)::

    root/
      current -> gen-3          symlink, swapped atomically when the runtime is rebuilt
      gen-3/                    a venv created with ``--without-pip`` (bin/python, lib/…/site-packages)
        .runtime-info.json      facts about the interpreter (version, prefixes, stdlib module names, libs)
        .complete               written last: the generation is fully built (baseline installed)
        .install.lock           per-generation install lock (pip runs never interleave)
        .lease                  shared flock held by users of the generation (a zygote): never deleted then
        .retired                written when the generation stops being current (removal after a grace time)
      .lock                     build lock (two processes never build at once)

A :class:`Runtime` always names a *generation* directory (never the ``current`` symlink), so a
process started in ``gen-3`` keeps importing from ``gen-3`` after ``current`` moves to ``gen-4``.
Packages are installed by the *host's* pip targeting the runtime (``pip --python``), never from
inside the sandbox, so the runtime holds no pip and no host packages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _rt_util
from ._pip import MIN_PIP_VERSION, host_pip_version, pip_install
from ._rt_util import (
    ProgressCallback,
    _chmod_world_readable,
    _drop_nested,
    _no_progress,
    _read_json,
    _run,
    _safe_resolve,
    _scaled,
    _symlink_chain_dirs,
    _write_json_atomic,
    root_lock,
)
from .errors import ConfigurationError, PackageInstallError
from .settings import Settings

__all__ = [
    "MIN_PIP_VERSION",
    "ProgressCallback",
    "Runtime",
    "RuntimeLease",
    "build_generation",
    "collect_generations",
    "current_generation",
    "ensure_runtime",
    "generation_lock",
    "generations",
    "host_pip_version",
    "lease_runtime",
    "pip_install",
    "retire_generation",
    "root_lock",
    "runtime_for",
]

INFO_FILE = ".runtime-info.json"
COMPLETE_FILE = ".complete"
LEASE_FILE = ".lease"
RETIRED_FILE = ".retired"
CURRENT_LINK = "current"
GEN_PREFIX = "gen-"
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


@dataclass(frozen=True, slots=True)
class Runtime:
    """One generation of the sandbox runtime venv and what the sandbox needs to run its python."""

    path: Path
    """The venv directory (a generation, e.g. ``root/gen-2``; never the ``current`` symlink)."""
    python: Path
    """The venv's interpreter, ``path/bin/python``."""
    base_prefix: Path
    """``sys.base_prefix`` of the base interpreter (must be visible inside the sandbox's mount view)."""
    site_packages: Path
    """The venv's site-packages directory."""
    version: str
    """Python major.minor, e.g. "3.11"."""
    extra_paths: tuple[Path, ...] = field(default=())
    """Further host paths the interpreter needs (libpython outside the prefix, non-system shared libs)."""

    @property
    def root(self) -> Path:
        """The runtime root holding the generations, the ``current`` link and the locks."""
        return self.path.parent if self.path.name.startswith(GEN_PREFIX) else self.path

    def exists(self) -> bool:
        """Cheap check: the venv python and the binary it points to exist and are executable."""
        try:
            return os.access(self.python, os.X_OK) and self.python.resolve(strict=True).is_file()
        except (OSError, RuntimeError):
            return False

    def is_complete(self) -> bool:
        """The generation was fully built (baseline installed) and its python is present."""
        return self.exists() and (self.path / COMPLETE_FILE).is_file()

    def info(self) -> dict[str, Any]:
        """The interpreter facts recorded at creation (empty when not built yet)."""
        return _read_json(self.path / INFO_FILE)

    def stdlib_module_names(self) -> frozenset[str]:
        """``sys.stdlib_module_names`` of the runtime's interpreter (the host's when not recorded)."""
        names = self.info().get("stdlib_module_names")
        return frozenset(names) if names else frozenset(sys.stdlib_module_names)

    def readonly_paths(self) -> list[Path]:
        """Every host path the sandbox must bind read-only (at the same path) so this python works.

        The venv, the base prefix (stdlib, the binary, libpython), each directory the ``bin/python``
        symlink chain passes through, and shared libraries outside the system directories
        (``/usr``, ``/lib*``, which the mount view provides anyway). Nested entries are dropped.
        """
        candidates: list[Path] = [self.path, self.base_prefix]
        candidates.extend(_symlink_chain_dirs(self.python))
        candidates.extend(self.extra_paths)
        resolved: list[Path] = []
        for p in candidates:
            for q in (p, _safe_resolve(p)):
                if q not in resolved:
                    resolved.append(q)
        return _drop_nested(resolved)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view for status reports."""
        return {
            "path": str(self.path),
            "python": str(self.python),
            "base_prefix": str(self.base_prefix),
            "site_packages": str(self.site_packages),
            "version": self.version,
            "exists": self.exists(),
        }


# -- where the runtime is ----------------------------------------------------------------------------


def base_interpreter(settings: Settings) -> Path:
    """The interpreter the runtime venv is created from: settings.runtime_python, else the host's base."""
    if settings.runtime_python:
        raw = settings.runtime_python
        found = shutil.which(raw) if os.sep not in raw else raw
        if not found or not os.access(found, os.X_OK):
            raise ConfigurationError(
                f"runtime_python={raw!r} is not an executable interpreter; "
                "set CODE_INTERPRETER_RUNTIME_PYTHON to a python >= 3.11 path"
            )
        return Path(found).absolute()
    # When the host runs inside a venv, _base_executable is the interpreter that venv was made from.
    return Path(getattr(sys, "_base_executable", None) or sys.executable).absolute()


def runtime_for(settings: Settings) -> Runtime:
    """Where the runtime is (the ``current`` generation) or would be (the next one); reads no process."""
    root = settings.runtime_path.absolute()
    gen = current_generation(root) or root / f"{GEN_PREFIX}{_max_generation(root) + 1}"
    return runtime_at(gen, settings)


def runtime_at(gen: Path, settings: Settings | None = None) -> Runtime:
    """The Runtime of one generation directory, from its recorded facts or, if unbuilt, from the base."""
    info = _read_json(gen / INFO_FILE)
    if info:
        version = str(info["version"])
        base_prefix = Path(info["base_prefix"])
        site = Path(info["purelib"])
        extra = tuple(Path(p) for p in info.get("extra_paths", ()))
    else:
        base = base_interpreter(settings) if settings is not None else Path(sys.executable)
        version, base_prefix = _guess_base(base)
        site = gen / "lib" / f"python{version}" / "site-packages"
        extra = ()
    return Runtime(
        path=gen,
        python=gen / "bin" / "python",
        base_prefix=base_prefix,
        site_packages=site,
        version=version,
        extra_paths=extra,
    )


def current_generation(root: Path) -> Path | None:
    """The generation ``root/current`` points at, or None."""
    link = root / CURRENT_LINK
    try:
        target = os.readlink(link)
    except OSError:
        return None
    return (root / target) if not os.path.isabs(target) else Path(target)


def generations(root: Path) -> list[Path]:
    """Every generation directory under ``root``, oldest first."""
    try:
        entries = [p for p in root.iterdir() if p.name.startswith(GEN_PREFIX) and p.is_dir()]
    except OSError:
        return []
    return sorted(entries, key=lambda p: _gen_number(p.name))


def _max_generation(root: Path) -> int:
    gens = generations(root)
    return _gen_number(gens[-1].name) if gens else 0


def _gen_number(name: str) -> int:
    try:
        return int(name[len(GEN_PREFIX) :])
    except ValueError:
        return -1


def _guess_base(base: Path) -> tuple[str, Path]:
    host_base = Path(getattr(sys, "_base_executable", None) or sys.executable)
    if _safe_resolve(base) == _safe_resolve(host_base):
        return f"{sys.version_info[0]}.{sys.version_info[1]}", Path(sys.base_prefix)
    m = re.search(r"python(\d+\.\d+)", _safe_resolve(base).name)
    version = m.group(1) if m else f"{sys.version_info[0]}.{sys.version_info[1]}"
    return version, _safe_resolve(base).parent.parent


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
    report = progress or _no_progress
    root = settings.runtime_path.absolute()
    root.mkdir(parents=True, exist_ok=True)
    _chmod_world_readable(root, recursive=False)
    gen = root / f"{GEN_PREFIX}{_max_generation(root) + 1}"
    base = base_interpreter(settings)
    wanted = list(settings.runtime_packages if packages is None else packages)
    try:
        report(f"creating the sandbox runtime in {gen}", 0.0)
        await _run(
            [str(base), "-I", "-m", "venv", "--without-pip", str(gen)],
            timeout=VENV_TIMEOUT_S,
            what=f"create the runtime venv with {base}",
        )
        rt = runtime_at(gen)
        rt = await _record_info(rt)
        report("runtime venv created", 0.1)
        if wanted:
            report(f"installing {len(wanted)} baseline packages: {', '.join(wanted)}", 0.15)
            await pip_install(rt, wanted, settings=settings, progress=_scaled(report, 0.15, 0.95))
        await asyncio.to_thread(_chmod_world_readable, gen, True)
        _mark_complete(rt, wanted)
        if swap:
            swap_current(root, gen)
        _verified.add(gen)
        report("sandbox runtime ready", 1.0)
        return rt
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, gen, True)
        raise


def swap_current(root: Path, gen: Path) -> None:
    """Point ``root/current`` at ``gen`` atomically (a new symlink renamed over the old one)."""
    tmp = root / f".{CURRENT_LINK}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(gen.name, tmp)
    os.replace(tmp, root / CURRENT_LINK)


async def _record_info(rt: Runtime) -> Runtime:
    out = await _run(
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
    _write_json_atomic(rt.path / INFO_FILE, info)
    return runtime_at(rt.path)


async def _extra_lib_paths(binary: Path, info: dict[str, Any]) -> list[Path]:
    """Directories of shared libraries the binary loads from outside the system dirs and the prefix."""
    prefix = str(_safe_resolve(Path(info["base_prefix"]))) + "/"
    dirs: list[Path] = []

    def add(p: Path) -> None:
        rp = _safe_resolve(p)
        s = str(rp) + "/"
        if not s.startswith(prefix) and not s.startswith(_SYSTEM_PREFIXES) and rp not in dirs:
            dirs.append(rp)

    if info.get("enable_shared") and info.get("libdir"):
        add(Path(info["libdir"]))
    if shutil.which("ldd"):
        try:
            out = await _run(["ldd", str(binary)], timeout=30, what="list the python binary's libraries")
        except PackageInstallError:
            out = ""  # a static binary makes ldd exit 1: nothing to add
        for m in re.finditer(r"=>\s*(/\S+)\s*\(", out):
            add(Path(m.group(1)).parent)
    return dirs


async def _python_runs(rt: Runtime) -> bool:
    if rt.path in _verified:
        return True
    try:
        await _run([str(rt.python), "-I", "-c", "import sys"], timeout=60, what="run the runtime python")
    except PackageInstallError:
        return False
    _verified.add(rt.path)
    return True


def _baseline_present(rt: Runtime, settings: Settings, only: str | None = None) -> bool:
    done = _read_json(rt.path / COMPLETE_FILE).get("packages", [])
    wanted = [only] if only is not None else list(settings.runtime_packages)
    return all(p in done for p in wanted)


def _mark_complete(rt: Runtime, packages: Sequence[str]) -> None:
    _write_json_atomic(rt.path / COMPLETE_FILE, {"packages": list(packages), "completed_at": time.time()})


@contextlib.asynccontextmanager
async def generation_lock(runtime: Runtime) -> AsyncIterator[None]:
    """Serialise pip runs into one runtime generation (the lock :func:`pip_install` takes)."""
    async with _rt_util.generation_lock(runtime.path):
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
        _write_json_atomic(gen / RETIRED_FILE, {"retired_at": time.time() if now is None else now})


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
        retired = _read_json(gen / RETIRED_FILE).get("retired_at")
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
