"""Two checkouts of this project side by side in one run: the headline calls, interleaved.

    python -m benchmarks.compare_checkouts OLD_CHECKOUT NEW_CHECKOUT [--n 200] [--runs 1]

Each checkout's code runs in a process of its own (``PYTHONPATH=<checkout>/plugin``; the dependencies are
this environment's), with its own home, on one database and the shared sandbox runtime. The parent sends
the same calls to both in alternation, so both see the same machine at the same moments; each call is
timed inside its process (``CodeInterpreter.execute``, end to end: policy, import scan, the sandbox,
generated files stored), not the pipe around it. It prints median and p95 per call and the ratio of the
second checkout to the first. With ``--runs K`` it does all that K times, each run with processes of its
own, then gives per job the ratio's median and range over the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from ._common import summarize

REPO = Path(__file__).resolve().parent.parent
JOBS = (
    ("one-shot print('hi')", None, "print('hi')"),
    ("session print('hi')", "s", "print('hi')"),
    ("one-shot pandas groupby (10,000 rows)", None,
     "import pandas as pd\ndf = pd.DataFrame({'k': [i % 7 for i in range(10000)], 'v': range(10000)})\n"
     "print(df.groupby('k').v.sum().iloc[0])"),
)  # fmt: skip

CHILD = r"""
import asyncio, json, sys, time
from pathlib import Path
from code_interpreter import CodeInterpreter, Settings

async def main(raw):
    values = json.loads(raw)
    for key in ("home", "runtime_dir"):  # an older Settings does not coerce strings
        values[key] = Path(values[key])
    settings = Settings(**values)
    async with CodeInterpreter(settings) as interp:
        await interp.executor()
        print("ready", flush=True)
        for line in sys.stdin:
            job = json.loads(line)
            t = time.perf_counter()
            r = await interp.execute(job["code"], "bench", session_id=job["sid"])
            elapsed = time.perf_counter() - t
            print(json.dumps({"s": elapsed, "ok": r["success"], "error": r["error"]}), flush=True)

asyncio.run(main(sys.argv[1]))
"""


async def _start(checkout: Path, home: Path, uri: str | None, database: str) -> asyncio.subprocess.Process:
    runtime = Path(os.environ.get("CODE_INTERPRETER_TEST_RUNTIME") or REPO / ".sandbox-runtime")
    settings = {"home": str(home), "runtime_dir": str(runtime), "mongodb_uri": uri, "database": database}
    env = {**os.environ, "PYTHONPATH": str(checkout / "plugin")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, json.dumps(settings), env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 300)
    if line.strip() != b"ready":
        raise RuntimeError(f"{checkout} did not start: {line!r}")
    return proc


async def _call(proc: asyncio.subprocess.Process, code: str, sid: str | None) -> float:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write((json.dumps({"code": code, "sid": sid}) + "\n").encode())
    await proc.stdin.drain()
    answer = json.loads(await proc.stdout.readline())
    if not answer["ok"]:
        raise RuntimeError(answer["error"])
    return float(answer["s"])


async def compare(old: Path, new: Path, n: int) -> list[list[Any]]:
    """Rows: job, checkout, n, median ms, p95 ms, ratio to the first checkout."""
    uri = os.environ.get("MONGODB_URI")
    base = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    procs = [await _start(c, base / f"home-{i}", uri, f"bench_cmp_{uuid.uuid4().hex[:6]}")
             for i, c in enumerate((old, new))]  # fmt: skip
    rows: list[list[Any]] = []
    try:
        for name, sid, code in JOBS:
            samples: list[list[float]] = [[], []]
            for proc in procs:  # the same warm-up for both
                for _ in range(5):
                    await _call(proc, code, sid)
            for i in range(n):
                order = (0, 1) if i % 2 == 0 else (1, 0)
                for k in order:
                    samples[k].append(await _call(procs[k], code, sid))
            base_median = statistics.median(samples[0])
            for k, label in enumerate((str(old), str(new))):
                s = summarize(samples[k])
                ratio = statistics.median(samples[k]) / base_median
                rows.append([name, label, n, round(s["median_ms"], 2), round(s["p95_ms"], 2), f"{ratio:.3f}"])
    finally:
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()
            await proc.wait()
    return rows


def _table(rows: list[list[Any]]) -> None:
    print("| job | checkout | n | median ms | p95 ms | ratio to the first |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


def _summary(runs: list[list[list[Any]]]) -> None:
    """Per job: the second checkout's ratio in each run, their median and range."""
    print("| job | ratio in each run | median ratio | range |")
    print("|---|---|---|---|")
    for job in dict.fromkeys(row[0] for row in runs[0]):
        ratios = [float(row[5]) for rows in runs for row in rows[1::2] if row[0] == job]
        each = " ".join(f"{r:.3f}" for r in ratios)
        print(f"| {job} | {each} | {statistics.median(ratios):.3f} | {min(ratios):.3f}-{max(ratios):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--n", type=int, default=200, help="calls per job and checkout (200)")
    parser.add_argument(
        "--runs", type=int, default=1,
        help="whole comparisons, each with processes of its own (1); with more, each run's table, then "
        "per job the ratio's median and range over the runs (a shared machine drifts between runs)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.n < 1 or args.runs < 1:
        parser.error("--n and --runs must be at least 1")
    runs = []
    for i in range(args.runs):
        if args.runs > 1:
            print(f"run {i + 1} of {args.runs}", file=sys.stderr, flush=True)
        runs.append(asyncio.run(compare(args.old.resolve(), args.new.resolve(), args.n)))
        _table(runs[-1])
    if args.runs > 1:
        print()
        _summary(runs)


if __name__ == "__main__":
    main()
