"""The metadata documents of the file store: user ids, file ids, times, and the dicts callers get back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo import WriteConcern

from ..errors import FileStoreError
from . import cache

__all__ = [
    "is_visible",
    "iso",
    "journaled",
    "mb",
    "public",
    "to_ms",
    "too_large",
    "uid_of",
    "valid_id",
]


def journaled(wc: WriteConcern) -> WriteConcern:
    """``wc`` with journaling on (an upload's acknowledgement is its journaled metadata insert)."""
    doc = dict(wc.document)
    if doc.get("w") == 0:
        return wc  # the operator asked for unacknowledged writes; journaling cannot apply
    return WriteConcern(w=doc.get("w"), wtimeout=doc.get("wtimeout"), j=True, fsync=doc.get("fsync"))


def uid_of(user_id: int | str) -> str:
    """The user id as stored: a non-empty string (``1`` and ``"1"`` are the same user)."""
    if isinstance(user_id, bool) or not isinstance(user_id, int | str):
        raise TypeError(f"user_id must be an int or a str, not {type(user_id).__name__}")
    uid = str(user_id).strip()
    if not uid:
        raise FileStoreError("user_id must not be empty")
    return uid


def valid_id(file_id: object) -> bool:
    """Whether ``file_id`` has the shape of our file ids (anything else is never looked up)."""
    return isinstance(file_id, str) and cache.FILE_ID_RE.fullmatch(file_id) is not None


def to_ms(dt: datetime) -> datetime:
    """Truncate to milliseconds: BSON datetimes hold no more, so what we return equals what we store."""
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def is_visible(doc: dict[str, Any], now: datetime) -> bool:
    """Whether a file's metadata is unexpired at ``now``."""
    exp = doc.get("expires_at")
    return exp is None or exp > now


def iso(dt: datetime | None) -> str | None:
    """A time as the seed returned it: ISO 8601 in UTC (None stays None)."""
    return dt.astimezone(UTC).isoformat() if dt is not None else None


def public(doc: dict[str, Any]) -> dict[str, Any]:
    """The seed's file dict of a metadata document (times as ISO strings)."""
    keys = ("file_id", "user_id", "filename", "file_path", "file_size", "file_type", "content_type", "sha256")
    out = {k: doc.get(k) for k in keys}
    out["uploaded_at"] = iso(doc.get("uploaded_at"))
    out["expires_at"] = iso(doc.get("expires_at"))
    return out


def mb(n: int) -> str:
    """A size for messages: whole MB, or bytes below one."""
    return f"{n / 2**20:.0f}MB" if n >= 2**20 else f"{n} bytes"


def too_large(limit: int) -> dict[str, Any]:
    """The seed's refusal of a file over the size cap."""
    return {"success": False, "error": f"File too large. Maximum size is {mb(limit)}"}
