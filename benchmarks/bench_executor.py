"""Executor: the seed's cold subprocess vs a warm Jupyter kernel vs this executor (warm zygote + sandbox).

Tables: start-up time; per-call latency for print, a pandas groupby and a matplotlib chart; throughput
and latency at concurrency 1/4/16 with the event loop's worst stall; memory of the host, the zygote
and one child during a pandas job; a script that imports a missing package. Contenders run side by
side in the same run, interleaved per repetition. The kernel contender needs the optional extra
``jupyter_client`` on the host (``pip install jupyter_client ipykernel``); without it its rows say
"not installed". The runtime is ``CODE_INTERPRETER_TEST_RUNTIME`` or the repository's ``.sandbox-runtime``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from code_interpreter.executor import Executor
from code_interpreter.packages.generations import ensure_runtime
from code_interpreter.packages.runtime import Runtime
from code_interpreter.settings import Settings

from ._common import Table, summarize
from ._contenders import (
    JOBS,
    Batch,
    ColdProcess,
    Contender,
    ExecutorSessions,
    KernelSessions,
    batch,
    child_env,
)
from ._kernel import Kernel, KernelFactory, kernel_site, unavailable
from ._memory import memory_table
from ._missing import missing_package_table
from ._progress import step

REPO = Path(__file__).resolve().parent.parent
CONCURRENCY = (1, 4, 16)


async def run(quick: bool) -> list[Table]:
    """Start-up, latency, concurrency, memory and missing-package tables, all contenders side by side."""
    runtime_root = Path(os.environ.get("CODE_INTERPRETER_TEST_RUNTIME") or REPO / ".sandbox-runtime")
    base = Path(tempfile.mkdtemp(prefix="bench-executor-"))
    kernels: list[Kernel] = []
    executor: Executor | None = None
    try:
        settings = Settings(
            home=base / "home", runtime_dir=runtime_root, max_parallel=16, max_parallel_per_user=16
        )
        runtime = await ensure_runtime(settings)
        env = child_env(base / "child-home")
        cold = ColdProcess(runtime.python, base / "cold", env)
        missing = unavailable()
        factory = None
        if missing is None:
            try:
                site = await kernel_site(runtime.python, runtime.version)
                factory = KernelFactory(base / "jupyter", runtime.python, site, env)
            except RuntimeError as exc:  # no index reachable: the other contenders still run
                step(str(exc))
                missing = "ipykernel could not be installed for the runtime (see stderr)"

        executor = Executor(settings, runtime)
        step("starting the zygote")
        await executor.start()
        ours = ExecutorSessions(executor)
        tables = [await _start_table(settings, runtime, executor, cold, factory, kernels, missing, quick)]
        kernel = KernelSessions(kernels) if kernels else None
        tables.append(await _latency_table(cold, kernel, ours, missing, quick))
        step("memory of one pandas execution")
        tables.append(
            await memory_table(
                executor, runtime.python, base / "cold", env, kernels[0] if kernels else None, missing or ""
            )
        )
        if factory is not None:
            await _grow_kernels(factory, kernels, max(CONCURRENCY))
        tables.append(await _concurrency_table(cold, kernel, ours, missing, quick))
        tables.append(await missing_package_table(base, env, quick))
        return tables
    finally:
        for k in kernels:
            await k.stop()
        if executor is not None:
            await executor.close()
        shutil.rmtree(base, ignore_errors=True)


async def _start_table(
    settings: Settings,
    runtime: Runtime,
    executor: Executor,
    cold: ColdProcess,
    factory: KernelFactory | None,
    kernels: list[Kernel],
    missing: str | None,
    quick: bool,
) -> Table:
    """Zygote start vs kernel start (to ready, and with the zygote's preloads imported) vs a cold import."""
    reps = 2 if quick else 4
    imports = "import " + ", ".join(executor.status()["preloaded"] or ["numpy", "pandas", "matplotlib"])
    zygote: list[float] = []
    ready: list[float] = []
    loaded: list[float] = []
    cold_import: list[float] = []
    for rep in range(reps):
        step(f"start-up {rep + 1}/{reps}")
        other = Executor(
            Settings(home=settings.home.parent / f"start-{rep}", runtime_dir=settings.runtime_dir,
                     max_parallel=settings.max_parallel, max_parallel_per_user=settings.max_parallel),
            runtime,
        )  # fmt: skip
        t = time.perf_counter()
        await other.start()
        zygote.append(time.perf_counter() - t)
        await other.close()
        if factory is not None:
            kernel = factory.new()
            kernels.append(kernel)
            t = time.perf_counter()
            await kernel.start()
            ready.append(time.perf_counter() - t)
            await kernel.run(imports)
            loaded.append(time.perf_counter() - t)
        t = time.perf_counter()
        await cold.run(imports, 0)
        cold_import.append(time.perf_counter() - t)
    table = Table("Start-up (ms)", ["what", "n", "median", "p95"])
    rows: list[tuple[str, list[float] | None]] = [
        ("this executor: zygote start (preloads + sandbox self-test), ready to fork", zygote),
        ("jupyter kernel: start to ready (nothing imported)", ready if factory else None),
        (f"jupyter kernel: start + `{imports}`", loaded if factory else None),
        (f"cold subprocess: `{imports}` (paid on every seed call)", cold_import),
    ]
    for name, samples in rows:
        if samples is None:
            table.rows.append([name, 0, missing or "", ""])
        else:
            s = summarize(samples)
            table.rows.append([name, len(samples), s["median_ms"], s["p95_ms"]])
    table.notes.append(
        "The zygote forks children with everything preloaded; a kernel is started once per session and its "
        "imports are paid on first use. Each zygote start gets its own home (no shared state)."
    )
    return table


async def _warm(contenders: Sequence[Contender | None], code: str, slots: int = 1) -> None:
    for c in contenders:
        if c is not None:
            await asyncio.gather(*(c.run(code, s) for s in range(slots)))


INNER = "this executor, the job's code alone (timed in the child)"


async def _latency_table(
    cold: ColdProcess, kernel: KernelSessions | None, ours: ExecutorSessions, missing: str | None, quick: bool
) -> Table:
    """Sequential per-call latency, the three contenders interleaved call by call."""
    cold_n, warm_n = (3, 10) if quick else (10, 40)
    table = Table(
        "Per-call latency, one at a time (ms, end to end)",
        ["job", "contender", "n", "median", "p95", "ratio to this executor (median)"],
    )
    for name, code in JOBS.items():
        step(f"latency: {name}")
        await _warm([cold, kernel, ours], code)
        samples: dict[str, list[float]] = {cold.name: [], ours.name: [], KernelSessions.name: [], INNER: []}
        for i in range(warm_n):
            samples[INNER].append(await ours.inner(code))
            # the order rotates so no contender always runs right after another's cache-warming call
            order = [c for c in (cold, kernel, ours) if c is not None]
            order = order[i % len(order) :] + order[: i % len(order)]
            for c in order:
                if c is cold and i >= cold_n:
                    continue
                t = time.perf_counter()
                await c.run(code, 0)
                samples[c.name].append(time.perf_counter() - t)
        base = statistics.median(samples[ours.name])
        for cname in (cold.name, KernelSessions.name, ours.name, INNER):
            if not samples[cname]:
                table.rows.append([name, cname, 0, missing or "", "", ""])
                continue
            s = summarize(samples[cname])
            table.rows.append(
                [name, cname, len(samples[cname]), s["median_ms"], s["p95_ms"], s["median_ms"] / 1000 / base]
            )
    table.notes.append(
        f"cold: `python -c CODE` of the runtime venv per call (n={cold_n}). kernel: ipykernel on the same "
        "python (from `pip install --target` on its PYTHONPATH; jupyter_client on the host, the default "
        "TCP transport), already started and warmed: it keeps state between calls and isolates nothing. "
        f"executor: the strict sandbox with every layer, a fresh child per call (n={warm_n}). Same "
        "environment variables for all three. Calls interleaved, order rotating: while the others run, the "
        "zygote refills its pool of warm supervisors, so these are executor latencies with a ready pool "
        "(back-to-back bursts that drain it are in the scale tables). "
        f"{INNER}: the same code with a timer around it, read back from the child's output: what is left of "
        "the end-to-end time is the sandbox's (fork, isolation, output and file collection)."
    )
    return table


async def _grow_kernels(factory: KernelFactory, kernels: list[Kernel], n: int) -> None:
    """Start kernels until there are ``n`` (a few at a time) and warm each with every job."""
    step(f"starting {n - len(kernels)} more kernels for the concurrency runs")
    while len(kernels) < n:
        fresh = [factory.new() for _ in range(min(4, n - len(kernels)))]
        kernels.extend(fresh)
        await asyncio.gather(*(k.start() for k in fresh))
        for code in JOBS.values():
            await asyncio.gather(*(k.run(code) for k in fresh))


async def _concurrency_table(
    cold: ColdProcess, kernel: KernelSessions | None, ours: ExecutorSessions, missing: str | None, quick: bool
) -> Table:
    """``n`` executions submitted at once for n in 1/4/16: throughput, latency and loop stall."""
    table = Table(
        "Concurrency: n executions submitted at once",
        ["n", "job", "contender", "executions/s", "median ms", "p95 ms", "worst loop stall ms"],
    )
    reps, cold_reps = (1, 1) if quick else (3, 2)
    for n in CONCURRENCY:
        for name, code in JOBS.items():
            step(f"concurrency {n}: {name}")
            await _warm([ours], code, n)
            runs: dict[str, list[Batch]] = {cold.name: [], KernelSessions.name: [], ours.name: []}
            for rep in range(reps):
                order = [c for c in (cold, kernel, ours) if c is not None]
                order = order[rep % len(order) :] + order[: rep % len(order)]
                for c in order:
                    if c is cold and (rep >= cold_reps or (quick and n > 4)):
                        continue
                    runs[c.name].append(await batch(c, code, n))
            for cname, batches in runs.items():
                if not batches:
                    why = "skipped in --quick" if cname == cold.name else missing or ""
                    table.rows.append([n, name, cname, why, "", "", ""])
                    continue
                lat = summarize([x for b in batches for x in b.latencies_s])
                wall = statistics.median(b.wall_s for b in batches)
                stall = max(b.stall_ms for b in batches)
                table.rows.append([n, name, cname, n / wall, lat["median_ms"], lat["p95_ms"], stall])
    table.notes.append(
        f"Repetitions: {reps} (cold: {cold_reps}; none at n=16 with --quick), contender order rotating. "
        "executions/s = n / median wall time; latency = submit to result of each execution. The kernel "
        "contender uses one warm kernel per concurrent session (a kernel runs one cell at a time). The "
        "executor runs with max_parallel=16 here (the scale tables use the default). Stall: worst lateness "
        "of a 1 ms asyncio ticker (target < 20 ms)."
    )
    return table
