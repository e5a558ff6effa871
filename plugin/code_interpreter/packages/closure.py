"""The dependency closure of the approved packages: what installing them brings along is approved too.

``import joblib`` should not be refused while ``scikit-learn``, which requires it, is approved. The
shipped list (``data/approved_packages.json``) carries a ``dependencies`` key, computed with pip's
resolver (``pip install --dry-run --report``, wheels only, metadata only) by a maintainer::

    python -m code_interpreter.packages.closure --write            # refresh the shipped list
    python -m code_interpreter.packages.closure --write faker      # approve faker and what it brings
    python -m code_interpreter.packages.closure scikit-learn xgboost   # print the closure of your own

``--write`` without names resolves every approved package again and replaces ``dependencies`` (versions
drift: read the diff); with names it adds them to ``packages`` and their closure to ``dependencies``,
leaving the rest as it is.

An operator who sets ``approved_packages`` may add the printed names to that list.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

from .imports import canonicalize

__all__ = ["NEVER", "dependency_closure", "main"]

#: Packaging tools some wheels declare as dependencies: never approved for installation on demand.
NEVER = frozenset({"pip", "setuptools", "wheel"})


def dependency_closure(names: Iterable[str], *, timeout: float = 600.0) -> dict[str, list[str]]:
    """For each name, the canonical names pip would install with it (itself excluded), resolved one by one.

    One resolution per package: approved packages may conflict with each other (their pins), and each
    is installed on its own anyway. Raises RuntimeError with pip's output when a resolution fails.
    """
    out: dict[str, list[str]] = {}
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "report.json"
            cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
            cmd += ["--only-binary=:all:", "--disable-pip-version-check", "--report", str(report), name]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"pip could not resolve {name}: {done.stderr.strip()[-2000:]}")
            installed = json.loads(report.read_text())["install"]
        own = canonicalize(name)
        out[own] = sorted({canonicalize(i["metadata"]["name"]) for i in installed} - {own})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Print the closure of NAMES, or (``--write``) refresh the shipped list's ``dependencies``."""
    parser = argparse.ArgumentParser(prog="python -m code_interpreter.packages.closure", description=__doc__)
    parser.add_argument("names", nargs="*", help="packages to resolve (default: the shipped approved list)")
    parser.add_argument(
        "--write",
        action="store_true",
        help="write the list: NAMES added with their closure, or all resolved again",
    )
    parser.add_argument("--data", type=Path, help="the list to read and write (default: the shipped one)")
    args = parser.parse_args(argv)
    data_file = args.data or Path(
        str(resources.files("code_interpreter").joinpath("data/approved_packages.json"))
    )
    data = json.loads(data_file.read_text())
    names = args.names or data["packages"]
    closure = dependency_closure(names)
    if args.write and args.names:  # add these; keep what the list already approves
        data["packages"] = sorted({*data["packages"], *(canonicalize(n) for n in args.names)})
    approved = {canonicalize(n) for n in data["packages"]}
    found = {dep for deps in closure.values() for dep in deps}
    if args.write and args.names:
        found |= set(data.get("dependencies", []))
    extra = sorted(found - approved - NEVER)
    if args.write:
        data["dependencies"] = extra
        data.pop("baseline_dependencies", None)
        data_file.write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {len(data['packages'])} packages and {len(extra)} dependencies to {data_file}")
    else:
        for name, deps in sorted(closure.items()):
            print(f"{name}: {', '.join(deps) or '(none)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
