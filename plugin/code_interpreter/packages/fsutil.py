"""Small file-system helpers of the runtime manager: atomic JSON, permissions, paths, progress callbacks."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "ProgressCallback",
    "chmod_world_readable",
    "drop_nested",
    "no_progress",
    "read_json",
    "safe_resolve",
    "scaled_progress",
    "symlink_chain_dirs",
    "write_json_atomic",
]

ProgressCallback = Callable[[str, float | None], None]
"""Progress reporting: (message, fraction 0..1 or None when unknown)."""


def no_progress(message: str, fraction: float | None) -> None:
    pass


def scaled_progress(report: ProgressCallback, lo: float, hi: float) -> ProgressCallback:
    def inner(message: str, fraction: float | None) -> None:
        report(message, None if fraction is None else lo + (hi - lo) * fraction)

    return inner


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON via a temp file, fsync and rename, so readers never see a torn file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def chmod_world_readable(top: Path, recursive: bool = True) -> None:
    """Add o+r to files and o+rx to directories (and o+x to owner-executable files)."""

    def fix(p: str) -> None:
        try:
            st = os.lstat(p)
        except OSError:
            return
        if stat.S_ISLNK(st.st_mode):
            return
        mode = st.st_mode | stat.S_IROTH
        if stat.S_ISDIR(st.st_mode) or st.st_mode & stat.S_IXUSR:
            mode |= stat.S_IXOTH
        if mode != st.st_mode:
            with contextlib.suppress(OSError):
                os.chmod(p, stat.S_IMODE(mode))

    fix(str(top))
    if not recursive:
        return
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            fix(os.path.join(dirpath, name))


def safe_resolve(p: Path) -> Path:
    try:
        return p.resolve()
    except (OSError, RuntimeError):
        return p


def symlink_chain_dirs(p: Path) -> list[Path]:
    """Directories each hop of a symlink chain lands in (the real binary's directory last)."""
    out: list[Path] = []
    cur = p
    for _ in range(40):
        try:
            target = os.readlink(cur)
        except OSError:
            break
        cur = cur.parent / target if not os.path.isabs(target) else Path(target)
        out.append(cur.parent)
    out.append(safe_resolve(p).parent)
    return out


def drop_nested(paths: list[Path]) -> list[Path]:
    keep: list[Path] = []
    for p in sorted(set(paths), key=lambda x: len(x.parts)):
        if not any(p == k or k in p.parents for k in keep):
            keep.append(p)
    return keep
