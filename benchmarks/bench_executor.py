"""Executor: cold interpreter per call (the seed's way) vs the warm zygote + full sandbox.

Figures: median and p95 end to end for print('hi'), a pandas groupby and a matplotlib chart, the
ratio cold/warm, throughput at concurrency 1/4/16, and the event loop's worst stall (a 1 ms ticker's
lateness) while 16 executions run at once. The runtime is ``CODE_INTERPRETER_TEST_RUNTIME`` or the
repository's ``.sandbox-runtime`` (built on first use).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

from code_interpreter.executor import Executor
from code_interpreter.runtime_env import ensure_runtime
from code_interpreter.settings import Settings

from ._common import Table, summarize

REPO = Path(__file__).resolve().parent.parent

JOBS = {
    "print('hi')": "print('hi')",
    "pandas groupby": (
        "import pandas as pd, numpy as np\n"
        "df = pd.DataFrame({'k': np.arange(100_000) % 10, 'v': np.arange(100_000)})\n"
        "print(df.groupby('k').v.sum().head(3))"
    ),
    "matplotlib chart": (
        "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
        "plt.plot(range(100), [x * x for x in range(100)])\nplt.title('chart')\nplt.savefig('chart.png')"
    ),
}


async def _cold(python: Path, code: str, work: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(python), "-c", code, cwd=work, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(err.decode())


async def _stall_during(ex: Executor, code: str, n: int) -> tuple[float, float]:
    """Worst lateness (ms) of a 1 ms ticker while ``n`` executions run; and their wall time (s)."""
    worst = 0.0
    stop = False

    async def ticker() -> None:
        nonlocal worst
        while not stop:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, (time.perf_counter() - t - 0.001) * 1000)

    task = asyncio.create_task(ticker())
    t0 = time.perf_counter()
    results = await asyncio.gather(*(ex.execute(code, user_id=f"u{i}", timeout=60) for i in range(n)))
    wall = time.perf_counter() - t0
    stop = True
    await task
    assert all(r.success for r in results), [r.error for r in results if not r.success]
    return worst, wall


async def run(quick: bool) -> list[Table]:
    """Side-by-side latency, throughput and event-loop stall."""
    runtime_root = Path(os.environ.get("CODE_INTERPRETER_TEST_RUNTIME") or REPO / ".sandbox-runtime")
    home = Path(tempfile.mkdtemp(prefix="bench-executor-"))
    settings = Settings(home=home, runtime_dir=runtime_root, max_parallel=16, max_parallel_per_user=16)
    runtime = await ensure_runtime(settings)
    ex = Executor(settings, runtime)
    await ex.start()
    cold_n, warm_n = (3, 10) if quick else (10, 40)
    latency = Table(
        "Executor latency: cold interpreter per call vs warm zygote + sandbox (ms, end to end)",
        ["job", "cold median", "cold p95", "executor median", "executor p95", "speed-up (median)"],
    )
    try:
        work = home / "cold"
        work.mkdir()
        for name, code in JOBS.items():
            cold, warm = [], []
            await _cold(runtime.python, code, work)
            await ex.execute(code, user_id="bench", timeout=60)
            # Interleaved, so both see the same machine load.
            for i in range(max(cold_n, warm_n)):
                if i < cold_n:
                    t = time.perf_counter()
                    await _cold(runtime.python, code, work)
                    cold.append(time.perf_counter() - t)
                if i < warm_n:
                    t = time.perf_counter()
                    r = await ex.execute(code, user_id="bench", timeout=60)
                    warm.append(time.perf_counter() - t)
                    assert r.success, r.error
            c, w = summarize(cold), summarize(warm)
            latency.rows.append(
                [
                    name,
                    c["median_ms"],
                    c["p95_ms"],
                    w["median_ms"],
                    w["p95_ms"],
                    c["median_ms"] / w["median_ms"],
                ]
            )
        latency.notes.append(
            f"cold: `{runtime.python} -c CODE` per call (n={cold_n}); executor: strict sandbox, every layer "
            f"(n={warm_n}, sequential, back to back)."
        )
        conc = Table(
            "Executor throughput and event-loop stall",
            ["concurrency", "job", "executions/s", "wall (s)", "worst loop stall (ms)"],
        )
        for n in (1, 4, 16):
            for name in ("print('hi')", "pandas groupby"):
                reps = 1 if quick else 3
                best: tuple[float, float] | None = None
                for _ in range(reps):
                    stall, wall = await _stall_during(ex, JOBS[name], n)
                    best = (stall, wall) if best is None or wall < best[1] else best
                assert best is not None
                conc.rows.append([n, name, n / best[1], best[1], best[0]])
        conc.notes.append(
            "Stall: lateness of a 1 ms asyncio ticker while the executions run (target < 20 ms)."
        )
        return [latency, conc]
    finally:
        await ex.close()
