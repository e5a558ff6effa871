"""MongoDB URIs in messages: credentials redacted, and what a bad one means for the user.

A URI reaches the package through ``MONGODB_URI``; pymongo's complaints about it (a wrong scheme,
an SRV record that does not resolve) name pieces of it or none of it. These helpers say which URI,
without its password or secret options, and how to write a good one.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

__all__ = ["EXAMPLE", "hosts_of", "invalid_uri", "redact", "unresolvable_srv"]

EXAMPLE = "mongodb://HOST:27017/ (or mongodb+srv://CLUSTER-HOST/ for an Atlas-style SRV record)"

# Option names whose values are secrets (case-insensitive substrings).
_SECRET_OPTIONS = ("password", "secret", "token", "authmechanismproperties", "key")
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def redact(uri: str) -> str:
    """``uri`` with its user info replaced by ``***`` and the values of secret options hidden."""
    rest = uri
    scheme = ""
    found = _SCHEME_RE.match(uri)
    if found:
        scheme, rest = found.group(0), uri[found.end() :]
    rest, _, query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rsplit("@", 1)[1]
    out = f"{scheme}{authority}{slash}{path}"
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        shown = [f"{k}={'***' if any(s in k.lower() for s in _SECRET_OPTIONS) else v}" for k, v in pairs]
        out += "?" + "&".join(shown)
    return out


def hosts_of(uri: str) -> str:
    """The host list of a URI, without scheme, credentials, path or options."""
    rest = uri.split("://", 1)[-1]
    rest = rest.rsplit("@", 1)[-1] if "@" in rest.split("/", 1)[0] else rest
    return rest.split("/", 1)[0].split("?", 1)[0]


def invalid_uri(uri: str, problem: object) -> str:
    """The message for a URI pymongo refuses to parse (``problem``: its reason)."""
    said = str(problem).rstrip(".")
    scheme = _SCHEME_RE.match(uri)
    if scheme is None or scheme.group(1).lower() not in ("mongodb", "mongodb+srv"):
        got = f"{scheme.group(1)}://" if scheme else "no scheme"
        said = f"it starts with {got}, but a MongoDB URI starts with mongodb:// or mongodb+srv://"
    return f"MONGODB_URI {redact(uri)!r} is invalid: {said}; write it as {EXAMPLE}"


def unresolvable_srv(uri: str, problem: object) -> str:
    """The message for a ``mongodb+srv://`` URI whose DNS records could not be looked up."""
    host = hosts_of(uri)
    return (
        f"MONGODB_URI {redact(uri)!r}: the DNS lookup of its SRV record _mongodb._tcp.{host} failed "
        f"({str(problem).rstrip('.')}); check the cluster's host name and this machine's DNS, or give "
        f"the servers directly as mongodb://HOST:PORT,HOST:PORT/"
    )
