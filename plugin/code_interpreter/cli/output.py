"""A run's output at a terminal: printed as it comes, then what the terminal has not shown, and the exit code.

Live output reaches the terminal up to ``max_output_bytes`` per stream; the result keeps the first
and the last half of that, with a marker between them saying how many bytes were cut. So after a
long run the terminal has the head, and :func:`rest_of` adds what it lacks: a marker saying how much
it did not show, then the part of the kept tail it has not printed yet.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["LivePrinter", "exit_code", "isolation_note", "rest_of"]

# The executor's marker between a stream's kept head and tail ("… 9,900,000 bytes cut here …").
_MARKER = re.compile(r"\n\[… ([\d,]+) bytes [^\n]*?…\]\n")


class LivePrinter:
    """An ``on_event`` callback printing stdout and stderr chunks as they come (and remembering them)."""

    def __init__(
        self, before: Callable[[], None] | None = None, out: TextIO | None = None, err: TextIO | None = None
    ) -> None:
        """Print to ``out`` and ``err`` (sys.stdout, sys.stderr); ``before`` runs before each chunk."""
        self.before = before
        self.streams = {"stdout": out, "stderr": err}
        self.streamed = {"stdout": "", "stderr": ""}

    def __call__(self, event: Any) -> None:
        """Print a ``stdout``/``stderr`` event's text; other events are ignored."""
        if event.kind not in self.streamed:
            return
        if self.before is not None:
            self.before()
        stream = self.streams[event.kind] or (sys.stdout if event.kind == "stdout" else sys.stderr)
        stream.write(event.text)
        stream.flush()
        self.streamed[event.kind] += event.text


def rest_of(streamed: str, kept: str) -> str:
    """What a terminal that printed ``streamed`` still lacks of a stream the result keeps as ``kept``.

    ``kept`` is the whole stream, or its head, the executor's marker and its tail. The answer is the
    unshown part of the tail, after a marker saying how many bytes the terminal never got (none when
    the terminal's head reaches the kept tail).
    """
    if kept.startswith(streamed):  # nothing cut, or the terminal has not even the whole head
        return kept[len(streamed) :]
    found = _MARKER.search(kept)
    if found is None:  # the stream and the result disagree (undecodable bytes): show the result's tail
        return f"\n[… the rest of the output, as the result keeps it …]\n{kept[len(kept) // 2 :]}"
    head, tail = kept[: found.start()].encode(), kept[found.end() :].encode()
    total = len(head) + int(found.group(1).replace(",", "")) + len(tail)
    shown = len(streamed.encode())
    tail_at = total - len(tail)  # where the kept tail starts in the whole stream, in bytes
    if shown >= tail_at:
        return tail[shown - tail_at :].decode("utf-8", "replace")
    return (
        f"\n[… {tail_at - shown:,} bytes not shown here: of {total:,} bytes printed, the sandbox kept the "
        f"first {len(head):,} and the last {len(tail):,} (max_output_bytes); the terminal showed the first "
        f"{shown:,} …]\n{tail.decode('utf-8', 'replace')}"
    )


def exit_code(result: dict[str, Any]) -> int:
    """The exit code for a run: 0 on success, the script's own (``SystemExit(3)`` → 3), else 1."""
    if result.get("success"):
        return 0
    code = result.get("return_code")
    # Negative codes are a timeout (-1) or a signal (-N): the script chose neither.
    return code if isinstance(code, int) and 0 < code < 256 else 1


def isolation_note(result: dict[str, Any], configured: tuple[str, str]) -> str:
    """One line saying which isolation mode the code ran under (and why, when it is the host's mode)."""
    mode = str(result.get("isolation") or "")
    if not mode:
        return ""
    why = f" ({configured[1]})" if configured[0] == mode else ""
    if mode == "none":
        return f"sandbox: none — the code ran without isolation{why}"
    return f"sandbox: {mode} isolation{why}"
