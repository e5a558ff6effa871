"""Load the inside package by file path under a private name (used by the zygote and the tests).

The zygote runs in the sandbox runtime interpreter, which does not have ``code_interpreter``
installed, so it cannot ``import code_interpreter.inside``. This file is self-contained (stdlib
only, no relative imports) so the zygote can load it first and let it load the package::

    import importlib.util
    spec = importlib.util.spec_from_file_location("_ci_inside_bootstrap", inside_dir + "/_bootstrap.py")
    boot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(boot)
    rt = boot.load_inside_package(inside_dir)   # rt.preload, rt.run_user_code, rt.collect_generated

or, shorter: ``rt = runpy.run_path(inside_dir + "/_bootstrap.py")["load_inside_package"](inside_dir)``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType

#: The private name the package is registered under in ``sys.modules`` (never ``code_interpreter``).
DEFAULT_NAME = "_ci_inside"


def load_inside_package(directory: str | None = None, name: str = DEFAULT_NAME) -> ModuleType:
    """Import the runtime package found in ``directory`` (default: this file's folder) as ``name``.

    Idempotent: a package already registered under ``name`` is returned as is. All submodules are
    imported eagerly by the package's ``__init__``, so a forked, sandboxed child never has to read
    the package's files again.
    """
    existing = sys.modules.get(name)
    if existing is not None:
        return existing
    directory = os.path.abspath(directory or os.path.dirname(os.path.abspath(__file__)))
    init = os.path.join(directory, "__init__.py")
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[directory])
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the code_interpreter inside package from {directory}")
    module = importlib.util.module_from_spec(spec)
    # Registered before executing so the package's relative imports resolve against it.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]
        raise
    return module
