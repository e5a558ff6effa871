"""Image dimensions from the first bytes of PNG, JPEG, GIF and WebP files (no Pillow needed).

A JPEG's size sits in its SOF segment, which may follow a large EXIF block; when the bytes given
end before it, :func:`parse_header` says at which file offset to continue, so a caller reading
over HTTP can ask for that range instead of downloading the whole file.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

__all__ = ["DataUrlError", "Header", "NeedMore", "data_url_size", "parse_header"]

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, *range(0xD0, 0xD9)}


@dataclass(frozen=True, slots=True)
class Header:
    """Format and pixel size read from an image header."""

    format: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class NeedMore:
    """The header continues at this absolute file offset (JPEG segments past the bytes given)."""

    offset: int


class DataUrlError(ValueError):
    """A ``data:`` URL that is not a base64 image."""


def _be16(b: bytes, i: int) -> int:
    return (b[i] << 8) | b[i + 1]


def _le16(b: bytes, i: int) -> int:
    return b[i] | (b[i + 1] << 8)


def _le24(b: bytes, i: int) -> int:
    return b[i] | (b[i + 1] << 8) | (b[i + 2] << 16)


def _valid(h: Header) -> Header | None:
    return h if h.width > 0 and h.height > 0 else None


def _jpeg(data: bytes, base: int, pos: int) -> Header | NeedMore | None:
    """Walk JPEG markers in ``data`` (which starts at file offset ``base``) from file offset ``pos``."""
    while True:
        i = pos - base
        if i < 0:
            return None
        if i + 4 > len(data):
            return NeedMore(pos)
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker == 0xD9 or marker == 0xDA:  # end of image / start of scan before any SOF
            return None
        if marker in _SOF:
            if i + 9 > len(data):
                return NeedMore(pos)
            return _valid(Header("jpeg", _be16(data, i + 7), _be16(data, i + 5)))
        pos += 2 + _be16(data, i + 2)


def parse_header(data: bytes, base: int = 0) -> Header | NeedMore | None:
    """Size of the image whose bytes start with ``data`` (at file offset ``base``); None if not an image."""
    if base:
        return _jpeg(data, base, base)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(data) < 24:
            return NeedMore(len(data))
        if data[12:16] != b"IHDR":
            return None
        return _valid(Header("png", int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")))
    if data[:6] in (b"GIF87a", b"GIF89a"):
        if len(data) < 10:
            return NeedMore(len(data))
        return _valid(Header("gif", _le16(data, 6), _le16(data, 8)))
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        chunk = data[12:16]
        if len(data) < (25 if chunk == b"VP8L" else 30):
            return NeedMore(len(data))
        if chunk == b"VP8X":
            return _valid(Header("webp", _le24(data, 24) + 1, _le24(data, 27) + 1))
        if chunk == b"VP8L" and data[20] == 0x2F:
            bits = int.from_bytes(data[21:25], "little")
            return _valid(Header("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1))
        if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
            return _valid(Header("webp", _le16(data, 26) & 0x3FFF, _le16(data, 28) & 0x3FFF))
        return None
    if data[:2] == b"\xff\xd8":
        return _jpeg(data, 0, 2)
    if len(data) < 12 and data and (b"\x89PNG".startswith(data[:4]) or data[:1] in (b"G", b"R", b"\xff")):
        return NeedMore(len(data))
    return None


_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[^,;]*)*),", re.IGNORECASE)


def data_url_size(url: str) -> Header:
    """Size of the image in a ``data:image/…;base64,…`` URL, decoding only what the header needs.

    Raises:
        DataUrlError: not a base64 data URL, or its bytes are not a PNG/JPEG/GIF/WebP image.
    """
    m = _DATA_URL.match(url[:256])
    if not m:
        raise DataUrlError("malformed data: URL (expected data:image/png;base64,…)")
    if ";base64" not in (m.group("params") or "").lower():
        raise DataUrlError("data: URL is not base64-encoded")
    payload = url[m.end() :]
    # 8 KB of base64 covers every header but a JPEG behind a big EXIF block; then decode it all (local).
    for chars in (8192, len(payload)):
        chunk = payload[: chars - chars % 4] if chars < len(payload) else payload
        try:
            data = base64.b64decode(chunk + "=" * (-len(chunk) % 4), validate=False)
        except (binascii.Error, ValueError) as exc:
            raise DataUrlError(f"data: URL has invalid base64 ({exc})") from None
        result = parse_header(data)
        if isinstance(result, Header):
            return result
        if result is None or chars >= len(payload):
            break
    raise DataUrlError("data: URL does not hold a PNG, JPEG, GIF or WebP image")
