"""``FILES``, ``get_file_path`` and ``load_file``: the user's uploaded files inside the sandboxed child.

Heavy libraries (pandas, numpy, PIL) are imported inside the loaders: this module is imported by
the runtime interpreter before anything else and must stay stdlib-only at import time.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

__all__ = ["PickleRefusedError", "UnknownFileError", "file_kind", "make_file_helpers"]

# Extension or declared type -> loader kind. Several spellings map to one kind so that both the
# file manager's type field and a bare extension find the same loader.
_KINDS: dict[str, str] = {
    "csv": "csv",
    "tsv": "tsv",
    "tab": "tsv",
    "xlsx": "excel",
    "xlsm": "excel",
    "xls": "excel",
    "ods": "excel",
    "excel": "excel",
    "json": "json",
    "geojson": "json",
    "ipynb": "json",
    "jsonl": "jsonl",
    "ndjson": "jsonl",
    "parquet": "parquet",
    "pq": "parquet",
    "feather": "feather",
    "arrow": "feather",
    "npy": "npy",
    "npz": "npz",
    "sqlite": "sqlite",
    "sqlite3": "sqlite",
    "db": "sqlite",
    "pkl": "pickle",
    "pickle": "pickle",
    "joblib": "pickle",
    "dill": "pickle",
    "zip": "bytes",
    "gz": "bytes",
    "tar": "bytes",
    "bin": "bytes",
    "binary": "bytes",
    "octet-stream": "bytes",
}
_KINDS.update(
    dict.fromkeys(("png", "jpg", "jpeg", "gif", "bmp", "webp", "tif", "tiff", "ico", "image"), "image")
)
_KINDS.update(
    dict.fromkeys(
        [
            *("txt", "text", "md", "markdown", "rst", "log", "html", "htm", "xml", "yaml", "yml", "toml"),
            *("ini", "cfg", "conf", "svg", "tex", "sql", "sh", "bash", "py", "js", "ts", "css", "c", "h"),
            *("cpp", "hpp", "java", "go", "rs", "rb", "r", "php", "swift", "kt", "scala", "lua", "pl"),
        ],
        "text",
    )
)

#: Loader options (``load_file(file_id, **options)``) are forwarded only to these kinds' readers.
_TABLE_KINDS = frozenset({"csv", "tsv", "excel", "jsonl", "parquet", "feather"})
_MAX_LISTED_IDS = 20


class UnknownFileError(KeyError):
    """A file id (or filename) that is not among this execution's files."""

    def __str__(self) -> str:
        # KeyError's own __str__ shows repr(message), quotes and escaped newlines included.
        return str(self.args[0]) if self.args else ""


class PickleRefusedError(ValueError):
    """load_file was asked to open a pickle file, which it never unpickles."""


def _normalise_type(value: str) -> str:
    value = value.strip().lower().lstrip(".")
    # A MIME type ("text/csv", "image/png") names its kind by the subtype.
    return value.rsplit("/", 1)[-1]


def _extension(name: str) -> str:
    return os.path.splitext(name)[1].lower().lstrip(".")


def file_kind(info: Mapping[str, Any]) -> str:
    """The loader kind for a file: its declared ``type`` if known, else its filename's or path's extension."""
    declared = _normalise_type(str(info.get("type") or ""))
    if declared in _KINDS:
        return _KINDS[declared]
    for name in (str(info.get("filename") or ""), str(info.get("path") or "")):
        ext = _extension(name)
        if ext in _KINDS:
            return _KINDS[ext]
    return "bytes"


def _detect_sep(path: str, preferred: str) -> str:
    """The delimiter of a delimited text file, judged from its first line (``preferred`` wins ties)."""
    with open(path, "rb") as fh:
        first = fh.read(65536).split(b"\n", 1)[0]
    if preferred.encode() in first:
        return preferred
    # A comma file is never re-guessed (commas win over other candidates), so quoted text with
    # semicolons cannot mislead the guess; only files without any comma get a different separator.
    for candidate in (",", "\t", ";", "|"):
        if candidate.encode() in first:
            return candidate
    return preferred


def _read_delimited(path: str, preferred: str, options: dict[str, Any]) -> Any:
    import pandas as pd

    if "sep" not in options and "delimiter" not in options:
        options = {**options, "sep": _detect_sep(path, preferred)}
    try:
        return pd.read_csv(path, **options)
    except UnicodeDecodeError:
        if "encoding" in options:
            raise
        # Spreadsheet exports are often cp1252/latin-1; latin-1 decodes any byte sequence.
        return pd.read_csv(path, encoding="latin-1", **options)


def _read_excel(path: str, options: dict[str, Any]) -> Any:
    import pandas as pd

    if "sheet_name" in options:
        return pd.read_excel(path, **options)
    sheets = pd.read_excel(path, sheet_name=None, **options)
    if len(sheets) == 1:
        return next(iter(sheets.values()))
    return sheets


def _read_text(path: str) -> str:
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8-sig") as fh:
        return json.load(fh)


def _read_image(path: str) -> Any:
    from PIL import Image

    image = Image.open(path)
    # Decode now so a corrupt file fails here, at load_file, not at first use much later.
    image.load()
    return image


def _read_npy(path: str, filename: str) -> Any:
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise
        raise PickleRefusedError(
            f"{filename!r} holds Python objects, which numpy can only load by unpickling; load_file never "
            "unpickles. Save a numeric or string array instead (np.save with a non-object dtype), or CSV."
        ) from exc


def _read_npz(path: str) -> Any:
    import numpy as np

    return np.load(path, allow_pickle=False)


def _open_sqlite(path: str, filename: str) -> sqlite3.Connection:
    # immutable=1: the input file sits on a read-only mount, so SQLite must not try to create
    # journal/WAL side files or take locks next to it (mode=ro alone fails on WAL databases there).
    uri = "file:" + quote(os.path.abspath(path)) + "?mode=ro&immutable=1"
    conn = sqlite3.connect(uri, uri=True)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise ValueError(f"{filename!r} is not a readable SQLite database ({exc}).") from exc
    return conn


def _refuse_pickle(filename: str) -> None:
    raise PickleRefusedError(
        f"load_file refuses to open {filename!r}: it is a pickle file, and unpickling can run arbitrary "
        "code, so load_file never does it. Save the data in a safe format instead (CSV, JSON, Parquet, "
        "Excel or NumPy .npy/.npz) and upload that file."
    )


def _load(path: str, filename: str, kind: str, options: dict[str, Any]) -> Any:
    if options and kind not in _TABLE_KINDS:
        raise TypeError(
            "load_file options are only passed to table readers (csv, tsv, excel, jsonl, parquet, "
            f"feather); {filename!r} is loaded as {kind!r}. Open get_file_path(file_id) to read it otherwise."
        )
    if kind == "pickle":
        _refuse_pickle(filename)
    if kind in ("csv", "tsv"):
        return _read_delimited(path, "\t" if kind == "tsv" else ",", options)
    if kind == "excel":
        return _read_excel(path, options)
    if kind in ("jsonl", "parquet", "feather"):
        import pandas as pd

        if kind == "jsonl":
            return pd.read_json(path, lines=True, **options)
        if kind == "parquet":
            return pd.read_parquet(path, **options)
        return pd.read_feather(path, **options)
    if kind == "json":
        return _read_json(path)
    if kind == "text":
        return _read_text(path)
    if kind == "image":
        return _read_image(path)
    if kind == "npy":
        return _read_npy(path, filename)
    if kind == "npz":
        return _read_npz(path)
    if kind == "sqlite":
        return _open_sqlite(path, filename)
    with open(path, "rb") as fh:
        return fh.read()


def _unknown_message(key: object, files: Mapping[str, Mapping[str, str]]) -> str:
    if not files:
        return (
            f"Unknown file id {key!r}: no files were passed to this execution (FILES is empty). "
            "Upload the file first and pass its file_id in user_files."
        )
    listed = ", ".join(f"{fid!r} ({info['filename']})" for fid, info in list(files.items())[:_MAX_LISTED_IDS])
    more = f" and {len(files) - _MAX_LISTED_IDS} more" if len(files) > _MAX_LISTED_IDS else ""
    return (
        f"Unknown file id {key!r}. Files available to this execution: {listed}{more}. "
        "FILES maps each file id to its path: `for file_id, path in FILES.items(): print(file_id, path)`; "
        "then call load_file(file_id) or get_file_path(file_id)."
    )


def make_file_helpers(files: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Build ``FILES``, ``get_file_path`` and ``load_file`` for one execution's ``files`` mapping.

    ``files`` maps file_id -> {"path": read-only path, "filename": display name, "type": e.g. "csv"}.
    """
    table: dict[str, dict[str, str]] = {}
    for file_id, info in files.items():
        path = str(info["path"])
        table[str(file_id)] = {
            "path": path,
            "filename": str(info.get("filename") or os.path.basename(path)),
            "type": str(info.get("type") or ""),
        }
    paths = MappingProxyType({fid: info["path"] for fid, info in table.items()})

    def resolve(file_id: object) -> dict[str, str]:
        key = os.fspath(file_id) if isinstance(file_id, os.PathLike) else str(file_id)
        if key in table:
            return table[key]
        # Models often pass the display name; accept it when it names exactly one file.
        named = [info for info in table.values() if info["filename"] == key]
        if len(named) == 1:
            return named[0]
        raise UnknownFileError(_unknown_message(file_id, table))

    def get_file_path(file_id: str) -> str:
        """Return the read-only path of an uploaded file (a key of FILES, or its unique filename)."""
        return resolve(file_id)["path"]

    def load_file(file_id: str, **options: Any) -> Any:
        """Load an uploaded file (a key of FILES, or its unique filename) into a Python object.

        By type: csv/tsv -> pandas DataFrame (delimiter detected); xlsx/xls/ods -> a DataFrame if the
        workbook has one sheet, else a dict {sheet name: DataFrame} with every sheet; json -> the parsed
        object (dict/list; use pd.json_normalize(obj) for a table); jsonl -> DataFrame; parquet,
        feather -> DataFrame; text, markdown, code, html, xml, yaml, log -> str; images -> PIL.Image;
        npy -> numpy array and npz -> numpy NpzFile (never with pickled objects); sqlite/db -> a read-only
        sqlite3.Connection; pickle -> refused (use CSV, JSON, Parquet or .npy); anything else -> bytes.
        Keyword options (sep=, sheet_name=, usecols=, …) are passed to the pandas reader of table files.
        """
        info = resolve(file_id)
        return _load(info["path"], info["filename"], file_kind(info), options)

    helpers: dict[str, Callable[..., Any] | Mapping[str, str]] = {
        "FILES": paths,
        "get_file_path": get_file_path,
        "load_file": load_file,
    }
    return helpers
