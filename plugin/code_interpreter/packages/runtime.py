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

import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ..settings import Settings
from .fsutil import drop_nested, read_json, safe_resolve, symlink_chain_dirs

__all__ = [
    "COMPLETE_FILE",
    "CURRENT_LINK",
    "GEN_PREFIX",
    "INFO_FILE",
    "LEASE_FILE",
    "RETIRED_FILE",
    "Runtime",
    "base_interpreter",
    "current_generation",
    "current_target",
    "generations",
    "max_generation",
    "runtime_at",
    "runtime_for",
]

INFO_FILE = ".runtime-info.json"
COMPLETE_FILE = ".complete"
LEASE_FILE = ".lease"
RETIRED_FILE = ".retired"
CURRENT_LINK = "current"
GEN_PREFIX = "gen-"


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
        return read_json(self.path / INFO_FILE)

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
        candidates.extend(symlink_chain_dirs(self.python))
        candidates.extend(self.extra_paths)
        resolved: list[Path] = []
        for p in candidates:
            for q in (p, safe_resolve(p)):
                if q not in resolved:
                    resolved.append(q)
        return drop_nested(resolved)

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
    gen = current_generation(root) or root / f"{GEN_PREFIX}{max_generation(root) + 1}"
    return runtime_at(gen, settings)


def runtime_at(gen: Path, settings: Settings | None = None) -> Runtime:
    """The Runtime of one generation directory, from its recorded facts or, if unbuilt, from the base."""
    info = read_json(gen / INFO_FILE)
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
    target = current_target(str(root))
    return None if target is None else Path(target)


def current_target(root: str) -> str | None:
    """:func:`current_generation` on strings (every call checks it: no pathlib): the path ``root/current``
    points at (a relative link is relative to ``root``), or None."""
    try:
        target = os.readlink(os.path.join(root, CURRENT_LINK))
    except OSError:
        return None
    return target if os.path.isabs(target) else os.path.join(root, target)


def generations(root: Path) -> list[Path]:
    """Every generation directory under ``root``, oldest first."""
    try:
        entries = [p for p in root.iterdir() if p.name.startswith(GEN_PREFIX) and p.is_dir()]
    except OSError:
        return []
    return sorted(entries, key=lambda p: _gen_number(p.name))


def max_generation(root: Path) -> int:
    gens = generations(root)
    return _gen_number(gens[-1].name) if gens else 0


def _gen_number(name: str) -> int:
    try:
        return int(name[len(GEN_PREFIX) :])
    except ValueError:
        return -1


def _guess_base(base: Path) -> tuple[str, Path]:
    host_base = Path(getattr(sys, "_base_executable", None) or sys.executable)
    if safe_resolve(base) == safe_resolve(host_base):
        return f"{sys.version_info[0]}.{sys.version_info[1]}", Path(sys.base_prefix)
    m = re.search(r"python(\d+\.\d+)", safe_resolve(base).name)
    version = m.group(1) if m else f"{sys.version_info[0]}.{sys.version_info[1]}"
    return version, safe_resolve(base).parent.parent
