"""``preload`` (in the zygote), and what every cell needs at its end: threads finished, streams flushed,
inputs linked into the work dir (in the sandboxed child)."""

from __future__ import annotations

import atexit
import filecmp
import importlib
import importlib.util
import io
import os
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from . import _figures

__all__ = ["THREAD_GRACE_S", "finish_threads", "flush_streams", "link_inputs", "preload"]

#: At the end of a one-shot execution, non-daemon threads get this long to finish before they are stopped.
THREAD_GRACE_S = 5.0
SAME_FILE_MAX_BYTES = 64 * 2**20  # larger files of the upload's name are not compared: the note is said


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
            if not (os.path.islink(target) and os.readlink(target) == path) and not _same_file(target, path):
                notes.append(
                    f"the upload {name!r} is not in the working directory under that name (a file of that "
                    f"name exists there); open it with load_file({file_id!r}) or FILES[{file_id!r}]"
                )
        except OSError as exc:
            notes.append(
                f"the upload {name!r} could not be linked into the working directory ({exc.strerror})"
            )
    return notes


def _same_file(made: str, upload: str) -> bool:
    """Whether the file the code made under the upload's name holds the upload's bytes (a chart this
    session made, stored, then passed back as an input: the same file, nothing to say)."""
    try:
        if not os.path.isfile(made) or os.path.getsize(made) != os.path.getsize(upload):
            return False
        if os.path.getsize(made) > SAME_FILE_MAX_BYTES:
            return False
        return filecmp.cmp(made, upload, shallow=False)
    except OSError:
        return False


def flush_streams() -> None:
    """Flush every standard stream (output written before a kill still reaches the host)."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass
