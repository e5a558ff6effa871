"""Display filenames made harmless, and file types from the extension plus a content sniff.

A filename here is only ever a label: bytes live in GridFS and the local cache path is built
from the file_id. Still, the label reaches the sandbox as the last path component of the cache
copy, so it must be a single, portable, printable component.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["content_type_for", "detect_file_type", "safe_filename", "safe_id_part"]

MAX_NAME_BYTES = 255  # ext4, APFS, NTFS component limit (bytes in UTF-8)
MAX_EXT_CHARS = 16

_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    f"{p}{n}" for p in ("COM", "LPT") for n in "123456789¹²³"
}
_FORBIDDEN = set('<>:"/\\|?*')
# Bidi overrides let "invoice\u202efdp.exe" display as "invoiceexe.pdf".
_BIDI = set("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def safe_filename(name: object, default: str = "file") -> str:
    """One harmless path component for ``name``: no traversal, controls or reserved names; Unicode kept."""
    text = unicodedata.normalize("NFC", str(name) if name is not None else "")
    text = text.replace("\\", "/")
    parts = [p for p in text.split("/") if p.strip() not in ("", ".", "..")]
    text = parts[-1] if parts else ""
    out = []
    for ch in text:
        if ch in _BIDI or unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") or ch == "\x00":
            continue
        out.append("_" if ch in _FORBIDDEN else ch)
    text = "".join(out).strip()
    # Leading dots hide files (and ".." must never survive); trailing dots/spaces vanish on Windows.
    text = text.lstrip(".").rstrip(". ").strip()
    if not text:
        return default
    stem, _, ext = text.rpartition(".")
    if not stem or not ext or len(ext) > MAX_EXT_CHARS or ext != ext.strip():
        stem, ext = text, ""
    if stem.split(".")[0].strip().upper() in _WINDOWS_RESERVED:
        stem = "_" + stem  # "con.txt" opens the console on Windows
    suffix = f".{ext}" if ext else ""
    budget = MAX_NAME_BYTES - len(suffix.encode())
    if len(stem.encode()) > budget:
        stem = stem.encode()[:budget].decode("utf-8", errors="ignore").rstrip(". ")
    return (stem or default) + suffix


_ID_UNSAFE = re.compile(r"[^A-Za-z0-9-]")


def safe_id_part(user_id: str) -> str:
    """The user id as it appears inside a file_id (letters, digits and '-', at most 64 chars)."""
    return _ID_UNSAFE.sub("-", user_id)[:64] or "-"


# Extension → canonical type name.
_EXT_TYPES: dict[str, str] = {
    "csv": "csv",
    "tsv": "tsv",
    "txt": "text",
    "text": "text",
    "md": "markdown",
    "log": "text",
    "json": "json",
    "jsonl": "jsonl",
    "ndjson": "jsonl",
    "xml": "xml",
    "html": "html",
    "htm": "html",
    "yaml": "yaml",
    "yml": "yaml",
    "toml": "toml",
    "ini": "text",
    "py": "python",
    "sql": "sql",
    "xlsx": "excel",
    "xlsm": "excel",
    "xls": "excel",
    "ods": "ods",
    "docx": "docx",
    "pptx": "pptx",
    "parquet": "parquet",
    "pq": "parquet",
    "feather": "feather",
    "arrow": "feather",
    "sqlite": "sqlite",
    "sqlite3": "sqlite",
    "db": "sqlite",
    "png": "png",
    "jpg": "jpeg",
    "jpeg": "jpeg",
    "gif": "gif",
    "webp": "webp",
    "bmp": "bmp",
    "svg": "svg",
    "pdf": "pdf",
    "zip": "zip",
    "gz": "gzip",
    "tgz": "gzip",
    "npy": "npy",
    "npz": "npz",
    "pkl": "pickle",
    "pickle": "pickle",
}
# Types whose files are ZIP containers: a ZIP magic confirms them instead of contradicting them.
_ZIP_FAMILY = {"excel", "ods", "docx", "pptx", "npz", "zip"}
_MIME: dict[str, str] = {
    "csv": "text/csv", "tsv": "text/tab-separated-values", "text": "text/plain", "markdown": "text/markdown",
    "json": "application/json", "jsonl": "application/x-ndjson", "xml": "application/xml",
    "html": "text/html", "yaml": "application/yaml", "toml": "application/toml", "python": "text/x-python",
    "sql": "application/sql", "excel": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "ods": "application/vnd.oasis.opendocument.spreadsheet",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "parquet": "application/vnd.apache.parquet", "feather": "application/vnd.apache.arrow.file",
    "sqlite": "application/vnd.sqlite3", "png": "image/png", "jpeg": "image/jpeg", "gif": "image/gif",
    "webp": "image/webp", "bmp": "image/bmp", "svg": "image/svg+xml", "pdf": "application/pdf",
    "zip": "application/zip", "gzip": "application/gzip", "npy": "application/x-npy",
    "npz": "application/zip", "pickle": "application/octet-stream", "binary": "application/octet-stream",
}  # fmt: skip
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"%PDF-", "pdf"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),  # an empty archive
    (b"PAR1", "parquet"),
    (b"SQLite format 3\x00", "sqlite"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"\x1f\x8b", "gzip"),
    (b"ARROW1", "feather"),
    (b"\x93NUMPY", "npy"),
)
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # legacy .xls/.doc container


def sniff(head: bytes) -> str | None:
    """Type named by the leading magic bytes, or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head.startswith(_OLE):
        return "ole"
    return None


def detect_file_type(filename: str, head: bytes, hint: str | None = None, tail: bytes = b"") -> str:
    """File type from the name's extension and a sniff of the first bytes; the content wins on conflict."""
    ext = filename.rpartition(".")[2].lower() if "." in filename else ""
    by_ext = _EXT_TYPES.get(ext)
    declared = by_ext or (hint.strip().lower() if hint and hint.strip() else None)
    found = sniff(head)
    if found == "parquet" and tail and not tail.endswith(b"PAR1"):
        found = None  # PAR1 at both ends, or it is not parquet
    if found == "ole":
        return "excel" if declared == "excel" else "binary"
    if found is None:
        if declared:
            return declared
        return "text" if _looks_text(head) else "binary"
    if found == "zip" and declared in _ZIP_FAMILY:
        return declared
    return found


def content_type_for(file_type: str) -> str:
    """MIME type for a canonical type name."""
    return _MIME.get(file_type, "application/octet-stream")


def _looks_text(head: bytes) -> bool:
    if not head:
        return True
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # a multi-byte character cut at the sniff boundary
    return True
