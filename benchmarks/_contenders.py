"""The jobs and the execution contenders, side by side.

Contenders: the seed's cold subprocess, a warm Jupyter kernel, and this plugin through three paths —
``Executor.execute`` (the sandbox alone), ``CodeInterpreter.execute`` (what a host calls: policy,
import scan, pinned input files, generated files stored in GridFS) and ``ToolDispatcher.dispatch`` (a
model's tool call dict, validated, run and rendered as the text the model reads). Each row of a table
names the path it times (:attr:`Contender.path`).

Each contender runs a :class:`Job` for a numbered *slot* (a concurrent session): the plugin's paths use
a user per slot, the kernel contender a kernel per slot (a kernel runs one cell at a time and keeps
state), the cold contender a working dir per slot. A later contender (a session per slot, say) is one
more entry in :func:`plugin_contenders`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from code_interpreter import CodeInterpreter, ToolContext, ToolDispatcher
from code_interpreter.executor import Executor, FileRef

from ._common import StallMeter
from ._kernel import Kernel

#: the input of the pandas job: ``CSV_ROWS`` rows of (k, v), uploaded by the user
CSV_ROWS = 100_000
CSV_NAME = "sales.csv"
#: the id under which the executor-only path sees the CSV (the full paths use the GridFS file id)
LOCAL_CSV_ID = "bench-sales-csv"


def csv_bytes(rows: int = CSV_ROWS) -> bytes:
    """The pandas job's input: a header and ``rows`` lines of ``k,v`` (about 1 MB)."""
    return ("k,v\n" + "".join(f"{i % 10},{i}\n" for i in range(rows))).encode()


@dataclass(frozen=True, slots=True)
class Job:
    """One piece of user code; ``{csv}`` in its template is an expression giving the CSV's path."""

    name: str
    template: str
    uses_csv: bool = False

    def code(self, csv: str = "''") -> str:
        """The code with ``csv`` (a Python expression) as the input's path."""
        return self.template.replace("{csv}", csv)


JOBS: tuple[Job, ...] = (
    Job("print('hi')", "print('hi')"),
    Job(
        "pandas groupby",
        "import pandas as pd\ndf = pd.read_csv({csv})\nprint(df.groupby('k').v.sum().head(3))",
        uses_csv=True,
    ),
    # plt.close(): a kernel keeps its figures between cells (each call would draw on the last one's axes)
    # and the executor would otherwise also capture the open figure; closed, all of them do the same work.
    Job(
        "matplotlib chart",
        "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
        "plt.plot(range(100), [x * x for x in range(100)])\nplt.title('chart')\nplt.savefig('chart.png')\n"
        "plt.close('all')",
    ),
)
JOB = {j.name: j for j in JOBS}


def child_env(home: Path) -> dict[str, str]:
    """The environment the zygote gives its children; the cold process and the kernel get the same."""
    (home / "mpl").mkdir(parents=True, exist_ok=True)
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(home),
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": str(home / "mpl"),
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


class Contender(Protocol):
    """Something that runs a job for a session slot and raises when the job fails."""

    name: str
    """Who runs the code."""
    path: str
    """The entry point timed, from call to result (a short label: every row shows it)."""
    about: str
    """What that path does and does not include (for the table's notes)."""
    expensive: bool
    """Fewer samples (the cold subprocess: seconds per matplotlib call)."""

    async def prepare(self, slots: int) -> None:
        """Make ``slots`` sessions ready (upload the user's CSV); never timed."""

    async def run(self, job: Job, slot: int) -> None:
        """Run ``job`` to completion for session ``slot``."""

    async def tidy(self) -> None:
        """Undo what the measured calls left behind (stored charts); never timed."""


@dataclass(frozen=True, slots=True)
class Absent:
    """A contender that cannot run here; its rows say why."""

    name: str
    path: str
    why: str
    about: str = ""


class _Plain:
    """A contender with nothing to prepare or undo."""

    expensive = False

    async def prepare(self, slots: int) -> None:
        """Nothing to prepare."""

    async def tidy(self) -> None:
        """Nothing to undo."""


class ColdProcess(_Plain):
    """The seed's way: a fresh ``python -c CODE`` of the runtime venv per call."""

    name = "cold subprocess (seed)"
    path = "python -c CODE"
    about = "a fresh interpreter of the runtime venv per call: start, imports, the job, exit"
    expensive = True

    def __init__(self, python: Path, work: Path, env: dict[str, str], csv: Path) -> None:
        self.python = python
        self.work = work
        self.env = env
        self.csv = csv

    async def run(self, job: Job, slot: int) -> None:
        """One interpreter start, the code, exit."""
        await self.run_code(job.code(repr(str(self.csv))), slot)

    async def run_code(self, code: str, slot: int) -> None:
        """Run arbitrary code the same way (the start-up table's imports)."""
        cwd = self.work / f"slot-{slot}"
        cwd.mkdir(parents=True, exist_ok=True)
        proc = await asyncio.create_subprocess_exec(
            str(self.python), "-c", code, cwd=cwd, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"cold run failed ({proc.returncode}): {err.decode()[-500:]}")


class KernelSessions(_Plain):
    """A warm Jupyter kernel per slot (started beforehand, like the zygote)."""

    name = "jupyter kernel (warm)"
    path = "one cell (execute_interactive)"
    about = "a started ipykernel per session on the same python: isolates nothing, keeps state"

    def __init__(self, kernels: Sequence[Kernel], csv: Path) -> None:
        self.kernels = kernels  # not a copy: more kernels are started for the concurrency runs
        self.csv = csv

    async def run(self, job: Job, slot: int) -> None:
        """One cell on the slot's kernel."""
        await self.kernels[slot].run(job.code(repr(str(self.csv))))


class ExecutorCalls(_Plain):
    """This plugin's sandbox alone: a fork of the warm zygote per call, with every sandbox layer."""

    name = "this plugin"
    path = "Executor.execute"
    about = (
        "the sandbox alone: a fork of the warm zygote with every layer; no policy check, no import "
        "scan, the CSV given as a local read-only file, the chart returned but not stored"
    )

    def __init__(self, executor: Executor, csv: Path) -> None:
        self.executor = executor
        self.csv = FileRef(file_id=LOCAL_CSV_ID, path=csv, filename=CSV_NAME, file_type="csv")

    def _args(self, job: Job) -> tuple[str, list[FileRef]]:
        if job.uses_csv:
            return job.code(f"FILES[{LOCAL_CSV_ID!r}]"), [self.csv]
        return job.code(), []

    async def run(self, job: Job, slot: int) -> None:
        """One sandboxed execution for user ``u<slot>``; the CSV is a read-only input file."""
        code, files = self._args(job)
        r = await self.executor.execute(code, user_id=f"u{slot}", files=files, timeout=300)
        if not r.success:
            raise RuntimeError(f"executor run failed: {r.error}")

    async def inner(self, job: Job) -> float:
        """Seconds the job's own code takes, timed inside the sandboxed child (the rest is the sandbox's)."""
        code, files = self._args(job)
        timed = f"import time as _t\n_t0 = _t.perf_counter()\n{code}\nprint('\\n', _t.perf_counter() - _t0)"
        r = await self.executor.execute(timed, user_id="u0", files=files, timeout=300)
        if not r.success:
            raise RuntimeError(f"executor run failed: {r.error}")
        return float(r.output.split()[-1])


@dataclass
class _UserFiles:
    """Per-slot users of one full-path contender, each with the CSV uploaded, and what calls stored."""

    interp: CodeInterpreter
    prefix: str
    csv: bytes
    csv_ids: dict[int, str] = field(default_factory=dict)
    stored: list[tuple[str, str]] = field(default_factory=list)

    def user(self, slot: int) -> str:
        return f"{self.prefix}-{slot}"

    async def prepare(self, slots: int) -> None:
        """Upload the CSV for every slot's user that does not have it yet (untimed)."""
        for slot in range(slots):
            if slot not in self.csv_ids:
                saved = await self.interp.files.upload_file(self.user(slot), self.csv, CSV_NAME)
                if not saved.get("success"):
                    raise RuntimeError(f"could not upload the benchmark CSV: {saved.get('error')}")
                self.csv_ids[slot] = saved["file_id"]

    def keep(self, slot: int, generated: Sequence[dict[str, Any]]) -> None:
        """Remember the stored generated files; a generated file that was not stored is a failure."""
        for f in generated:
            if not f.get("file_id"):
                raise RuntimeError(f"{f.get('filename')} was not stored in GridFS")
            self.stored.append((f["file_id"], self.user(slot)))

    async def tidy(self) -> None:
        """Delete the charts the measured calls stored, so every batch starts with the same files."""
        stored, self.stored = self.stored, []
        await asyncio.gather(*(self.interp.files.delete_user_file(fid, uid) for fid, uid in stored))


class _FullPath:
    """A path through CodeInterpreter: a user per slot, the CSV uploaded once, stored charts deleted."""

    name = "this plugin"
    path = ""
    about = ""
    expensive = False
    files: _UserFiles

    async def prepare(self, slots: int) -> None:
        """Upload the CSV for ``slots`` users (untimed)."""
        await self.files.prepare(slots)

    async def tidy(self) -> None:
        """Delete the stored charts (untimed)."""
        await self.files.tidy()


class InterpreterCalls(_FullPath):
    """This plugin as a host calls it: ``CodeInterpreter.execute`` with the user's CSV as a user file."""

    path = "CodeInterpreter.execute"
    about = (
        "what a host calls: policy check, import scan, the uploaded CSV pinned from GridFS as a user "
        "file, the sandbox, the chart's PNG stored in GridFS"
    )

    def __init__(
        self,
        interp: CodeInterpreter,
        csv: bytes,
        *,
        prefix: str = "full",
        path: str | None = None,
        about: str | None = None,
        call_kwargs: Callable[[int], dict[str, Any]] | None = None,
    ) -> None:
        """``call_kwargs(slot)``: extra keywords for ``execute`` (e.g. a session id per slot)."""
        self.files = _UserFiles(interp, prefix, csv)
        self.path = path or self.path
        self.about = about or self.about
        self.call_kwargs = call_kwargs or (lambda _slot: {})

    async def run(self, job: Job, slot: int) -> None:
        """One ``execute`` call for the slot's user; the CSV is passed as the user's file."""
        files = self.files
        fid = files.csv_ids[slot]
        code = job.code(f"FILES[{fid!r}]")
        r = await files.interp.execute(
            code, user_id=files.user(slot), user_files=[fid] if job.uses_csv else None, timeout=300,
            **self.call_kwargs(slot),
        )  # fmt: skip
        if not r["success"]:
            raise RuntimeError(f"CodeInterpreter.execute failed: {r['error']}")
        files.keep(slot, r["generated_files"])


class DispatcherCalls(_FullPath):
    """This plugin as a model reaches it: a tool call dict through ``ToolDispatcher.dispatch``."""

    path = "ToolDispatcher.dispatch"
    about = (
        "a model's tool call dict: arguments validated, the conversation's files listed, then "
        "CodeInterpreter.execute, then the text the model reads"
    )

    def __init__(self, interp: CodeInterpreter, csv: bytes, *, prefix: str = "tool") -> None:
        self.files = _UserFiles(interp, prefix, csv)
        self.dispatcher = ToolDispatcher(interp)
        self._calls = 0

    async def run(self, job: Job, slot: int) -> None:
        """One tool call; the conversation's files are the CSV (the pandas job) or none."""
        files = self.files
        fid = files.csv_ids[slot]
        self._calls += 1
        args = {"code": job.code(f"FILES[{fid!r}]"), "timeout": None, "install_packages": None}
        call = {
            "id": f"call_{self._calls}",
            "type": "function",
            "function": {"name": "execute_python_code", "arguments": json.dumps(args)},
        }
        context = ToolContext(
            user_id=files.user(slot), allowed_file_ids=frozenset({fid} if job.uses_csv else ())
        )
        r = await self.dispatcher.dispatch(call, context)
        if r.is_error:
            raise RuntimeError(f"ToolDispatcher.dispatch failed: {r.content}")
        files.keep(slot, r.generated_files)


def plugin_contenders(interp: CodeInterpreter, executor: Executor, csv_path: Path) -> list[Contender]:
    """This plugin's paths, fastest layer first; the last keeps a live session per slot."""
    data = csv_path.read_bytes()
    return [
        ExecutorCalls(executor, csv_path),
        InterpreterCalls(interp, data),
        DispatcherCalls(interp, data),
        InterpreterCalls(
            interp,
            data,
            prefix="session",
            path="CodeInterpreter.execute(session_id=…)",
            about="a live sandboxed child per session (state kept between calls), the same job each call",
            call_kwargs=lambda slot: {"session_id": f"bench-{slot}"},
        ),
    ]


@dataclass(frozen=True, slots=True)
class Batch:
    """``n`` executions submitted at once: their wall time, each one's latency, the loop's worst stall."""

    wall_s: float
    latencies_s: tuple[float, ...]
    stall_ms: float


async def warm(contenders: Sequence[Contender], job: Job, slots: int) -> None:
    """Run ``job`` once on each of ``slots`` slots of every contender, untimed (the same warm-up for all)."""
    for c in contenders:
        await c.prepare(slots)
        await asyncio.gather(*(c.run(job, s) for s in range(slots)))
        await c.tidy()


async def batch(contender: Contender, job: Job, n: int) -> Batch:
    """Submit ``n`` runs at once (slots 0..n-1) while a 1 ms ticker measures event-loop stalls."""

    async def one(slot: int, t0: float) -> float:
        await contender.run(job, slot)
        return time.perf_counter() - t0

    async with StallMeter() as stalls:
        t0 = time.perf_counter()
        latencies = await asyncio.gather(*(one(i, t0) for i in range(n)))
        wall = time.perf_counter() - t0
    await contender.tidy()
    return Batch(wall, tuple(latencies), stalls.worst_ms)
