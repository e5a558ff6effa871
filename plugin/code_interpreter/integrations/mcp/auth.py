"""Who is calling over HTTP: bearer tokens mapped to user ids, and which addresses need them.

The operator writes the table (``--tokens FILE`` or ``CODE_INTERPRETER_MCP_TOKENS``): one entry per
token, either JSON (``{"<token>": "<user id>", ...}``) or lines ``<token> <user id>`` (``#`` starts a
comment; in the environment variable a comma also separates entries). A request's token decides
whose files and sessions it uses; the model never names a user. Tokens are kept only as SHA-256
digests, so a lookup takes the same path whatever the presented token shares with a real one.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from mcp.server.auth.provider import AccessToken

from ...errors import ConfigurationError
from ...request import MAX_SESSION_ID

__all__ = ["TOKENS_ENV", "StaticTokenVerifier", "TokenTable", "is_loopback"]

TOKENS_ENV = "CODE_INTERPRETER_MCP_TOKENS"
"""Environment variable holding the token table when no ``--tokens`` file is given."""

MIN_TOKEN_CHARS = 16
"""Shortest accepted token: anything shorter can be guessed."""

# RFC 6750 token68: what a bearer token may contain so it survives an Authorization header unchanged.
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_MAKE_ONE = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenTable:
    """Bearer tokens → user ids, checked when loaded; lookups by SHA-256 digest."""

    def __init__(self, entries: Mapping[str, str], source: str = "the token table") -> None:
        """Check every entry (``token → user id``) and keep the digests; raises ConfigurationError."""
        if not entries:
            raise ConfigurationError(f"{source} has no tokens: add lines '<token> <user id>'")
        self._users: dict[bytes, str] = {}
        for token, user in entries.items():
            _check(token, user, source)
            self._users[_digest(token)] = user

    @classmethod
    def from_text(cls, text: str, source: str, *, commas: bool = False) -> TokenTable:
        """Parse JSON or ``<token> <user id>`` lines (``commas``: a comma also ends an entry)."""
        stripped = text.strip()
        if stripped.startswith(("{", "[")):
            try:
                data = json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise ConfigurationError(
                    f"{source} is not valid JSON ({exc.msg} at line {exc.lineno}); write an object "
                    '{"<token>": "<user id>"} or lines \'<token> <user id>\''
                ) from None
            if not isinstance(data, dict):
                raise ConfigurationError(f'{source} must be a JSON object {{"<token>": "<user id>"}}')
            bad = [k for k, v in data.items() if isinstance(v, bool) or not isinstance(v, str | int)]
            if bad:
                raise ConfigurationError(f"{source}: the user id of each token must be a string or a number")
            return cls({str(k): str(v) for k, v in data.items()}, source)
        entries: dict[str, str] = {}
        for where, fields in _entries(text, commas):
            if len(fields) != 2:
                raise ConfigurationError(
                    f"{source}, {where}: expected '<token> <user id>', got {len(fields)} field(s)"
                )
            token, user = fields
            if token in entries:
                raise ConfigurationError(f"{source}, {where}: this token is listed twice")
            entries[token] = user
        return cls(entries, source)

    @classmethod
    def from_file(cls, path: Path | str) -> TokenTable:
        """Read a token file; an unreadable one is a ConfigurationError naming it."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigurationError(f"cannot read the token file {path}: {reason}") from None
        return cls.from_text(text, f"token file {path}")

    def user_for(self, token: str) -> str | None:
        """The user id a presented token stands for, or None."""
        return self._users.get(_digest(token))

    def __len__(self) -> int:
        return len(self._users)

    @property
    def users(self) -> frozenset[str]:
        """Every user id some token stands for."""
        return frozenset(self._users.values())


def _entries(text: str, commas: bool) -> Iterator[tuple[str, list[str]]]:
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0]
        for n, part in enumerate(line.split(",") if commas else [line], 1):
            if part.strip():
                yield (f"line {lineno}" if not commas else f"entry {lineno}.{n}"), part.split()


def _check(token: str, user: str, source: str) -> None:
    shown = token[:4] + "…"
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigurationError(
            f"{source}: token {shown} has {len(token)} characters; use at least {MIN_TOKEN_CHARS} random "
            f"ones, e.g. from {_MAKE_ONE}"
        )
    if not _TOKEN68.fullmatch(token):
        raise ConfigurationError(
            f"{source}: token {shown} has characters a bearer token cannot carry; use letters, digits and "
            f"-._~+/ only, e.g. from {_MAKE_ONE}"
        )
    if not user or len(user) > MAX_SESSION_ID or any(c.isspace() for c in user):
        raise ConfigurationError(
            f"{source}: user id {user[:40]!r} of token {shown} must be 1 to {MAX_SESSION_ID} characters "
            "without spaces"
        )


class StaticTokenVerifier:
    """The MCP SDK's ``TokenVerifier`` over a :class:`TokenTable`: the token's user is its subject."""

    def __init__(self, table: TokenTable) -> None:
        """Verify against ``table``."""
        self.table = table

    async def verify_token(self, token: str) -> AccessToken | None:
        """An AccessToken whose ``subject`` (and ``client_id``) is the user id; None for an unknown token."""
        user = self.table.user_for(token)
        if user is None:
            return None
        # The SDK binds an HTTP session to (client_id, issuer, subject): the user's other tokens may share it.
        return AccessToken(token=token, client_id=user, subject=user, scopes=[])


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server reachable from this machine only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything
