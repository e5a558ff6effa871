"""``code-interpreter run`` as a newcomer meets it (#25): a long output's tail, the script's exit code,
a --file that is neither a local file nor a stored id, and the sandbox it ran in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from _process_env import process_env
from code_interpreter.executor import resolve_isolation
from test_cli import run_cli

LINE = 12  # bytes per line of the long outputs below: "line 000123\n"


@pytest.fixture
def cli_env(tmp_path: Path, mongo_uri: str, db_name: str, sandbox_runtime: Any) -> dict[str, str]:
    return process_env(tmp_path / "home", mongo_uri, db_name, sandbox_runtime.root)


def _lines(n: int) -> bytes:
    return b"".join(b"line %06d\n" % i for i in range(n))


def _printing(tmp_path: Path, n: int) -> Path:
    script = tmp_path / "long.py"
    script.write_text(f"for i in range({n}):\n    print(f'line {{i:06d}}')\n")
    return script


def test_a_long_output_shows_its_head_a_marker_with_the_count_and_its_tail(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """#25: over 100 KB the terminal got the first 100,000 bytes, no marker and never the tail."""
    n = 30_000  # 360,000 bytes: the result keeps the first and the last 50,000
    proc = run_cli("run", _printing(tmp_path, n).name, "--no-store", env=cli_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    full, out = _lines(n), proc.stdout.encode()
    shown, marker_and_tail = out[:100_000], out[100_000:]
    assert shown == full[:100_000]  # streamed live, up to the live budget
    marker, tail = marker_and_tail.lstrip(b"\n").split(b"\n", 1)
    assert marker.decode() == (
        "[… 210,000 bytes not shown here: of 360,000 bytes printed, the sandbox kept the first 50,000 and "
        "the last 50,000 (max_output_bytes); the terminal showed the first 100,000 …]"
    )
    assert tail == full[-50_000:]  # the tail as the result keeps it, to the last line
    assert tail.endswith(b"line 029999\n")


def test_an_output_cut_by_less_than_the_live_part_shows_everything_once(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    n = 11_000  # 132,000 bytes: the kept tail starts before the live part ends, so nothing is missing
    proc = run_cli("run", _printing(tmp_path, n).name, "--no-store", env=cli_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.encode() == _lines(n)  # every byte once, in order, no marker


@pytest.mark.parametrize(
    ("code", "exit_code", "stdout", "on_stderr"),
    [
        ("print('partial')\nraise SystemExit(3)\n", 3, "partial\n", "Process exited with code 3"),
        ("import sys\nsys.exit('bad input: no header row')\n", 1, "", "bad input: no header row"),
        ("import sys\nprint('done')\nsys.exit(0)\n", 0, "done\n", ""),
        ("raise KeyError('region')\n", 1, "", "KeyError: 'region'"),
    ],
)
def test_run_exits_with_the_scripts_own_code(
    tmp_path: Path, cli_env: dict[str, str], code: str, exit_code: int, stdout: str, on_stderr: str
) -> None:
    """#25: SystemExit(3) made `run` exit 1."""
    (tmp_path / "s.py").write_text(code)
    proc = run_cli("run", "s.py", "--no-store", env=cli_env, cwd=tmp_path)
    assert proc.returncode == exit_code, proc.stderr
    assert proc.stdout == stdout
    assert on_stderr in proc.stderr


def test_a_file_that_is_neither_local_nor_stored_says_both_were_looked_for(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """#25: `run --file <missing>` said only "No such file or directory"."""
    (tmp_path / "s.py").write_text("print(1)\n")
    proc = run_cli("run", "s.py", "--file", "sales-2024.csv", env=cli_env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(
        "code-interpreter: error: --file sales-2024.csv: no such local file, and not the id"
    )
    assert "of a stored file" in line and "code-interpreter files list --user-id cli" in line


def test_run_says_which_isolation_mode_ran(tmp_path: Path, cli_env: dict[str, str]) -> None:
    (tmp_path / "s.py").write_text("print('hi')\n")
    proc = run_cli("run", "s.py", "--no-store", env=cli_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    mode, reason = resolve_isolation("auto")  # what this machine gives: strict as root, else namespaces
    assert f"note: sandbox: {mode} isolation ({reason})" in proc.stderr.splitlines()
    assert mode in ("strict", "namespaces")


def test_running_again_with_the_same_data_file_keeps_one_copy(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """#25: each run uploaded the data file again (same content, new id), each copy counted in the quota."""
    import json

    (tmp_path / "data.csv").write_text("a,b\n1,2\n3,4\n")
    (tmp_path / "s.py").write_text("print(int(load_file('data.csv')['b'].sum()))\n")
    ids = []
    for _ in range(2):
        proc = run_cli("run", "s.py", "--file", "data.csv", env=cli_env, cwd=tmp_path)
        assert proc.returncode == 0 and proc.stdout == "6\n", proc.stderr
        [told] = [line for line in proc.stderr.splitlines() if line.startswith("# data.csv:")]
        ids.append(told.split("load_file('")[1].split("'")[0])
    assert ids[0] == ids[1] and told.endswith("(stored before: the same name and bytes, kept longer now)")
    listed = json.loads(run_cli("files", "list", "--json", env=cli_env, cwd=tmp_path).stdout)
    assert [f["file_id"] for f in listed] == [ids[0]]
    # --no-store removes what a run added, never the user's earlier copy of the same file
    proc = run_cli("run", "s.py", "--file", "data.csv", "--no-store", env=cli_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(run_cli("files", "list", "--json", env=cli_env, cwd=tmp_path).stdout)
    assert [f["file_id"] for f in listed] == [ids[0]]
