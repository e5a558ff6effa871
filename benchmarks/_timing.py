"""The executor area's timed tables: per-call latency and concurrency, every contender warmed alike.

Before every measured batch each contender runs the job once on every session the batch will use
(:func:`~benchmarks._contenders.warm`): the kernels meet pandas and matplotlib before timing as the
zygote does, the plugin's users have their CSV uploaded and cached, also under ``--quick``. Within a
batch the contenders' order rotates, so none always runs right after another's cache-warming call.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence

from ._common import Table, summarize
from ._contenders import JOBS, Absent, Batch, Contender, ExecutorCalls, batch, warm
from ._kernel import Kernel, KernelFactory
from ._progress import step

CONCURRENCY = (1, 4, 16)
INNER = "the job's code alone, timed in the child"


def _rotate(items: Sequence[Contender], i: int) -> list[Contender]:
    return [*items[i % len(items) :], *items[: i % len(items)]] if items else []


def _legend(contenders: Sequence[Contender | Absent]) -> str:
    return "Paths: " + "; ".join(f"{c.path}: {c.about}" for c in contenders if c.about) + "."


async def latency_table(
    contenders: Sequence[Contender | Absent], headline: Contender, ours: ExecutorCalls, quick: bool
) -> Table:
    """Sequential per-call latency, the contenders interleaved call by call, ratios to ``headline``."""
    cold_n, warm_n = (3, 10) if quick else (10, 40)
    present = [c for c in contenders if not isinstance(c, Absent)]
    table = Table(
        "Per-call latency, one at a time (ms, end to end)",
        ["job", "contender", "path timed", "n", "median", "p95", f"ratio to {headline.path} (median)"],
    )
    for job in JOBS:
        step(f"latency: {job.name}")
        await warm(present, job, 1)
        samples: dict[int, list[float]] = {id(c): [] for c in present}
        inner: list[float] = []
        for i in range(warm_n):
            inner.append(await ours.inner(job))
            for c in _rotate(present, i):
                if c.expensive and i >= cold_n:
                    continue
                t = time.perf_counter()
                await c.run(job, 0)
                samples[id(c)].append(time.perf_counter() - t)
                await c.tidy()
        base = statistics.median(samples[id(headline)])
        for entry in contenders:
            if isinstance(entry, Absent):
                table.rows.append([job.name, entry.name, entry.path, 0, entry.why, "", ""])
                continue
            rows = [(entry.path, samples[id(entry)])]
            if entry is ours:
                rows.append((INNER, inner))
            for path, got in rows:
                s = summarize(got)
                ratio = s["median_ms"] / 1000 / base
                table.rows.append([job.name, entry.name, path, len(got), s["median_ms"], s["p95_ms"], ratio])
    table.notes.append(
        f"n: {cold_n} for the cold subprocess, {warm_n} for the others. Before each job every contender ran "
        "it once, untimed; then calls interleaved, order rotating: while the others run, the zygote "
        "refills its pool of warm supervisors, so these are latencies with a ready pool (back-to-back "
        "bursts that drain it are in the scale tables). Same environment variables for all. "
        "The pandas job reads a 100,000-row CSV (1.1 MB): the user's uploaded file for the plugin's full "
        "paths, a local file elsewhere. The chart's PNG is stored in GridFS by the full paths only. "
        f"{INNER}: the same code with a timer around it, read back from the child's output: what is left "
        "of Executor.execute is the sandbox's (fork, isolation, output and file collection)."
    )
    table.notes.append(_legend(contenders))
    return table


async def grow_kernels(factory: KernelFactory, kernels: list[Kernel]) -> None:
    """Start kernels until there are as many as the largest concurrency level (a few at a time)."""
    n = max(CONCURRENCY)
    step(f"starting {n - len(kernels)} more kernels for the concurrency runs")
    while len(kernels) < n:
        fresh = [factory.new() for _ in range(min(4, n - len(kernels)))]
        kernels.extend(fresh)
        await asyncio.gather(*(k.start() for k in fresh))


async def concurrency_table(contenders: Sequence[Contender | Absent], quick: bool) -> Table:
    """``n`` executions submitted at once for n in 1/4/16: throughput, latency and loop stall."""
    table = Table(
        "Concurrency: n executions submitted at once",
        ["n", "job", "contender", "path timed", "executions/s", "median ms", "p95 ms", "worst loop stall ms"],
    )
    reps, cold_reps = (1, 1) if quick else (3, 2)
    present = [c for c in contenders if not isinstance(c, Absent)]
    for n in CONCURRENCY:
        for job in JOBS:
            measured = [c for c in present if not (c.expensive and quick and n > 4)]
            step(f"concurrency {n}: {job.name} (warming every contender on {n} sessions)")
            await warm(measured, job, n)
            runs: dict[int, list[Batch]] = {id(c): [] for c in measured}
            for rep in range(reps):
                for c in _rotate(measured, rep):
                    if c.expensive and rep >= cold_reps:
                        continue
                    runs[id(c)].append(await batch(c, job, n))
            for entry in contenders:
                batches = [] if isinstance(entry, Absent) else runs.get(id(entry), [])
                label = [n, job.name, entry.name, entry.path]
                if not batches:
                    why = entry.why if isinstance(entry, Absent) else "skipped in --quick"
                    table.rows.append([*label, why, "", "", ""])
                    continue
                lat = summarize([x for b in batches for x in b.latencies_s])
                wall = statistics.median(b.wall_s for b in batches)
                stall = max(b.stall_ms for b in batches)
                table.rows.append([*label, n / wall, lat["median_ms"], lat["p95_ms"], stall])
    table.notes.append(
        f"Repetitions: {reps} (cold: {cold_reps}; none at n=16 with --quick), contender order rotating. "
        "Before each level and job, every measured contender ran the job once on each of its n sessions, "
        "untimed. executions/s = n / median wall time; latency = submit to result of each execution. The "
        "kernel contender uses one warm kernel per concurrent session (a kernel runs one cell at a time); "
        "the plugin's paths one user per session, with max_parallel=16 here (the scale tables use the "
        "default). Stall: worst lateness of a 1 ms asyncio ticker (target < 20 ms); the full paths run "
        "their file store calls on the same event loop."
    )
    table.notes.append(_legend(contenders))
    return table
