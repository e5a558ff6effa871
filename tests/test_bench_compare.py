"""`python -m benchmarks.compare_checkouts --runs K`: the ratio of each run, then its median and range."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_summary_gives_each_runs_ratio_its_median_and_range(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(REPO))  # benchmarks/ is the repository's, not an installed package
    summary = importlib.import_module("benchmarks.compare_checkouts")._summary

    def run(ratio: str) -> list[list[object]]:
        return [["session", "old", 10, 1.0, 1.2, "1.000"], ["session", "new", 10, 1.1, 1.3, ratio]]

    summary([run("1.060"), run("0.990"), run("1.020")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| session | 1.060 0.990 1.020 | 1.020 | 0.990-1.060 |"


def test_runs_below_one_are_refused_with_the_reason() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.compare_checkouts", ".", ".", "--runs", "0"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "--n and --runs must be at least 1" in done.stderr
