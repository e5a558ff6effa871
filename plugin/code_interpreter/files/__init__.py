"""Files: each user's uploads and generated files, metadata in MongoDB and bytes in GridFS, with expiry.

- :mod:`.manager` — :class:`FileManager` (upload, list, read, materialize, delete, cleanup, reconcile);
- :mod:`.blobs` — a GridFS bucket, written chunk by chunk with a running sha256;
- :mod:`.buckets` — one bucket per UTC hour of expiry (dropped whole once it has passed), and the legacy one;
- :mod:`.deletion` — deleting many files at once (cleanup, a user's files, quota eviction), dropping buckets;
- :mod:`.cache` — verified local copies the sandbox reads;
- :mod:`.names` — safe file names and file types sniffed from the bytes;
- :mod:`.orphans` — what a crash left behind, for reconcile;
- :mod:`.session_store` — :class:`SessionStore`: each session's ownership lease across hosts and its
  saved snapshot, in one record (:mod:`.leases`: the record and its atomic updates);
- :mod:`.quota` — the per-user quota over files and saved sessions together.
"""

from __future__ import annotations

from .manager import BUCKET, COLLECTION, FileManager

__all__ = ["BUCKET", "COLLECTION", "FileManager"]
