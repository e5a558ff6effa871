"""The record of packages installed on demand: name, version, installed_at, last_used (atomic JSON)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .fsutil import read_json, write_json_atomic

__all__ = ["PackageRecord"]

# last_used is a coarse signal (which packages to keep on rebuild): writing it more often costs I/O.
TOUCH_INTERVAL_S = 60.0


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


class PackageRecord:
    """Packages installed on demand into the runtime, kept in one JSON file written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._data: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        if self._data is None:
            data = read_json(self.path)
            packages = data.get("packages")
            self._data = {
                "packages": packages if isinstance(packages, dict) else {},
                "last_cleanup": data.get("last_cleanup"),
            }
        return self._data

    def reload(self) -> None:
        """Forget the cached copy (another process may have written the file)."""
        self._data = None

    def save(self) -> None:
        """Write the record atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, self._load())

    def names(self) -> list[str]:
        """Recorded distribution names."""
        return sorted(self._load()["packages"])

    def add(self, versions: Mapping[str, str], now: float | None = None) -> None:
        """Record freshly installed distributions (canonical name → version) and save."""
        now = time.time() if now is None else now
        packages = self._load()["packages"]
        for name, version in versions.items():
            entry = packages.setdefault(name, {"installed_at": now})
            entry.update(version=version, installed_at=now, last_used=now)
        self.save()

    def touch(self, names: Iterable[str], now: float | None = None) -> bool:
        """Mark recorded distributions as used; saves only when a timestamp moved by a minute or more."""
        now = time.time() if now is None else now
        packages = self._load()["packages"]
        changed = False
        for name in names:
            entry = packages.get(name)
            if entry is not None and now - float(entry.get("last_used") or 0) >= TOUCH_INTERVAL_S:
                entry["last_used"] = now
                changed = True
        if changed:
            self.save()
        return changed

    def keep_only(self, names: Iterable[str], versions: Mapping[str, str]) -> None:
        """After a rebuild: keep the given entries (with their new versions), drop the rest."""
        keep = set(names)
        packages = self._load()["packages"]
        for name in list(packages):
            if name not in keep:
                del packages[name]
            elif name in versions:
                packages[name]["version"] = versions[name]

    def used_since(self, since: float) -> list[str]:
        """Distributions used (or installed) at or after ``since``."""
        return sorted(
            n for n, e in self._load()["packages"].items() if float(e.get("last_used") or 0) >= since
        )

    @property
    def last_cleanup(self) -> float | None:
        """When the runtime was last rebuilt (epoch seconds), or None."""
        value = self._load().get("last_cleanup")
        return float(value) if isinstance(value, int | float) else None

    def set_last_cleanup(self, when: float) -> None:
        """Record a rebuild time (saved with the next save)."""
        self._load()["last_cleanup"] = when

    def entries(self) -> list[dict[str, Any]]:
        """The record as dicts: name, version, installed_at, last_used (ISO 8601 UTC)."""
        out = []
        for name, e in sorted(self._load()["packages"].items()):
            out.append(
                {
                    "name": name,
                    "version": e.get("version"),
                    "installed_at": _iso(e.get("installed_at")),
                    "last_used": _iso(e.get("last_used")),
                }
            )
        return out
