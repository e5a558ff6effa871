"""File store: upload/read throughput (1 KB and 10 MB) and cleanup of 10,000 expired files.

Runs against an embedded SecantusDB started in a temporary directory (the plugin's default
set-up without MONGODB_URI), so figures include the wire protocol and WiredTiger, not a mock.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bson import Binary

from code_interpreter.files import BUCKET, COLLECTION, FileManager
from code_interpreter.settings import Settings
from code_interpreter.storage import Storage

from ._common import Table, summarize

KB, MB = 2**10, 2**20


async def run(quick: bool) -> list[Table]:
    """Upload/read/materialize throughput and cleanup time; quick mode uses fewer files."""
    with tempfile.TemporaryDirectory(prefix="bench-files-") as tmp:
        settings = Settings(home=Path(tmp), mongodb_uri=None, database="bench")
        async with Storage(settings) as storage:
            fm = FileManager(storage.db, settings)
            await fm.ensure_indexes()
            throughput = await _throughput(fm, quick)
            cleanup = await _cleanup(storage, settings, quick)
    return [throughput, cleanup]


async def _throughput(fm: FileManager, quick: bool) -> Table:
    table = Table(
        "File store throughput (embedded SecantusDB, one client)",
        ["size", "operation", "n", "median ms", "p95 ms", "MB/s (median)"],
    )
    for size, n in ((KB, 50 if quick else 300), (10 * MB, 3 if quick else 12)):
        label = "1 KB" if size == KB else "10 MB"
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


async def _cleanup(storage: Storage, settings: Settings, quick: bool) -> Table:
    table = Table("Cleanup of expired files", ["files", "batch", "insert s", "cleanup s", "files/s"])
    n = 1_000 if quick else 10_000
    db = storage.db
    past = datetime.now(UTC) - timedelta(days=3)
    # Bulk-insert exactly what upload_file writes (metadata, GridFS files doc, one 1 KB chunk each):
    # uploading 10,000 files one by one would measure uploads, not cleanup.
    t = time.perf_counter()
    step = 1000
    for start in range(0, n, step):
        ids = [f"user_{i % 50}_{int(past.timestamp())}_{i:010x}" for i in range(start, min(n, start + step))]
        data = Binary(os.urandom(KB))
        await db[f"{BUCKET}.chunks"].insert_many([{"files_id": f, "n": 0, "data": data} for f in ids])
        await db[f"{BUCKET}.files"].insert_many(
            [
                {"_id": f, "length": KB, "chunkSize": 255 * KB, "uploadDate": past, "filename": "x"}
                for f in ids
            ]
        )
        await db[COLLECTION].insert_many([_meta(f, past) for f in ids])
    insert_s = time.perf_counter() - t
    fm = FileManager(db, settings)
    t = time.perf_counter()
    deleted = await fm.cleanup_expired_files()
    cleanup_s = time.perf_counter() - t
    assert deleted == n, (deleted, n)
    table.rows.append([n, fm.cleanup_batch, insert_s, cleanup_s, n / cleanup_s])
    table.notes.append("Each file: metadata + GridFS files document + one chunk, all deleted (no TTL index).")
    return table


def _meta(file_id: str, past: datetime) -> dict[str, Any]:
    return {
        "file_id": file_id,
        "user_id": file_id.split("_")[1],
        "filename": "x.bin",
        "file_path": f"gridfs://{BUCKET}/{file_id}",
        "file_size": KB,
        "file_type": "binary",
        "content_type": "application/octet-stream",
        "sha256": "0" * 64,
        "uploaded_at": past,
        "expires_at": past + timedelta(hours=48),
    }
