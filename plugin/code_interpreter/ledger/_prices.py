"""Compute prices (CPU-hour, GB-hour of memory, GB-month of storage) and the cost of one execution.

The packaged defaults are ``data/compute_prices.json``, with their source and date like the token
prices. An operator's prices file (``Settings.prices_file`` / ``CODE_INTERPRETER_PRICES_FILE``,
the same file as the token prices) overrides any of them with a ``compute`` section::

    {"source": "our cluster's cost model", "as_of": "2026-12-01",
     "compute": {"cpu_hour": 0.04, "memory_gb_hour": 0.005, "storage_gb_month": 0.10}}
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError

__all__ = [
    "BYTES_PER_GB",
    "HOURS_PER_MONTH",
    "MB_PER_GB",
    "ComputeCost",
    "ComputePrices",
    "default_compute_prices",
]

HOURS_PER_MONTH = 730.0
"""Hours in a billing month (365 x 24 / 12, the cloud providers' convention)."""
MB_PER_GB = 1024.0
"""Memory is measured in MiB and priced per GiB."""
BYTES_PER_GB = float(2**30)
"""Storage is priced per GiB."""

_KEYS = {
    "cpu_hour": "cpu_hour_usd",
    "memory_gb_hour": "memory_gb_hour_usd",
    "storage_gb_month": "storage_gb_month_usd",
}


@dataclass(frozen=True, slots=True)
class ComputeCost:
    """What one execution cost, by resource, in USD."""

    cpu_usd: float
    """CPU time used x the CPU-hour price."""
    memory_usd: float
    """Peak memory (GiB) x wall time (hours) x the GB-hour price."""
    storage_usd: float
    """Bytes stored (GiB) x months kept x the GB-month price."""

    @property
    def total_usd(self) -> float:
        """The sum of the three."""
        return self.cpu_usd + self.memory_usd + self.storage_usd

    def to_dict(self) -> dict[str, float]:
        """Plain-data view (the total included)."""
        return {"cpu_usd": self.cpu_usd, "memory_usd": self.memory_usd, "storage_usd": self.storage_usd,
                "total_usd": self.total_usd}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ComputePrices:
    """USD prices of the sandbox's resources, with where they come from and when they were read."""

    cpu_hour_usd: float
    """One CPU busy for an hour (user + system time)."""
    memory_gb_hour_usd: float
    """One GiB of memory held for an hour of wall time."""
    storage_gb_month_usd: float
    """One GiB stored for a month (730 hours)."""
    source: str = ""
    """Where the figures come from."""
    as_of: str = ""
    """The date they were read (YYYY-MM-DD)."""

    def __post_init__(self) -> None:
        for name in ("cpu_hour_usd", "memory_gb_hour_usd", "storage_gb_month_usd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigurationError(f"compute price {name} must be a number of USD, got {value!r}")
            if value < 0:
                raise ConfigurationError(f"compute price {name} must be >= 0 USD, got {value!r}")

    def cost(
        self,
        *,
        cpu_seconds: float,
        peak_memory_mb: float,
        wall_seconds: float,
        stored_bytes: int,
        storage_hours: float | None,
    ) -> ComputeCost:
        """The cost of one execution's measures.

        Args:
            cpu_seconds: CPU time used.
            peak_memory_mb: peak memory in MiB, held for ``wall_seconds``.
            wall_seconds: the execution's wall time.
            stored_bytes: bytes it added to the store.
            storage_hours: how long the store keeps them (``file_expiration_hours``); None: forever,
                charged one month.
        """
        hours_kept = HOURS_PER_MONTH if storage_hours is None else max(0.0, storage_hours)
        return ComputeCost(
            cpu_usd=cpu_seconds / 3600.0 * self.cpu_hour_usd,
            memory_usd=peak_memory_mb / MB_PER_GB * wall_seconds / 3600.0 * self.memory_gb_hour_usd,
            storage_usd=stored_bytes
            / BYTES_PER_GB
            * hours_kept
            / HOURS_PER_MONTH
            * self.storage_gb_month_usd,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view."""
        return asdict(self)

    @classmethod
    def load(cls, override: Path | str | None = None) -> ComputePrices:
        """The packaged defaults, with the ``compute`` section of ``override`` (a prices file) on top.

        Raises:
            ConfigurationError: the override file is unreadable, or its compute section is malformed.
        """
        packaged, data, path = read_price_files("compute_prices.json", override)
        values = _section(packaged, "data/compute_prices.json")
        source, as_of = str(packaged["source"]), str(packaged["as_of"])
        if path is not None and isinstance(data, dict) and "compute" in data:
            values.update(_section(data, str(path), partial=True))
            source = f"{data.get('source', path)} (operator file {path}) over {source}"
            as_of = str(data.get("as_of", as_of))
        return cls(**values, source=source, as_of=as_of)


def _section(data: Any, where: str, *, partial: bool = False) -> dict[str, float]:
    """The ``compute`` section as ComputePrices keyword arguments."""
    section = data.get("compute") if isinstance(data, dict) else None
    expected = "{'compute': {'cpu_hour': …, 'memory_gb_hour': …, 'storage_gb_month': …}} in USD"
    if not isinstance(section, dict):
        raise ConfigurationError(f"price file {where}: expected {expected}")
    unknown = sorted(set(section) - set(_KEYS))
    if unknown:
        raise ConfigurationError(
            f"price file {where}: unknown compute price(s) {unknown}; expected {expected}"
        )
    missing = [k for k in _KEYS if k not in section]
    if missing and not partial:
        raise ConfigurationError(
            f"price file {where}: missing compute price(s) {missing}; expected {expected}"
        )
    out: dict[str, float] = {}
    for key, value in section.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise ConfigurationError(
                f"price file {where}: compute.{key} must be a non-negative number of USD, got {value!r}"
            )
        out[_KEYS[key]] = float(value)
    return out


@lru_cache(maxsize=8)
def _load_cached(override: str | None) -> ComputePrices:
    return ComputePrices.load(override)


def default_compute_prices(override: Path | str | None = None) -> ComputePrices:
    """The packaged compute prices, under ``override`` or ``$CODE_INTERPRETER_PRICES_FILE`` when set."""
    chosen = override if override is not None else os.environ.get("CODE_INTERPRETER_PRICES_FILE") or None
    return _load_cached(str(chosen) if chosen is not None else None)


def read_price_files(
    packaged_name: str, override: Path | str | None
) -> tuple[dict[str, Any], Any, Path | None]:
    """The packaged ``data/<packaged_name>``, and the operator's prices file ``override`` when given.

    Returns (packaged, the override's JSON or None, the override's path or None).

    Raises:
        ConfigurationError: the override file is unreadable or not JSON.
    """
    packaged = json.loads(
        resources.files("code_interpreter").joinpath("data", packaged_name).read_text("utf-8")
    )
    if override is None:
        return packaged, None, None
    path = Path(override)
    try:
        return packaged, json.loads(path.read_text("utf-8")), path
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"price file {path}: {exc}; fix it or unset CODE_INTERPRETER_PRICES_FILE"
        ) from exc
