"""Shared pieces of the command line: progress bar, messages, local files, saved results, estimates."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from ..ledger import format_usd

__all__ = [
    "StderrProgress",
    "UsageProblem",
    "clip_words",
    "estimate_line",
    "for_cli",
    "read_local",
    "sample",
    "save_files",
]

MESSAGE_WIDTH = 70


class UsageProblem(Exception):
    """A problem with how the command was called (exit code 2)."""


def clip_words(text: str, width: int = MESSAGE_WIDTH) -> str:
    """``text`` on one line, at most ``width`` characters, cut between words (with an ellipsis)."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:") + "…"


class StderrProgress:
    """A progress callback drawing a one-line bar on stderr (plain lines when stderr is not a terminal).

    A step whose length is unknown shows a bar with the word "working" instead of a percentage.
    """

    def __init__(self, stream: Any = None, width: int = 28) -> None:
        """Draw on ``stream`` (default sys.stderr)."""
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = ""
        self._drawn = False

    def __call__(self, message: str, fraction: float | None) -> None:
        """Report progress: a message and a fraction in 0..1, or None when unknown."""
        message = clip_words(message)
        if fraction is None:
            bar = "[" + " working ".center(self.width, ".") + "]     "
        else:
            done = max(0.0, min(1.0, fraction))
            filled = round(done * self.width)
            bar = f"[{'#' * filled}{'.' * (self.width - filled)}] {done * 100:3.0f}%"
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


# Results speak to the model, which passes tool arguments; on the command line those are options.
_FOR_CLI = (
    (re.compile(r"\bpass timeout= up to (\d+)"), r"pass --timeout up to \1"),
    (
        re.compile(r"Ask the user to upload it again and use the new file id"),
        "upload it again (code-interpreter files upload FILE) and pass the new id with --file",
    ),
)


def for_cli(message: str) -> str:
    """A message written for the model, reworded for a person at a terminal (options, not arguments)."""
    for pattern, replacement in _FOR_CLI:
        message = pattern.sub(replacement, message)
    return message


async def read_local(path: Path | str) -> bytes:
    """Read a local file (``-`` is stdin) off the event loop; an unreadable one is a usage problem."""
    if str(path) == "-":
        return await asyncio.to_thread(sys.stdin.buffer.read)
    try:
        return await asyncio.to_thread(Path(path).read_bytes)
    except OSError as exc:
        raise UsageProblem(f"cannot read {path}: {exc.strerror or exc}") from None


def sample(name: str) -> bytes:
    """A sample data file shipped with the package (data/samples/)."""
    return resources.files("code_interpreter").joinpath("data", "samples", name).read_bytes()


def save_files(files: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Write generated files (dicts with ``filename`` and ``data``) into ``out_dir``; their paths."""
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
    """One line (plus warnings) for a token estimate: tokens, the cost range, images at their upper bound."""
    d = estimate.to_dict() if hasattr(estimate, "to_dict") else dict(estimate)
    tokens = d.get("input_tokens", d.get("total_input_tokens"))
    parts = [f"{tokens:,} input tokens" if isinstance(tokens, int) else "input tokens unknown"]
    out_tokens = d.get("max_output_tokens") or d.get("output_tokens")
    if isinstance(out_tokens, int) and out_tokens:
        parts.append(f"up to {out_tokens:,} output tokens")
    lo, hi = d.get("cost_min_usd", d.get("min_cost_usd")), d.get("cost_max_usd", d.get("max_cost_usd"))
    if isinstance(lo, int | float) and isinstance(hi, int | float):
        if lo == hi:
            parts.append(f"input cost {format_usd(lo)} (the reply's output tokens come on top)")
        else:
            parts.append(f"cost {format_usd(lo)} - {format_usd(hi)}")
    elif isinstance(d.get("cost_usd"), int | float):
        parts.append(f"cost {format_usd(d['cost_usd'])}")
    line = ", ".join(parts)
    bounded = [i for i in d.get("images") or () if isinstance(i, dict) and i.get("source") == "upper-bound"]
    if bounded:
        where = ", ".join(str(i.get("where")) for i in bounded[:3]) + (" …" if len(bounded) > 3 else "")
        line += (
            f"\n  note: {len(bounded)} image(s) counted at their upper bound ({where}): their size is not "
            "known without fetching them; the real count can only be lower"
        )
    for w in d.get("warnings") or ():
        line += f"\n  warning: {w}"
    return line
