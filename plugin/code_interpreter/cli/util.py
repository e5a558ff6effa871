"""Shared pieces of the command line: progress bar, reading local files, saving results, estimates."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["StderrProgress", "UsageProblem", "estimate_line", "read_local", "sample", "save_files"]


class UsageProblem(Exception):
    """A problem with how the command was called (exit code 2)."""


class StderrProgress:
    """A progress callback drawing a one-line bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, stream: Any = None, width: int = 28) -> None:
        """Draw on ``stream`` (default sys.stderr)."""
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = ""
        self._drawn = False

    def __call__(self, message: str, fraction: float | None) -> None:
        """Report progress: a message and a fraction in 0..1, or None when unknown."""
        message = " ".join(message.split())[:70]
        if fraction is None:
            bar = "[" + "." * self.width + "]   ?%"
        else:
            filled = round(max(0.0, min(1.0, fraction)) * self.width)
            bar = f"[{'#' * filled}{'.' * (self.width - filled)}] {fraction * 100:3.0f}%"
        if self.tty:
            self.stream.write(f"\r\x1b[2K{bar} {message}")
            self._drawn = True
        elif message != self._last:
            self.stream.write(f"{bar} {message}\n")
        self._last = message
        self.stream.flush()

    def done(self) -> None:
        """End the bar's line."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


async def read_local(path: Path | str) -> bytes:
    """Read a local file off the event loop; an unreadable one is a usage problem."""
    try:
        return await asyncio.to_thread(Path(path).read_bytes)
    except OSError as exc:
        raise UsageProblem(f"cannot read {path}: {exc.strerror or exc}") from None


def sample(name: str) -> bytes:
    return resources.files("code_interpreter").joinpath("data", "samples", name).read_bytes()


def save_files(files: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    for f in files:
        data = f.get("data")
        if not isinstance(data, bytes | bytearray):
            continue
        # The sandbox already sanitised names; basename keeps a hostile one inside out_dir anyway.
        path = out_dir / (os.path.basename(str(f.get("filename") or "file")) or "file")
        path.write_bytes(bytes(data))
        saved.append(path)
    return saved


def estimate_line(estimate: Any) -> str:
    d = estimate.to_dict() if hasattr(estimate, "to_dict") else dict(estimate)
    tokens = d.get("input_tokens", d.get("total_input_tokens"))
    parts = [f"{tokens:,} input tokens" if isinstance(tokens, int) else "input tokens unknown"]
    out_tokens = d.get("max_output_tokens") or d.get("output_tokens")
    if isinstance(out_tokens, int) and out_tokens:
        parts.append(f"up to {out_tokens:,} output tokens")
    lo, hi = d.get("cost_min_usd", d.get("min_cost_usd")), d.get("cost_max_usd", d.get("max_cost_usd"))
    if isinstance(lo, int | float) and isinstance(hi, int | float):
        if lo == hi:
            parts.append(f"input cost ${lo:.6f} (the reply's output tokens come on top)")
        else:
            parts.append(f"cost ${lo:.6f} - ${hi:.6f}")
    elif isinstance(d.get("cost_usd"), int | float):
        parts.append(f"cost ${d['cost_usd']:.6f}")
    line = ", ".join(parts)
    for w in d.get("warnings") or ():
        line += f"\n  warning: {w}"
    return line
