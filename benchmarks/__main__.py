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
import pkgutil
import sys
from pathlib import Path

from ._common import Table, machine, write_json

HERE = Path(__file__).resolve().parent


def areas() -> list[str]:
    return sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules([str(HERE)])
        if m.name.startswith("bench_")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("areas", nargs="*", help=f"areas to run (default: all of {', '.join(areas())})")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, for a smoke run")
    parser.add_argument(
        "--json", type=Path, default=HERE / "results" / "latest.json", help="where to write results"
    )
    args = parser.parse_args(argv)
    chosen = args.areas or areas()
    unknown = set(chosen) - set(areas())
    if unknown:
        parser.error(f"unknown area(s): {', '.join(sorted(unknown))}; choose from {', '.join(areas())}")
    print(f"Machine: {machine()}\n", flush=True)
    tables: list[Table] = []
    for area in chosen:
        print(f"## {area}", flush=True)
        module = importlib.import_module(f"benchmarks.bench_{area}")
        for table in asyncio.run(module.run(args.quick)):
            print(table.render(), flush=True)
            tables.append(table)
    write_json(args.json, tables)
    print(f"Results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
