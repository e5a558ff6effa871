"""The ``code-interpreter`` command line, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from openai_server import ScriptedOpenAI, completion, tool_call


def run_cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 300, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "code_interpreter.cli", *args],
        env=env,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def cli_env(tmp_path: Path, mongo_uri: str, db_name: str, sandbox_runtime: Any) -> dict[str, str]:
    """Environment of a fresh user: own home, the session database server, the shared test runtime."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CODE_INTERPRETER_", "OPENAI_", "MONGODB_URI"))
    }
    env.update(
        CODE_INTERPRETER_HOME=str(tmp_path / "home"),
        CODE_INTERPRETER_RUNTIME_DIR=str(sandbox_runtime.root),
        CODE_INTERPRETER_DATABASE=db_name,
        MONGODB_URI=mongo_uri,
    )
    return env


def _one_line_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("code-interpreter: error: "), proc.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_demo_with_the_embedded_database(tmp_path: Path, cli_env: dict[str, str]) -> None:
    env = {k: v for k, v in cli_env.items() if k != "MONGODB_URI"}  # a fresh machine: no MongoDB configured
    proc = run_cli("demo", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "embedded SecantusDB" in out
    assert "Status: success" in out
    assert "Revenue by region:" in out and "Total revenue:" in out
    assert "input tokens" in out and "cost $" in out
    png = tmp_path / "code-interpreter-output" / "revenue_by_month.png"
    assert f"Saved {png}" in out
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert (tmp_path / "home" / "db" / "data").is_dir()  # the embedded server kept its data under the home


def test_run_with_a_data_file(tmp_path: Path, cli_env: dict[str, str]) -> None:
    (tmp_path / "data.csv").write_text("a,b\n1,2\n3,4\n")
    (tmp_path / "script.py").write_text(
        "df = load_file('data.csv')\nprint('rows', len(df), 'sum', int(df['b'].sum()))\n"
        "open('out.txt', 'w').write('written')\n"
    )
    proc = run_cli("run", "script.py", "--file", "data.csv", "--output", "out", env=cli_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "rows 2 sum 6\n"
    assert (tmp_path / "out" / "out.txt").read_text() == "written"


def test_run_failure_and_bad_usage(tmp_path: Path, cli_env: dict[str, str]) -> None:
    (tmp_path / "bad.py").write_text("raise ValueError('nope')\n")
    proc = run_cli("run", "bad.py", env=cli_env, cwd=tmp_path)
    assert proc.returncode == 1
    assert "ValueError: nope" in proc.stderr
    _one_line_error(run_cli("run", "missing.py", env=cli_env, cwd=tmp_path), 2, "cannot read missing.py")


def test_files_upload_list_delete_cleanup_status(tmp_path: Path, cli_env: dict[str, str]) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    up = run_cli("--user-id", "u9", "files", "upload", "notes.txt", env=cli_env, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    file_id, name = up.stdout.split()
    assert name == "notes.txt"
    listed = run_cli("--user-id", "u9", "files", "list", "--json", env=cli_env, cwd=tmp_path)
    assert [f["file_id"] for f in json.loads(listed.stdout)] == [file_id]
    other = run_cli("--user-id", "someone-else", "files", "delete", file_id, env=cli_env, cwd=tmp_path)
    _one_line_error(other, 1, "not found (or not yours)", file_id)
    gone = run_cli("--user-id", "u9", "files", "delete", file_id, env=cli_env, cwd=tmp_path)
    assert gone.returncode == 0 and gone.stdout.strip() == f"deleted {file_id}"
    empty = run_cli("--user-id", "u9", "files", "list", env=cli_env, cwd=tmp_path)
    assert empty.stdout.strip() == "No files for user u9."
    cleanup = run_cli("cleanup", env=cli_env, cwd=tmp_path)
    assert cleanup.returncode == 0 and cleanup.stdout.startswith("Deleted ")
    status = run_cli("status", env=cli_env, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["storage"]["reachable"] is True


def test_tokens_for_a_request_body(tmp_path: Path, cli_env: dict[str, str]) -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Count the words in this sentence please."}],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "f",
                    "description": "d",
                    "parameters": {"type": "object", "properties": {}},
                },
            }
        ],
        "max_tokens": 100,
    }
    (tmp_path / "req.json").write_text(json.dumps(body))
    from code_interpreter.tokens import count_request_tokens

    expected = count_request_tokens("gpt-4o-mini", body["messages"], body["tools"])
    proc = run_cli("tokens", "req.json", "--json", env=cli_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    est = json.loads(proc.stdout)
    assert est["input_tokens"] == expected and est["output_tokens"] == 100
    text = run_cli("tokens", "req.json", env=cli_env, cwd=tmp_path)
    assert text.stdout.startswith(f"gpt-4o-mini: {expected:,} input tokens, up to 100 output tokens, cost $")
    (tmp_path / "broken.json").write_text("{")
    _one_line_error(run_cli("tokens", "broken.json", env=cli_env, cwd=tmp_path), 2, "broken.json is not JSON")


def test_chat_without_a_key_is_one_clear_line(tmp_path: Path, cli_env: dict[str, str]) -> None:
    _one_line_error(run_cli("chat", "hi", env=cli_env, cwd=tmp_path), 2, "OPENAI_API_KEY", "demo")


def test_chat_against_a_scripted_server(tmp_path: Path, cli_env: dict[str, str]) -> None:
    script = [
        completion(None, [tool_call("execute_python_code", {"code": "print(sum(range(101)))"}, "c1")]),
        lambda body: completion(
            "The sum is " + body["messages"][-1]["content"].split("Output:\n")[1].split()[0]
        ),
    ]
    with ScriptedOpenAI(script) as server:
        env = dict(cli_env, OPENAI_API_KEY="test", OPENAI_BASE_URL=server.base_url)
        proc = run_cli("chat", "Sum 0..100", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "The sum is 5050"
    assert "2 request(s)" in proc.stderr
