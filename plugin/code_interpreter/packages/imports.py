"""Import scanning (AST) and the import-name → distribution map.

The scan never runs the code. The exact answer walks the syntax tree, so ``"import os"`` inside a
string is not an import and ``from x.y import z`` is ``x``. Building that tree costs ~40 ms for a
2,000-line script, so every call first takes :func:`import_candidates`: a pass over the text that
finds a *superset* of the imported modules without parsing. When all of them are installed there is
nothing to do and no tree is needed; otherwise the tree decides (a word in a string or comment can
only add a candidate, never hide an import).
"""

from __future__ import annotations

import ast
import collections
import functools
import gc
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

__all__ = ["ImportScan", "canonicalize", "import_candidates", "import_map", "parse_cached", "scan_imports"]

# Handlers that make an import inside ``try`` optional: the code is written to run without it.
_OPTIONAL_HANDLERS = frozenset({"ImportError", "ModuleNotFoundError", "Exception", "BaseException"})
_DYNAMIC_IMPORTERS = frozenset({"__import__", "import_module"})


def canonicalize(name: str) -> str:
    """PEP 503 normalised distribution name: runs of ``-_.`` become ``-``, lower case."""
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def import_map() -> dict[str, str]:
    """Top-level import name → distribution name, for the names that differ (data/import_map.json)."""
    raw = json.loads(resources.files("code_interpreter").joinpath("data/import_map.json").read_text())
    return {k: v for k, v in raw.items() if not k.startswith("_")}


@dataclass(frozen=True, slots=True)
class ImportScan:
    """Top-level modules a piece of code imports, split by whether the code survives their absence."""

    required: tuple[str, ...] = ()
    """Modules imported unconditionally (sorted)."""
    optional: tuple[str, ...] = ()
    """Modules imported only inside ``try`` blocks that catch ImportError (or broader)."""
    lines: tuple[tuple[str, int], ...] = ()
    """(module, first line) for every module, for messages."""

    @property
    def modules(self) -> tuple[str, ...]:
        """Every imported top-level module (sorted)."""
        return tuple(sorted({*self.required, *self.optional}))

    def line_of(self, module: str) -> int | None:
        """First line importing ``module``, or None."""
        return next((ln for m, ln in self.lines if m == module), None)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view."""
        return {"required": list(self.required), "optional": list(self.optional), "lines": dict(self.lines)}


_PARSE_CACHE: collections.OrderedDict[str, ast.Module | None] = collections.OrderedDict()
_PARSE_CACHE_SIZE = 2  # the policy check and the scan of the same call


def parse_cached(code: str) -> ast.Module | None:
    """``ast.parse(code)`` (None on a syntax error), remembered for the last few sources.

    The policy check and the import scan both run on every execution; parsing is most of their
    cost on a long script, so the second one reuses the first one's tree. Trees are never mutated.
    """
    try:
        tree = _PARSE_CACHE[code]
        _PARSE_CACHE.move_to_end(code)
        return tree
    except KeyError:
        pass
    # Building a tree allocates hundreds of thousands of objects, and each burst triggers young-generation
    # collections that free nothing: pausing the collector halves the parse of a 2,000-line script.
    paused = gc.isenabled()
    gc.disable()
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # ValueError: NUL bytes
        tree = None
    finally:
        if paused:
            gc.enable()
    _PARSE_CACHE[code] = tree
    while len(_PARSE_CACHE) > _PARSE_CACHE_SIZE:
        _PARSE_CACHE.popitem(last=False)
    return tree


def scan_imports(code: str) -> ImportScan:
    """Top-level modules ``code`` imports; a SyntaxError gives an empty scan (the executor reports it)."""
    # Every import form contains the word (import, from … import, __import__, import_module); NFKC
    # folding of non-ASCII identifiers is the one way around that, so only ASCII takes the shortcut.
    if code.isascii() and "import" not in code:
        return ImportScan()
    tree = parse_cached(code)
    if tree is None:
        return ImportScan()
    visitor = _ImportVisitor()
    if code.isascii() and "__import__" not in code and "import_module" not in code:
        visitor.statements_only = True  # no dynamic imports: expressions need not be walked
    visitor.visit(tree)
    required = set(visitor.required)
    optional = set(visitor.optional) - required
    return ImportScan(
        required=tuple(sorted(required)),
        optional=tuple(sorted(optional)),
        lines=tuple(sorted(visitor.first_line.items())),
    )


# -- the quick pass -------------------------------------------------------------------------------------
# In valid Python the keywords ``import`` and ``from`` begin an import statement only at the start of a
# statement: after the indentation of a physical line, after ``;``, or after the ``:`` of a one-line
# compound statement (``try: import x``). Strings and comments can only add matches.
_KEYWORD = re.compile(r"\b(import|from)\b")
_GAP = r"(?:[ \t]|\\\r?\n)"  # blanks, or a backslash line continuation
_FIRST_NAME = re.compile(_GAP + r"+([A-Za-z_]\w*)")
_REST_OF_LINE = re.compile(r"(?:[^\n\\;#]|\\\r?\n)*")
_ITEM_NAME = re.compile(_GAP + r"*([A-Za-z_]\w*)")


def import_candidates(code: str) -> frozenset[str] | None:
    """A superset of the top-level modules ``code`` imports, found without building a syntax tree.

    Returns None when the text needs the parser: non-ASCII source (identifiers fold under NFKC),
    form feeds or lone carriage returns (line starts the pass does not model), and dynamic imports
    (``__import__``/``import_module``, found only in expressions). Candidates may include words from
    strings, comments, ``if TYPE_CHECKING:`` blocks or relative-looking text; they never miss a module
    that :func:`scan_imports` reports, which tests check over the whole standard library.
    """
    if not code.isascii():
        return None
    if "import" not in code:
        return frozenset()
    if "__import__" in code or "import_module" in code or "\f" in code:
        return None
    if "\r" in code and "\r" in code.replace("\r\n", ""):
        return None
    found: set[str] = set()
    for m in _KEYWORD.finditer(code):
        start = m.start()
        i = start - 1
        while i >= 0 and code[i] in " \t":
            i -= 1
        if i >= 0 and code[i] not in "\n;:":
            continue  # not at the start of a statement: ``from x import y``'s import, ``raise … from e``
        head = _FIRST_NAME.match(code, m.end())
        if head is None:
            continue  # ``from .x import y`` (relative) or not an import at all
        found.add(head.group(1))
        if m.group(1) == "import":  # import a.b as c, d, e.f
            rest = _REST_OF_LINE.match(code, head.end())
            for item in rest.group().split(",")[1:] if rest else ():
                if name := _ITEM_NAME.match(item):
                    found.add(name.group(1))
    found.discard("__future__")
    return frozenset(found)


class _ImportVisitor(ast.NodeVisitor):
    """Collects imports, tracking whether each sits in an ImportError-guarded ``try`` body."""

    def __init__(self) -> None:
        self.required: set[str] = set()
        self.optional: set[str] = set()
        self.first_line: dict[str, int] = {}
        self._guarded = 0  # depth of enclosing try bodies whose handlers catch ImportError
        self.statements_only = False

    def generic_visit(self, node: ast.AST) -> None:
        if not self.statements_only:
            super().generic_visit(node)
            return
        # only statement lists can hold import statements: skip expression subtrees (most of the tree)
        for name in ("body", "orelse", "finalbody", "handlers", "cases"):
            for child in getattr(node, name, ()) or ():
                if isinstance(child, ast.stmt | ast.excepthandler | ast.match_case):
                    self.visit(child)

    def _add(self, dotted: str | None, line: int) -> None:
        if not dotted:
            return
        top = dotted.split(".", 1)[0]
        if not top or top == "__future__" or not top.isidentifier():
            return
        (self.optional if self._guarded else self.required).add(top)
        self.first_line.setdefault(top, line)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0:  # relative imports name the user's own package, never a distribution
            self._add(node.module, node.lineno)

    def visit_Call(self, node: ast.Call) -> None:
        # __import__("x") / importlib.import_module("x") with a literal name: as good as an import
        func = node.func
        name = (
            func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        )
        if name in _DYNAMIC_IMPORTERS and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                self._add(arg.value, node.lineno)
        self.generic_visit(node)

    def _visit_try(self, node: ast.Try | ast.TryStar) -> None:
        guarded = any(_catches_import_error(h) for h in node.handlers)
        self._guarded += guarded
        for stmt in node.body:
            self.visit(stmt)
        self._guarded -= guarded
        for part in (*node.handlers, *node.orelse, *node.finalbody):
            self.visit(part)

    visit_Try = _visit_try
    visit_TryStar = _visit_try

    def visit_If(self, node: ast.If) -> None:
        # ``if TYPE_CHECKING:`` imports never run
        test = node.test
        name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
        if name == "TYPE_CHECKING":
            for stmt in node.orelse:
                self.visit(stmt)
            return
        self.generic_visit(node)

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        # a function body runs when called, possibly outside the try that surrounds its definition
        saved, self._guarded = self._guarded, 0
        self.generic_visit(node)
        self._guarded = saved

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function
    visit_Lambda = _visit_function


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:  # bare except
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    for t in types:
        name = t.id if isinstance(t, ast.Name) else t.attr if isinstance(t, ast.Attribute) else None
        if name in _OPTIONAL_HANDLERS:
            return True
    return False
