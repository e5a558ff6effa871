"""``collect_generated``: the files an execution left in its work dir, within count and size caps."""

from __future__ import annotations

import mimetypes
import os
import stat
from collections.abc import Iterable
from typing import Any

__all__ = ["collect_generated", "file_type", "guess_mime"]

#: Entries examined at most per walk, so a code that creates millions of files cannot stall collection.
MAX_SCANNED_ENTRIES = 100_000

# Never results: byte-code caches anywhere, and tool caches at the top level (HOME is the work dir
# in the sandbox, so matplotlib/pip/fontconfig may write ~/.cache, ~/.config there).
_SKIPPED_DIRS = frozenset({"__pycache__", ".ipynb_checkpoints"})
_SKIPPED_TOP_DIRS = frozenset({".cache", ".config", ".local", ".matplotlib"})

# Fixed answers for common outputs: mimetypes depends on /etc/mime.types, which differs between
# the host and the sandbox's mount view.
_MIME: dict[str, str] = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "bmp": "image/bmp",
    "webp": "image/webp",
    "tif": "image/tiff",
    "tiff": "image/tiff",
    "svg": "image/svg+xml",
    "pdf": "application/pdf",
    "csv": "text/csv",
    "tsv": "text/tab-separated-values",
    "txt": "text/plain",
    "log": "text/plain",
    "md": "text/markdown",
    "html": "text/html",
    "htm": "text/html",
    "xml": "application/xml",
    "json": "application/json",
    "jsonl": "application/x-ndjson",
    "yaml": "application/yaml",
    "yml": "application/yaml",
    "py": "text/x-python",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "xls": "application/vnd.ms-excel",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "parquet": "application/vnd.apache.parquet",
    "feather": "application/vnd.apache.arrow.file",
    "npy": "application/octet-stream",
    "npz": "application/zip",
    "zip": "application/zip",
    "gz": "application/gzip",
    "sqlite": "application/vnd.sqlite3",
    "db": "application/vnd.sqlite3",
    "mp4": "video/mp4",
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
}


def file_type(name: str) -> str:
    """The extension-based type of a file name: its last extension, lower case (``"bin"`` if none)."""
    return os.path.splitext(name)[1].lower().lstrip(".") or "bin"


def guess_mime(name: str) -> str:
    """A MIME type for a file name (fixed table first, then the mimetypes module, else octet-stream)."""
    ext = os.path.splitext(name)[1].lower().lstrip(".")
    if ext in _MIME:
        return _MIME[ext]
    return mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"


def _human(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} bytes"  # pragma: no cover - the loop always returns


def _excluded(exclude: Iterable[str], root: str) -> set[str]:
    """``exclude`` as work-dir-relative posix paths (absolute entries outside the work dir are dropped)."""
    relative: set[str] = set()
    for entry in exclude:
        path = os.fspath(entry)
        if os.path.isabs(path):
            path = os.path.relpath(os.path.normpath(path), root)
            if path == os.pardir or path.startswith(os.pardir + os.sep):
                continue
        relative.add(os.path.normpath(path).replace(os.sep, "/"))
    return relative


def _scan(root: str, excluded: set[str]) -> tuple[list[tuple[str, str, int]], int, bool]:
    """Regular files under ``root`` as (relative posix path, absolute path, size), bad names, truncated."""
    found: list[tuple[str, str, int]] = []
    bad_names = 0
    scanned = 0
    stack: list[tuple[str, str]] = [("", root)]
    while stack:
        rel_dir, abs_dir = stack.pop()
        try:
            with os.scandir(abs_dir) as entries:
                listing = list(entries)
        except OSError:
            continue
        for entry in listing:
            scanned += 1
            if scanned > MAX_SCANNED_ENTRIES:
                return found, bad_names, True
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if rel in excluded:
                continue
            try:
                # lstat: a symlink is skipped, never followed (it could point outside the work dir).
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            mode = info.st_mode
            if stat.S_ISDIR(mode):
                skip = entry.name in _SKIPPED_DIRS or (not rel_dir and entry.name in _SKIPPED_TOP_DIRS)
                if not skip:
                    stack.append((rel, entry.path))
                continue
            if not stat.S_ISREG(mode):
                continue  # symlinks, FIFOs, sockets, devices
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                # A name that is not valid UTF-8 cannot be stored or shown; count it for the note.
                bad_names += 1
                continue
            found.append((rel, entry.path, info.st_size))
    return found, bad_names, False


def collect_generated(
    work_dir: str, exclude: set[str], max_files: int, max_bytes: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """List the regular files under ``work_dir`` (nested folders too), sorted by relative path, within caps.

    Each file is ``{"filename": relative posix path, "path": absolute path, "size", "mime", "type"}``.
    Skipped: symlinks (files and folders, never followed), special files, ``__pycache__``, top-level
    tool caches (``.cache``, ``.config``, ``.local``, ``.matplotlib``) and ``exclude`` entries (paths
    relative to ``work_dir`` or absolute; a folder excludes everything under it). Files past
    ``max_files``, or that would take the total past ``max_bytes``, are left out and a note per cap says
    how many. The caller should open the paths with O_NOFOLLOW if the sandboxed code may still run.
    """
    root = os.path.abspath(work_dir)
    found, bad_names, truncated = _scan(root, _excluded(exclude, root))
    found.sort()
    files: list[dict[str, Any]] = []
    total = 0
    over_count: list[int] = []
    over_bytes: list[int] = []
    for rel, path, size in found:
        if len(files) >= max_files:
            over_count.append(size)
            continue
        if total + size > max_bytes:
            over_bytes.append(size)
            continue
        total += size
        files.append(
            {"filename": rel, "path": path, "size": size, "mime": guess_mime(rel), "type": file_type(rel)}
        )
    notes: list[str] = []
    if over_count:
        notes.append(
            f"{len(over_count)} more files not returned: the limit is {max_files} files per execution"
        )
    if over_bytes:
        notes.append(
            f"{len(over_bytes)} more files ({_human(sum(over_bytes))}) not returned: the limit is "
            f"{_human(max_bytes)} of generated files per execution"
        )
    if bad_names:
        notes.append(f"{bad_names} files not returned: their names are not valid UTF-8")
    if truncated:
        notes.append(
            f"the work dir holds more than {MAX_SCANNED_ENTRIES} entries: only the first were examined"
        )
    return files, notes
