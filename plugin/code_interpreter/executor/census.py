"""The seccomp census: which system calls real code makes in the sandbox, and which workload needed each.

    python -m code_interpreter.executor.census [SCRIPT_OR_DIR ...] [--benchmarks] [--check]
        [--isolation auto|strict|namespaces] [--runtime DIR] [--log FILE] [--from LOG ...]

Each script runs once in the real sandbox (every layer, the policy not involved). By default in
*census mode*: the seccomp filter hands every call to the supervisor, which lets it run and records it
(a diagnostic, never a sandbox). ``--check`` runs the same scripts with the allowlist enforced and
lists what it refused. ``--benchmarks`` adds the benchmarks' jobs (from a checkout: the ``benchmarks``
package must be importable). ``--from`` only summarizes logs written earlier, for example by the test
suite run with ``CODE_INTERPRETER_SECCOMP_LOG=<file> CODE_INTERPRETER_SECCOMP_CENSUS=1``.

The table printed: each call seen, whether the allowlist holds it, and the workloads that made it.
The project's corpus is ``tests/census/``; SECURITY.md holds the reviewed result.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..runtime.sandbox import seccomp
from ..settings import Settings
from .executor import Executor
from .results import ExecutionResult, FileRef

__all__ = ["Workload", "allowed", "main", "read_logs", "render", "run_workloads", "scripts"]

LABEL = "# census: "
CSV_ID = "census-csv"


@dataclass(frozen=True, slots=True)
class Workload:
    """One piece of code to run: a one-shot call, or (``cells`` > 1) a session saved and restored between."""

    name: str
    cells: tuple[str, ...]
    uses_csv: bool = False
    timeout: float = 120.0
    expect_failure: bool = False
    files: tuple[FileRef, ...] = ()


def scripts(paths: Iterable[Path]) -> list[Workload]:
    """A workload per ``.py`` file (a directory: each ``.py`` in it but ``__init__``)."""
    found: list[Workload] = []
    for path in paths:
        files = sorted(p for p in path.glob("*.py") if p.name != "__init__.py") if path.is_dir() else [path]
        for f in files:
            code = f.read_text(encoding="utf-8")
            found.append(Workload(f.stem, (code,), expect_failure="deliberate error" in code))
    return found


def benchmark_workloads(data: Path) -> list[Workload]:
    """The benchmarks' jobs (executor, limits, sessions, memory); needs a checkout's ``benchmarks``."""
    try:
        contenders = importlib.import_module("benchmarks._contenders")
        memory = importlib.import_module("benchmarks._memory")
        limits = importlib.import_module("benchmarks.bench_limits")
        sessions = importlib.import_module("benchmarks.bench_sessions")
    except ImportError as exc:
        raise SystemExit(
            f"--benchmarks needs the repository's benchmarks package importable: {exc}"
        ) from None
    csv = f"FILES[{CSV_ID!r}]"
    out = [Workload(f"bench: {j.name}", (j.code(csv),), uses_csv=j.uses_csv) for j in contenders.JOBS]
    out += [
        Workload(f"bench limits: {name}", (code,), timeout=limits.TIMEOUT_S, expect_failure=True)
        for name, (code, _limit) in limits.RUNAWAYS.items()
    ]
    table = data / "sessions.csv"
    table.write_bytes(sessions._csv(20_000))
    table.chmod(0o644)
    ref = FileRef(file_id="census-sessions-csv", path=table, filename="sessions.csv", file_type="csv")
    cells = (sessions.LOAD.format(csv=f"FILES[{ref.file_id!r}]"), "print(len(df))",
             *(q for _name, q in sessions.QUERIES), sessions.CHART)  # fmt: skip
    out.append(Workload("bench sessions: load, save, restore, query, chart", cells, files=(ref,)))
    live = (
        "import time\nprint(time.time(), flush=True)\ntime.sleep(0.05)",
        "for i in range(20000):\n    print(i)",
    )
    out.append(Workload("bench sessions: live output", live))
    out.append(Workload("bench memory: pandas job, then sleep", (memory.JOB_CODE.code(csv) + memory._SLEEP,),
                        uses_csv=True))  # fmt: skip
    return out


async def run_workloads(
    workloads: Sequence[Workload], settings: Settings, log: Path, *, census: bool, csv: FileRef | None = None
) -> list[str]:
    """Run each workload once in the sandbox, its calls logged to ``log``; return the unexpected failures."""
    from ..packages.generations import ensure_runtime

    os.environ[seccomp.LOG_ENV] = str(log)
    os.environ[seccomp.CENSUS_ENV] = "1" if census else "0"
    problems: list[str] = []
    executor = Executor(settings, await ensure_runtime(settings))
    try:
        await executor.start()
        for work in workloads:
            files = [*work.files, *([csv] if work.uses_csv and csv is not None else [])]
            for result in await _run_one(executor, work, files):
                if not result.success and not work.expect_failure:
                    problems.append(f"{work.name}: {(result.error or '')[-400:]}")
            print(f"census: ran {work.name}", file=sys.stderr)
    finally:
        await executor.close()
        os.environ.pop(seccomp.LOG_ENV, None)
        os.environ.pop(seccomp.CENSUS_ENV, None)
    return problems


async def _run_one(executor: Executor, work: Workload, files: list[FileRef]) -> list[ExecutionResult]:
    """One call; or a session: the first cell, a snapshot, then the other cells in a restored sandbox."""

    def labelled(index: int) -> str:
        cell = f" (cell {index + 1})" if len(work.cells) > 1 else ""
        return f"{LABEL}{work.name}{cell}\n{work.cells[index]}"

    if len(work.cells) == 1:
        return [await executor.execute(labelled(0), user_id="census", files=files, timeout=work.timeout)]
    first = executor.process("census", keep_state=True)
    try:
        results = [await first.run(labelled(0), work.timeout, files)]
        snapshot, _notes = await first.save(2**30)
    finally:
        await first.close()
    second = executor.process("census", keep_state=True)
    try:
        for index in range(1, len(work.cells)):
            restore = snapshot if index == 1 else b""
            results.append(await second.run(labelled(index), work.timeout, files, restore=restore))
    finally:
        await second.close()
    return results


def read_logs(paths: Iterable[Path]) -> tuple[dict[str, dict[str, int]], set[str]]:
    """(call -> {workload: count}, every workload logged) from census logs.

    A cell this tool ran is named by its workload; any other (the test suite's, the sandbox's own
    self-test ``pass``) by ``cell:`` and its first line.
    """
    table: dict[str, dict[str, int]] = {}
    labels: set[str] = set()
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            label = str(entry["label"])
            label = label.removeprefix(LABEL) if label.startswith(LABEL) else f"cell: {label[:60]}"
            labels.add(label)
            for call, count in entry["syscalls"].items():
                seen = table.setdefault(call, {})
                seen[label] = seen.get(label, 0) + int(count)
    return table, labels


def allowed(call: str) -> bool:
    """Whether the allowlist lets ``call`` (a name, maybe with the argument its rule reads) through."""
    name, _, arg = call.partition("(")
    arg = arg.rstrip(")")
    if name == "clone":
        return arg != "namespace flags"
    if name in ("socket", "socketpair"):
        families = {"AF_UNIX"} if name == "socketpair" else {"AF_UNIX", "AF_INET", "AF_INET6"}
        return arg in families
    return name in seccomp.ALLOWED or name == seccomp.HAND_OVER


def render(table: dict[str, dict[str, int]], labels: set[str], *, check: bool = False, width: int = 4) -> str:
    """One line per call: allowed or not, how many workloads made it, which (the first ``width``).

    ``check``: the log holds only what the enforced allowlist refused.
    """
    what = "refused with the allowlist enforced" if check else "seen"
    lines = [f"{len(table)} system calls {what}, across {len(labels)} workloads", ""]
    for call in sorted(table, key=lambda c: (allowed(c), -len(table[c]), c)):
        seen = table[call]
        mark = "allowed" if allowed(call) else "reviewed" if call in seccomp.REVIEWED_REFUSALS else "REFUSED"
        who = "every workload" if len(seen) == len(labels) else ", ".join(sorted(seen)[:width])
        more = f" (+{len(seen) - width} more)" if len(seen) > width and len(seen) != len(labels) else ""
        lines.append(f"{call:28} {mark:8} {len(seen):4}  {who}{more}")
    if not check:
        never = sorted(set(seccomp.ALLOWED) - {c.partition("(")[0] for c in table} - {seccomp.HAND_OVER})
        lines += ["", f"allowed but not seen in these workloads ({len(never)}): {', '.join(never)}"]
        lines.append(f"({seccomp.HAND_OVER} is never recorded: it hands the filter's listener over)")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m code_interpreter.executor.census", description=__doc__.split("\n")[0]
    )
    p.add_argument("scripts", nargs="*", type=Path, help="Python scripts (or directories of them) to run")
    p.add_argument("--benchmarks", action="store_true", help="also run the benchmarks' jobs")
    p.add_argument("--check", action="store_true", help="enforce the allowlist; list what it refused")
    p.add_argument("--isolation", default="auto", choices=("auto", "strict", "namespaces"))
    p.add_argument("--runtime", type=Path, default=None, help="the sandbox runtime's directory")
    p.add_argument("--log", type=Path, default=None, help="keep the raw log here (JSON lines)")
    p.add_argument("--from", dest="logs", type=Path, nargs="+", default=[], help="summarize these logs only")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the census (or summarize logs); 1 when a workload failed or (--check) a call was refused."""
    args = _parser().parse_args(argv)
    logs = list(args.logs)
    problems: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="census-"))
    try:
        if args.scripts or args.benchmarks:
            problems = asyncio.run(_run(args, base))
            logs.append(args.log)
        table, labels = read_logs(logs)
    finally:
        shutil.rmtree(base, ignore_errors=True)  # the work dirs, the input files (and the log, unless --log)
    print(
        json.dumps(table, indent=1, sort_keys=True) if args.json else render(table, labels, check=args.check)
    )
    for problem in problems:
        print(f"FAILED {problem}", file=sys.stderr)
    refused = [call for call in table if not allowed(call) and call not in seccomp.REVIEWED_REFUSALS]
    return 1 if problems or (args.check and refused) else 0


async def _run(args: Any, base: Path) -> list[str]:
    os.chmod(base, 0o755)
    workloads = scripts(args.scripts) + (benchmark_workloads(base) if args.benchmarks else [])
    if args.log is None:
        args.log = base / "census.jsonl"
    args.log.touch()
    os.chmod(args.log, 0o666)  # the supervisors write it (in namespaces mode as this user, else as root)
    csv_path = base / "sales.csv"
    csv_path.write_text("k,v\n" + "".join(f"{i % 10},{i}\n" for i in range(100_000)))
    os.chmod(csv_path, 0o644)
    # The runtime is the one this host already uses (--runtime, else the settings' own): never rebuilt here.
    runtime = args.runtime or Settings.from_env().runtime_path
    settings = Settings.from_env(
        home=base / "home", isolation=args.isolation, max_timeout=300, runtime_dir=runtime
    )
    csv = FileRef(file_id=CSV_ID, path=csv_path, filename="sales.csv", file_type="csv")
    return await run_workloads(workloads, settings, args.log, census=not args.check, csv=csv)


if __name__ == "__main__":
    sys.exit(main())
