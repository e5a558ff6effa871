"""Memory of the host, the zygote and one execution (its supervisor and its sandboxed child) during a
pandas job, beside the other contenders."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from ._common import Table
from ._contenders import JOB, LOCAL_CSV_ID, ExecutorCalls
from ._kernel import Kernel
from ._procmem import Mem, descendants, is_sleeping, parent, read_mem

SLEEP_S = 3.0
_SLEEP = f"\nimport time\nprint('ready', flush=True)\ntime.sleep({SLEEP_S})\n"
JOB_CODE = JOB["pandas groupby"]


async def _executor_child(ours: ExecutorCalls) -> tuple[Mem | None, Mem | None, list[Mem]]:
    """(child, its supervisor, every process of the zygote's tree) read while the child sleeps.

    The child is the zygote's descendant blocked in ``time.sleep`` after the job; its supervisor is
    its parent, whatever the depth of the tree.
    """
    ex = ours.executor
    code = JOB_CODE.code(f"FILES[{LOCAL_CSV_ID!r}]") + _SLEEP
    task = asyncio.create_task(ex.execute(code, user_id="mem", files=[ours.csv], timeout=60))
    zygote = ex.status()["zygote_pid"]
    found: tuple[Mem | None, Mem | None, list[Mem]] | None = None
    deadline = time.monotonic() + 30
    while found is None and not task.done() and time.monotonic() < deadline:
        tree = [zygote, *descendants(zygote)]
        for child in tree[1:]:
            if is_sleeping(child):
                sup = parent(child)
                sup_mem = read_mem(sup) if sup is not None and sup != zygote else None
                found = (read_mem(child), sup_mem, [m for m in map(read_mem, tree) if m])
                break
        await asyncio.sleep(0.02)
    r = await task
    if not r.success:
        raise RuntimeError(f"memory probe execution failed: {r.error}")
    if found is None:
        raise RuntimeError("no sandboxed child was seen sleeping under the zygote")
    return found


async def _cold(python: Path, cwd: Path, env: dict[str, str], csv: Path) -> Mem | None:
    code = JOB_CODE.code(repr(str(csv))) + _SLEEP
    proc = await asyncio.create_subprocess_exec(
        str(python), "-c", code, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE
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
    ours: ExecutorCalls,
    python: Path,
    cwd: Path,
    env: dict[str, str],
    csv: Path,
    kernel: Kernel | None,
    kernel_missing: str,
) -> Table:
    """One table: RSS/PSS/USS/peak of each process involved in one pandas execution."""
    table = Table(
        "Memory during one pandas execution (MB)",
        ["process", "RSS", "PSS", "USS (private)", "peak RSS", "note"],
    )
    child, sup, tree = await _executor_child(ours)
    table.rows.append(
        _row("host (this benchmark process)", read_mem(os.getpid()), "CodeInterpreter, jupyter_client")
    )
    zygote = ours.executor.status()["zygote_pid"]
    table.rows.append(_row("zygote", read_mem(zygote), "numpy, pandas, matplotlib preloaded"))
    table.rows.append(_row("supervisor of the execution", sup, "the child's parent; never runs user code"))
    table.rows.append(_row("sandboxed child (pandas job)", child, "forked: shares the zygote's pages"))
    if child is not None and sup is not None:
        table.rows.append(
            ["one execution: supervisor + child", "", sup.pss + child.pss, sup.uss + child.uss, "",
             "what one more concurrent execution costs"]
        )  # fmt: skip
    pairs = (len(tree) - 1) // 2
    table.rows.append(
        ["zygote tree, total", "", sum(m.pss for m in tree), sum(m.uss for m in tree), "",
         f"sums over {len(tree)} processes: the zygote, ~{pairs} supervisor+child pairs (pool + running)"]
    )  # fmt: skip
    cold = await _cold(python, cwd, env, csv)
    table.rows.append(_row("cold subprocess (seed), same job", cold, "imports everything itself"))
    if kernel is not None:
        await kernel.run(JOB_CODE.code(repr(str(csv))))
        table.rows.append(
            _row("jupyter kernel after the same job", read_mem(kernel.pid or -1), "keeps its state")
        )
    else:
        table.rows.append(["jupyter kernel", kernel_missing, "", "", "", ""])
    table.notes.append(
        "From /proc/<pid>/smaps_rollup and status (VmHWM = peak RSS). PSS splits shared pages among the "
        "processes mapping them; USS is what the process alone holds. One more execution costs its child "
        "and its supervisor: their USS summed. The child is found as the zygote's descendant blocked in "
        f"time.sleep({SLEEP_S:g}) after the job, its supervisor as the child's parent."
    )
    return table
