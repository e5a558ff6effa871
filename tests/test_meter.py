"""The meter's accuracy: what an execution measures against what the test knows it used, in both modes.

Every figure comes from the sandbox's supervisor reading the kernel (``runtime/meter.py``): cgroups in
strict mode, procfs in namespaces mode: strict runs as root, namespaces as an unprivileged user
(``bash .ci/escape-nonroot``, part of ``.ci/run``; namespaces mode as root is refused).
A 0.5 s CPU spin must measure 0.5 s and a 300 MiB allocation 300 MiB, within 10%, in a one-shot call,
in a child process of it, and in a session cell, whose figures are its own (not its session's so far).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from _executor_fixtures import sandbox_mode
from _interp_helpers import close_and_drop, started
from code_interpreter.executor.report import measured_usage
from code_interpreter.interpreter import CodeInterpreter
from code_interpreter.settings import Settings

MODES = [sandbox_mode()]
SOURCE = {"strict": "cgroup", "namespaces": "procfs"}

SPIN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5:\n    pass\n"
ALLOC = "data = b'x' * (300 * 2**20)\n"
# The child process is a fresh interpreter: what it uses is its own, on top of its start-up.
CHILD = "import subprocess, sys\nsubprocess.run([sys.executable, '-c', {code!r}], check=True)\n"
UNWAITED = (
    "import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {code!r}])\ntime.sleep(1.5)\n"
)
# Outside cgroups a child's peak is sampled (every 0.2 s) while it lives: this one lives 0.6 s.
CHILD_ALLOC = "data = b'x' * (300 * 2**20)\nimport time\ntime.sleep(0.6)\n"


@pytest.fixture(scope="module", params=MODES)
async def interp(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    mongo_uri: str,
    sandbox_runtime: Any,
) -> AsyncIterator[CodeInterpreter]:
    mode = request.param
    settings = Settings(
        home=tmp_path_factory.mktemp(f"meter-{mode}") / "home",
        mongodb_uri=mongo_uri,
        database=f"ci_test_{uuid.uuid4().hex[:12]}",
        runtime_dir=sandbox_runtime.root,
        isolation=mode,
        policy="off",  # child processes are the point here; the OS sandbox holds without the lint
        cleanup_interval_s=0,
    )
    interpreter = await started(settings)
    yield interpreter
    await close_and_drop(interpreter)


def _user() -> str:
    return f"u{uuid.uuid4().hex[:10]}"


def _usage(result: dict[str, Any]) -> dict[str, Any]:
    assert result["success"], (result["error"], result["stderr"], result["notes"])
    usage = result["usage"]
    assert usage is not None, "result['usage'] is missing"
    return dict(usage)


def _within(value: float, expected: float, tolerance: float = 0.10) -> bool:
    return expected * (1 - tolerance) <= value <= expected * (1 + tolerance)


@pytest.mark.parametrize(
    ("case", "code", "cpu_s", "peak_mb"),
    [
        ("spin", SPIN, 0.5, None),
        ("allocation", ALLOC, None, 300.0),
        ("a child process's spin", CHILD.format(code=SPIN), 0.5, None),
        ("a child process's allocation", CHILD.format(code=CHILD_ALLOC), None, 300.0),
        ("a child not waited for", UNWAITED.format(code=SPIN), 0.5, None),
    ],
)
async def test_a_one_shot_call_measures_what_it_used(
    interp: CodeInterpreter, case: str, code: str, cpu_s: float | None, peak_mb: float | None
) -> None:
    mode = interp.isolation[0]
    usage = _usage(await interp.execute(code, user_id=_user(), timeout=30))
    assert usage["measured_by"] == SOURCE[mode]
    if cpu_s is not None:
        assert _within(usage["cpu_seconds"], cpu_s), (case, usage)
    else:
        assert usage["cpu_seconds"] < 1.0, (case, usage)
    if peak_mb is not None:
        assert _within(usage["peak_memory_mb"], peak_mb), (case, usage)
    else:
        assert usage["peak_memory_mb"] < 60, (case, usage)  # a spin allocates (next to) nothing
    assert usage["wall_seconds"] >= 0.9 * usage["cpu_seconds"] and usage["wall_seconds"] > 0
    assert usage["cost_usd"] > 0


async def test_a_session_cell_is_measured_on_its_own(interp: CodeInterpreter) -> None:
    user, session = _user(), f"s-{uuid.uuid4().hex[:8]}"

    async def cell(code: str) -> dict[str, Any]:
        return _usage(await interp.execute(code, user_id=user, session_id=session, timeout=30))

    cells = [
        await cell(ALLOC.replace("data", "kept") + SPIN),
        await cell(ALLOC.replace("data", "passing") + "del passing\n"),
        await cell(SPIN),
        await cell(ALLOC),
        await cell("print(len(kept) + len(data))"),
    ]
    first, passing, spin, alloc, last = cells
    assert first["cpu_seconds"] > 0.5 and _within(first["peak_memory_mb"], 300.0), first
    assert _within(passing["peak_memory_mb"], 300.0), passing  # a peak, freed before the cell ended
    # Its own spin, not the session's CPU so far, and not the peak of the cell before it.
    assert _within(spin["cpu_seconds"], 0.5) and spin["peak_memory_mb"] < 30, spin
    # Its own 300 MiB, not the 600 MiB the session holds after it.
    assert _within(alloc["peak_memory_mb"], 300.0) and alloc["cpu_seconds"] < 1.0, alloc
    assert last["cpu_seconds"] < 0.1 and last["peak_memory_mb"] < 30, last
    records = await interp.usage.execution_records(session_id=session)
    assert [r.execution_id for r in records] == [u["execution_id"] for u in cells]
    assert [r.peak_memory_mb for r in records] == [u["peak_memory_mb"] for u in cells]
    assert all(r.user_id == user and r.isolation == interp.isolation[0] for r in records)


async def test_a_cell_past_its_deadline_is_measured_up_to_its_kill(interp: CodeInterpreter) -> None:
    stuck = CHILD.format(code=SPIN + "time.sleep(60)\n")
    result = await interp.execute(stuck, user_id=_user(), timeout=3)
    assert result["error_type"] == "SandboxTimeout" and result["success"] is False
    usage = result["usage"]
    # The child process spun 0.5 s, then was killed at the deadline with its parent: it still counts.
    assert _within(usage["cpu_seconds"], 0.5) and 2.9 <= usage["wall_seconds"] <= 4.0, usage
    [record] = await interp.usage.execution_records(user_id=result["usage"]["user_id"])
    assert record.success is False and record.cpu_seconds == usage["cpu_seconds"]


@pytest.mark.parametrize(
    "usage",
    [
        None,
        "0.5",
        {"cpu_seconds": 0.5, "peak_memory_bytes": 1},  # wall_seconds missing
        {"cpu_seconds": float("nan"), "peak_memory_bytes": 1, "wall_seconds": 1},
        {"cpu_seconds": True, "peak_memory_bytes": 1, "wall_seconds": 1},
        {"cpu_seconds": 0.5, "peak_memory_bytes": "1", "wall_seconds": 1},
    ],
)
def test_a_malformed_measure_is_no_measure(usage: object) -> None:
    assert measured_usage(usage) is None


def test_a_measure_is_read_in_mib_with_its_sources() -> None:
    frame = {"cpu_seconds": 0.25, "peak_memory_bytes": 3 * 2**20, "wall_seconds": 0.5,
             "cpu_source": "cgroup", "memory_source": "procfs", "newer_field": 1}  # fmt: skip
    measured = measured_usage(frame)
    assert measured is not None
    assert (measured.cpu_seconds, measured.peak_memory_mb, measured.wall_seconds) == (0.25, 3.0, 0.5)
    assert measured.measured_by == "cgroup+procfs"
    negative = measured_usage({**frame, "cpu_seconds": -1.0})
    assert negative is not None and negative.cpu_seconds == 0.0
