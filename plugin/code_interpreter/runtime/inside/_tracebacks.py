"""Tracebacks that show the user's own code: ``<code>`` frames with their source lines, no helper frames."""

from __future__ import annotations

import io
import linecache
import os
import sys
import traceback
from types import CodeType, TracebackType
from typing import TextIO

__all__ = ["USER_FILENAME", "compile_user_code", "print_user_exception", "register_source"]

#: The filename user code is compiled under; tracebacks show ``File "<code>", line N``.
USER_FILENAME = "<code>"

_HELPER_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def register_source(code: str, filename: str = USER_FILENAME) -> None:
    """Make the user's source visible to linecache so traceback, warnings and inspect show its lines."""
    # mtime None marks the entry as not backed by a file: linecache.checkcache never evicts it.
    linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)


def _error_stream() -> TextIO:
    stream: TextIO | None = sys.stderr
    if stream is None or getattr(stream, "closed", False):
        stream = sys.__stderr__
    # Both are None only in a process started without fd 2: there is nowhere to report to.
    return stream if stream is not None else io.StringIO()


def compile_user_code(code: str, filename: str = USER_FILENAME) -> CodeType | None:
    """Compile ``code`` as ``<code>``; on a syntax error print it (line and caret) and return None."""
    if "\0" in code:
        # Checked first: depending on the Python version compile() raises ValueError or a SyntaxError
        # without a line number for NUL bytes; give the line either way.
        line = code.count("\n", 0, code.index("\0")) + 1
        _error_stream().write(f"SyntaxError: source code cannot contain null bytes (line {line})\n")
        return None
    try:
        return compile(code, filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        print_user_exception(exc)
    return None


def _is_helper(tb: TracebackType) -> bool:
    return tb.tb_frame.f_code.co_filename.startswith(_HELPER_DIR)


def _without_helpers(tb: TracebackType | None) -> TracebackType | None:
    """A copy of the traceback chain with this package's frames left out (run_user_code, load_file…)."""
    kept: list[TracebackType] = []
    while tb is not None:
        if not _is_helper(tb):
            kept.append(tb)
        tb = tb.tb_next
    rebuilt: TracebackType | None = None
    for entry in reversed(kept):
        rebuilt = TracebackType(rebuilt, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return rebuilt


def _strip(exc: BaseException, seen: set[int]) -> None:
    if id(exc) in seen:
        return
    seen.add(id(exc))
    exc.__traceback__ = _without_helpers(exc.__traceback__)
    for linked in (exc.__cause__, exc.__context__):
        if linked is not None:
            _strip(linked, seen)
    for inner in getattr(exc, "exceptions", None) or ():
        if isinstance(inner, BaseException):
            _strip(inner, seen)


def print_user_exception(exc: BaseException, file: TextIO | None = None) -> None:
    """Print ``exc`` like Python would for an uncaught exception, minus this package's frames."""
    _strip(exc, set())
    stream = file or _error_stream()
    try:
        traceback.print_exception(exc, file=stream)
    except Exception:
        # A broken stream or a pathological exception must not hide the error kind entirely.
        fallback = sys.__stderr__
        if fallback is not None:
            fallback.write(f"{type(exc).__name__} (the traceback could not be printed)\n")
