"""Load a package of the runtime side by file path under a private name; as a script, start the zygote.

The zygote runs in the sandbox runtime's interpreter, which does not have ``code_interpreter``
installed, so it cannot ``import code_interpreter.runtime``. This file is self-contained (stdlib only,
no relative imports)::

    <runtime python> -I .../runtime/_bootstrap.py <control fd>     # the zygote

loads ``runtime/`` as ``_ci_runtime`` (its modules import each other relatively, so they resolve
there) and runs ``_ci_runtime.zygote.main()``. :func:`load_package` also loads ``runtime/inside``
alone (the tests' miniature zygote does).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType

#: The private names the packages are registered under in ``sys.modules`` (never ``code_interpreter``).
RUNTIME_NAME = "_ci_runtime"
INSIDE_NAME = "_ci_inside"


def load_package(directory: str, name: str) -> ModuleType:
    """Import the package found in ``directory`` as ``name`` (idempotent: an existing one is returned)."""
    existing = sys.modules.get(name)
    if existing is not None:
        return existing
    directory = os.path.abspath(directory)
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(directory, "__init__.py"), submodule_search_locations=[directory]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the package in {directory}")
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


def load_inside_package(directory: str | None = None, name: str = INSIDE_NAME) -> ModuleType:
    """The ``inside`` package alone (default: the one beside this file)."""
    here = os.path.dirname(os.path.abspath(__file__))
    return load_package(directory or os.path.join(here, "inside"), name)


if __name__ == "__main__":
    load_package(os.path.dirname(os.path.abspath(__file__)), RUNTIME_NAME)
    zygote = importlib.import_module(RUNTIME_NAME + ".zygote")
    sys.exit(zygote.main())
