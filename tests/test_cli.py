"""The ``code-interpreter`` command line, run as a real subprocess."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from _process_env import process_env
from code_interpreter.ledger import format_usd
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
    return process_env(tmp_path / "home", mongo_uri, db_name, sandbox_runtime.root)


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
    assert "creating the sandbox runtime" not in out  # it exists already: the demo does not say it makes it
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
    stdin_data = run_cli("run", "bad.py", "--file", "-", env=cli_env, cwd=tmp_path)
    _one_line_error(stdin_data, 2, "save the data to a file")


def test_files_upload_list_delete_cleanup_status(tmp_path: Path, cli_env: dict[str, str]) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    up = run_cli("--user-id", "u9", "files", "upload", "notes.txt", env=cli_env, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    file_id, name = up.stdout.split()
    assert name == "notes.txt"
    listed = run_cli("--user-id", "u9", "files", "list", "--json", env=cli_env, cwd=tmp_path)
    assert [f["file_id"] for f in json.loads(listed.stdout)] == [file_id]
    other = run_cli("--user-id", "someone-else", "files", "delete", file_id, env=cli_env, cwd=tmp_path)
    _one_line_error(other, 1, "not found (or not yours, as user 'someone-else')", file_id)
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


# -- a newcomer's first hour (#15) ---------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _files(user: str, env: dict[str, str], cwd: Path) -> list[dict[str, Any]]:
    listed = run_cli("files", "list", "--json", "--user-id", user, env=env, cwd=cwd)
    assert listed.returncode == 0, listed.stderr
    return list(json.loads(listed.stdout))


def test_options_work_after_the_action(tmp_path: Path, cli_env: dict[str, str]) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    up = run_cli("files", "upload", "notes.txt", "--user-id", "42", env=cli_env, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    file_id = up.stdout.split()[0]
    assert [f["file_id"] for f in _files("42", cli_env, tmp_path)] == [file_id]
    before = run_cli("--user-id", "42", "files", "list", env=cli_env, cwd=tmp_path)
    assert before.stdout.startswith(file_id)  # before the command too
    assert _files("cli", cli_env, tmp_path) == []  # the default user is another one


def test_files_without_an_action_or_an_id_says_what_it_needs(tmp_path: Path, cli_env: dict[str, str]) -> None:
    bare = run_cli("files", env=cli_env, cwd=tmp_path)
    assert bare.returncode == 2 and "files needs an action: list, upload, delete" in bare.stderr
    delete = run_cli("files", "delete", env=cli_env, cwd=tmp_path)
    assert delete.returncode == 2 and "files delete needs the id of at least one file" in delete.stderr
    assert "files list" in delete.stderr  # where the ids are


def test_run_help_says_how_files_reach_the_script_and_what_is_kept(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    text = " ".join(run_cli("run", "--help", env=cli_env, cwd=tmp_path).stdout.split())
    assert "visible by its name in the working directory" in text
    assert "load_file('<file_id>')" in text and "FILES dict" in text
    assert "id of a file stored for --user-id" in text
    assert "48 h by default" in text and "--no-store" in text
    assert "default 60, at most 300" in text  # the settings' limits
    lowered = " ".join(
        run_cli(
            "run", "--help", env={**cli_env, "CODE_INTERPRETER_MAX_TIMEOUT": "120"}, cwd=tmp_path
        ).stdout.split()
    )
    assert "default 60, at most 120" in lowered


def test_run_with_a_stored_file_id_then_without_keeping_copies(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    (tmp_path / "data.csv").write_text("a,b\n1,2\n3,4\n")
    up = run_cli("files", "upload", "data.csv", "--user-id", "u1", env=cli_env, cwd=tmp_path)
    stored_id = up.stdout.split()[0]
    (tmp_path / "s.py").write_text(
        f"df = load_file({stored_id!r})\nprint(int(df['b'].sum()))\nopen('out.txt', 'w').write('x')\n"
    )
    kept = run_cli(
        "run", "s.py", "--file", stored_id, "--user-id", "u1", "--out", "o1", env=cli_env, cwd=tmp_path
    )
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout == "6\n"
    assert "stay stored for 48 h under user 'u1'" in kept.stderr and "--no-store" in kept.stderr
    assert sorted(f["filename"] for f in _files("u1", cli_env, tmp_path)) == ["data.csv", "out.txt"]

    (tmp_path / "t.py").write_text("df = load_file('data.csv')\nopen('again.txt', 'w').write(str(len(df)))\n")
    none = run_cli(
        "run", "t.py", "--file", "data.csv", "--no-store", "--user-id", "u1", env=cli_env, cwd=tmp_path
    )
    assert none.returncode == 0, none.stderr
    assert (tmp_path / "code-interpreter-output" / "again.txt").read_text() == "2"  # saved locally
    assert "stay stored" not in none.stderr
    assert sorted(f["filename"] for f in _files("u1", cli_env, tmp_path)) == [
        "data.csv",
        "out.txt",
    ]  # no new copy

    missing = run_cli(
        "run", "s.py", "--file", "user_u1_1_abcdef", "--user-id", "u1", env=cli_env, cwd=tmp_path
    )
    _one_line_error(missing, 2, "no such local file, and no stored file with that id for user 'u1'")
    elsewhere = run_cli("run", "s.py", "--file", stored_id, env=cli_env, cwd=tmp_path)  # user 'cli'
    _one_line_error(elsewhere, 2, stored_id, "for user 'cli'")


def test_limits_are_said_as_options(tmp_path: Path, cli_env: dict[str, str]) -> None:
    (tmp_path / "slow.py").write_text("import time\ntime.sleep(30)\n")
    proc = run_cli("run", "slow.py", "--timeout", "1", env=cli_env, cwd=tmp_path)
    assert proc.returncode == 1
    assert "pass --timeout up to 300" in proc.stderr and "timeout=" not in proc.stderr
    over = run_cli("run", "slow.py", "--timeout", "999", env=cli_env, cwd=tmp_path)
    assert over.returncode == 2 and "--timeout 999 exceeds the maximum of 300 s" in over.stderr


def test_tokens_reads_stdin_and_says_when_an_image_is_at_its_upper_bound(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    body = {
        "model": "gpt-4o",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": "https://images.example/cat.png"}},
                ],
            }
        ],
    }
    text = run_cli("tokens", "-", env=cli_env, cwd=tmp_path, stdin=json.dumps(body))
    assert text.returncode == 0, text.stderr
    assert "1 image(s) counted at their upper bound (messages[0].content[1])" in text.stdout
    as_json = run_cli("tokens", "-", "--json", env=cli_env, cwd=tmp_path, stdin=json.dumps(body))
    assert [i["source"] for i in json.loads(as_json.stdout)["images"]] == ["upper-bound"]
    _one_line_error(run_cli("tokens", "-", env=cli_env, cwd=tmp_path, stdin="{"), 2, "stdin is not JSON")


def test_connection_errors_name_the_endpoint(tmp_path: Path, cli_env: dict[str, str]) -> None:
    port = _free_port()  # nothing listens there
    db = run_cli(
        "files", "list", env={**cli_env, "MONGODB_URI": f"mongodb://127.0.0.1:{port}/"}, cwd=tmp_path
    )
    _one_line_error(db, 1, f"127.0.0.1:{port}", "MONGODB_URI")
    base = f"http://127.0.0.1:{_free_port()}/v1"
    chat = run_cli(
        "chat", "hi", env={**cli_env, "OPENAI_API_KEY": "k", "OPENAI_BASE_URL": base}, cwd=tmp_path
    )
    assert chat.returncode == 1
    assert f"cannot reach the model API at {base}" in chat.stderr and "OPENAI_BASE_URL" in chat.stderr


def test_the_progress_bar_never_shows_a_question_mark_or_cuts_a_word() -> None:
    import io

    from code_interpreter.cli.util import StderrProgress

    out = io.StringIO()
    progress = StderrProgress(out)
    long = "Installing numpy pandas matplotlib seaborn scipy openpyxl pyarrow pillow into the sandbox runtime"
    progress(long, None)
    progress("Installing", 0.5)
    first, second = out.getvalue().splitlines()
    assert "?" not in first and "working" in first
    shown = first.split("]", 1)[1].strip()
    assert shown.endswith("…") and long.startswith(shown[:-1]) and long[len(shown) - 1] == " "
    assert second.startswith("[##############..............]  50% Installing")


async def test_usage_table_from_records_the_agent_loop_writes(
    tmp_path: Path, cli_env: dict[str, str], mongo_uri: str, db_name: str
) -> None:
    from datetime import UTC, datetime, timedelta

    from pymongo import AsyncMongoClient

    from code_interpreter import tokens
    from code_interpreter.ledger import ComputePrices, ExecutionUsage
    from code_interpreter.tokens import UsageStore

    now = [datetime(2026, 11, 25, 10, 0, tzinfo=UTC)]
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri, tz_aware=True)
    cpu_second = ComputePrices(cpu_hour_usd=3.6, memory_gb_hour_usd=0.0, storage_gb_month_usd=0.0)
    try:
        store = UsageStore(client[db_name], clock=lambda: now[0], compute_prices=cpu_second)
        counter = tokens.TokenCounter(image_hosts=(), prices_file=None)
        for model, user, actual_delta in [("gpt-4o", 7, 0), ("gpt-4o", 7, 3), ("gpt-4o-mini", 8, -1)]:
            est = await counter.estimate(model, [{"role": "user", "content": "Sum 1..10"}])
            rid = await store.record_usage(user_id=user, model=model, estimate=est, session_id=f"chat-{user}")
            usage = {"prompt_tokens": est.input_tokens + actual_delta, "completion_tokens": 20}
            await store.record_usage(user_id=user, model=model, usage=usage, request_id=rid)
            # The request's tool call ran for 2 CPU-seconds ($0.002) and stored 1.5 MB.
            links = {"request_id": rid, "session_id": f"chat-{user}"}
            run = ExecutionUsage(user_id=user, cpu_seconds=2.0, peak_memory_mb=64.0, wall_seconds=2.5,
                                 stored_bytes=1_500_000, **links)  # fmt: skip
            await store.record_execution(run)
            now[0] += timedelta(days=1)
        await store.close()
        n = est.input_tokens  # the same prompt: the same estimate on both encodings here
    finally:
        await client.close()

    rows = json.loads(run_cli("usage", "--json", env=cli_env, cwd=tmp_path).stdout)
    assert [
        (r["model"], r["requests"], r["measured"], r["input_abs_error"], r["executions"]) for r in rows
    ] == [
        ("gpt-4o", 2, 2, 3, 2),
        ("gpt-4o-mini", 1, 1, 1, 1),
    ]
    assert rows[1]["estimated_input_tokens"] == n and rows[1]["actual_input_tokens"] == n - 1
    assert rows[0]["sandbox_cost_usd"] == pytest.approx(0.004)
    assert rows[0]["cost_usd"] == pytest.approx(rows[0]["token_cost_usd"] + 0.004)

    table = run_cli("usage", env=cli_env, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    lines = [re.split(r"\s{2,}", line.strip()) for line in table.stdout.splitlines()]
    assert lines[0] == ["model", "requests", "input", "output", "est. error", "tokens $", "executions",
                        "CPU s", "peak MB", "stored", "sandbox $", "total $"]  # fmt: skip
    gpt4o = dict(zip(lines[0], lines[1], strict=True))
    assert (gpt4o["model"], gpt4o["requests"], gpt4o["executions"]) == ("gpt-4o", "2", "2")
    assert gpt4o["est. error"] == f"{-3 / (2 * n + 3) * 100:+.1f}%"
    assert (gpt4o["CPU s"], gpt4o["peak MB"], gpt4o["stored"], gpt4o["sandbox $"]) == (
        "4.00",
        "64",
        "3.0 MB",
        "$0.004",
    )
    assert gpt4o["total $"] == format_usd(rows[0]["cost_usd"])
    assert lines[3][0] == "total" and lines[3][1] == "3" and lines[3][-2] == "$0.006"

    by_day = json.loads(
        run_cli("usage", "--by", "day", "--since", "2026-11-26", "--json", env=cli_env, cwd=tmp_path).stdout
    )
    assert [(r["day"], r["requests"], r["executions"]) for r in by_day] == [
        ("2026-11-26", 1, 1),
        ("2026-11-27", 1, 1),
    ]
    mine = json.loads(
        run_cli("usage", "--by", "user", "--user-id", "7", "--json", env=cli_env, cwd=tmp_path).stdout
    )
    assert [(r["user_id"], r["requests"], r["executions"]) for r in mine] == [
        (7, 2, 2)
    ]  # "7" on the command line, 7 in the records
    sessions = run_cli("usage", "--by", "session", env=cli_env, cwd=tmp_path).stdout.splitlines()
    assert [ln.split()[:2] for ln in sessions[1:3]] == [["chat-7", "2"], ["chat-8", "1"]]
    bad = run_cli("usage", "--since", "last week", env=cli_env, cwd=tmp_path)
    _one_line_error(bad, 2, "--since 'last week' is not a date", "YYYY-MM-DD")

    report = tmp_path / "usage.html"
    wrote = run_cli("usage", "--html", str(report), env=cli_env, cwd=tmp_path)
    assert wrote.returncode == 0 and wrote.stdout.strip() == f"Wrote the usage report to {report}"
    html = report.read_text()
    for chart in ("cost-by-user", "cost-by-kind", "estimate-error"):
        assert f'id="{chart}"' in html
    unwritable = run_cli(
        "usage", "--html", str(tmp_path / "no" / "such" / "dir.html"), env=cli_env, cwd=tmp_path
    )
    _one_line_error(unwritable, 2, "cannot write the report to")


# -- sessions and live output in the CLI ------------------------------------------------------------


def test_run_opens_its_data_file_by_name(tmp_path: Path, cli_env: dict[str, str]) -> None:
    (tmp_path / "sales.csv").write_text("city,sales\nOslo,3\nLima,5\n")
    (tmp_path / "script.py").write_text("import pandas as pd\nprint(pd.read_csv('sales.csv').sales.sum())\n")
    proc = run_cli("run", "script.py", "--file", "sales.csv", "--no-store", env=cli_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "8\n"


def test_run_prints_the_output_as_it_comes(tmp_path: Path, cli_env: dict[str, str]) -> None:
    import time

    (tmp_path / "slow.py").write_text(
        "import time\nprint('first', flush=True)\ntime.sleep(3)\nprint('second')\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "code_interpreter.cli", "run", "slow.py", "--no-store"],
        env=cli_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    first = proc.stdout.readline()
    seen_at = time.monotonic()
    rest, err = proc.communicate(timeout=300)
    ended_at = time.monotonic()
    assert proc.returncode == 0, err
    assert first == "first\n" and rest == "second\n"  # printed once each, in order
    assert ended_at - seen_at > 1.5  # "first" reached the terminal while the script still slept


def test_chat_keeps_one_session_per_conversation(tmp_path: Path, cli_env: dict[str, str]) -> None:
    def second(body: dict[str, Any]) -> dict[str, Any]:
        return completion(None, [tool_call("execute_python_code", {"code": "print(x + 1)"}, "c2")])

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        return completion("x+1 is " + body["messages"][-1]["content"].split("Output:\n")[1].split()[0])

    script = [
        completion(None, [tool_call("execute_python_code", {"code": "x = 41"}, "c1")]),
        lambda body: completion("x is set"),
        second,
        answer,
    ]
    with ScriptedOpenAI(script) as server:
        env = dict(cli_env, OPENAI_API_KEY="test", OPENAI_BASE_URL=server.base_url)
        proc = run_cli("chat", env=env, cwd=tmp_path, stdin="set x to 41\nwhat is x + 1?\n")
        tools = server.requests[0]["tools"][0]["function"]["description"]
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines() == ["x is set", "x+1 is 42"]
    assert "State persists between calls" in tools  # the model is told the truth
