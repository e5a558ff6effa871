"""Discord attachment links: ids, file name, hex issue/expiry times, proxy rendition size."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from code_interpreter import tokens

ISSUED = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
EXPIRES = ISSUED + timedelta(hours=24)


def discord_url(
    host: str = "cdn.discordapp.com",
    channel: int = 1098765432109876543,
    attachment: int = 1234567890123456789,
    filename: str = "chart%20final.png",
    issued: datetime = ISSUED,
    expires: datetime = EXPIRES,
    extra: str = "",
) -> str:
    """A link shaped like Discord's: ``ex``/``is`` are hex unix seconds, ``hm`` a signature."""
    ex, is_ = format(int(expires.timestamp()), "x"), format(int(issued.timestamp()), "x")
    return (
        f"https://{host}/attachments/{channel}/{attachment}/{filename}"
        f"?ex={ex}&is={is_}&hm=9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0&{extra}"
    )


def test_parse_cdn_link() -> None:
    link = tokens.parse_discord_url(discord_url())
    assert link is not None
    assert link.channel_id == 1098765432109876543
    assert link.attachment_id == 1234567890123456789
    assert link.filename == "chart final.png"
    assert link.issued_at == ISSUED and link.expires_at == EXPIRES
    assert link.signature is not None and len(link.signature) == 64
    assert link.width is None and link.height is None
    assert link.to_dict()["expires_at"] == EXPIRES.isoformat()


def test_media_proxy_adds_rendition_size() -> None:
    link = tokens.parse_discord_url(discord_url(host="media.discordapp.net", extra="=&width=550&height=309"))
    assert link is not None and (link.width, link.height) == (550, 309)


def test_expiry_with_an_injected_clock() -> None:
    link = tokens.parse_discord_url(discord_url())
    assert link is not None
    assert not link.is_expired(EXPIRES - timedelta(seconds=1))
    assert link.is_expired(EXPIRES)
    assert link.is_expired(EXPIRES + timedelta(days=3))
    assert not link.is_expired(EXPIRES.replace(tzinfo=None) - timedelta(hours=1))  # naive = UTC


def test_unsigned_legacy_link_never_expires() -> None:
    link = tokens.parse_discord_url("https://cdn.discordapp.com/attachments/1/2/a.jpg")
    assert link is not None and link.expires_at is None and not link.is_expired()


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/attachments/1/2/a.png",
        "https://cdn.discordapp.com.evil.example/attachments/1/2/a.png",
        "https://cdn.discordapp.com/avatars/1/abc.png",
        "https://cdn.discordapp.com/attachments/x/2/a.png",
        "ftp://cdn.discordapp.com/attachments/1/2/a.png",
        "not a url",
        "",
    ],
)
def test_not_discord_attachment_links(url: str) -> None:
    assert tokens.parse_discord_url(url) is None


def test_bad_hex_times_are_none_not_errors() -> None:
    link = tokens.parse_discord_url("https://cdn.discordapp.com/attachments/1/2/a.png?ex=zz&is=&hm=x")
    assert link is not None and link.expires_at is None and link.issued_at is None
