"""The execution contenders, side by side: the seed's cold subprocess, a warm Jupyter kernel, this executor.

Each contender runs one piece of code for a numbered *slot* (a concurrent session): the executor uses
a user id per slot, the kernel contender one kernel per slot (a kernel runs one cell at a time and
keeps state, so concurrent sessions need one kernel each), the cold contender a working dir per slot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from code_interpreter.executor import Executor

from ._kernel import Kernel

JOBS = {
    "print('hi')": "print('hi')",
    "pandas groupby": (
        "import pandas as pd, numpy as np\n"
        "df = pd.DataFrame({'k': np.arange(100_000) % 10, 'v': np.arange(100_000)})\n"
        "print(df.groupby('k').v.sum().head(3))"
    ),
    # plt.close(): a kernel keeps its figures between cells (each call would draw on the last one's axes)
    # and the executor would otherwise also capture the open figure; closed, all three do the same work.
    "matplotlib chart": (
        "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
        "plt.plot(range(100), [x * x for x in range(100)])\nplt.title('chart')\nplt.savefig('chart.png')\n"
        "plt.close('all')"
    ),
}


def child_env(home: Path) -> dict[str, str]:
    """The environment the zygote gives its children; the cold process and the kernel get the same."""
    (home / "mpl").mkdir(parents=True, exist_ok=True)
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(home),
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": str(home / "mpl"),
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


class Contender(Protocol):
    """Something that runs code for a session slot and raises when the code fails."""

    name: str

    async def run(self, code: str, slot: int) -> None:
        """Run ``code`` to completion for session ``slot``."""


class ColdProcess:
    """The seed's way: a fresh ``python -c CODE`` of the runtime venv per call."""

    name = "cold subprocess (seed)"

    def __init__(self, python: Path, work: Path, env: dict[str, str]) -> None:
        self.python = python
        self.work = work
        self.env = env

    async def run(self, code: str, slot: int) -> None:
        """One interpreter start, the code, exit."""
        cwd = self.work / f"slot-{slot}"
        cwd.mkdir(parents=True, exist_ok=True)
        proc = await asyncio.create_subprocess_exec(
            str(self.python), "-c", code, cwd=cwd, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"cold run failed ({proc.returncode}): {err.decode()[-500:]}")


class KernelSessions:
    """A warm Jupyter kernel per slot (started beforehand, like the zygote)."""

    name = "jupyter kernel (warm)"

    def __init__(self, kernels: Sequence[Kernel]) -> None:
        self.kernels = kernels  # not a copy: more kernels are started for the concurrency runs

    async def run(self, code: str, slot: int) -> None:
        """One cell on the slot's kernel."""
        await self.kernels[slot].run(code)


class ExecutorSessions:
    """This executor: a fork of the warm zygote per call, with every sandbox layer."""

    name = "this executor"

    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    async def run(self, code: str, slot: int) -> None:
        """One sandboxed execution for user ``u<slot>``."""
        r = await self.executor.execute(code, user_id=f"u{slot}", timeout=300)
        if not r.success:
            raise RuntimeError(f"executor run failed: {r.error}")

    async def inner(self, code: str) -> float:
        """Seconds the job's own code takes, timed inside the sandboxed child (the rest is the sandbox's)."""
        timed = f"import time as _t\n_t0 = _t.perf_counter()\n{code}\nprint('\\n', _t.perf_counter() - _t0)"
        r = await self.executor.execute(timed, user_id="u0", timeout=300)
        if not r.success:
            raise RuntimeError(f"executor run failed: {r.error}")
        return float(r.output.split()[-1])


@dataclass(frozen=True, slots=True)
class Batch:
    """``n`` executions submitted at once: their wall time, each one's latency, the loop's worst stall."""

    wall_s: float
    latencies_s: tuple[float, ...]
    stall_ms: float


async def batch(contender: Contender, code: str, n: int) -> Batch:
    """Submit ``n`` runs at once (slots 0..n-1) while a 1 ms ticker measures event-loop stalls."""
    worst = 0.0
    stop = False

    async def ticker() -> None:
        nonlocal worst
        while not stop:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, (time.perf_counter() - t - 0.001) * 1000)

    async def one(slot: int, t0: float) -> float:
        await contender.run(code, slot)
        return time.perf_counter() - t0

    task = asyncio.create_task(ticker())
    t0 = time.perf_counter()
    try:
        latencies = await asyncio.gather(*(one(i, t0) for i in range(n)))
        wall = time.perf_counter() - t0
    finally:
        stop = True
        await task
    return Batch(wall, tuple(latencies), worst)
