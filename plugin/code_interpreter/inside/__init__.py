"""Runs inside the sandbox (the runtime venv's interpreter, loaded by file path): stdlib imports only.

File helpers, the user-code runner, figure capture and file collection. This package runs in the
sandbox runtime's interpreter (the runtime venv), which does not have
``code_interpreter``'s dependencies. So: stdlib-only at import time, relative imports only, and
numpy/pandas/PIL/matplotlib imported lazily inside functions. The zygote loads it by file path under
a private name (see ``_bootstrap.load_inside_package``); the host may also import it normally
(``code_interpreter.inside``), e.g. to call ``collect_generated``.

Interface (the executor codes against it):

- ``preload(modules) -> list[str]``: in the zygote, once; Agg backend, imports the installed modules.
- ``run_user_code(code, files, work_dir) -> int``: in the sandboxed child; exit code 0 ok, 1 error,
  ``n & 0xFF`` for ``sys.exit(n)``. User code sees ``FILES``, ``load_file``, ``get_file_path``.
- ``collect_generated(work_dir, exclude, max_files, max_bytes) -> (files, notes)``.
- ``Session(work_dir)``: a live session's namespace (``run_cell``, ``changed``, ``snapshot``, ``restore``).

Every submodule is imported here, eagerly: after ``pivot_root`` the child cannot read these files.
"""

from __future__ import annotations

from ._bootstrap import load_inside_package
from ._collect import collect_generated, file_type, guess_mime
from ._figures import MAX_AUTO_FIGURES, configure_matplotlib, save_open_figures
from ._loaders import PickleRefusedError, UnknownFileError, file_kind, make_file_helpers
from ._run import finish_threads, link_inputs, preload, run_user_code
from ._session import Session
from ._snapshot import FORMAT as SNAPSHOT_FORMAT
from ._tracebacks import USER_FILENAME

__all__ = [
    "MAX_AUTO_FIGURES",
    "SNAPSHOT_FORMAT",
    "USER_FILENAME",
    "PickleRefusedError",
    "Session",
    "UnknownFileError",
    "collect_generated",
    "configure_matplotlib",
    "file_kind",
    "file_type",
    "finish_threads",
    "guess_mime",
    "link_inputs",
    "load_inside_package",
    "make_file_helpers",
    "preload",
    "run_user_code",
    "save_open_figures",
]
