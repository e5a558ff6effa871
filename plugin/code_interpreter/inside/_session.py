"""A live session inside the sandbox: cells run one after another in one ``__main__``, like a notebook.

Each cell sees the variables, imports and files of the cells before it. The value of a trailing
expression is printed (``df.shape`` alone shows ``(1000, 2)``), open figures are saved per cell,
and only files that are new or changed since the last cell are returned. ``KeyboardInterrupt``
(the supervisor's interrupt at a cell's deadline) ends the cell and keeps the state; it is ignored
between cells. Snapshots (:mod:`._snapshot`) carry the state to another process or host.
"""

from __future__ import annotations

import ast
import atexit
import builtins
import os
import signal
import sys
import types
from collections.abc import Callable
from typing import Any

from . import _figures, _snapshot
from ._loaders import make_file_helpers
from ._run import finish_threads, link_inputs
from ._tracebacks import compile_user_code, print_user_exception, register_source

__all__ = ["MAX_DISPLAY_CHARS", "Session"]

#: The repr of a trailing expression is cut to this many characters (the output cap applies as well).
MAX_DISPLAY_CHARS = 20_000
_HELPERS = ("FILES", "get_file_path", "load_file")


class Session:
    """One session's ``__main__`` namespace, its files and the work dir's known state."""

    def __init__(self, work_dir: str) -> None:
        self.work_dir = work_dir
        self.cells = 0
        self.files: dict[str, dict[str, Any]] = {}
        self.seen: dict[str, tuple[int, int]] = {}
        self.main = types.ModuleType("__main__")
        self.namespace = self.main.__dict__
        self.namespace["__builtins__"] = builtins
        sys.modules["__main__"] = self.main
        sys.argv = ["<session>"]
        if work_dir not in sys.path:
            sys.path.insert(0, work_dir)
        # Exit functions of the zygote's own imports are not the session's.
        atexit._clear()
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    # -- cells -----------------------------------------------------------------------------------
    def run_cell(self, code: str, files: dict[str, dict[str, Any]]) -> tuple[int, list[str]]:
        """Run one cell; return (0 ok / 1 error, notes). Errors are printed as tracebacks, never raised."""
        self.cells += 1
        notes = self._add_files(files)
        filename = f"<cell {self.cells}>"
        register_source(code, filename)
        _figures.configure_matplotlib()
        status = 0
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            body, last = _split(code, filename)
            if body is None:
                status = 1
            else:
                exec(body, self.namespace)
                if last is not None:
                    _display(eval(last, self.namespace), self.namespace)
        except SystemExit as exc:
            notes.append(f"the cell called sys.exit({exc.code!r}); the session goes on")
            status = 0 if exc.code in (None, 0) else 1
        except BaseException as exc:  # KeyboardInterrupt included: the state is kept
            print_user_exception(exc)
            status = 1
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        _figures.configure_matplotlib()
        try:
            _figures.save_open_figures(self.work_dir)
        except Exception as exc:
            print_user_exception(exc)
        return status, notes

    def _add_files(self, files: dict[str, dict[str, Any]]) -> list[str]:
        new = {fid: info for fid, info in files.items() if fid not in self.files}
        self.files.update(new)
        self.namespace.update(make_file_helpers(self.files))
        return link_inputs(new, self.work_dir) if new else []

    def changed(self, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The collected files that are new or changed since the last cell (size or mtime)."""
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

    # -- snapshots ---------------------------------------------------------------------------------
    def snapshot(self, cap: int) -> tuple[bytes, list[str]]:
        """The session as bytes (variables, module aliases, work-dir files), within ``cap`` bytes."""
        return _snapshot.dump(
            self.namespace, self.work_dir, cap, skip=set(_HELPERS), inputs=self._input_names()
        )

    def restore(self, data: bytes) -> list[str]:
        """Load a snapshot into this (fresh) session; returns notes on what came back and what did not."""
        notes = _snapshot.load(data, self.namespace, self.work_dir)
        self.seen = {}
        return notes

    def _input_names(self) -> set[str]:
        return {str(info.get("name")) for info in self.files.values() if info.get("name")}

    def close(self) -> None:
        """The session ends: its threads are ended and its exit functions run, as at interpreter exit."""
        finish_threads(grace=1.0)


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
