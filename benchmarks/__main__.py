"""Run the benchmarks and print one table per area.

    python -m benchmarks                 # every area
    python -m benchmarks files tokens    # some areas
    python -m benchmarks --quick         # fewer repetitions (a smoke run)

Each area is a module ``benchmarks/bench_<area>.py`` exposing ``async def run(quick: bool) -> list[Table]``.
Results are also written to benchmarks/results/latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from pathlib import Path

from ._common import FULL_ENV, HERE, Table, areas, machine, write_json
from .readme import ReadmeError, update


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("areas", nargs="*", help=f"areas to run (default: all of {', '.join(areas())})")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, for a smoke run")
    parser.add_argument(
        "--json", type=Path, default=HERE / "results" / "latest.json", help="where to write results"
    )
    parser.add_argument(
        "--readme",
        action="store_true",
        help="after the run, replace the README's benchmark tables with it (every area, not --quick)",
    )
    args = parser.parse_args(argv)
    chosen = args.areas or areas()
    unknown = set(chosen) - set(areas())
    if unknown:
        parser.error(f"unknown area(s): {', '.join(sorted(unknown))}; choose from {', '.join(areas())}")
    if args.readme and (args.quick or set(chosen) != set(areas())):
        parser.error("--readme takes a full run of every area (no area list, no --quick)")
    print(f"Machine: {machine()}\n", flush=True)
    tables: list[tuple[str, Table]] = []
    for area in chosen:
        print(f"## {area}", flush=True)
        module = importlib.import_module(f"benchmarks.bench_{area}")
        for table in asyncio.run(module.run(args.quick)):
            print(table.render(), flush=True)
            tables.append((area, table))
    env = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k == FULL_ENV]  # what changes the run
    command = " ".join([*env, "python -m benchmarks", *(argv if argv is not None else sys.argv[1:])])
    write_json(args.json, tables, command)
    print(f"Results written to {args.json}")
    if args.readme:
        try:
            update(args.json, HERE.parent / "README.md", areas())
        except ReadmeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print("README.md: benchmark tables replaced")
    return 0


if __name__ == "__main__":
    sys.exit(main())
