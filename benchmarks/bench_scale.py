"""Scale: executions per second at saturation, and how latency grows with the number queued at once.

Saturation: a burst of executions (200 ``print``, 100 pandas) submitted at once to executors with
max_parallel 2 and 4, each execution for its own user so the per-user cap never binds; the same with
isolation='none' as a reference for what the sandbox costs. Queue depth:
1, 4, 16 and 64 submitted at once to an executor with the default max_parallel (one per core, at
least 2); the latency of each is the time from its submission to its result. The pandas job reads a
100,000-row CSV given to the executor as a read-only input file, as in the executor tables. The runtime is
``CODE_INTERPRETER_TEST_RUNTIME`` or the repository's ``.sandbox-runtime``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
from pathlib import Path

from code_interpreter.executor import Executor
from code_interpreter.packages.generations import ensure_runtime
from code_interpreter.settings import Isolation, Settings

from ._common import Table, summarize
from ._contenders import JOB, Batch, ExecutorCalls, batch, csv_bytes
from ._progress import step

REPO = Path(__file__).resolve().parent.parent
# (max_parallel, isolation); isolation "none" (a plain fork, no sandbox) shows what the sandbox costs
SATURATION: tuple[tuple[int, Isolation], ...] = ((2, "strict"), (4, "strict"), (2, "none"))
DEPTHS = (1, 4, 16, 64)
SCALE_JOBS = ("print('hi')", "pandas groupby")


async def run(quick: bool) -> list[Table]:
    """Saturation throughput per max_parallel, and latency percentiles per queue depth."""
    runtime_root = Path(os.environ.get("CODE_INTERPRETER_TEST_RUNTIME") or REPO / ".sandbox-runtime")
    base = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    executors: dict[tuple[int, str], Executor] = {}
    try:
        default = Settings(home=base / "default", runtime_dir=runtime_root)
        runtime = await ensure_runtime(default)
        configs: list[tuple[int, Isolation]] = sorted({*SATURATION, (default.max_parallel, "strict")})
        for mp, isolation in configs:
            settings = Settings(
                home=base / f"{isolation}-{mp}",
                runtime_dir=runtime_root,
                max_parallel=mp,
                isolation=isolation,
            )
            executors[(mp, isolation)] = Executor(settings, runtime)
            step(f"starting a zygote with max_parallel={mp}, isolation={isolation}")
            await executors[(mp, isolation)].start()
        csv = base / "sales.csv"
        csv.write_bytes(csv_bytes())
        csv.chmod(0o644)
        sessions = {key: ExecutorCalls(ex, csv) for key, ex in executors.items()}
        return [
            await _saturation(sessions, quick),
            await _depths(sessions[(default.max_parallel, "strict")], default.max_parallel, quick),
        ]
    finally:
        for ex in executors.values():
            await ex.close()
        shutil.rmtree(base, ignore_errors=True)


async def _saturation(sessions: dict[tuple[int, str], ExecutorCalls], quick: bool) -> Table:
    sizes = {"print('hi')": 50 if quick else 200, "pandas groupby": 20 if quick else 100}
    reps = 1 if quick else 2
    runs: dict[tuple[int, str, str], list[Batch]] = {}
    for rep in range(reps):
        # the configurations alternate within each repetition, so all see the same machine load
        for name in SCALE_JOBS:
            for mp, isolation in SATURATION if rep % 2 == 0 else SATURATION[::-1]:
                step(f"saturation {rep + 1}/{reps}: {sizes[name]} x {name}, max_parallel={mp}, {isolation}")
                s = sessions[(mp, isolation)]
                await batch(s, JOB[name], 2 * mp)  # warm the pool of supervisors
                runs.setdefault((mp, isolation, name), []).append(await batch(s, JOB[name], sizes[name]))
    table = Table(
        f"Saturation: a burst submitted at once ({os.cpu_count()} cores)",
        ["max_parallel", "isolation", "job", "burst", "executions/s", "median ms", "p95 ms",
         "worst loop stall ms"],
    )  # fmt: skip
    for (mp, mode, name), batches in runs.items():
        wall = statistics.median(b.wall_s for b in batches)
        lat = summarize([x for b in batches for x in b.latencies_s])
        stall = max(b.stall_ms for b in batches)
        label = mode if mode == "strict" else f"{mode} (no sandbox: reference only)"
        table.rows.append(
            [mp, label, name, sizes[name], sizes[name] / wall, lat["median_ms"], lat["p95_ms"], stall]
        )
    table.rows.sort(key=lambda r: (r[1] != "strict", r[0], SCALE_JOBS.index(r[2])))
    table.notes.append(
        f"{reps} repetition(s) of each burst; executions/s = burst / median wall time; latency = submit to "
        "result (queueing included). Every execution is its own user, so only max_parallel limits. "
        "isolation='none' forks the same warm zygote without namespaces, mounts, cgroups, uid drop or "
        "seccomp: the gap to 'strict' is the price of the sandbox at saturation."
    )
    return table


async def _depths(sessions: ExecutorCalls, max_parallel: int, quick: bool) -> Table:
    table = Table(
        f"Latency vs queue depth (max_parallel={max_parallel}, the default here)",
        ["job", "submitted at once", "samples", "median ms", "p95 ms", "median / depth-1 median",
         "executions/s", "worst loop stall ms"],
    )  # fmt: skip
    target = 10 if quick else 40  # samples per depth, at least one whole batch
    for name in SCALE_JOBS:
        job = JOB[name]
        await batch(sessions, job, 2 * max_parallel)
        one_median = 0.0
        for depth in DEPTHS:
            step(f"queue depth {depth}: {name}")
            batches = [await batch(sessions, job, depth) for _ in range(max(1, target // depth))]
            lat = summarize([x for b in batches for x in b.latencies_s])
            if depth == 1:
                one_median = lat["median_ms"]
            wall = statistics.median(b.wall_s for b in batches)
            table.rows.append([
                name, depth, int(lat["n"]), lat["median_ms"], lat["p95_ms"], lat["median_ms"] / one_median,
                depth / wall, max(b.stall_ms for b in batches),
            ])  # fmt: skip
    table.notes.append(
        "Each depth: batches of that many executions submitted at once, repeated until about "
        f"{target} samples. With max_parallel slots, a batch of d queues d / max_parallel deep: the median "
        "should grow about linearly once d exceeds max_parallel, the throughput stay flat."
    )
    return table
