"""Approval of package names: strict PEP 508 distribution names, checked against the approved list."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from importlib import resources

from .imports import canonicalize

__all__ = ["Approval", "shipped_approved_packages"]

# PEP 508 "names" grammar: ASCII letters and digits, with . _ - inside.
_NAME_RE = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE | re.ASCII)
_SHELL_META = set(";|&$`<>(){}*?!'\"\\\n\r\t ")
_MAX_NAME = 100


@functools.cache
def _shipped() -> dict[str, tuple[str, ...]]:
    raw = json.loads(resources.files("code_interpreter").joinpath("data/approved_packages.json").read_text())
    return {
        "packages": tuple(sorted({canonicalize(n) for n in raw["packages"]})),
        "dependencies": tuple(sorted({canonicalize(n) for n in raw.get("dependencies", [])})),
    }


def shipped_approved_packages() -> tuple[str, ...]:
    """The shipped approved list (data/approved_packages.json) and its dependency closure, canonical names."""
    shipped = _shipped()
    return tuple(sorted({*shipped["packages"], *shipped["dependencies"]}))


def name_problem(name: object) -> str | None:
    """Why ``name`` is not a plain PEP 508 distribution name, or None when it is one."""
    if not isinstance(name, str):
        return f"a package name must be a string, got {type(name).__name__}"
    if not name:
        return "the package name is empty"
    if len(name) > _MAX_NAME:
        return f"the package name is longer than {_MAX_NAME} characters"
    if not name.isascii():
        return "the package name contains non-ASCII characters (lookalike letters are not accepted)"
    if name.startswith("-"):
        return "pip options are not accepted; give a bare package name"
    if "://" in name or "@" in name:
        return "URLs and direct references are not accepted; give a bare package name"
    if "/" in name or "\\" in name or name.startswith("."):
        return "paths are not accepted; give a bare package name"
    if any(c in name for c in "<>=~!"):
        return "version specifiers are not accepted; give the bare name (versions are pinned by the operator)"
    if "[" in name or "]" in name:
        return "extras are not accepted; give the bare name"
    if ";" in name:
        return "environment markers are not accepted; give a bare package name"
    if any(c in _SHELL_META for c in name):
        return "the package name contains whitespace or shell metacharacters"
    if not _NAME_RE.match(name):
        return "not a valid PEP 508 distribution name (letters, digits and . _ - inside)"
    return None


def clip(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters: names echoed to the model stay short, whatever was sent."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Approval:
    """The approved list: answers whether a distribution name may be installed, and why not."""

    def __init__(self, approved: Iterable[str] | None = None) -> None:
        names = shipped_approved_packages() if approved is None else approved
        self.approved: frozenset[str] = frozenset(canonicalize(n) for n in names)
        # What refusals list: the packages themselves, not the libraries they bring along.
        self.listed: tuple[str, ...] = (
            _shipped()["packages"] if approved is None else tuple(sorted(self.approved))
        )

    def check(self, name: object) -> tuple[bool, str]:
        """(approved?, reason) for a distribution name; only a plain, approved name passes."""
        problem = name_problem(name)
        if problem is not None:
            return False, f"{clip(repr(name))} refused: {problem}"
        assert isinstance(name, str)
        canon = canonicalize(name)
        if canon in self.approved:
            return True, f"{canon} is approved"
        return False, f"{clip(canon)} is not on the approved package list ({self.describe()})"

    def describe(self, limit: int = 60) -> str:
        """The approved names, for messages to the model."""
        names = list(self.listed)
        shown = ", ".join(names[:limit])
        return f"approved: {shown}" + (f" and {len(names) - limit} more" if len(names) > limit else "")
