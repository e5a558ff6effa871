"""Discord attachment links: ids, file name, signed expiry (``ex``/``is``) and proxy rendition size.

``https://cdn.discordapp.com/attachments/<channel>/<attachment>/<file>?ex=<hex>&is=<hex>&hm=<sig>``
— ``is`` and ``ex`` are the issue and expiry times as hexadecimal unix seconds, ``hm`` the HMAC
signature. ``media.discordapp.net`` (the media proxy) takes the same path and may add ``width``
and ``height``: the size of the rendition it serves, not the original's.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["DISCORD_HOSTS", "DiscordLink", "parse_discord_url"]

DISCORD_HOSTS = frozenset({"cdn.discordapp.com", "media.discordapp.net"})
_PATH = re.compile(r"^/(?:ephemeral-)?attachments/(\d{1,20})/(\d{1,20})/([^/]+)$")


@dataclass(frozen=True, slots=True)
class DiscordLink:
    """A parsed Discord attachment URL."""

    url: str
    """The URL as given."""
    host: str
    """cdn.discordapp.com or media.discordapp.net."""
    channel_id: int
    """Channel (or application, for ephemeral attachments) the attachment belongs to."""
    attachment_id: int
    """Attachment snowflake: the cache key for its size."""
    filename: str
    """File name (URL-decoded)."""
    issued_at: datetime | None
    """When the signed link was issued (``is``), UTC."""
    expires_at: datetime | None
    """When the signed link stops working (``ex``), UTC; None for an unsigned legacy link."""
    signature: str | None
    """The ``hm`` signature."""
    width: int | None
    """Media proxy rendition width, when the URL asks for one."""
    height: int | None
    """Media proxy rendition height, when the URL asks for one."""

    def is_expired(self, now: datetime | None = None) -> bool:
        """True when the link's ``ex`` time has passed (``now`` defaults to the current UTC time)."""
        if self.expires_at is None:
            return False
        now = now or datetime.now(UTC)
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        return now >= self.expires_at

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view (times as ISO strings)."""
        d = asdict(self)
        for k in ("issued_at", "expires_at"):
            d[k] = d[k].isoformat() if d[k] is not None else None
        return d


def _hex_time(values: list[str] | None) -> datetime | None:
    if not values:
        return None
    try:
        secs = int(values[0], 16)
        return datetime.fromtimestamp(secs, UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _positive_int(values: list[str] | None) -> int | None:
    if not values:
        return None
    try:
        v = int(values[0])
    except ValueError:
        return None
    return v if v > 0 else None


def parse_discord_url(url: str) -> DiscordLink | None:
    """Parse a Discord attachment URL; None for anything else (other hosts, other paths, bad ids)."""
    if not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").rstrip(".").lower()
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or host not in DISCORD_HOSTS:
        return None
    m = _PATH.match(parts.path)
    if not m:
        return None
    query = parse_qs(parts.query, keep_blank_values=True)
    sig = query.get("hm", [None])[0] or None
    return DiscordLink(
        url=url,
        host=host,
        channel_id=int(m.group(1)),
        attachment_id=int(m.group(2)),
        filename=unquote(m.group(3)),
        issued_at=_hex_time(query.get("is")),
        expires_at=_hex_time(query.get("ex")),
        signature=sig,
        width=_positive_int(query.get("width")),
        height=_positive_int(query.get("height")),
    )
