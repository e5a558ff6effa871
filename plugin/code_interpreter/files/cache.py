"""The local cache of file bytes (``home/cache/<file_id>/<filename>``).

Cache copies are written to a temporary name, checked against the stored sha256 and renamed
into place, so a reader never sees a partial file and two processes materialising the same file
do not collide. Disk I/O runs in threads; the event loop only moves chunks along.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import FileStoreError
from .names import safe_filename

__all__ = ["FILE_ID_RE", "collect_verified", "is_valid", "listed_ids", "path_for", "remove"]

FILE_ID_RE = re.compile(r"user_[A-Za-z0-9-]{1,64}_\d{1,12}_[0-9a-f]{4,32}")


def path_for(cache_dir: Path, doc: dict[str, Any]) -> Path:
    """Where the cache copy of a file lives (the file_id is re-checked: the database may be shared)."""
    file_id = str(doc["file_id"])
    if not FILE_ID_RE.fullmatch(file_id):
        raise FileStoreError(f"refusing to cache a file with a malformed file_id {file_id[:80]!r}")
    return cache_dir / file_id / safe_filename(doc.get("filename"))


async def is_valid(path: Path, doc: dict[str, Any]) -> bool:
    """True if ``path`` holds exactly the file's bytes (size, then sha256)."""
    return await asyncio.to_thread(_check_file, path, int(doc["file_size"]), str(doc["sha256"]))


def _check_file(path: Path, size: int, sha256: str) -> bool:
    try:
        if path.stat().st_size != size:
            return False
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    except OSError:
        return False
    return h.hexdigest() == sha256


async def collect_verified(chunks: AsyncIterator[bytes], doc: dict[str, Any]) -> bytes:
    """Join a blob's chunks, checking its sha256 against the metadata."""
    h = hashlib.sha256()
    parts = []
    async for chunk in chunks:
        h.update(chunk)
        parts.append(chunk)
    _verify(h.hexdigest(), doc)
    return b"".join(parts)


async def write_verified(chunks: AsyncIterator[bytes], path: Path, doc: dict[str, Any]) -> None:
    """Stream a blob to ``path`` through a temporary file, renamed into place once its sha256 matches."""
    await asyncio.to_thread(_mkdirs, path.parent)
    tmp = path.parent / f".{os.getpid()}.{os.urandom(4).hex()}.part"
    f = await asyncio.to_thread(open, tmp, "wb")
    try:
        h = hashlib.sha256()
        async for chunk in chunks:
            h.update(chunk)
            await asyncio.to_thread(f.write, chunk)
        await asyncio.to_thread(f.close)
        _verify(h.hexdigest(), doc)
        # Read-only for everyone: the sandbox (another uid) reads it, nobody should edit it in place.
        await asyncio.to_thread(os.chmod, tmp, 0o444)
        await asyncio.to_thread(os.replace, tmp, path)
    except BaseException:
        f.close()
        await asyncio.to_thread(_unlink, tmp)
        raise


def _verify(actual: str, doc: dict[str, Any]) -> None:
    if actual != doc.get("sha256"):
        raise FileStoreError(
            f"stored bytes of {doc.get('filename')!r} ({doc.get('file_id')}) do not match their sha256: "
            "the file is corrupt; delete it and upload it again"
        )


def _mkdirs(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for p in (path, path.parent):
        try:
            p.chmod(0o755)  # traversable by the sandbox uid
        except OSError:
            pass


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


async def remove(cache_dir: Path, file_ids: Sequence[str]) -> None:
    """Remove the cache copies of these files (missing ones are fine)."""
    if file_ids:
        await asyncio.to_thread(_remove, cache_dir, list(file_ids))


def _remove(cache_dir: Path, file_ids: list[str]) -> None:
    for file_id in file_ids:
        if FILE_ID_RE.fullmatch(file_id):
            shutil.rmtree(cache_dir / file_id, ignore_errors=True)


async def listed_ids(cache_dir: Path) -> list[str]:
    """file_ids that have a cache directory here."""
    return await asyncio.to_thread(_listed, cache_dir)


def _listed(cache_dir: Path) -> list[str]:
    try:
        return sorted(n for n in os.listdir(cache_dir) if FILE_ID_RE.fullmatch(n))
    except FileNotFoundError:
        return []
