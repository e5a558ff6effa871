"""Executor: the seed's cold subprocess vs a warm Jupyter kernel vs this plugin, through each of its paths.

Tables: start-up time; per-call latency for print, a pandas groupby on the user's uploaded CSV and a
matplotlib chart; throughput and latency at concurrency 1/4/16 with the event loop's worst stall;
memory of the host, the zygote and one execution during a pandas job; a script that imports a missing
package. This plugin is timed through ``Executor.execute`` (the sandbox alone), ``CodeInterpreter.execute``
(what a host calls) and ``ToolDispatcher.dispatch`` (a model's tool call), one zygote behind all three.
Before every measured batch each contender runs the job once on every session it will use (the same
warm-up for all, also with ``--quick``); contenders are interleaved, their order rotating. The kernel
contender needs the optional extra ``jupyter_client`` on the host (``pip install jupyter_client
ipykernel``); without it its rows say "not installed". The runtime is ``CODE_INTERPRETER_TEST_RUNTIME``
or the repository's ``.sandbox-runtime``; the file store is ``MONGODB_URI`` or an embedded SecantusDB.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from code_interpreter import CodeInterpreter
from code_interpreter.executor import Executor
from code_interpreter.packages.generations import ensure_runtime
from code_interpreter.packages.runtime import Runtime
from code_interpreter.settings import Settings

from ._common import Table, summarize
from ._contenders import (
    Absent,
    ColdProcess,
    Contender,
    ExecutorCalls,
    KernelSessions,
    child_env,
    csv_bytes,
    plugin_contenders,
)
from ._kernel import Kernel, KernelFactory, kernel_site, unavailable
from ._memory import memory_table
from ._missing import missing_package_table
from ._progress import step
from ._timing import concurrency_table, grow_kernels, latency_table

REPO = Path(__file__).resolve().parent.parent


async def run(quick: bool) -> list[Table]:
    """Start-up, latency, concurrency, memory and missing-package tables, all contenders side by side."""
    runtime_root = Path(os.environ.get("CODE_INTERPRETER_TEST_RUNTIME") or REPO / ".sandbox-runtime")
    base = Path(tempfile.mkdtemp(prefix="bench-executor-"))
    kernels: list[Kernel] = []
    interp: CodeInterpreter | None = None
    settings = Settings(
        home=base / "home", runtime_dir=runtime_root, max_parallel=16, max_parallel_per_user=16,
        mongodb_uri=os.environ.get("MONGODB_URI"), database=f"bench_executor_{uuid.uuid4().hex[:8]}",
        cleanup_interval_s=0,
    )  # fmt: skip
    try:
        runtime = await ensure_runtime(settings)
        env = child_env(base / "child-home")
        csv = base / "data" / "sales.csv"
        csv.parent.mkdir()
        csv.write_bytes(csv_bytes())
        csv.chmod(0o644)
        cold = ColdProcess(runtime.python, base / "cold", env, csv)
        missing = unavailable()
        factory = None
        if missing is None:
            try:
                site = await kernel_site(runtime.python, runtime.version)
                factory = KernelFactory(base / "jupyter", runtime.python, site, env)
            except RuntimeError as exc:  # no index reachable: the other contenders still run
                step(str(exc))
                missing = "ipykernel could not be installed for the runtime (see stderr)"

        step("starting the interpreter (file store and zygote)")
        interp = CodeInterpreter(settings)
        await interp.start()
        executor = await interp.executor()
        plugin = plugin_contenders(interp, executor, csv)
        ours = plugin[0]
        assert isinstance(ours, ExecutorCalls)
        headline = plugin[1]  # CodeInterpreter.execute: what a host calls; the ratios are to it
        tables = [await _start_table(settings, runtime, executor, cold, factory, kernels, missing, quick)]
        kernel: Contender | Absent = KernelSessions(kernels, csv)
        if not kernels:
            kernel = Absent(KernelSessions.name, KernelSessions.path, missing or "", KernelSessions.about)
        contenders = [cold, kernel, *plugin]
        tables.append(await latency_table(contenders, headline, ours, quick))
        step("memory of one pandas execution")
        tables.append(
            await memory_table(
                ours, runtime.python, base / "cold", env, csv, kernels[0] if kernels else None, missing or ""
            )
        )
        if factory is not None:
            await grow_kernels(factory, kernels)
        tables.append(await concurrency_table(contenders, quick))
        tables.append(await missing_package_table(base, env, quick))
        return tables
    finally:
        for k in kernels:
            await k.stop()
        if interp is not None:
            if settings.mongodb_uri:  # a server of the user's: leave nothing behind
                await interp.db.client.drop_database(settings.database)
            await interp.close()
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
        await cold.run_code(imports, 0)
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
