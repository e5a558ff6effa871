"""The quick import pass: a superset of what the AST scan finds, without building a tree."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest

from code_interpreter.packages import PackageManager
from code_interpreter.packages import imports as _imports
from code_interpreter.packages.imports import import_candidates, scan_imports
from code_interpreter.settings import Settings

# Every way an import statement can start, and the module the quick pass must report.
STATEMENT_FORMS = [
    ("import numpy", {"numpy"}),
    ("import numpy as np, pandas as pd", {"numpy", "pandas"}),
    ("import a.b.c, d . e as f", {"a", "d"}),
    ("from x.y import z", {"x"}),
    ("from  x  import (\n    a,  # comment\n    b,\n)", {"x"}),
    ("x = 1; import toml", {"toml"}),
    ("x = 1;import toml", {"toml"}),
    ("if True: import toml", {"toml"}),
    ("if True:import toml", {"toml"}),
    ("try: import a\nexcept ImportError: import b\nelse: from c import d", {"a", "b", "c"}),
    ("class A: import toml", {"toml"}),
    ("def f() -> int: import toml; return 1", {"toml"}),
    ("def f():\n\timport toml", {"toml"}),
    ("import a, \\\n    b", {"a", "b"}),
    ("import \\\n    a", {"a"}),
    ("from \\\n    a import b", {"a"}),
    ("x = 1; \\\nimport a", {"a"}),
    ("import a\r\nimport b\r\n", {"a", "b"}),
    ("match x:\n    case 1:\n        import a\n    case _: import b", {"a", "b"}),
    ("async def f():\n    async with x: import a", {"a"}),
    ("if x:\n    pass\nelif y: import a\nelse:\n    import b", {"a", "b"}),
    ("while False: import a\nfor i in (): import b\nwith x: import c", {"a", "b", "c"}),
    ("import a  # and import b\nimport c; import d", {"a", "c", "d"}),
]


@pytest.mark.parametrize(("code", "modules"), STATEMENT_FORMS)
def test_every_statement_form_is_found(code: str, modules: set[str]) -> None:
    found = import_candidates(code)
    assert found is not None
    assert set(scan_imports(code).modules) == modules  # the forms are valid Python the AST agrees with
    assert modules <= found


@pytest.mark.parametrize(
    "code",
    [
        "raise ValueError('x') from err",
        "def g():\n    yield from range(3)",
        "from . import x\nfrom .mod import y",
        "from __future__ import annotations",
        "x = 'no imports here'",
        "",
    ],
)
def test_no_false_candidates_from_other_uses_of_the_keywords(code: str) -> None:
    assert import_candidates(code) == frozenset()


def test_text_in_strings_and_comments_only_adds_candidates() -> None:
    code = 's = """\nimport requests\n"""\n# step 1: import data\nt = "x; import flask"\n'
    assert import_candidates(code) == {"requests", "data", "flask"}
    assert scan_imports(code).modules == ()  # the tree is what decides, when a candidate is missing


@pytest.mark.parametrize(
    "code",
    [
        "__import__('toml')",
        "import importlib\nimportlib.import_module('toml')",
        "import caf\u00e9",  # non-ASCII: NFKC folding is the parser's business
        "import a\fimport b",
        "import a\rimport b",
    ],
)
def test_the_parser_is_needed(code: str) -> None:
    assert import_candidates(code) is None


def _sources() -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts)


def test_superset_of_the_ast_scan_over_the_whole_standard_library() -> None:
    """Every module the AST scan reports, in every file of the standard library, is a candidate."""
    checked = 0
    misses: dict[str, set[str]] = {}
    for path in _sources():
        try:
            code = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        found = import_candidates(code)
        if found is None:
            continue
        checked += 1
        missed = set(scan_imports(code).modules) - found
        if missed:
            misses[str(path)] = missed
    assert not misses
    # The check really ran over the library: about 1,900 files take the quick pass in a full CPython
    # install, about 600 in Debian's python3 (its test modules are packaged apart).
    assert checked > 500


# -- through the package manager ----------------------------------------------------------------------


@pytest.fixture
def pm(tmp_path: Path) -> PackageManager:
    return PackageManager(Settings(home=tmp_path / "home", runtime_dir=tmp_path / "rt", runtime_packages=()))


async def test_prepare_builds_no_tree_when_every_candidate_is_installed(pm: PackageManager) -> None:
    code = "import os, json\nfrom collections import Counter\n" + "x = Counter('abc')\n" * 50
    result = await pm.prepare(code)
    assert result.ok and result.installed == () and pm.pip_calls == 0
    assert code not in _imports._PARSE_CACHE  # answered by the quick pass


async def test_prepare_lets_the_tree_overrule_candidates_from_strings(pm: PackageManager) -> None:
    # "requests_oauthlib_xyz" is neither installed nor approved: were the quick pass trusted, this refuses
    code = 'doc = """\nimport requests_oauthlib_xyz\n"""\n# note: import flask_xyz\nprint(doc)\n'
    result = await pm.prepare(code)
    assert result.ok and result.refused == () and pm.pip_calls == 0
    assert code in _imports._PARSE_CACHE


async def test_prepare_refuses_a_real_one_line_import(pm: PackageManager) -> None:
    result = await pm.prepare("x = 1; import requests_oauthlib_xyz")
    assert [name for name, _ in result.refused] == ["requests_oauthlib_xyz"]
    assert "line 1" in result.refusal_message()
