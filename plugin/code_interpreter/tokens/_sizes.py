"""Where image sizes come from, in order: registered, cache, a small ranged HTTP read, upper bound.

The HTTP read is the only network access of the token counter, so it is fenced: http(s) only,
no credentials in the URL, the host must be on the allowlist (exact names; redirects are checked
again), short timeouts, a few KB at most (``Range: bytes=0-N``; a server that ignores Range is
cut off after N bytes), and a bounded number of look-ups at once.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import urljoin, urlsplit

import httpx

from ._headers import Header, NeedMore, parse_header

__all__ = [
    "HeaderReader",
    "ImageSize",
    "ImageSizeSource",
    "SizeCache",
    "check_url",
    "gather_limited",
    "normalize_hosts",
]

T = TypeVar("T")

USER_AGENT = "code-interpreter-token-counter/0.1 (+image header probe)"


@dataclass(frozen=True, slots=True)
class ImageSize:
    """A known image size and where it came from."""

    width: int
    height: int
    source: str
    """registered | cache | http | data-url | discord-proxy."""


class ImageSizeSource(Protocol):
    """A seam: something that can tell an image's size from its URL (or say it cannot)."""

    async def size_of(self, client: httpx.AsyncClient, url: str) -> tuple[ImageSize | None, str | None]:
        """(size, None) on success, (None, warning) when it cannot tell."""
        ...


class SizeCache:
    """A bounded LRU of image sizes keyed by Discord attachment id (else by URL)."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._data: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self.max_entries = max_entries

    def get(self, key: str) -> tuple[int, int] | None:
        """The cached (width, height), refreshed as most recently used."""
        hit = self._data.get(key)
        if hit is not None:
            self._data.move_to_end(key)
        return hit

    def put(self, key: str, width: int, height: int) -> None:
        """Remember a size, evicting the least recently used entry past the bound."""
        self._data[key] = (width, height)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


def normalize_hosts(hosts: Iterable[str]) -> frozenset[str]:
    """Lower-case host names without trailing dots (ports are not part of the allowlist)."""
    out = set()
    for h in hosts:
        if not isinstance(h, str) or not h.strip():
            raise ValueError(f"image host must be a non-empty string, got {h!r}")
        out.add(h.strip().rstrip(".").lower())
    return frozenset(out)


def check_url(url: str, allowed: frozenset[str]) -> str | None:
    """Why ``url`` may not be fetched (None when it may): scheme, credentials, host not allowlisted."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".").lower()
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return "malformed URL"
    if parts.scheme not in ("http", "https"):
        return f"scheme {parts.scheme or '(none)'!r} is not http(s)"
    if parts.username is not None or parts.password is not None:
        return "URL carries credentials"
    if not host:
        return "URL has no host"
    if host not in allowed:
        return f"host {host!r} is not on the image-host allowlist"
    return None


class HeaderReader:
    """Reads the first few KB of an allowlisted image URL and parses its size."""

    def __init__(
        self,
        allowed_hosts: frozenset[str],
        *,
        max_bytes: int = 4096,
        max_follow_ups: int = 3,
        max_redirects: int = 2,
    ) -> None:
        self.allowed_hosts = allowed_hosts
        self.max_bytes = max_bytes
        self.max_follow_ups = max_follow_ups
        self.max_redirects = max_redirects

    async def size_of(self, client: httpx.AsyncClient, url: str) -> tuple[ImageSize | None, str | None]:
        """(size, None), or (None, a warning saying why not)."""
        refused = check_url(url, self.allowed_hosts)
        if refused:
            return None, f"not fetched: {refused}"
        try:
            data, final_url = await self._read(client, url, 0)
            result = parse_header(data)
            follow = 0
            while isinstance(result, NeedMore) and follow < self.max_follow_ups and result.offset < 1 << 20:
                follow += 1
                chunk, _ = await self._read(client, final_url, result.offset)
                if not chunk:
                    break
                result = (
                    parse_header(chunk, base=result.offset) if result.offset else parse_header(data + chunk)
                )
        except _Refused as exc:
            return None, f"not fetched: {exc}"
        except _HttpStatus as exc:
            return None, f"image header read failed: HTTP {exc}"
        except httpx.TimeoutException:
            return None, "image header read timed out"
        except httpx.HTTPError as exc:
            return None, f"image header read failed: {type(exc).__name__}: {exc}"
        if isinstance(result, Header):
            return ImageSize(result.width, result.height, "http"), None
        return None, "the link does not serve a PNG, JPEG, GIF or WebP image"

    async def _read(self, client: httpx.AsyncClient, url: str, start: int) -> tuple[bytes, str]:
        """Up to max_bytes from file offset ``start``, following allowlisted redirects."""
        for _ in range(self.max_redirects + 1):
            headers = {"Range": f"bytes={start}-{start + self.max_bytes - 1}", "User-Agent": USER_AGENT}
            async with client.stream("GET", url, headers=headers) as resp:
                if resp.is_redirect:
                    target = urljoin(url, resp.headers.get("location", ""))
                    refused = check_url(target, self.allowed_hosts)
                    if refused:
                        raise _Refused(f"redirect to {refused}")
                    url = target
                    continue
                if resp.status_code not in (200, 206):
                    raise _HttpStatus(resp.status_code)
                # A server ignoring Range answers 200 with the whole file: skip to ``start``, stop early.
                skip = start if resp.status_code == 200 else 0
                if skip > 64 * 1024:
                    raise _Refused("server ignores Range and the header is too far into the file")
                buf = bytearray()
                async for chunk in resp.aiter_bytes():
                    buf += chunk
                    if len(buf) >= skip + self.max_bytes:
                        break
                return bytes(buf[skip : skip + self.max_bytes]), url
        raise _Refused("too many redirects")


class _Refused(Exception):
    pass


class _HttpStatus(Exception):
    pass


async def gather_limited(coros: list[Coroutine[Any, Any, T]], limit: int) -> list[T]:
    """Run coroutines concurrently, at most ``limit`` at a time, keeping their order."""
    sem = asyncio.Semaphore(limit)

    async def one(c: Coroutine[Any, Any, T]) -> T:
        async with sem:
            return await c

    return list(await asyncio.gather(*(one(c) for c in coros)))
