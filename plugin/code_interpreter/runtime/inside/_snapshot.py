"""A session's snapshot, made and read inside the sandbox (never by the host): a zip of its state.

``manifest.json`` (format, what was saved and what was not and why, module aliases to import again),
``state.pkl`` (the picklable variables, pickled together with cloudpickle so functions and classes
defined in cells come along and shared references stay shared) and ``work/…`` (the files in the
working directory), deflated at level 1. Values that cannot be pickled (generators, open
files, sockets, locks) are named in the manifest; when the whole is over the cap, the largest values
(then files) are left out and named too. Unpickling happens in the new session's own sandbox.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import stat
import types
import zipfile
from typing import Any

__all__ = ["FORMAT", "dump", "load"]

FORMAT = 1
_SKIP_DIRS = frozenset({"__pycache__", ".cache", ".config", ".local", ".matplotlib", ".ipynb_checkpoints"})


def _pickler() -> tuple[Any, str]:
    try:
        import cloudpickle

        return cloudpickle, "cloudpickle"
    except ImportError:
        return pickle, "pickle"


def _human(size: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return f"{size} bytes"  # pragma: no cover


def dump(
    namespace: dict[str, Any], work_dir: str, cap: int, *, skip: set[str], inputs: set[str]
) -> tuple[bytes, list[str]]:
    """Pickle the session's variables and collect its work-dir files, within ``cap`` bytes (0: no cap).

    The cap counts the pickled values and the files before compression. The common case takes one
    pass: everything pickled together. Only when that fails (an unpicklable value) or is over the cap
    is each value pickled alone, to name what cannot be saved and to leave out the largest first.
    """
    lib, lib_name = _pickler()
    modules: dict[str, str] = {}
    values: dict[str, Any] = {}
    for name, value in list(namespace.items()):
        if name.startswith("__") or name in skip or name == "_":
            continue
        if isinstance(value, types.ModuleType):
            modules[name] = value.__name__
        else:
            values[name] = value
    files = _work_files(work_dir, inputs)
    budget = cap if cap > 0 else None
    skipped: dict[str, str] = {}
    try:
        state = lib.dumps(values, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        state = None
    if state is None or (budget is not None and len(state) + sum(size for _, size in files) > budget):
        sizes = _sizes(lib, values, skipped)
        _fit(sizes, files, budget, skipped)
        values = {name: values[name] for name in sizes}
        state = lib.dumps(values, protocol=pickle.HIGHEST_PROTOCOL)
    manifest = {"format": FORMAT, "pickler": lib_name, "saved": sorted(values), "modules": modules,
                "files": [rel for rel, _ in files], "skipped": skipped}  # fmt: skip
    buf = io.BytesIO()
    # Level 1: a DataFrame's pickle shrinks several times for a fraction of the time storing it would take.
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        zf.writestr("state.pkl", state)
        for rel, _size in files:
            zf.write(os.path.join(work_dir, rel), "work/" + rel)
    notes = [f"saved {len(values)} variable(s), {len(modules)} module(s), {len(files)} file(s)"]
    notes += [f"not saved: {name} ({why})" for name, why in sorted(skipped.items())]
    return buf.getvalue(), notes


def _sizes(lib: Any, values: dict[str, Any], skipped: dict[str, str]) -> dict[str, int]:
    """Each value's pickled size alone; the ones that cannot be pickled go to ``skipped``, with why."""
    sizes: dict[str, int] = {}
    for name, value in values.items():
        try:
            sizes[name] = len(lib.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
        except Exception as exc:
            skipped[name] = f"{type(value).__name__} cannot be saved ({type(exc).__name__})"
    return sizes


def _fit(
    sizes: dict[str, int], files: list[tuple[str, int]], budget: int | None, skipped: dict[str, str]
) -> None:
    """Over the cap, leave out the largest values first, then the largest files, until it fits."""
    total = sum(sizes.values()) + sum(size for _, size in files)
    while budget is not None and total > budget and (sizes or files):
        if sizes and (not files or max(sizes.values()) >= max(size for _, size in files)):
            name = max(sizes, key=sizes.__getitem__)
            skipped[name] = f"{_human(sizes[name])}, over the {_human(budget)} snapshot cap"
            total -= sizes.pop(name)
        else:
            rel, size = max(files, key=lambda f: f[1])
            skipped[f"file {rel}"] = f"{_human(size)}, over the {_human(budget)} snapshot cap"
            files.remove((rel, size))
            total -= size


def _work_files(work_dir: str, inputs: set[str]) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    for dirpath, dirnames, filenames in os.walk(work_dir):
        rel_dir = os.path.relpath(dirpath, work_dir)
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        for name in filenames:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if rel in inputs:
                continue
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):  # inputs are symlinks; links and special files stay behind
                found.append((rel, st.st_size))
    return sorted(found)


def load(data: bytes, namespace: dict[str, Any], work_dir: str) -> list[str]:
    """Restore a snapshot into ``namespace`` and ``work_dir``; notes say what came back and what did not."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        manifest = json.loads(zf.read("manifest.json"))
    except Exception as exc:
        return [f"the saved session could not be read ({type(exc).__name__}); this is a fresh session"]
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return ["the saved session is of another format; this is a fresh session"]
    notes: list[str] = []
    files = 0
    for rel in manifest.get("files", []):
        target = os.path.normpath(os.path.join(work_dir, str(rel)))
        if not target.startswith(work_dir.rstrip("/") + "/"):
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as out:
            out.write(zf.read("work/" + str(rel)))
        files += 1
    modules = 0
    for alias, module in (manifest.get("modules") or {}).items():
        try:
            namespace[str(alias)] = __import__(str(module), fromlist=["_"])
            modules += 1
        except Exception as exc:
            notes.append(f"module {module} (as {alias}) could not be imported again ({type(exc).__name__})")
    restored: dict[str, Any] = {}
    try:
        lib = pickle
        if manifest.get("pickler") == "cloudpickle":
            import cloudpickle as lib  # type: ignore[no-redef]
        restored = lib.loads(zf.read("state.pkl"))
    except Exception as exc:
        notes.append(f"the saved variables could not be restored ({type(exc).__name__}: {str(exc)[:200]})")
    for name, value in restored.items():
        namespace[name] = _rebind(value, namespace)
    notes.insert(0, f"restored {len(restored)} variable(s), {modules} module(s), {files} file(s)")
    notes += [f"not saved: {name} ({why})" for name, why in sorted((manifest.get("skipped") or {}).items())]
    return notes


def _rebind(value: Any, namespace: dict[str, Any]) -> Any:
    """Functions and classes defined in cells read the session's globals again, not a pickled copy."""
    if isinstance(value, types.FunctionType) and value.__module__ == "__main__":
        return _with_globals(value, namespace)
    if isinstance(value, type) and value.__module__ == "__main__":
        for attr, member in list(vars(value).items()):
            if isinstance(member, types.FunctionType):
                setattr(value, attr, _with_globals(member, namespace))
    return value


def _with_globals(func: types.FunctionType, namespace: dict[str, Any]) -> types.FunctionType:
    new = types.FunctionType(func.__code__, namespace, func.__name__, func.__defaults__, func.__closure__)
    new.__kwdefaults__ = func.__kwdefaults__
    new.__qualname__ = func.__qualname__
    new.__annotations__ = func.__annotations__
    new.__dict__.update(func.__dict__)
    return new
