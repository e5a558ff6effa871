"""A script importing a package the runtime lacks: the seed's retry after ``pip install`` vs prepare().

The seed ran the code in a cold subprocess of its venv, read ``ModuleNotFoundError`` from stderr, ran
the venv's own pip and ran the code again. This package scans the imports before running, installs
approved wheels into the runtime with the host's pip (one run), then executes in the sandbox. Both
start from a fresh environment without the package on every repetition (setup untimed), so each
repetition is expensive: few of them, and the table says how many.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from pathlib import Path

from code_interpreter.executor import Executor
from code_interpreter.packages import PackageManager
from code_interpreter.packages.runtime import base_interpreter
from code_interpreter.settings import Settings

from ._common import Table, summarize
from ._progress import step

PACKAGE = "toml"  # a tiny approved pure-Python wheel
CODE = "import toml\nprint(toml.dumps({'answer': 42}))"
_MISSING = re.compile(r"No module named '([^'.]+)")


async def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    return int(proc.returncode or 0), out.decode() + err.decode()


async def _seed_call(python: Path, work: Path, env: dict[str, str]) -> float:
    """Run, see ModuleNotFoundError, pip install the module with the venv's pip, run again."""
    t = time.perf_counter()
    rc, out = await _run([str(python), "-c", CODE], work, env)
    found = _MISSING.search(out)
    if rc == 0 or not found:
        raise RuntimeError(f"the seed's first run should fail with ModuleNotFoundError: {out[-500:]}")
    # pip keeps the host's environment (index, proxy, certificates), as the seed's bot process did
    rc, out = await _run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", found.group(1)],
        work,
        dict(os.environ),
    )
    if rc != 0:
        raise RuntimeError(f"the seed's pip install failed: {out[-1000:]}")
    rc, out = await _run([str(python), "-c", CODE], work, env)
    if rc != 0:
        raise RuntimeError(f"the seed's second run failed: {out[-500:]}")
    return time.perf_counter() - t


async def _cold_present(python: Path, work: Path, env: dict[str, str]) -> float:
    t = time.perf_counter()
    rc, out = await _run([str(python), "-c", CODE], work, env)
    if rc != 0:
        raise RuntimeError(out[-500:])
    return time.perf_counter() - t


async def _ours_call(pm: PackageManager, ex: Executor, expect_install: bool) -> float:
    t = time.perf_counter()
    prepared = await pm.prepare(CODE)
    r = await ex.execute(CODE, user_id="bench", timeout=120)
    elapsed = time.perf_counter() - t
    if not (prepared.ok and r.success) or bool(prepared.installed) != expect_install:
        raise RuntimeError(f"prepare/execute failed: {prepared.to_dict()} / {r.error}")
    return elapsed


async def missing_package_table(base: Path, env: dict[str, str], quick: bool) -> Table:
    """Per-call time for a script whose import is missing, then for the same script once installed."""
    reps = 1 if quick else 3
    seed_first: list[float] = []
    seed_again: list[float] = []
    ours_first: list[float] = []
    ours_again: list[float] = []
    for rep in range(reps):
        root = base / f"missing-{rep}"
        work = root / "work"
        work.mkdir(parents=True)
        step(f"missing package {rep + 1}/{reps}: creating a seed venv (with pip) and a fresh runtime")
        settings = Settings(
            home=root / "home", runtime_dir=root / "runtime", runtime_packages=(), max_parallel=2
        )
        seed_venv = root / "seed-venv"
        rc, out = await _run([str(base_interpreter(settings)), "-m", "venv", str(seed_venv)], root, env)
        if rc != 0:
            raise RuntimeError(f"could not create the seed's venv: {out[-1000:]}")
        pm = PackageManager(settings)
        ex = Executor(settings, await pm.ensure_runtime())
        await ex.start()
        try:
            # alternate who goes first, so neither always meets a cold page cache or a warm pip cache
            order = ("seed", "ours") if rep % 2 == 0 else ("ours", "seed")
            for who in order:
                if who == "seed":
                    seed_first.append(await _seed_call(seed_venv / "bin" / "python", work, env))
                    seed_again.append(await _cold_present(seed_venv / "bin" / "python", work, env))
                else:
                    ours_first.append(await _ours_call(pm, ex, expect_install=True))
                    ours_again.append(await _ours_call(pm, ex, expect_install=False))
        finally:
            await ex.close()
            shutil.rmtree(root, ignore_errors=True)
    table = Table(
        f"A script importing a missing package ({PACKAGE}): time per call (ms)",
        ["call", "seed: cold run, pip, run again", "this executor: prepare() + execute", "seed / executor"],
    )
    for label, seed, ours in (
        ("first call (package missing)", seed_first, ours_first),
        ("next call (package present)", seed_again, ours_again),
    ):
        s, o = summarize(seed), summarize(ours)
        table.rows.append([label, _cell(s), _cell(o), s["median_ms"] / o["median_ms"]])
    table.notes.append(
        f"Median (p95) over {reps} repetition(s), each from a fresh environment: the seed's venv (with its "
        "bundled pip) and a fresh small runtime (no baseline packages) with a started zygote; setup untimed. "
        "Both pips read this machine's configured index. Few repetitions: read the order of magnitude."
    )
    return table


def _cell(s: dict[str, float]) -> str:
    return f"{s['median_ms']:,.0f} ({s['p95_ms']:,.0f})"
