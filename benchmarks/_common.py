"""Shared benchmark helpers: timing, robust statistics and table output.

Machines here are shared and noisy, so every figure is a median and p95 over repeated runs,
and comparisons are measured side by side in the same run (interleaved where possible).
"""

from __future__ import annotations

import asyncio
import json
import os
import pkgutil
import platform
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FULL_ENV = "CODE_INTERPRETER_BENCH_FULL"
"""Set to 1 for the runs a full benchmark leaves out by default (the 100,000-file cleanup)."""


def areas() -> list[str]:
    """The benchmark areas: each module ``bench_<area>.py`` here."""
    return sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules([str(HERE)])
        if m.name.startswith("bench_")
    )


@dataclass(slots=True)
class Table:
    """One result table: a title, column names, rows of cells and free-form notes."""

    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def render(self, level: int = 3) -> str:
        """Markdown rendering, the title a heading of ``level`` (the README's block is made of these)."""
        cells = [[_fmt(c) for c in row] for row in self.rows]
        widths = [
            max(len(str(col)), *(len(r[i]) for r in cells)) if cells else len(col)
            for i, col in enumerate(self.columns)
        ]
        lines = [f"{'#' * level} {self.title}", ""]
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True)) + " |")
        lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for r in cells:
            lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        lines.extend(f"\n{n}" for n in self.notes)
        return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 1:
            return f"{v:.2f}"
        return f"{v:.3g}"
    return str(v)


class StallMeter:
    """A 1 ms asyncio ticker: ``worst_ms`` is the event loop's worst lateness while the block ran."""

    def __init__(self) -> None:
        self.worst_ms = 0.0
        self._stop = False
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StallMeter:
        self._task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop = True
        if self._task is not None:
            await self._task

    async def _tick(self) -> None:
        while not self._stop:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            self.worst_ms = max(self.worst_ms, (time.perf_counter() - t - 0.001) * 1000)


def summarize(samples_s: Sequence[float]) -> dict[str, float]:
    """Median and p95 in milliseconds."""
    ordered = sorted(samples_s)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * (len(ordered) - 1))))]
    return {"median_ms": statistics.median(ordered) * 1000, "p95_ms": p95 * 1000, "n": float(len(ordered))}


def time_sync(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``repeat`` calls after ``warmup`` unmeasured ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


async def time_async(fn: Callable[[], Awaitable[Any]], repeat: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``repeat`` awaited calls after ``warmup`` unmeasured ones."""
    for _ in range(warmup):
        await fn()
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t)
    return out


def machine() -> str:
    """One line describing the machine the figures came from."""
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{system}, {cpu}, {os.cpu_count()} cores{mem}, Python {platform.python_version()}"


def write_json(path: Path, tables: Sequence[tuple[str, Table]], command: str = "") -> None:
    """Write the (area, table) pairs, the machine line, the time and the command as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": machine(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command,
        "tables": [{"area": area, **asdict(t)} for area, t in tables],
    }
    path.write_text(json.dumps(payload, indent=2, default=str))
