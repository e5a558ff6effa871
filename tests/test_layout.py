"""The package's layout: a small root, one folder per stage, small modules, and no import cycles.

The import graph is read from every module's syntax tree, so imports under ``TYPE_CHECKING`` and
inside functions count as edges too: a cycle hidden there is still two modules that need each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import code_interpreter

PACKAGE = Path(code_interpreter.__file__).resolve().parent
NAME = "code_interpreter"
MAX_ROOT_MODULES = 12
MAX_LINES = 500


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


def test_the_code_that_runs_inside_the_sandbox_says_so() -> None:
    doc = ast.get_docstring(ast.parse((PACKAGE / "inside" / "__init__.py").read_text())) or ""
    first = doc.splitlines()[0]
    assert "inside the sandbox" in first and "stdlib" in first
