"""Filename neutralisation and file-type detection (pure functions, table-driven)."""

from __future__ import annotations

import pytest

from code_interpreter.files.names import content_type_for, detect_file_type, safe_filename, safe_id_part

ZIP = b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + b"\x00" * 20
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF"
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3"
PARQUET = b"PAR1\x15\x04\x15"
SQLITE = b"SQLite format 3\x00\x10\x00"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("report.csv", "report.csv"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system32\\config", "config"),
        ("/etc/shadow", "shadow"),
        ("C:\\Users\\x\\evil.txt", "evil.txt"),
        ("a\x00b.txt", "ab.txt"),
        ("new\nline\r.txt", "newline.txt"),
        ("tab\there.csv", "tabhere.csv"),
        ("..", "file"),
        ("../", "file"),
        ("", "file"),
        ("   ", "file"),
        (".bashrc", "bashrc"),
        ("CON", "_CON"),
        ("con.txt", "_con.txt"),
        ("Lpt1.csv", "_Lpt1.csv"),
        ("aux.tar.gz", "_aux.tar.gz"),
        ("console.txt", "console.txt"),
        ('what?<>:"|*.csv', "what_______.csv"),
        ("trailing. . ", "trailing"),
        ("données €.csv", "données €.csv"),
        ("日本語のファイル.xlsx", "日本語のファイル.xlsx"),
        ("🐍 data.json", "🐍 data.json"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("e\u0301t\u00e9.txt", "\u00e9t\u00e9.txt"),  # NFC
    ],
)
def test_safe_filename(raw: str, expected: str) -> None:
    assert safe_filename(raw) == expected


@pytest.mark.parametrize("stem", ["x" * 400, "é" * 300, "🐍" * 100])
def test_over_long_names_are_truncated_keeping_the_extension(stem: str) -> None:
    name = safe_filename(stem + ".parquet")
    assert name.endswith(".parquet")
    assert len(name.encode()) <= 255
    assert name.removesuffix(".parquet") == stem[: len(name) - len(".parquet")]  # cut at a character boundary


@pytest.mark.parametrize("raw", ["../../x", "/abs", "a/b/c", "..\\x", "x\x00y", "con", "a" * 1000])
def test_safe_filename_is_one_component_and_idempotent(raw: str) -> None:
    name = safe_filename(raw)
    assert "/" not in name and "\\" not in name and "\x00" not in name and name not in (".", "..")
    assert safe_filename(name) == name


@pytest.mark.parametrize(
    ("user_id", "expected"),
    [("123456789012345678", "123456789012345678"), ("a_b/../c", "a-b----c"), ("", "-")],
)
def test_safe_id_part(user_id: str, expected: str) -> None:
    assert safe_id_part(user_id) == expected


@pytest.mark.parametrize(
    ("filename", "head", "hint", "tail", "expected"),
    [
        ("data.csv", b"a,b\n1,2\n", None, b"", "csv"),
        ("data.csv", ZIP, None, b"", "zip"),  # a .csv that is really a ZIP
        ("book.xlsx", ZIP, None, b"", "excel"),  # xlsx is a ZIP container: consistent
        ("photo.txt", PNG, None, b"", "png"),
        ("photo.png", PNG, None, b"", "png"),
        ("scan.jpg", JPEG, None, b"", "jpeg"),
        ("x.bin", JPEG, None, b"", "jpeg"),
        ("doc.pdf", PDF, None, b"", "pdf"),
        ("table.csv", PARQUET, None, b"\x00\x00PAR1", "parquet"),
        (
            "table.parquet",
            PARQUET,
            None,
            b"broken!!",
            "parquet",
        ),  # magic only at the head: trust the extension
        ("notes.txt", PARQUET, None, b"not-par1", "text"),
        ("app.db", SQLITE, None, b"", "sqlite"),
        ("data.json", SQLITE, None, b"", "sqlite"),
        ("noext", b"plain text", None, b"", "text"),
        ("noext", b"\x00\x01\x02\xff", None, b"", "binary"),
        ("upload", b"a,b\n", "csv", b"", "csv"),  # the caller's hint when the extension says nothing
        ("upload.json", b"{}", "csv", b"", "json"),  # the extension beats the hint
        ("upload", ZIP, "csv", b"", "zip"),  # the content beats both
        ("empty.csv", b"", None, b"", "csv"),
    ],
)
def test_detect_file_type(filename: str, head: bytes, hint: str | None, tail: bytes, expected: str) -> None:
    assert detect_file_type(filename, head, hint, tail) == expected


@pytest.mark.parametrize(
    ("ftype", "mime"),
    [
        ("csv", "text/csv"),
        ("zip", "application/zip"),
        ("png", "image/png"),
        ("nope", "application/octet-stream"),
    ],
)
def test_content_type_for(ftype: str, mime: str) -> None:
    assert content_type_for(ftype) == mime
