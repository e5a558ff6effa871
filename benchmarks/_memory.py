"""Memory of the host, the zygote and one sandboxed child during a pandas job, beside the other contenders."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from code_interpreter.executor import Executor

from ._common import Table
from ._contenders import JOBS
from ._kernel import Kernel
from ._procmem import Mem, children, is_sleeping, read_mem

SLEEP_S = 3.0
CODE = JOBS["pandas groupby"] + f"\nimport time\nprint('ready', flush=True)\ntime.sleep({SLEEP_S})\n"


async def _executor_child(ex: Executor) -> tuple[Mem | None, Mem | None, list[Mem]]:
    """(child, its supervisor, every process of the zygote's tree) read while the child sleeps."""
    task = asyncio.create_task(ex.execute(CODE, user_id="mem", timeout=60))
    zygote = ex.status()["zygote_pid"]
    found: tuple[Mem | None, Mem | None, list[Mem]] | None = None
    deadline = time.monotonic() + 30
    while found is None and not task.done() and time.monotonic() < deadline:
        for sup in children(zygote):
            for child in children(sup):
                if is_sleeping(child):
                    tree = [zygote, *(p for s in children(zygote) for p in (s, *children(s)))]
                    found = (read_mem(child), read_mem(sup), [m for m in map(read_mem, tree) if m])
        await asyncio.sleep(0.02)
    r = await task
    if not r.success:
        raise RuntimeError(f"memory probe execution failed: {r.error}")
    if found is None:
        raise RuntimeError("no sandboxed child was seen sleeping under the zygote")
    return found


async def _cold(python: Path, cwd: Path, env: dict[str, str]) -> Mem | None:
    proc = await asyncio.create_subprocess_exec(
        str(python), "-c", CODE, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    await proc.stdout.readline()  # 'ready': pandas imported, the job done, now sleeping
    mem = read_mem(proc.pid)
    await proc.communicate()
    return mem


def _row(name: str, mem: Mem | None, note: str = "") -> list[object]:
    if mem is None:
        return [name, "gone", "", "", "", note]
    return [name, mem.rss, mem.pss, mem.uss, mem.peak_rss, note]


async def memory_table(
    ex: Executor, python: Path, cwd: Path, env: dict[str, str], kernel: Kernel | None, kernel_missing: str
) -> Table:
    """One table: RSS/PSS/USS/peak of each process involved in one pandas execution."""
    table = Table(
        "Memory during one pandas execution (MB)",
        ["process", "RSS", "PSS", "USS (private)", "peak RSS", "note"],
    )
    child, sup, tree = await _executor_child(ex)
    table.rows.append(
        _row("host (this benchmark process)", read_mem(os.getpid()), "Executor + jupyter_client if installed")
    )
    zygote = ex.status()["zygote_pid"]
    table.rows.append(_row("zygote", read_mem(zygote), "numpy, pandas, matplotlib preloaded"))
    table.rows.append(_row("supervisor of the execution", sup, "root, never runs user code"))
    table.rows.append(_row("sandboxed child (pandas job)", child, "forked: shares the zygote's pages"))
    pairs = (len(tree) - 1) // 2
    table.rows.append(
        ["zygote tree, total", "", sum(m.pss for m in tree), sum(m.uss for m in tree), "",
         f"sums over {len(tree)} processes: the zygote, {pairs} supervisor+child pairs (warm pool + running)"]
    )  # fmt: skip
    table.rows.append(
        _row("cold subprocess (seed), same job", await _cold(python, cwd, env), "imports everything itself")
    )
    if kernel is not None:
        await kernel.run(JOBS["pandas groupby"])
        table.rows.append(
            _row("jupyter kernel after the same job", read_mem(kernel.pid or -1), "keeps its state")
        )
    else:
        table.rows.append(["jupyter kernel", kernel_missing, "", "", "", ""])
    table.notes.append(
        "From /proc/<pid>/smaps_rollup and status (VmHWM = peak RSS). PSS splits shared pages among the "
        "processes mapping them; USS is what the process alone holds, i.e. what one more execution costs. "
        f"The child is found as the zygote's grandchild blocked in time.sleep({SLEEP_S:g}) after the job."
    )
    return table
