"""Runs inside the sandbox (the runtime venv's interpreter, loaded by file path): stdlib imports only.

File helpers, the cell runner, figure capture and file collection: the code that runs in the user's own
process. This package runs in the sandbox runtime's interpreter (the runtime venv), which does not have
``code_interpreter``'s dependencies. So: stdlib-only at import time, relative imports only, and
numpy/pandas/PIL/matplotlib imported lazily inside functions. The zygote loads it by file path under a
private name with the rest of ``runtime/`` (see ``runtime/_bootstrap.py``); the host may also import it
normally (``code_interpreter.runtime.inside``), e.g. to call ``collect_generated``.

Interface (the executor codes against it):

- ``preload(modules) -> list[str]``: in the zygote, once; Agg backend, imports the installed modules.
- ``CellRunner(work_dir, keep_state=...)``: the one cell runner (``run``, ``changed``, ``snapshot``,
  ``restore``, ``close``): a one-shot script (keep_state off) or a session's namespace (on). User code
  sees ``FILES``, ``load_file``, ``get_file_path``.
- ``run_user_code(code, files, work_dir) -> int``: one one-shot cell; exit code 0 ok, 1 error,
  ``n & 0xFF`` for ``sys.exit(n)``.
- ``collect_generated(work_dir, exclude, max_files, max_bytes) -> (files, notes)``.

Every submodule is imported here, eagerly: after ``pivot_root`` the child cannot read these files.
"""

from __future__ import annotations

from ._cells import CellRunner, run_user_code
from ._collect import collect_generated, file_type, guess_mime
from ._figures import MAX_AUTO_FIGURES, configure_matplotlib, save_open_figures
from ._loaders import PickleRefusedError, UnknownFileError, file_kind, make_file_helpers
from ._run import finish_threads, flush_streams, link_inputs, preload
from ._snapshot import FORMAT as SNAPSHOT_FORMAT
from ._tracebacks import USER_FILENAME

__all__ = [
    "MAX_AUTO_FIGURES",
    "SNAPSHOT_FORMAT",
    "USER_FILENAME",
    "CellRunner",
    "PickleRefusedError",
    "UnknownFileError",
    "collect_generated",
    "configure_matplotlib",
    "file_kind",
    "file_type",
    "finish_threads",
    "flush_streams",
    "guess_mime",
    "link_inputs",
    "make_file_helpers",
    "preload",
    "run_user_code",
    "save_open_figures",
]
