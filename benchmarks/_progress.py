"""Progress lines on stderr for long benchmark steps (the tables go to stdout)."""

from __future__ import annotations

import sys
import time

_T0 = time.perf_counter()


def step(message: str) -> None:
    """Print one timestamped progress line to stderr."""
    print(f"[{time.perf_counter() - _T0:7.1f} s] {message}", file=sys.stderr, flush=True)
