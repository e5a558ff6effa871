"""`python -m benchmarks.readme`: a full run's tables replace the README's block, nothing else changes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
AREAS = sorted(p.stem.removeprefix("bench_") for p in (REPO / "benchmarks").glob("bench_*.py"))


def _run(json_path: Path, readme: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.readme", "--json", str(json_path), "--readme", str(readme)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _payload(areas: list[str], command: str = "python -m benchmarks --readme") -> dict[str, object]:
    tables = [
        {
            "area": area,
            "title": f"{area} table",
            "columns": ["job", "median"],
            "rows": [[f"{area} job", 12.345]],
            "notes": [f"{area} note"],
        }
        for area in areas
    ]
    return {
        "machine": "Linux test, 2 cores",
        "time": "2026-11-28T03:00:00Z",
        "command": command,
        "tables": tables,
    }


def test_tables_replace_the_block_and_nothing_else(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Title\n\nIn short: kept.\n\n<!-- bench:start -->\nold table\n<!-- bench:end -->\n\n## After\n"
    )
    run = tmp_path / "run.json"
    run.write_text(json.dumps(_payload(AREAS)))
    done = _run(run, readme)
    assert done.returncode == 0, done.stderr
    text = readme.read_text()
    assert "old table" not in text
    assert text.startswith(
        "# Title\n\nIn short: kept.\n\n<!-- bench:start -->\nLatest run: Linux test, 2 cores"
    )
    assert text.endswith("<!-- bench:end -->\n\n## After\n")
    for area in AREAS:
        assert f"#### {area} table" in text and f"| {area} job | 12.35  |" in text and f"{area} note" in text
    # the areas in a stable order, each once
    positions = [text.index(f"#### {area} table") for area in AREAS]
    assert positions == sorted(positions)


def test_a_partial_or_quick_run_is_refused_and_the_readme_kept(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    original = "<!-- bench:start -->\nold\n<!-- bench:end -->\n"
    readme.write_text(original)
    run = tmp_path / "run.json"
    run.write_text(json.dumps(_payload(AREAS[:1])))
    done = _run(run, readme)
    assert done.returncode == 2 and "run every area" in done.stderr and AREAS[1] in done.stderr
    run.write_text(json.dumps(_payload(AREAS, "python -m benchmarks --quick")))
    done = _run(run, readme)
    assert done.returncode == 2 and "--quick" in done.stderr
    assert readme.read_text() == original


def test_missing_markers_or_run_say_what_to_do(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    run = tmp_path / "run.json"
    run.write_text(json.dumps(_payload(AREAS)))
    done = _run(run, readme)
    assert done.returncode == 2 and "add the two markers" in done.stderr
    assert readme.read_text() == "no markers here\n"
    done = _run(tmp_path / "absent.json", readme)
    assert done.returncode == 2 and "run `python -m benchmarks` first" in done.stderr
