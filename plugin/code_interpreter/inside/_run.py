"""``preload`` (in the zygote) and ``run_user_code`` (in the sandboxed child)."""

from __future__ import annotations

import atexit
import builtins
import importlib
import importlib.util
import io
import os
import shutil
import sys
import threading
import time
import types
from collections.abc import Sequence
from typing import Any

from . import _figures
from ._loaders import make_file_helpers
from ._tracebacks import USER_FILENAME, compile_user_code, print_user_exception, register_source

__all__ = ["THREAD_GRACE_S", "finish_threads", "link_inputs", "preload", "run_user_code"]

#: At the end of a one-shot execution, non-daemon threads get this long to finish before they are stopped.
THREAD_GRACE_S = 5.0


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        # find_spec imports the parents of a dotted name; a broken or missing parent lands here.
        return False


def _warm() -> None:
    """Import and exercise once, in the zygote, what load_file and a first chart would cost each child."""
    for name in ("csv", "json", "sqlite3", "urllib.parse", "zipfile", "PIL.Image"):
        if _installed(name):
            try:
                importlib.import_module(name)
            except Exception:
                pass
    pandas = sys.modules.get("pandas")
    if pandas is not None:
        try:
            pandas.read_csv(io.StringIO("a,b\n1,x\n2,y\n")).groupby("b").sum()
        except Exception:
            pass
    if "matplotlib.pyplot" in sys.modules:
        try:
            # The object API leaves pyplot's figure list (and so figure numbering) untouched; one draw
            # loads the Agg renderer and the default font, which otherwise costs each child ~100 ms.
            from matplotlib.figure import Figure

            figure = Figure(figsize=(2, 2))
            axes = figure.subplots()
            axes.plot([0, 1], [0, 1], label="warm")
            axes.set_title("warm")
            axes.legend()
            figure.savefig(io.BytesIO(), format="png")
        except Exception:
            pass


def preload(modules: Sequence[str]) -> list[str]:
    """Import the installed ones of ``modules`` (matplotlib with the Agg backend) in the zygote; return them.

    Missing modules are skipped silently; a module that is installed but fails to import is skipped
    with a one-line note on stderr (the zygote must start anyway). Also warms what load_file and a
    first matplotlib chart need, so forked children do not pay for it.
    """
    # Before any import: matplotlib reads MPLBACKEND when it is first imported (seaborn imports it).
    os.environ["MPLBACKEND"] = "Agg"
    loaded: list[str] = []
    for name in modules:
        if not _installed(name):
            continue
        try:
            importlib.import_module(name)
        except Exception as exc:
            sys.stderr.write(f"preload: skipped {name}: {type(exc).__name__}: {exc}\n")
            continue
        loaded.append(name)
    matplotlib = sys.modules.get("matplotlib")
    if matplotlib is not None:
        matplotlib.use("Agg")
    _figures.configure_matplotlib()
    _warm()
    return loaded


def _fresh_main(files: dict[str, dict[str, Any]], work_dir: str) -> dict[str, Any]:
    """A new ``__main__`` module with the file helpers, registered so pickle/dataclasses/inspect find it."""
    main = types.ModuleType("__main__")
    namespace = main.__dict__
    namespace["__builtins__"] = builtins
    namespace.update(make_file_helpers(files))
    sys.modules["__main__"] = main
    sys.argv = [USER_FILENAME]
    # As for `python script.py`: modules the code writes next to itself are importable.
    if work_dir not in sys.path:
        sys.path.insert(0, work_dir)
    return namespace


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


def finish_threads(grace: float = THREAD_GRACE_S) -> None:
    """End the code's threads as the interpreter does at exit, but never wait forever.

    First threading's exit hooks (``concurrent.futures`` and loky, which joblib and scikit-learn's
    ``n_jobs`` use, shut their executors down there: their manager threads are not daemons), then up
    to ``grace`` seconds for the remaining non-daemon threads; those still running are named on stderr
    and stopped with the process. Then the ``atexit`` functions the code registered.
    """
    for hook in reversed(list(getattr(threading, "_threading_atexits", ()))):
        try:
            hook()
        except Exception:
            pass
    current = threading.current_thread()
    deadline = time.monotonic() + grace
    for thread in threading.enumerate():
        if thread is not current and not thread.daemon and thread.is_alive():
            thread.join(max(0.0, deadline - time.monotonic()))
    left = [t.name for t in threading.enumerate() if t is not current and not t.daemon and t.is_alive()]
    if left:
        stream = sys.stderr or sys.__stderr__
        if stream is not None:
            stream.write(
                f"Note: {len(left)} thread(s) were still running {grace:g} s after the code ended and "
                f"were stopped: {', '.join(left[:5])}. Join threads (or shut executors down) first.\n"
            )
    try:
        atexit._run_exitfuncs()
    except Exception:
        pass


# Inputs shown by name in the work dir: the link's absolute path -> the read-only file it points to.
_LINKED: dict[str, str] = {}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR
_hooked = False


def _copy_up_on_write(event: str, args: tuple[Any, ...]) -> None:
    """Audit hook: opening a linked input for writing first turns the link into a copy of its own.

    So ``df.to_csv('sales.csv')`` or ``plt.savefig('chart.png')`` over an input of that name works as
    with a copy (and the new content is returned as a generated file), while the input itself, on its
    read-only mount, never changes. Reading costs nothing: the link stays until something writes.
    """
    if event != "open" or not _LINKED:
        return
    try:
        path, _mode, flags = args
        if isinstance(path, int) or not (isinstance(flags, int) and flags & _WRITE_FLAGS):
            return
        target = os.path.abspath(os.fsdecode(path))
        source = _LINKED.pop(target, None)
        if source is None or not os.path.islink(target):
            return
        tmp = f"{target}.{os.getpid()}.copy"
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except Exception:
        pass  # never in the way of the open itself


def link_inputs(files: dict[str, dict[str, Any]], work_dir: str) -> list[str]:
    """Show each input file in the work dir under its own name (a symlink to its read-only path).

    Opening one for writing turns it into a copy first (:func:`_copy_up_on_write`). An existing entry
    of that name (a file the code wrote in an earlier cell) is never replaced; a note says where the
    input is instead.
    """
    global _hooked
    if files and not _hooked:
        sys.addaudithook(_copy_up_on_write)  # once per process: hooks cannot be removed
        _hooked = True
    notes: list[str] = []
    for file_id, info in files.items():
        name = str(info.get("name") or "")
        if not name or "/" in name or name in (".", ".."):
            continue
        target = os.path.join(work_dir, name)
        path = str(info["path"])
        try:
            os.symlink(path, target)
            _LINKED[os.path.abspath(target)] = path
        except FileExistsError:
            if not (os.path.islink(target) and os.readlink(target) == path):
                notes.append(
                    f"the upload {name!r} is not in the working directory under that name (a file of that "
                    f"name exists there); open it with load_file({file_id!r}) or FILES[{file_id!r}]"
                )
        except OSError as exc:
            notes.append(
                f"the upload {name!r} could not be linked into the working directory ({exc.strerror})"
            )
    return notes


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass


def run_user_code(code: str, files: dict[str, dict[str, Any]], work_dir: str, *, links: bool = False) -> int:
    """Run ``code`` as ``__main__`` with FILES/load_file/get_file_path; return the exit code (0 ok, 1 error).

    Called in the sandboxed child (cwd == work_dir). Errors in the user's code never raise out of here:
    they are printed to stderr as a traceback of the user's ``<code>`` lines (SyntaxError with its
    caret); ``sys.exit(n)`` gives exit code ``n & 0xFF``. With ``links``, each input also appears in
    ``work_dir`` under its ``name``. Afterwards, on success or failure, the code's threads are ended
    (:func:`finish_threads`), open matplotlib figures are saved as ``figure_N.png`` in ``work_dir``
    and stdout/stderr are flushed.
    """
    # Exit functions of the zygote's own imports are not the code's: only those it registers run at its end.
    atexit._clear()
    if links:
        for note in link_inputs(files, work_dir):
            (sys.stderr or sys.__stderr__ or io.StringIO()).write(f"Note: {note}\n")
    namespace = _fresh_main(files, work_dir)
    _figures.configure_matplotlib()
    register_source(code)
    status = 0
    try:
        compiled = compile_user_code(code)
        if compiled is None:
            status = 1
        else:
            try:
                exec(compiled, namespace)
            finally:
                finish_threads()
    except SystemExit as exc:
        status = _exit_status(exc)
    except BaseException as exc:
        print_user_exception(exc)
        status = 1
    # Configure again: the code may have imported matplotlib itself (it is not always preloaded).
    _figures.configure_matplotlib()
    try:
        _figures.save_open_figures(work_dir)
    except Exception as exc:
        print_user_exception(exc)
    _flush()
    return status
