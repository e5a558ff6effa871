"""Sessions across hosts: what a hand-off costs, and what a checkpoint costs and how much it can lose.

Two ``CodeInterpreter`` hosts (each its own home, zygote and sandboxes) share one database, as hosts behind
a load balancer would. A hand-off: a cell reaches the host that does not own its session; the owner sees
the request (it looks every 0.1 s), finishes, saves and releases; the cell's host takes the lease,
restores and runs. Checkpoints: after a cell, once the session was quiet for ``session_checkpoint_s``, the
owner saves it in the background; the loss window is the time from a cell's end until its state is durable
(what a host killed at that moment would lose).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from code_interpreter import CodeInterpreter
from code_interpreter.packages.generations import ensure_runtime
from code_interpreter.settings import Settings

from ._common import Table, summarize
from ._progress import step
from .bench_sessions import LOAD, ROWS, _csv, _ok

REPO = Path(__file__).resolve().parent.parent
STATES = (("a small state (x = 1)", "x = 1", "x += 1\nprint(x)"),)
CHECKPOINT_S = 1.0


async def run(quick: bool) -> list[Table]:
    """The hosts area's tables."""
    runtime_root = Path(os.environ.get("CODE_INTERPRETER_TEST_RUNTIME") or REPO / ".sandbox-runtime")
    base = Path(tempfile.mkdtemp(prefix="bench-hosts-"))
    database = f"bench_hosts_{uuid.uuid4().hex[:8]}"

    def settings(name: str) -> Settings:
        return Settings(home=base / name, runtime_dir=runtime_root, mongodb_uri=os.environ.get("MONGODB_URI"),
                        database=database, cleanup_interval_s=None, max_parallel=4,
                        session_checkpoint_s=CHECKPOINT_S)  # fmt: skip

    hosts: list[CodeInterpreter] = []
    try:
        await ensure_runtime(settings("a"))
        step("hosts: starting two hosts on one database")
        # The embedded server is shared through the first host's home: both use its URI.
        first = CodeInterpreter(settings("a"))
        hosts.append(first)
        await first.start()
        if first.settings.mongodb_uri is None:
            address = first._storage.describe()["address"]
            uri = f"mongodb://{address}/?directConnection=true"
        else:
            uri = first.settings.mongodb_uri
        second = CodeInterpreter(settings("b").replace(mongodb_uri=uri))
        hosts.append(second)
        await second.start()
        await asyncio.gather(first.executor(), second.executor())
        csv = base / "big.csv"
        csv.write_bytes(_csv(ROWS))
        up = await first.files.upload_file("bench", csv.read_bytes(), "big.csv")
        fid = up["file_id"]
        load = LOAD.format(csv=f"FILES[{fid!r}]")
        states = [*STATES, (f"a {ROWS:,}-row DataFrame", load, "print(len(df))")]
        return [
            await _owner_cells(first, quick),
            await _handoffs(first, second, states, fid, quick),
            await _checkpoints(first, states, fid, quick),
        ]
    finally:
        for host in reversed(hosts):
            if host.settings.mongodb_uri:
                await host.db.client.drop_database(database)
            await host.close()
        shutil.rmtree(base, ignore_errors=True)


async def _owner_cells(owner: CodeInterpreter, quick: bool) -> Table:
    """A cell on the host that owns the session, with another host on the database: what every cell pays."""
    n = 40 if quick else 300
    step(f"hosts: {n} cells on the session's owner")
    sid = f"owner-{uuid.uuid4().hex[:6]}"
    _ok(await owner.execute("x = 0", "bench", session_id=sid))
    samples: list[float] = []
    for _ in range(n):
        t = time.perf_counter()
        _ok(await owner.execute("x += 1\nprint('hi')", "bench", session_id=sid))
        samples.append(time.perf_counter() - t)
    await owner.sessions.reset("bench", sid)
    s = summarize(samples)
    table = Table("A cell on the session's owner, two hosts on one database (ms, end to end)",
                  ["cell", "n", "median", "p95"])  # fmt: skip
    table.rows.append(["x += 1; print('hi')", int(s["n"]), s["median_ms"], s["p95_ms"]])
    table.notes.append(
        "CodeInterpreter.execute on the host holding the session's lease, one call after another. The lease "
        "is renewed in the background every third of session_lease_s; a cell makes no database round trip "
        "(issue #23: at most 2 ms p50). Checkpoints run between bursts (session_checkpoint_s = 1 here)."
    )
    return table


async def _handoffs(
    a: CodeInterpreter, b: CodeInterpreter, states: list[tuple[str, str, str]], fid: str, quick: bool
) -> Table:
    n = 5 if quick else 20
    table = Table(
        "A session handed over between two hosts on one database (ms)",
        ["session holds", "n", "hand-off median", "hand-off p95", "cell end to end median", "end to end p95"],
    )
    for label, setup, cell in states:
        step(f"hosts: hand-offs of {label}")
        sid = f"handoff-{uuid.uuid4().hex[:6]}"
        _ok(await a.execute(setup, "bench", [fid], session_id=sid))
        handoff: list[float] = []
        total: list[float] = []
        for i in range(n + 1):
            host = b if i % 2 == 0 else a
            t = time.perf_counter()
            r = _ok(await host.execute(cell, "bench", session_id=sid))
            if i == 0:
                continue  # the first is a warm-up
            total.append(time.perf_counter() - t)
            handoff.append(float(r["session"]["handoff"]["ms"]) / 1000)
        h, e = summarize(handoff), summarize(total)
        table.rows.append([label, int(h["n"]), h["median_ms"], h["p95_ms"], e["median_ms"], e["p95_ms"]])
        await a.sessions.reset("bench", sid)
    table.notes.append(
        "Each call goes to the host that does not own the session. Hand-off: from the call's arrival to the "
        "lease taken (the owner notices within 0.1 s, finishes, saves and releases); end to end adds the "
        "restore and the cell. A cell on the owner pays no database round trip (the table above)."
    )
    return table


async def _checkpoints(
    a: CodeInterpreter, states: list[tuple[str, str, str]], fid: str, quick: bool
) -> Table:
    n = 3 if quick else 10
    table = Table(
        f"Checkpoints (session_checkpoint_s = {CHECKPOINT_S:g})",
        ["session holds", "n", "snapshot MB", "loss window median ms", "p95 ms", "save (window - quiet) ms"],
    )
    for label, setup, cell in states:
        step(f"hosts: checkpoints of {label}")
        sid = f"ckpt-{uuid.uuid4().hex[:6]}"
        _ok(await a.execute(setup, "bench", [fid], session_id=sid))
        windows: list[float] = []
        size = 0.0
        for _ in range(n):
            r = _ok(await a.execute(cell, "bench", session_id=sid))
            ended = time.perf_counter()
            doc = await _durable(a, sid, r["session"]["cell"])
            windows.append(time.perf_counter() - ended)
            size = float(doc.get("size") or 0) / 2**20
        w = summarize(windows)
        table.rows.append([label, int(w["n"]), round(size, 2), w["median_ms"], w["p95_ms"],
                           round(w["median_ms"] - CHECKPOINT_S * 1000, 1)])  # fmt: skip
        await a.sessions.reset("bench", sid)
    table.notes.append(
        "Loss window: from a cell's result to the record naming a snapshot made after it (polled every "
        "10 ms). A host killed inside that window loses the cell; the next host says so. A burst of cells "
        "is saved once, after it (or every ten quiet periods while it lasts). Sessions whose snapshot is "
        "over session_checkpoint_max_bytes (16 MB) are saved only when they end."
    )
    return table


async def _durable(interp: CodeInterpreter, sid: str, cell: int) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        doc = await interp.files.session_store.find("bench", sid)
        if doc is not None and (doc.get("saved_after_cell") or 0) >= cell:
            return doc
        await asyncio.sleep(0.01)
    raise RuntimeError(f"cell {cell} was never checkpointed")
