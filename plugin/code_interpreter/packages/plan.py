"""What a piece of code needs installed, and what it may not have: decided from names alone, with no lock.

Approval depends only on the approved list and on what the runtime holds right now (a directory
listing), so a refusal never waits: not for another user's pip run, not for a runtime being built.
Only the installs themselves take the runtime's lock, and they check again under it what is still
missing (another caller may have installed it meanwhile).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from .approval import Approval, clip
from .imports import ImportScan

__all__ = ["InstallPlan", "plan_installs"]


@dataclass(frozen=True, slots=True)
class InstallPlan:
    """The installs one execution needs, and the refusals that stop it."""

    required: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Distribution → the missing modules it provides that the code needs (``()``: asked for by name)."""
    optional: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Distribution → missing modules imported only under ``try/except ImportError``."""
    optional_missing: tuple[str, ...] = ()
    """Optional modules that cannot be installed (not approved, not installable): not an error."""
    refused: tuple[tuple[str, str], ...] = ()
    """(module or package, reason) for each required one that may not be installed."""

    @property
    def work(self) -> bool:
        """True when something is to be installed."""
        return bool(self.required or self.optional)


def plan_installs(
    scan: ImportScan,
    requested: Sequence[str],
    refused: Sequence[tuple[str, str]],
    *,
    available: Collection[str],
    installed: Collection[str],
    approval: Approval,
    distribution_for: Callable[[str], str | None],
) -> InstallPlan:
    """Classify what ``scan`` imports and the ``requested`` distributions against the runtime's contents.

    Args:
        scan: the code's imports; requested: approved distributions the call asked for by name;
            refused: what was already refused among those names.
        available: top-level modules the runtime has; installed: its distributions (canonical).
        approval: the approved list; distribution_for: top-level module → distribution (None: stdlib).
    """
    required: dict[str, list[str]] = {}
    optional: dict[str, list[str]] = {}
    optional_missing: list[str] = []
    refusals = list(refused)
    for module in scan.required:
        if module in available:
            continue
        dist = distribution_for(module)
        ok, reason = approval.check(dist) if dist else (False, "not an installable module")
        if ok and dist is not None:
            required.setdefault(dist, []).append(module)
        else:
            line = scan.line_of(module)
            where = f" (line {line})" if line else ""
            refusals.append((module, f"module {clip(repr(module))}{where} is not installed and {reason}"))
    for module in scan.optional:
        if module in available:
            continue
        dist = distribution_for(module)
        if dist is not None and approval.check(dist)[0]:
            optional.setdefault(dist, []).append(module)
        else:
            optional_missing.append(module)
    for dist in requested:
        if dist not in installed:
            required.setdefault(dist, [])
    return InstallPlan(
        required={d: tuple(m) for d, m in required.items()},
        optional={d: tuple(m) for d, m in optional.items()},
        optional_missing=tuple(optional_missing),
        refused=tuple(refusals),
    )
