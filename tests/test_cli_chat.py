"""``code-interpreter chat`` as a newcomer meets it (#25): a banner and a prompt, the code the model runs and
its output as it comes, only this conversation's files, and ``--session-id`` to resume a conversation —
against the scripted OpenAI server, the real sandbox and the session database."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from _process_env import process_env
from openai_server import ScriptedOpenAI, completion, tool_call
from test_cli import run_cli

LIST_FILES = "import os\nprint(sorted(f for f in os.listdir('.') if f.endswith('.csv')))\nprint('rows', 2)"


@pytest.fixture
def cli_env(tmp_path: Path, mongo_uri: str, db_name: str, sandbox_runtime: Any) -> dict[str, str]:
    return process_env(tmp_path / "home", mongo_uri, db_name, sandbox_runtime.root)


def _tool_output(body: dict[str, Any]) -> str:
    return str([m for m in body["messages"] if m["role"] == "tool"][-1]["content"])


def test_a_banner_the_code_and_its_output_and_only_this_chats_files(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    (tmp_path / "other.csv").write_text("secret,1\n")
    assert run_cli("files", "upload", "other.csv", env=cli_env, cwd=tmp_path).returncode == 0  # stored before
    (tmp_path / "sales.csv").write_text("city,sales\nOslo,3\n")
    script = [
        completion(None, [tool_call("execute_python_code", {"code": LIST_FILES}, "c1")]),
        lambda body: completion("I see " + _tool_output(body).split("Output:\n")[1].splitlines()[0]),
    ]
    with ScriptedOpenAI(script) as server:
        env = dict(cli_env, OPENAI_API_KEY="test", OPENAI_BASE_URL=server.base_url)
        proc = run_cli("chat", "--file", "sales.csv", env=env, cwd=tmp_path, stdin="which files?\n")
        sent = server.requests
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "I see ['sales.csv']\n"  # answers alone on stdout; other.csv is not this chat's
    assert "other.csv" not in str(sent) and "sales.csv" in sent[0]["messages"][0]["content"]
    err = proc.stderr.splitlines()
    assert err[0] == f"code-interpreter chat: gpt-4o-mini at {server.base_url}/, as user 'cli'"
    session = err[1].split()[1]
    assert err[1] == f"session {session} (new; resume it later with --session-id {session})"
    assert err[2].startswith("sandbox: ") and err[3] == "files: sales.csv"
    shown = proc.stderr.split("── the model runs (call c1) ──\n", 1)[1]
    assert (
        shown.startswith("│ import os\n│ print(sorted(")
        and "── output ──\n['sales.csv']\nrows 2\n── ok in" in shown
    )
    assert err[-1] == f"resume this conversation with: code-interpreter chat --session-id {session}"


def test_session_id_resumes_the_conversation_its_variables_and_its_files(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    (tmp_path / "sales.csv").write_text("city,sales\nOslo,3\n")

    def resumed(body: dict[str, Any]) -> dict[str, Any]:
        said = [(m["role"], m.get("content")) for m in body["messages"]]
        assert ("user", "set x to 41") in said and ("assistant", "x is set") in said  # the history came back
        return completion(
            None, [tool_call("execute_python_code", {"code": f"print(x + 1)\n{LIST_FILES}"}, "c2")]
        )

    script = [
        completion(None, [tool_call("execute_python_code", {"code": "x = 41"}, "c1")]),
        lambda body: completion("x is set"),
        resumed,
        lambda body: completion("x+1 is " + _tool_output(body).split("Output:\n")[1].splitlines()[0]),
    ]
    with ScriptedOpenAI(script) as server:
        env = dict(cli_env, OPENAI_API_KEY="test", OPENAI_BASE_URL=server.base_url)
        first = run_cli(
            "chat", "--session-id", "conv-7", "--file", "sales.csv", "set x to 41", env=env, cwd=tmp_path
        )
        assert first.returncode == 0 and first.stdout == "x is set\n", first.stderr
        later = run_cli("chat", "--session-id", "conv-7", "what is x + 1?", env=env, cwd=tmp_path)
        sent = server.requests
    assert later.returncode == 0, later.stderr
    assert later.stdout == "x+1 is 42\n"  # the variable came back with the session
    assert "session conv-7 (resumed (1 earlier prompt(s)))" in later.stderr
    assert "files: sales.csv" in later.stderr  # the conversation's file, without --file again
    output = _tool_output(sent[-1])
    assert "Session: restored" in output and "['sales.csv']" in output


def test_a_terminal_gets_a_prompt_and_piped_input_none(tmp_path: Path, cli_env: dict[str, str]) -> None:
    script = [completion("4"), completion("5")]
    with ScriptedOpenAI(script) as server:
        env = dict(cli_env, OPENAI_API_KEY="test", OPENAI_BASE_URL=server.base_url)
        master, slave = pty.openpty()
        proc = subprocess.Popen(
            [sys.executable, "-m", "code_interpreter.cli", "chat"],
            stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path, text=True,
        )  # fmt: skip
        os.close(slave)
        try:
            assert proc.stdout is not None
            os.write(master, b"what is 2 + 2?\n")
            assert proc.stdout.readline() == "4\n"
            os.write(master, b"\x04")  # Ctrl-D at the start of a line: end of input
            _, err = proc.communicate(timeout=120)
        finally:
            os.close(master)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        piped = run_cli("chat", env=env, cwd=tmp_path, stdin="and 2 + 3?\n")
    assert proc.returncode == 0, err
    assert err.count("you> ") == 2 and "end with Ctrl-D" in err  # before the question and after the answer
    assert piped.returncode == 0 and piped.stdout == "5\n" and "you> " not in piped.stderr


def test_a_bad_session_id_is_a_usage_error(tmp_path: Path, cli_env: dict[str, str]) -> None:
    env = dict(cli_env, OPENAI_API_KEY="test", OPENAI_BASE_URL="http://127.0.0.1:9/v1")
    proc = run_cli("chat", "--session-id", "x" * 201, "hi", env=env, cwd=tmp_path)
    assert proc.returncode == 2 and "--session-id must be 1 to 200 printable characters" in proc.stderr
