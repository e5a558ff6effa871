"""The package's layout: a small root, one folder per stage, small modules, and no import cycles.

The import graph is read from every module's syntax tree, so imports under ``TYPE_CHECKING`` and
inside functions count as edges too: a cycle hidden there is still two modules that need each other.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import code_interpreter

PACKAGE = Path(code_interpreter.__file__).resolve().parent
NAME = "code_interpreter"
MAX_ROOT_MODULES = 12
MAX_LINES = 500
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    """Dotted module name → file, for every module of the package."""
    out: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = [NAME, *rel.parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def import_graph() -> dict[str, set[str]]:
    """Edges module → module it imports (within the package), from every import statement."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, is_package, node)
                # ``from pkg import sub`` imports the submodule when there is one.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                if target in modules and target != module:
                    graph[module].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_type_checking_and_function_local_imports() -> None:
    graph = import_graph()
    # tools.dispatch imports the interpreter only under TYPE_CHECKING; agent imports compat in a function
    assert f"{NAME}.interpreter" in graph[f"{NAME}.tools.dispatch"]
    assert f"{NAME}.compat" in graph[f"{NAME}.agent"]


def test_no_import_cycles() -> None:
    assert find_cycle(import_graph()) is None


def package_graph() -> dict[str, set[str]]:
    """The import graph with every subpackage drawn as one node (root modules stay themselves).

    A cycle here is two packages that need each other, even when no two of their modules do: the
    package-level cycle files → executor → files once hid from the module graph.
    """

    def node(module: str) -> str:
        parts = module.split(".")
        return ".".join(parts[:2]) if len(parts) > 2 or (PACKAGE / parts[-1]).is_dir() else module

    packages: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        if module == NAME:
            continue  # the package's face re-exports from everywhere; it is imported by no module here
        src = node(module)
        packages.setdefault(src, set()).update(node(t) for t in targets if node(t) not in (src, NAME))
    return packages


def test_no_import_cycles_between_packages() -> None:
    assert find_cycle(package_graph()) is None


def test_the_runtime_side_imports_only_the_standard_library_and_itself() -> None:
    """Everything under runtime/ runs in the sandbox's interpreter, which has no code_interpreter deps."""
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    found: dict[str, set[str]] = {}
    for path in (PACKAGE / "runtime").rglob("*.py"):
        for stmt in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in stmt.names] if isinstance(stmt, ast.Import) else []
            if isinstance(stmt, ast.ImportFrom) and stmt.level == 0:
                names = [stmt.module or ""]
            bad = {n for n in names if n.split(".")[0] not in stdlib}
            if bad:
                found.setdefault(str(path.relative_to(PACKAGE)), set()).update(bad)
    # numpy, pandas, matplotlib and cloudpickle are imported lazily by the code in the user's process
    lazy = {"numpy", "pandas", "matplotlib", "matplotlib.pyplot", "matplotlib.figure", "PIL", "PIL.Image",
            "cloudpickle", "openpyxl", "pyarrow", "yaml"}  # fmt: skip
    assert {k: v - lazy for k, v in found.items() if v - lazy} == {}


def test_the_root_holds_few_modules_without_shared_prefixes() -> None:
    root = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert len(root) <= MAX_ROOT_MODULES, root
    stems = [s for s in root if s != "__init__"]
    prefixes = [s.lstrip("_").split("_")[0] for s in stems]
    assert len(prefixes) == len(set(prefixes)), stems


def test_every_module_is_small() -> None:
    too_long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert too_long == {}


def test_every_function_is_short() -> None:
    """At most 80 lines from ``def`` to its end, its docstring not counted (issue #21: three were 92-118)."""
    long: dict[str, int] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                doc = node.body[0] if ast.get_docstring(node) else None
                if doc is not None:
                    length -= (doc.end_lineno or doc.lineno) - doc.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(PACKAGE)}:{node.name}"] = length
    assert long == {}


def test_the_code_that_runs_inside_the_sandbox_says_so() -> None:
    doc = ast.get_docstring(ast.parse((PACKAGE / "runtime" / "inside" / "__init__.py").read_text())) or ""
    first = doc.splitlines()[0]
    assert "inside the sandbox" in first and "stdlib" in first
