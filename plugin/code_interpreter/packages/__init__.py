"""Packages: the sandbox runtime venv, approval of names, the import scan, and installs before code runs.

- :mod:`.manager` — :class:`PackageManager`, what the interpreter calls before each execution;
- :mod:`.approval` — strict PEP 508 names checked against the approved list;
- :mod:`.imports` — which top-level modules a piece of code imports (a quick pass, then the AST);
- :mod:`.pip` — installs with the host's pip into the runtime, wheels only;
- :mod:`.runtime` / :mod:`.generations` — where the runtime venv is, and building, swapping and
  retiring its generations; :mod:`.record` — which packages were installed on demand and when used;
- :mod:`.locks`, :mod:`.procs`, :mod:`.fsutil` — the locks, subprocesses and file helpers they share.
"""

from __future__ import annotations

from .fsutil import ProgressCallback
from .manager import ImportScan, PackageManager, PrepareResult, SwapHook
from .runtime import Runtime

__all__ = ["ImportScan", "PackageManager", "PrepareResult", "ProgressCallback", "Runtime", "SwapHook"]
