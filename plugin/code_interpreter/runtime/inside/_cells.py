"""The one cell runner inside the sandbox: a one-shot script or a notebook-like session, by one flag.

``CellRunner(work_dir, keep_state=False)`` runs a single cell as a script would: a fresh ``__main__``,
``sys.exit(n)`` gives exit code ``n``, and at the end the code's threads, exit functions and stray
processes are ended as at interpreter exit. ``keep_state=True`` is a session: every cell runs in the
same ``__main__`` and sees the variables, imports and files of the cells before it; the value of a
trailing expression is printed (``df.shape`` alone shows ``(1000, 2)``); ``sys.exit`` ends the cell, not
the session; ``KeyboardInterrupt`` (the supervisor's interrupt at a cell's deadline) ends the cell and
keeps the state, and is ignored between cells; only files new or changed since the last cell return.
Both save open figures per cell and link the inputs into the work dir by name. Snapshots
(:mod:`._snapshot`) carry a session to another process or host.
"""

from __future__ import annotations

import ast
import atexit
import builtins
import io
import os
import signal
import sys
import types
from collections.abc import Callable
from typing import Any

from . import _figures, _snapshot
from ._loaders import make_file_helpers
from ._run import finish_threads, flush_streams, link_inputs
from ._tracebacks import USER_FILENAME, compile_user_code, print_user_exception, register_source

__all__ = ["MAX_DISPLAY_CHARS", "CellRunner", "run_user_code"]

#: The repr of a trailing expression is cut to this many characters (the output cap applies as well).
MAX_DISPLAY_CHARS = 20_000
_HELPERS = ("FILES", "get_file_path", "load_file")


class CellRunner:
    """Runs cells in a ``__main__`` of its own: kept between cells (a session) or not (one-shot)."""

    def __init__(self, work_dir: str, *, keep_state: bool) -> None:
        self.work_dir = work_dir
        self.keep_state = keep_state
        self.cells = 0
        self.files: dict[str, dict[str, Any]] = {}
        self.seen: dict[str, tuple[int, int]] = {}
        self.main = types.ModuleType("__main__")
        self.namespace = self.main.__dict__
        self.namespace["__builtins__"] = builtins
        sys.modules["__main__"] = self.main
        sys.argv = [USER_FILENAME if not keep_state else "<session>"]
        # As for `python script.py`: modules the code writes next to itself are importable.
        if work_dir not in sys.path:
            sys.path.insert(0, work_dir)
        # Exit functions of the zygote's own imports are not the code's: only those it registers run.
        atexit._clear()
        if keep_state:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    def run(self, code: str, files: dict[str, dict[str, Any]]) -> tuple[int, list[str]]:
        """Run one cell; return (exit status, notes). The code's errors are printed, never raised."""
        self.cells += 1
        notes = self._add_files(files)
        filename = f"<cell {self.cells}>" if self.keep_state else USER_FILENAME
        register_source(code, filename)
        _figures.configure_matplotlib()
        status = 0
        if self.keep_state:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            status = self._execute(code, filename)
        except SystemExit as exc:
            if self.keep_state:
                notes.append(f"the cell called sys.exit({exc.code!r}); the session goes on")
                status = 0 if exc.code in (None, 0) else 1
            else:
                status = _exit_status(exc)
        except BaseException as exc:  # KeyboardInterrupt included: a session keeps its state
            print_user_exception(exc)
            status = 1
        finally:
            if self.keep_state:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
        # Configure again: the code may have imported matplotlib itself (it is not always preloaded).
        _figures.configure_matplotlib()
        try:
            _figures.save_open_figures(self.work_dir)
        except Exception as exc:
            print_user_exception(exc)
        flush_streams()
        return status, notes

    def _execute(self, code: str, filename: str) -> int:
        if not self.keep_state:
            compiled = compile_user_code(code, filename)
            if compiled is None:
                return 1
            try:
                exec(compiled, self.namespace)
            finally:
                finish_threads()  # as at interpreter exit; a SystemExit still reaches run()
            return 0
        body, last = _split(code, filename)
        if body is None:
            return 1
        exec(body, self.namespace)
        if last is not None:
            _display(eval(last, self.namespace), self.namespace)
        return 0

    def _add_files(self, files: dict[str, dict[str, Any]]) -> list[str]:
        new = {fid: info for fid, info in files.items() if fid not in self.files}
        self.files.update(new)
        self.namespace.update(make_file_helpers(self.files))
        return link_inputs(new, self.work_dir) if new else []

    def changed(self, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Of the collected files, those to return: all (one-shot), or new or changed since the last cell."""
        if not self.keep_state:
            return found
        out = []
        now: dict[str, tuple[int, int]] = {}
        for item in found:
            try:
                st = os.stat(item["path"], follow_symlinks=False)
            except OSError:
                continue
            key = (st.st_size, st.st_mtime_ns)
            now[item["filename"]] = key
            if self.seen.get(item["filename"]) != key:
                out.append(item)
        self.seen = now
        return out

    # -- sessions: snapshots and the end ---------------------------------------------------------
    def snapshot(self, cap: int) -> tuple[bytes, list[str]]:
        """The session as bytes (variables, module aliases, work-dir files), within ``cap`` bytes."""
        inputs = {str(info.get("name")) for info in self.files.values() if info.get("name")}
        return _snapshot.dump(self.namespace, self.work_dir, cap, skip=set(_HELPERS), inputs=inputs)

    def restore(self, data: bytes) -> list[str]:
        """Load a snapshot into this (fresh) session; returns notes on what came back and what did not."""
        notes = _snapshot.load(data, self.namespace, self.work_dir)
        self.seen = {}
        return notes

    def close(self) -> None:
        """A session ends: its threads are ended and its exit functions run, as at interpreter exit."""
        finish_threads(grace=1.0)


def run_user_code(code: str, files: dict[str, dict[str, Any]], work_dir: str, *, links: bool = False) -> int:
    """Run ``code`` once as ``__main__`` with FILES/load_file/get_file_path; return the exit code.

    The one-shot use of :class:`CellRunner` (in the sandboxed child, cwd == work_dir): errors in the code
    are printed to stderr as a traceback of the user's lines, ``sys.exit(n)`` gives ``n & 0xFF``;
    afterwards the code's threads are ended, open figures saved as ``figure_N.png``, streams flushed. With
    ``links``, each input also appears in ``work_dir`` under its ``name`` (notes go to stderr).
    """
    runner = CellRunner(work_dir, keep_state=False)
    if not links:
        runner.files.update(files)  # the helpers see them; nothing is linked
    status, notes = runner.run(code, files)
    for note in notes:
        (sys.stderr or sys.__stderr__ or io.StringIO()).write(f"Note: {note}\n")
    return status


def _exit_status(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        # What the OS would report for exit(code): sys.exit(256) is 0, sys.exit(-1) is 255.
        return code & 0xFF
    # Like the interpreter: a non-integer exit argument is printed and the status is 1.
    stream = sys.stderr or sys.__stderr__
    if stream is not None:
        stream.write(f"{code}\n")
    return 1


def _split(code: str, filename: str) -> tuple[types.CodeType | None, types.CodeType | None]:
    """The cell compiled as (statements, trailing expression or None); (None, None) after a syntax error."""
    whole = compile_user_code(code, filename)
    if whole is None:
        return None, None
    tree = ast.parse(code, filename)
    if not tree.body or not isinstance(tree.body[-1], ast.Expr):
        return whole, None
    last = tree.body.pop()
    assert isinstance(last, ast.Expr)
    body = compile(tree, filename, "exec", dont_inherit=True)
    expr = compile(ast.Expression(last.value), filename, "eval", dont_inherit=True)
    return body, expr


def _display(value: Any, namespace: dict[str, Any]) -> None:
    """What a notebook shows for a trailing expression: its repr (None shows nothing)."""
    if value is None:
        return
    namespace["_"] = value
    text = _safe_repr(value)
    if len(text) > MAX_DISPLAY_CHARS:
        text = text[:MAX_DISPLAY_CHARS] + f"… [{len(text) - MAX_DISPLAY_CHARS} more characters]"
    print(text, flush=True)


def _safe_repr(value: Any, fallback: Callable[[Any], str] = object.__repr__) -> str:
    try:
        return repr(value)
    except Exception as exc:
        return f"{fallback(value)} (repr failed: {type(exc).__name__})"
