"""File store: upload/read throughput (1 KB to 10 MB, one client and 8 concurrent), cleanup of expired files.

Runs against an embedded SecantusDB started in a temporary directory (the plugin's default
set-up without MONGODB_URI), so figures include the wire protocol and WiredTiger, not a mock.
Cleanup: 1,000 expired files with --quick, 10,000 in a full run, and also 100,000 when
CODE_INTERPRETER_BENCH_FULL=1 (a few minutes on a busy 2-core machine, so it is opt-in). Beside
the wall time, the cleanup rows give the server's own CPU time per file (from /proc), which the
machine's load does not inflate, the load average during the run, and the worst latency of a
point read sent meanwhile (SecantusDB runs one command at a time: a long one holds up the rest).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bson import Binary

from code_interpreter.files import COLLECTION, FileManager
from code_interpreter.files.buckets import bucket_for
from code_interpreter.settings import Settings
from code_interpreter.storage import Storage

from ._common import FULL_ENV, Table, summarize
from ._progress import step

KB, MB = 2**10, 2**20
EXPIRY_HOURS = 24  # the expired files' expiries are spread over this many hours (as many buckets)
PROBE_EVERY_S = 0.05


def cleanup_sizes(quick: bool) -> list[int]:
    """How many expired files each cleanup run deletes; 100,000 only when asked for (it takes ~20 min)."""
    if quick:
        return [1_000]
    return [10_000, 100_000] if os.environ.get(FULL_ENV) == "1" else [10_000]


async def run(quick: bool) -> list[Table]:
    """Upload/read/materialize throughput, concurrent requests, cleanup time; --quick uses fewer files."""
    with tempfile.TemporaryDirectory(prefix="bench-files-") as tmp:
        settings = Settings(home=Path(tmp), mongodb_uri=None, database="bench", embedded_idle_s=0)
        async with Storage(settings) as storage:
            server = storage.embedded.record if storage.embedded else None
            fm = FileManager(storage.db, settings)
            await fm.ensure_indexes()
            throughput = await _throughput(fm, quick)
            concurrent = await _concurrent(fm, quick)
            cleanup = await _cleanup(storage, settings, quick)
        if server is not None:  # its watchdog stops it now; let it finish before its files go
            while _cpu_s(server.pid) is not None:  # noqa: ASYNC110 - polling another process
                await asyncio.sleep(0.05)
    return [throughput, concurrent, cleanup]


async def _throughput(fm: FileManager, quick: bool) -> Table:
    table = Table(
        "File store throughput (embedded SecantusDB, one client)",
        ["size", "operation", "n", "median ms", "p95 ms", "MB/s (median)"],
    )
    plan = (
        (KB, "1 KB", 50 if quick else 300),
        (MB, "1 MB", 10 if quick else 40),
        (10 * MB, "10 MB", 3 if quick else 12),
    )
    for size, label, n in plan:
        step(f"files: {n} x {label} upload, read, materialize")
        up_s: list[float] = []
        read_s: list[float] = []
        mat_s: list[float] = []
        for i in range(n + 1):  # the first round is a warm-up
            data = os.urandom(size)
            t = time.perf_counter()
            r = await fm.upload_file(1, data, f"b{i}.bin")
            t_up = time.perf_counter() - t
            t = time.perf_counter()
            got = await fm.read_file(r["file_id"], 1)
            t_read = time.perf_counter() - t
            t = time.perf_counter()
            path = await fm.materialize(r["file_id"], 1)
            t_mat = time.perf_counter() - t
            assert got == data and path is not None and r["sha256"] == hashlib.sha256(data).hexdigest()
            if i:
                up_s.append(t_up)
                read_s.append(t_read)
                mat_s.append(t_mat)
            await fm.delete_user_file(r["file_id"], 1)
        for op, samples in (("upload", up_s), ("read", read_s), ("materialize (cold)", mat_s)):
            st = summarize(samples)
            mbps = size / MB / (st["median_ms"] / 1000)
            table.rows.append([label, op, n, st["median_ms"], st["p95_ms"], mbps])
    table.notes.append(
        "upload = GridFS chunks + journaled metadata write; read and materialize verify sha256."
    )
    return table


async def _concurrent(fm: FileManager, quick: bool) -> Table:
    """Files/s with several uploads (then reads) in flight at once on one FileManager."""
    table = Table(
        "File store with concurrent requests (1 KB files, one FileManager)",
        ["in flight", "operation", "files", "files/s", "median ms", "p95 ms"],
    )
    total = 40 if quick else 200
    for width in (1, 8):
        step(f"files: {total} uploads and reads, {width} in flight")
        ids: list[str] = []
        t = time.perf_counter()
        samples = await _bounded([_timed_upload(fm, os.urandom(KB), i, ids) for i in range(total)], width)
        table.rows.append(_concurrency_row(width, "upload", samples, time.perf_counter() - t))
        t = time.perf_counter()
        samples = await _bounded([_timed_read(fm, f) for f in ids], width)
        table.rows.append(_concurrency_row(width, "read", samples, time.perf_counter() - t))
        for file_id in ids:
            await fm.delete_user_file(file_id, 2)
    table.notes.append("Latency: a request from when it is sent (at most `in flight` at once) to its reply.")
    return table


def _concurrency_row(width: int, op: str, samples: list[float], wall: float) -> list[Any]:
    st = summarize(samples)
    return [width, op, len(samples), len(samples) / wall, st["median_ms"], st["p95_ms"]]


async def _timed_upload(fm: FileManager, data: bytes, i: int, ids: list[str]) -> float:
    t = time.perf_counter()
    r = await fm.upload_file(2, data, f"c{i}.bin")
    ids.append(r["file_id"])
    return time.perf_counter() - t


async def _timed_read(fm: FileManager, file_id: str) -> float:
    t = time.perf_counter()
    got = await fm.read_file(file_id, 2)
    assert got is not None and len(got) == KB
    return time.perf_counter() - t


async def _bounded(coros: list[Coroutine[Any, Any, float]], width: int) -> list[float]:
    sem = asyncio.Semaphore(width)

    async def one(c: Coroutine[Any, Any, float]) -> float:
        async with sem:
            return await c

    return list(await asyncio.gather(*(one(c) for c in coros)))


async def _cleanup(storage: Storage, settings: Settings, quick: bool) -> Table:
    columns = [
        "files",
        "window",
        "insert s",
        "cleanup s",
        "files/s",
        "server CPU ms/file",
        "worst read ms",
        "load avg",
    ]
    table = Table("Cleanup of expired files", columns)
    for n in cleanup_sizes(quick):
        table.rows.append(await _cleanup_one(storage, settings, n))
    for drop in (False, True):
        table.rows.append(await _floor(storage, settings, 1_000 if quick else 10_000, drop))
    table.notes.append(
        "Each file: metadata + GridFS files document + one chunk, all deleted (no TTL index); the bytes "
        f"in the bucket of the file's expiry hour, the expiries spread over {EXPIRY_HOURS} hours that "
        "all ended long ago, so for each bucket the cleanup deletes its files' metadata by one journaled "
        "delete over its hour on the expires_at index and drops the bucket. "
        "server CPU: the SecantusDB process's user + system time during the cleanup, per file. worst "
        f"read: the slowest of point reads sent every {PROBE_EVERY_S * 1000:.0f} ms during it. load avg: "
        "the 1-minute load average at the start and the end of the cleanup. floor: the same files "
        "deleted by one unfiltered delete_many per collection, metadata and every bucket (nothing a "
        "cleanup can use: it must spare unexpired files and uploads in flight), what SecantusDB needs to "
        "remove the documents and their index entries; floor, drop: the metadata by one unfiltered "
        "delete_many, the buckets dropped (the least this cleanup's way can cost)."
    )
    if not quick and os.environ.get(FULL_ENV) != "1":
        table.notes.append(f"100,000 files: set {FULL_ENV}=1 (a few minutes on a busy 2-core machine).")
    return table


async def _cleanup_one(storage: Storage, settings: Settings, n: int) -> list[Any]:
    db = storage.db
    fm = FileManager(db, settings)
    insert_s = await _insert_expired(fm, n, datetime.now(UTC) - timedelta(days=3))
    step(f"cleanup: deleting {n:,} expired files (progress every 30 s)")
    pid = storage.embedded.record.pid if storage.embedded and storage.embedded.record else None
    cpu0, load0 = _cpu_s(pid), os.getloadavg()[0]
    t = time.perf_counter()
    watcher = asyncio.create_task(_report_remaining(storage, n, t))
    probe = _Probe(db)
    try:
        deleted = await fm.cleanup_expired_files()
    finally:
        watcher.cancel()
        worst_ms = await probe.stop()
    cleanup_s = time.perf_counter() - t
    cpu1, load1 = _cpu_s(pid), os.getloadavg()[0]
    assert deleted == n, (deleted, n)
    assert await _leftover(db) == 0, "the cleanup left bytes behind"
    server_ms = (cpu1 - cpu0) / n * 1000 if cpu0 is not None and cpu1 is not None else "-"
    load = f"{load0:.1f} / {load1:.1f}"
    return [n, fm.cleanup_batch, insert_s, cleanup_s, n / cleanup_s, server_ms, worst_ms, load]


class _Probe:
    """Point reads of the metadata every PROBE_EVERY_S while a cleanup runs; the worst latency in ms."""

    def __init__(self, db: Any) -> None:
        self.worst = 0.0
        self._task = asyncio.create_task(self._run(db))

    async def _run(self, db: Any) -> None:
        while True:
            t = time.perf_counter()
            await db[COLLECTION].find_one({"file_id": "user_0_0_probe"})
            self.worst = max(self.worst, time.perf_counter() - t)
            await asyncio.sleep(PROBE_EVERY_S)

    async def stop(self) -> float:
        """Stop probing (a read in flight counts up to now); the worst latency seen, in ms."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        return self.worst * 1000


async def _leftover(db: Any) -> int:
    """Documents left in any bucket of file bytes."""
    left = 0
    for name in await db.list_collection_names():
        if name.startswith("file_blobs"):
            left += await db[name].estimated_document_count()
    return left


async def _insert_expired(fm: FileManager, n: int, past: datetime) -> float:
    """Bulk-insert n expired files as upload_file writes them; seconds taken.

    Metadata, GridFS files document and one 1 KB chunk each, in the bucket of the file's expiry
    hour (EXPIRY_HOURS of them, with their indexes as uploads create them): uploading 10,000 files
    one by one would measure uploads, not cleanup.
    """
    step(f"cleanup: inserting {n:,} expired files")
    db = fm.db
    await fm.ensure_indexes()
    t = time.perf_counter()
    step_n = 1000
    for start in range(0, n, step_n):
        docs = [_meta(i, past) for i in range(start, min(n, start + step_n))]
        data = Binary(os.urandom(KB))
        by_bucket: dict[str, list[str]] = {}
        for d in docs:
            by_bucket.setdefault(bucket_for(d["expires_at"]), []).append(d["file_id"])
        for bucket, ids in by_bucket.items():
            await fm.buckets.for_writing(bucket)
            await db[f"{bucket}.chunks"].insert_many([{"files_id": f, "n": 0, "data": data} for f in ids])
            await db[f"{bucket}.files"].insert_many(
                [
                    {"_id": f, "length": KB, "chunkSize": 255 * KB, "uploadDate": past, "filename": "x"}
                    for f in ids
                ]
            )
        await db[COLLECTION].insert_many(docs)
        if (start + step_n) % 20_000 == 0:
            step(f"cleanup: inserted {start + step_n:,} of {n:,}")
    return time.perf_counter() - t


def _cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of process ``pid`` (None when it is gone or unknown)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == "Z":
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _floor(storage: Storage, settings: Settings, n: int, drop: bool) -> list[Any]:
    """The same n files removed by unfiltered delete_many calls (or drops): the server's own cost."""
    db = storage.db
    insert_s = await _insert_expired(FileManager(db, settings), n, datetime.now(UTC) - timedelta(days=3))
    buckets = sorted(name for name in await db.list_collection_names() if name.startswith("file_blobs_"))
    pid = storage.embedded.record.pid if storage.embedded and storage.embedded.record else None
    cpu0, load0 = _cpu_s(pid), os.getloadavg()[0]
    t = time.perf_counter()
    probe = _Probe(db)
    await db[COLLECTION].delete_many({})
    for name in buckets:
        await (db.drop_collection(name) if drop else db[name].delete_many({}))
    worst_ms = await probe.stop()
    wall = time.perf_counter() - t
    cpu1, load1 = _cpu_s(pid), os.getloadavg()[0]
    server_ms = (cpu1 - cpu0) / n * 1000 if cpu0 is not None and cpu1 is not None else "-"
    label = f"{n} (floor, drop)" if drop else f"{n} (floor)"
    load = f"{load0:.1f} / {load1:.1f}"
    return [label, "-", insert_s, wall, n / wall, server_ms, worst_ms, load]


async def _report_remaining(storage: Storage, n: int, t0: float) -> None:
    while True:
        await asyncio.sleep(30)
        left = await storage.db[COLLECTION].estimated_document_count()
        done = n - left
        rate = done / (time.perf_counter() - t0)
        eta = f", about {left / rate / 60:.0f} min left" if rate > 0 else ""
        step(f"cleanup: {done:,} of {n:,} deleted ({rate:.0f}/s{eta})")


def _meta(i: int, past: datetime) -> dict[str, Any]:
    """File i's metadata: uploaded at ``past``, expiring in one of EXPIRY_HOURS hours, all over by now."""
    file_id = f"user_{i % 50}_{int(past.timestamp())}_{i:010x}"
    expires_at = past + timedelta(hours=48 - i % EXPIRY_HOURS, minutes=i * 7 % 60)
    return {
        "file_id": file_id,
        "user_id": str(i % 50),
        "filename": "x.bin",
        "file_path": f"gridfs://{bucket_for(expires_at)}/{file_id}",
        "file_size": KB,
        "file_type": "binary",
        "content_type": "application/octet-stream",
        "sha256": "0" * 64,
        "uploaded_at": past,
        "expires_at": expires_at,
    }
