"""The AST policy: a courtesy check that tells the model early and clearly what the sandbox will not do.

It is not the wall. The OS sandbox (namespaces, uid drop, seccomp, limits) contains code whether
or not this check runs; the policy exists so that the model gets one precise sentence ("network
access is not available …") instead of a confusing failure deep inside a library.

It reads the syntax tree (never regular expressions over the source), so ``re.compile``,
``df.eval``, ``model.eval()``, ``os.path.join``, ``plt.grid()`` and names containing "gc" are not
confused with the constructs it refuses. By default it refuses:

- network clients: importing ``socket``, ``urllib.request``, ``http.client``, ``requests``, ``httpx`` …
- process spawning: ``subprocess``, ``pty``, ``os.system`` / ``popen`` / ``exec*`` / ``spawn*`` /
  ``posix_spawn*`` / ``fork``, ``asyncio.create_subprocess_*``, and signalling (``os.kill``);
- native code: ``ctypes``, ``cffi``;
- reaching into the interpreter: ``__subclasses__``, ``__globals__``, ``__builtins__``, ``__code__``,
  ``__closure__``, frame attributes (``f_globals``, ``f_back``, ``gi_frame``, ``tb_frame`` …),
  ``sys._getframe``, ``inspect.currentframe``/``stack``, ``gc.get_referrers``, and the same names
  reached through ``getattr(x, "<name>")``, ``__import__("os").system`` or ``importlib``.

Two harmless uses next to refused ones are let through: ``socket.gethostname()`` (``import socket``
is refused unless the code uses the module for nothing else) and the descriptive attributes of a
function's code object (``f.__code__.co_varnames``, ``co_argcount`` …; any other use of
``__code__`` is still refused).

Network modules stay refused although each sandbox has a loopback of its own (code can serve and
connect on 127.0.0.1 *inside* it; nothing outside is reachable): a model that opens a socket in a data
tool almost always means the internet, and one clear sentence serves it better than a
``ConnectionRefusedError`` from deep inside a library. Code that needs a local server (a task's own
tests, say) runs with ``policy="off"``, like code that starts ``python`` as a subprocess.

``multiprocessing`` and ``concurrent.futures`` are allowed on purpose: joblib, scikit-learn
(``n_jobs``) and pandas helpers use them, and the sandbox's process limit and PID namespace bound
them. Mode ``"off"`` disables the check (the sandbox is tested that way).
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .packages.imports import parse_cached

__all__ = ["PolicyFinding", "check_code", "policy_message"]

_NETWORK = "network access is not available in the sandbox"
_NETWORK_HINT = "Work with the user's uploaded files (load_file, FILES) instead."
_PROCESS = "starting processes or shell commands is not allowed"
_PROCESS_HINT = "Use Python libraries instead of shell commands (shutil, pathlib, zipfile, pandas …)."
_SIGNAL = "signalling other processes is not allowed"
_NATIVE = "loading native code through ctypes/cffi is not allowed"
_INTERNALS = (
    "reaching into the interpreter's internals (frames, globals, builtins, subclass lists) is not allowed"
)
_INTERNALS_HINT = "Use ordinary attributes and functions."

# Modules refused on import (a dotted entry also refuses its submodules).
REFUSED_MODULES: dict[str, tuple[str, str]] = {
    **{
        m: (_NETWORK, _NETWORK_HINT)
        for m in (
            "socket", "_socket", "socketserver", "urllib.request", "urllib3", "http.client", "http.server",
            "requests", "httpx", "aiohttp", "ftplib", "smtplib", "smtpd", "poplib", "imaplib", "nntplib",
            "telnetlib", "xmlrpc", "paramiko", "pycurl", "websocket", "websockets", "asyncssh", "twisted",
            "grpc", "zmq", "aiosmtplib", "httplib2", "treq",
        )
    },
    **{
        m: (_PROCESS, _PROCESS_HINT)
        for m in ("subprocess", "_posixsubprocess", "pty", "pexpect", "sh", "plumbum", "webbrowser")
    },
    **{m: (_NATIVE, "") for m in ("ctypes", "_ctypes", "cffi")},
}  # fmt: skip

_OS_PROCESS = {"system", "popen", "fork", "forkpty", "posix_spawn", "posix_spawnp", "startfile"}
_OS_PROCESS_PREFIXES = ("exec", "spawn")  # execv, execvpe, spawnl, spawnvpe …
_OS_SIGNAL = {"kill", "killpg"}

# Fully qualified callables and attributes refused wherever they are reached.
REFUSED_NAMES: dict[str, tuple[str, str]] = {
    "asyncio.create_subprocess_exec": (_PROCESS, _PROCESS_HINT),
    "asyncio.create_subprocess_shell": (_PROCESS, _PROCESS_HINT),
    "sys._getframe": (_INTERNALS, _INTERNALS_HINT),
    "sys._current_frames": (_INTERNALS, _INTERNALS_HINT),
    "inspect.currentframe": (_INTERNALS, _INTERNALS_HINT),
    "inspect.stack": (_INTERNALS, _INTERNALS_HINT),
    "inspect.trace": (_INTERNALS, _INTERNALS_HINT),
    "inspect.getouterframes": (_INTERNALS, _INTERNALS_HINT),
    "inspect.getinnerframes": (_INTERNALS, _INTERNALS_HINT),
    "gc.get_referrers": (_INTERNALS, _INTERNALS_HINT),
    "gc.get_referents": (_INTERNALS, _INTERNALS_HINT),
    "gc.get_objects": (_INTERNALS, _INTERNALS_HINT),
}

# Attribute names refused on any object (and as getattr/subscript string literals).
INTERNAL_ATTRS = frozenset(
    {
        "__subclasses__", "__globals__", "__builtins__", "__code__", "__closure__",
        "f_globals", "f_locals", "f_back", "f_builtins", "gi_frame", "cr_frame", "ag_frame", "tb_frame",
    }
)  # fmt: skip

# Modules refused on import unless the code uses them only for these harmless names.
HARMLESS: dict[str, frozenset[str]] = {"socket": frozenset({"gethostname"})}
_HARMLESS_DOTTED = frozenset(f"{m}.{n}" for m, names in HARMLESS.items() for n in names)
# Read-only, descriptive attributes of a code object: ``f.__code__.co_varnames`` is not a refusal.
CODE_FACTS = frozenset(
    {"co_varnames", "co_argcount", "co_posonlyargcount", "co_kwonlyargcount", "co_nlocals", "co_name",
     "co_qualname", "co_filename", "co_firstlineno", "co_flags"}
)  # fmt: skip

_ATTR_GETTERS = frozenset({"getattr", "setattr", "delattr", "hasattr"})
_DYNAMIC_IMPORTERS = frozenset({"__import__", "importlib.import_module", "import_module"})
_CODE_RUNNERS = frozenset({"exec", "eval", "compile"})
_MAX_NESTED = 3  # exec("exec('...')") depth we look into


@dataclass(frozen=True, slots=True)
class PolicyFinding:
    """One construct the policy refuses."""

    construct: str
    """What was found, e.g. "import of subprocess" or "os.system"."""
    line: int
    """1-based line number in the submitted code."""
    reason: str
    """Why it is refused."""
    hint: str = ""
    """How to do it instead, when there is a way."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view."""
        return asdict(self)


def check_code(code: str, mode: str = "default") -> list[PolicyFinding]:
    """Constructs in ``code`` the policy refuses (empty when allowed, on mode "off", or on a SyntaxError)."""
    if mode == "off":
        return []
    return _check(code, line_offset=0, depth=0)


def policy_message(findings: Sequence[PolicyFinding]) -> str:
    """The refusal for the model: "Security validation failed: <construct> at line N — <reason>. <hint>"."""
    if not findings:
        return ""
    first = findings[0]
    msg = f"Security validation failed: {first.construct} at line {first.line} — {first.reason}."
    if first.hint:
        msg += f" {first.hint}"
    others = [f"{f.construct} at line {f.line}" for f in findings[1:6]]
    if others:
        more = f" (+{len(findings) - 6} more)" if len(findings) > 6 else ""
        msg += f" Also refused: {', '.join(others)}{more}."
    return msg


def _check(code: str, line_offset: int, depth: int) -> list[PolicyFinding]:
    tree = parse_cached(code)  # shared with the import scan that runs next on the same code
    if tree is None:  # the executor reports syntax errors with the user's line
        return []
    visitor = _PolicyVisitor(line_offset, depth)
    visitor.visit(tree)
    visitor.finish()
    # one finding per line and reason: ``urllib.request.urlopen`` is one problem, not three
    seen: set[tuple[int, str]] = set()
    unique = []
    # innermost first on a line (it ends first): sys._getframe(1).f_globals reports sys._getframe
    for _, _, f in sorted(visitor.found, key=lambda t: (t[0], t[1])):
        if (f.line, f.reason) not in seen:
            seen.add((f.line, f.reason))
            unique.append(f)
    return unique


def _module_verdict(dotted: str) -> tuple[str, str] | None:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        hit = REFUSED_MODULES.get(".".join(parts[:i]))
        if hit is not None:
            return hit
    return None


def _name_verdict(dotted: str) -> tuple[str, str] | None:
    """Verdict for a fully qualified attribute path such as "os.system" or "urllib.request.urlopen"."""
    if dotted in _HARMLESS_DOTTED:
        return None
    hit = REFUSED_NAMES.get(dotted)
    if hit is not None:
        return hit
    module, _, attr = dotted.rpartition(".")
    if module in ("os", "posix", "nt"):
        if attr in _OS_PROCESS or attr.startswith(_OS_PROCESS_PREFIXES):
            return _PROCESS, _PROCESS_HINT
        if attr in _OS_SIGNAL:
            return _SIGNAL, ""
    return _module_verdict(dotted)


class _PolicyVisitor(ast.NodeVisitor):
    def __init__(self, line_offset: int, depth: int) -> None:
        self.found: list[tuple[int, int, PolicyFinding]] = []  # (line, end column, finding)
        self.aliases: dict[str, str] = {}  # local name -> dotted module/attribute path
        self.offset = line_offset
        self.depth = depth
        # Imports of HARMLESS modules, decided at the end by how they were used: alias -> (module, node, uses)
        self.guarded: dict[str, tuple[str, ast.AST, list[bool]]] = {}
        self._bases: set[int] = set()  # Name nodes seen as the base of an attribute access
        self._code_facts: set[int] = set()  # ``x.__code__`` nodes read only for a CODE_FACTS attribute

    def finish(self) -> None:
        """Refuse each guarded import that was used for anything but its harmless names (or not at all)."""
        for alias, (module, node, uses) in self.guarded.items():
            if not uses or not all(uses):
                verdict = REFUSED_MODULES[module]
                self._refuse(f"import of {module}", node, verdict)
                self.aliases.pop(alias, None)

    def _refuse(self, construct: str, node: ast.AST, verdict: tuple[str, str]) -> None:
        line = getattr(node, "lineno", 1) + self.offset
        end = getattr(node, "end_col_offset", 0) or 0
        self.found.append((line, end, PolicyFinding(construct, line, verdict[0], verdict[1])))

    def qualify(self, node: ast.expr) -> str | None:
        """Dotted path an expression stands for: ``o.path`` → "os.path", ``__import__('os')`` → "os"."""
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self.qualify(node.value)
            return f"{base}.{node.attr}" if base else None
        if isinstance(node, ast.Call):
            name = self._call_name(node)
            if name in _DYNAMIC_IMPORTERS and node.args:
                return _literal(node.args[0])
        return None

    def _call_name(self, node: ast.Call) -> str | None:
        func = node.func
        if isinstance(func, ast.Name):
            return self.aliases.get(func.id, func.id)
        if isinstance(func, ast.Attribute):
            return self.qualify(func)
        return None

    # -- imports -------------------------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name in HARMLESS:
                self.guarded[alias.asname or alias.name] = (alias.name, node, [])
                self.aliases[alias.asname or alias.name] = alias.name
                continue
            verdict = _module_verdict(alias.name)
            if verdict:
                self._refuse(f"import of {alias.name}", node, verdict)
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            else:
                top = alias.name.split(".", 1)[0]
                self.aliases[top] = top

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level or not node.module:
            return
        if node.module in HARMLESS:
            for alias in node.names:
                dotted = f"{node.module}.{alias.name}"
                if dotted in _HARMLESS_DOTTED:
                    self.aliases[alias.asname or alias.name] = dotted
                else:
                    self._refuse(f"import of {dotted}", node, REFUSED_MODULES[node.module])
            return
        verdict = _module_verdict(node.module)
        if verdict:
            self._refuse(f"import of {node.module}", node, verdict)
            return
        for alias in node.names:
            if alias.name == "*":
                if node.module in ("os", "posix", "inspect", "sys"):
                    why = "a star import from this module brings in process and frame functions unseen"
                    self._refuse(f"from {node.module} import *", node, (why, "Import the names you need."))
                continue
            dotted = f"{node.module}.{alias.name}"
            verdict = _name_verdict(dotted)
            if verdict:
                self._refuse(f"import of {dotted}", node, verdict)
            self.aliases[alias.asname or alias.name] = dotted

    # -- expressions ---------------------------------------------------------------------------------
    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name) and node.value.id in self.guarded:
            self._bases.add(id(node.value))
            module, _, uses = self.guarded[node.value.id]
            uses.append(node.attr in HARMLESS[module])
        if (
            node.attr in CODE_FACTS
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "__code__"
        ):
            self._code_facts.add(id(node.value))
        if node.attr in INTERNAL_ATTRS:
            if id(node) not in self._code_facts:
                self._refuse(f"attribute {node.attr}", node, (_INTERNALS, _INTERNALS_HINT))
        else:
            dotted = self.qualify(node)
            verdict = _name_verdict(dotted) if dotted else None
            if verdict:
                self._refuse(dotted or node.attr, node, verdict)
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id == "__builtins__":
            self._refuse("__builtins__", node, (_INTERNALS, _INTERNALS_HINT))
        elif node.id in self.guarded and id(node) not in self._bases:
            # The module itself passed around (getattr, an alias, a call): not a harmless use.
            module, _, uses = self.guarded[node.id]
            uses.append(False)
            self._refuse(f"use of the {module} module", node, REFUSED_MODULES[module])

    def visit_Subscript(self, node: ast.Subscript) -> None:
        key = _literal(node.slice)
        if key in INTERNAL_ATTRS:
            self._refuse(f"[{key!r}]", node, (_INTERNALS, _INTERNALS_HINT))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = self._call_name(node)
        if name in _ATTR_GETTERS and len(node.args) >= 2:
            attr = _literal(node.args[1])
            if attr is not None:
                base = self.qualify(node.args[0])
                verdict = _name_verdict(f"{base}.{attr}") if base else None
                if attr in INTERNAL_ATTRS:
                    self._refuse(f"{name}(…, {attr!r})", node, (_INTERNALS, _INTERNALS_HINT))
                elif verdict:
                    self._refuse(f"{name}({base}, {attr!r})", node, verdict)
        elif name in _DYNAMIC_IMPORTERS and node.args:
            module = _literal(node.args[0])
            verdict = _module_verdict(module) if module else None
            if verdict:
                self._refuse(f"{name}({module!r})", node, verdict)
        elif name in _CODE_RUNNERS and node.args and self.depth < _MAX_NESTED:
            # exec("import socket"): look inside literal source, reporting at the call's line
            src = _literal(node.args[0])
            if src is not None:
                for f in _check(src, line_offset=0, depth=self.depth + 1):
                    self._refuse(f"{name}() running {f.construct}", node, (f.reason, f.hint))
        self.generic_visit(node)


def _literal(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None
