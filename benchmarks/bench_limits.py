"""Limits: how long a runaway job takes to be stopped, and what its neighbours notice meanwhile.

Each runaway job (a CPU spin, a fork bomb, a memory bomb, an output flood, a disk filler, network
connections) runs through ``Executor.execute`` with the strict sandbox and small limits, while a
``print('hi')`` of another user runs beside it and a 1 ms ticker watches the event loop. The tests
check only that each is stopped by the right limit (with hang guards); these are the figures. The
runtime is ``CODE_INTERPRETER_TEST_RUNTIME`` or the repository's ``.sandbox-runtime``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from code_interpreter.executor import Executor
from code_interpreter.packages.generations import ensure_runtime
from code_interpreter.settings import Settings

from ._common import StallMeter, Table, summarize
from ._progress import step

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 2.0
MEMORY_MB = 256
CONNECT = (
    "import socket, time\n"
    "for addr in (('127.0.0.1', 9), ('1.1.1.1', 53), ('169.254.169.254', 80)):\n"
    "    t = time.perf_counter()\n"
    "    try:\n"
    "        socket.create_connection(addr, timeout=30).close()\n"
    "        raise SystemExit(f'connected to {addr}')\n"
    "    except OSError:\n"
    "        print('refused', time.perf_counter() - t)\n"
)
#: name -> (code, the limit that stops it)
RUNAWAYS = {
    "CPU spin": ("while True:\n    pass", "timeout"),
    "fork bomb": (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        "timeout",
    ),
    "memory bomb": ("x = []\nwhile True:\n    x.append(b'x' * (32 * 2**20))", f"memory ({MEMORY_MB} MB)"),
    "output flood": ("while True:\n    print('y' * 1000)", "timeout (output capped)"),
    "disk filler": ("f = open('big.bin', 'wb')\nwhile True:\n    f.write(b'x' * 2**20)", "work dir (32 MB)"),
    "3 TCP connections": (CONNECT, "no network (refused at once)"),
}


async def run(quick: bool) -> list[Table]:
    """One table: time to result of each runaway job, its neighbour's latency, the loop's worst stall."""
    runtime_root = Path(os.environ.get("CODE_INTERPRETER_TEST_RUNTIME") or REPO / ".sandbox-runtime")
    base = Path(tempfile.mkdtemp(prefix="bench-limits-"))
    settings = Settings(
        home=base / "home", runtime_dir=runtime_root, isolation="strict", memory_limit_mb=MEMORY_MB,
        max_processes=32, max_open_files=64, work_dir_bytes=32 * 2**20, max_output_bytes=4000,
        default_timeout=5, max_timeout=10,
    )  # fmt: skip
    executor = Executor(settings, await ensure_runtime(settings))
    try:
        step("limits: starting a zygote")
        await executor.start()
        return [await _table(executor, 2 if quick else 5)]
    finally:
        await executor.close()
        shutil.rmtree(base, ignore_errors=True)


async def _once(executor: Executor, code: str) -> tuple[float, float, float, str]:
    """(runaway's time to result, neighbour's latency, worst loop stall ms, the runaway's output)."""

    async def timed(coro_code: str, user: str) -> tuple[float, str, bool]:
        t = time.perf_counter()
        r = await executor.execute(coro_code, user_id=user, timeout=TIMEOUT_S)
        return time.perf_counter() - t, r.output, r.success

    async with StallMeter() as stalls:
        (bomb_s, out, _), (near_s, near_out, near_ok) = await asyncio.gather(
            timed(code, "runaway"), timed("print('hi')", "neighbour")
        )
    worst = stalls.worst_ms
    if not near_ok or near_out != "hi\n":
        raise RuntimeError("the neighbouring execution failed beside a runaway job")
    return bomb_s, near_s, worst, out


async def _table(executor: Executor, reps: int) -> Table:
    table = Table(
        f"Limits: a runaway job is stopped (strict sandbox, timeout {TIMEOUT_S:g} s)",
        ["runaway job", "stopped by", "n", "median ms to result", "p95 ms", "neighbour's print('hi') ms",
         "worst loop stall ms"],
    )  # fmt: skip
    refusals: list[float] = []
    await _once(executor, "print('warm')")
    for name, (code, limit) in RUNAWAYS.items():
        step(f"limits: {name} x {reps}")
        runs = [await _once(executor, code) for _ in range(reps)]
        if name == "3 TCP connections":
            refusals += [float(line.split()[1]) for *_, out in runs for line in out.splitlines()]
        s = summarize([r[0] for r in runs])
        near = statistics.median(r[1] for r in runs) * 1000
        table.rows.append([name, limit, reps, s["median_ms"], s["p95_ms"], near, max(r[2] for r in runs)])
    if refusals:
        s = summarize(refusals)
        table.rows.append(
            [
                "one TCP connect, timed in the child",
                "no network",
                len(refusals),
                s["median_ms"],
                s["p95_ms"],
                "",
                "",
            ]
        )
    table.notes.append(
        f"Limits as in the sandbox tests: {MEMORY_MB} MB, 32 processes, 64 open files, 16 MB per file, "
        f"output capped at 4,000 bytes, timeout {TIMEOUT_S:g} s. Time to result = submit to result of the "
        "runaway execution; for the jobs stopped at the timeout, what exceeds "
        f"{TIMEOUT_S * 1000:,.0f} ms is the time to stop and report. Each runaway runs beside a print('hi') "
        "of another user; stall: worst lateness of a 1 ms asyncio ticker meanwhile. A connect is given a "
        "30 s timeout: it is refused, not left to time out."
    )
    return table
