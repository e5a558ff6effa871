"""The README is the user's manual: its settings table and examples are checked against the code.

Run ``python tests/test_docs.py`` to regenerate the settings table in README.md.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from code_interpreter.settings import GROUPS, Settings

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def settings_table() -> str:
    """The settings table, built from the Settings fields, their defaults and their docstrings."""
    src = (REPO / "plugin/code_interpreter/settings.py").read_text()
    cls = next(n for n in ast.parse(src).body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    docs: dict[str, str] = {}
    for i, node in enumerate(cls.body):
        nxt = cls.body[i + 1] if i + 1 < len(cls.body) else None
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
        ):
            docs[node.target.id] = str(nxt.value.value)
    special = {"home": "`~/.local/share/code-interpreter`", "max_parallel": "CPU count (at least 2)"}
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    assert sorted(n for names in GROUPS.values() for n in names) == sorted(fields), "a field is in no group"
    lines = ["| field | environment variable | default | meaning |", "|---|---|---|---|"]
    for group, names in GROUPS.items():
        lines.append(f"| **{group}** | | | |")
        for name in names:
            f = fields[name]
            env = "MONGODB_URI" if name == "mongodb_uri" else "CODE_INTERPRETER_" + name.upper()
            if name in special:
                default = special[name]
            else:
                v = f.default
                default = "`" + (",".join(v) if isinstance(v, tuple) else repr(v)) + "`"
            lines.append(f"| `{name}` | `{env}` | {default} | {docs.get(name, '')} |")
    return "\n".join(lines)


def readme_with_table(text: str) -> str:
    """README text with the settings table section replaced by the generated one."""
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{settings_table()}\n{END}{tail}"


def python_blocks() -> list[str]:
    """The README's ```python code blocks, in order."""
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def python_block(marker: str) -> str:
    """The README's one ```python block containing ``marker``."""
    found = [b for b in python_blocks() if marker in b]
    assert len(found) == 1, f"{len(found)} README python blocks contain {marker!r}"
    return found[0]


def section_block(heading: str, lang: str = "python") -> str:
    """The first ```lang block of the README section under ``heading`` (e.g. "## Command line")."""
    section = README.read_text().split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    return section.split(f"```{lang}\n", 1)[1].split("```", 1)[0]


def test_settings_table_matches_the_code() -> None:
    text = README.read_text()
    assert readme_with_table(text) == text, "README settings table is stale: run `python tests/test_docs.py`"


def test_quickstart_test_command_is_what_ci_runs() -> None:
    quickstart = README.read_text().split("## Quickstart", 1)[1].split("```console", 1)[1].split("```", 1)[0]
    commands = [c.strip() for c in quickstart.strip().splitlines()]
    assert len(commands) == 2, "the Quickstart is exactly two commands"
    ci = (REPO / ".ci" / "run").read_text()
    assert "pip install" in ci and "tox" in ci
    assert commands[1] == "pip install tox && tox"
    assert "code-interpreter demo" in commands[0]


def test_every_pip_install_of_this_project_works_from_a_clone() -> None:
    """#25: `pip install 'code-interpreter[mcp]'` failed from a clone: the package is not on the index."""
    import tomllib

    text = README.read_text()
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    ours = re.findall(r"pip install ([^`\n]*)", text)
    assert ours, "the README installs the project somewhere"
    for command in ours:
        for arg in command.split("&&")[0].split():
            target = arg.strip("'\"")
            assert not target.startswith("code-interpreter"), f"not on the package index: {command!r}"
            if target.startswith(".["):
                assert target[2:-1] in extras, f"{command!r}: no extra {target[2:-1]!r} in pyproject.toml"
    assert "pip install '.[mcp]'" in text


def test_every_python_block_parses() -> None:
    blocks = python_blocks()
    assert len(blocks) >= 3
    for block in blocks:
        ast.parse(block)


def _run_block(block: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", block], env=env, cwd=cwd, capture_output=True, text=True, timeout=240
    )


@pytest.fixture
def example_env(tmp_path: Path, mongo_uri: str, db_name: str, sandbox_runtime: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODE_INTERPRETER_", "OPENAI_"))}
    env.update(
        CODE_INTERPRETER_HOME=str(tmp_path / "home"),
        CODE_INTERPRETER_DATABASE=db_name,
        CODE_INTERPRETER_RUNTIME_DIR=str(sandbox_runtime.root),
        MONGODB_URI=mongo_uri,
    )
    return env


def test_python_example_runs(example_env: dict[str, str], tmp_path: Path) -> None:
    proc = _run_block(python_block("load_file({saved['file_id']!r})"), example_env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "True 8"


def test_sessions_example_runs(example_env: dict[str, str], tmp_path: Path) -> None:
    proc = _run_block(python_block('session_id="chan-7"'), example_env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "(2, 2) {'id': 'chan-7', 'state': 'live', 'cell': 2}"


def test_openai_example_runs_against_a_scripted_server(example_env: dict[str, str], tmp_path: Path) -> None:
    from openai_server import ScriptedOpenAI, completion, tool_call

    code = "a, b = 0, 1\nfor _ in range(30):\n    a, b = b, a + b\nprint(a)"

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        tool_output = next(m["content"] for m in body["messages"] if m["role"] == "tool")
        assert "832040" in tool_output
        return completion("The 30th Fibonacci number is 832040.")

    script = [completion(None, [tool_call("execute_python_code", {"code": code})]), answer]
    with ScriptedOpenAI(script) as server:
        env = {**example_env, "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test"}
        proc = _run_block(python_block('"gpt-4o-mini",\n            [{"role": "user"'), env, tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert len(server.requests) == 2
        assert server.requests[0]["tools"][0]["function"]["name"] == "execute_python_code"
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "The 30th Fibonacci number is 832040."
    estimated, reported = lines[1].split(" ", 1)
    assert int(estimated) > 0 and "prompt_tokens" in reported
    json.dumps(lines)  # printable, plain text


def test_responses_example_runs_against_a_scripted_server(
    example_env: dict[str, str], tmp_path: Path
) -> None:
    from openai.types.responses.response_create_params import ResponseCreateParamsNonStreaming
    from pydantic import ConfigDict, TypeAdapter

    from openai_server import ScriptedOpenAI, function_call, response

    code = "import matplotlib.pyplot as plt\nplt.plot([x * x for x in range(11)])\nplt.savefig('y.png')"

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        [out] = [i for i in body["input"] if i.get("type") == "function_call_output"]
        kinds = [p["type"] for p in out["output"]]
        assert kinds == ["input_text", "input_image"], kinds
        return response("A parabola, rising ever faster.", input_tokens=900)

    script = [
        response(None, [function_call("execute_python_code", {"code": code})], input_tokens=120),
        answer,
    ]
    with ScriptedOpenAI(script) as server:
        env = {**example_env, "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test"}
        proc = _run_block(python_block('            api="responses",'), env, tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert server.paths == ["/v1/responses", "/v1/responses"]
        bodies = TypeAdapter(list[ResponseCreateParamsNonStreaming], config=ConfigDict(extra="forbid"))
        bodies.validate_python(server.requests)
    assert proc.stdout.strip().splitlines() == ["A parabola, rising ever faster.", "['y.png'] 1020"]


def test_the_dashboard_example_prints_what_its_comments_say(
    example_env: dict[str, str], tmp_path: Path
) -> None:
    """The README's interp.usage example: each print's trailing comment is the line it prints."""
    block = section_block("## Cost dashboards: `interp.usage`")
    promised = [m.group(1) for m in re.finditer(r"\)  # (.+)$", block, flags=re.M)]
    assert len(promised) == 3
    proc = _run_block(block, example_env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == promised


def test_langchain_example_runs(example_env: dict[str, str], tmp_path: Path) -> None:
    block = python_block("make_tools(interp")
    assert "make_tools" in block
    proc = _run_block(block, example_env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines() == ["success 42", "success call_2"]


FIB_30 = "a, b = 0, 1\nfor _ in range(30):\n    a, b = b, a + b\nprint(a)"


def _only_output(body: dict[str, Any]) -> str:
    """The text of the one function_call_output of a Responses request."""
    [out] = [i for i in body["input"] if i.get("type") == "function_call_output"]
    output = out["output"]
    return output if isinstance(output, str) else "".join(p.get("text", "") for p in output)


def test_openai_agents_example_runs_against_a_scripted_server(
    example_env: dict[str, str], tmp_path: Path
) -> None:
    from openai_server import ScriptedOpenAI, function_call, response

    def after(needle: str, answer: str) -> Any:
        def reply(body: dict[str, Any]) -> dict[str, Any]:
            assert needle in _only_output(body), body["input"]
            return response(answer)

        return reply

    args = {"timeout": None, "install_packages": None}
    script = [
        response(None, [function_call("execute_python_code", {"code": FIB_30, **args})]),
        after("832040", "The 30th Fibonacci number is 832040."),
        response(None, [function_call("execute_python_code", {"code": "print(b)", **args})]),  # from run 1
        after("1346269", "The 31st is 1346269."),
    ]
    with ScriptedOpenAI(script) as server:
        env = {**example_env, "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test"}
        env["OPENAI_AGENTS_DISABLE_TRACING"] = "1"  # the SDK would export traces to the network
        proc = _run_block(section_block("## Register with the OpenAI Agents SDK"), env, tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert server.paths == ["/v1/responses"] * 4
        assert server.requests[0]["tools"][0]["name"] == "execute_python_code"
    assert proc.stdout.strip().splitlines() == [
        "The 30th Fibonacci number is 832040.",
        "The 31st is 1346269.",
    ]


def test_smolagents_example_runs_against_a_scripted_server(
    example_env: dict[str, str], tmp_path: Path
) -> None:
    from openai_server import ScriptedOpenAI, completion

    count = "primes = [n for n in range(2, 1000) if all(n % d for d in range(2, int(n**0.5) + 1))]"

    def finish(body: dict[str, Any]) -> dict[str, Any]:
        shown = json.dumps(body["messages"][-1])
        assert "168" in shown, shown
        return completion("Thought: that is the count.\n<code>\nfinal_answer(len(primes))\n</code>")

    script = [completion(f"Thought: count them.\n<code>\n{count}\nprint(len(primes))\n</code>"), finish]
    with ScriptedOpenAI(script) as server:
        env = {**example_env, "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test"}
        proc = _run_block(section_block("## Run smolagents' CodeAgent in the sandbox"), env, tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert server.paths == ["/v1/chat/completions"] * 2
    assert proc.stdout.strip().splitlines()[-1] == "168"


def test_pydantic_ai_example_runs_against_a_scripted_server(
    example_env: dict[str, str], tmp_path: Path
) -> None:
    from openai_server import ScriptedOpenAI, function_call, response

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        assert "1267650600228229401496703205376" in _only_output(body), body["input"]
        return response("2**100 is 1267650600228229401496703205376.")

    code = {"code": "print(2**100)", "timeout": None, "install_packages": None}
    script = [response(None, [function_call("execute_python_code", code)]), answer]
    with ScriptedOpenAI(script) as server:
        env = {**example_env, "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test"}
        proc = _run_block(section_block("## Register with pydantic-ai"), env, tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert server.paths == ["/v1/responses"] * 2
        assert server.requests[0]["tools"][0]["name"] == "execute_python_code"
    assert proc.stdout.strip().splitlines() == ["2**100 is 1267650600228229401496703205376."]


def test_the_seed_example_runs_through_the_module_functions(
    example_env: dict[str, str], tmp_path: Path
) -> None:
    proc = _run_block(section_block("## The seed's module functions"), example_env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "True 8 ''",  # the seed documents error == "" on success
        "['sales.csv']",
        "48 50 True",
        "False",
        "True",
        "True",
        "0",
    ]


def test_the_status_example_is_what_status_returns(example_env: dict[str, str], tmp_path: Path) -> None:
    """Every key of the README's status example is in the real status, with a value of the same type."""
    shown = json.loads(section_block("## Command line", lang="json"))
    probe = "import asyncio, json, code_interpreter as ci\n"
    probe += "async def main():\n    print(json.dumps(await ci.get_interpreter_status(), default=str))\n"
    probe += "    await ci.aclose_default_interpreters()\nasyncio.run(main())\n"
    proc = _run_block(probe, example_env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    real = json.loads(proc.stdout)

    def same_shape(example: Any, actual: Any, where: str) -> None:
        if isinstance(example, dict):
            assert isinstance(actual, dict), where
            for key, value in example.items():
                assert key in actual, f"{where}.{key} is not in the status any more"
                same_shape(value, actual[key], f"{where}.{key}")
        elif example is not None:
            number = (int, float)
            ok = (
                isinstance(actual, number)
                if isinstance(example, number)
                else isinstance(actual, type(example))
            )
            assert ok, (where, example, actual)

    same_shape(shown, real, "status")
    assert set(shown["installed_packages"]) <= set(real["installed_packages"])


if __name__ == "__main__":
    README.write_text(readme_with_table(README.read_text()))
    print("README settings table regenerated")


def test_the_architecture_walk_names_files_and_functions_that_exist() -> None:
    """Each `file.py` in the README's walk exists, and each `Name` after it on its line is defined there."""
    section = README.read_text().split("\n## Architecture\n", 1)[1].split("\n## ", 1)[0]
    package = REPO / "plugin" / "code_interpreter"
    checked = 0
    for path, names in re.findall(r"`([\w/]+\.py)`((?: `[\w.]+`)+)", section):
        source = (package / path).read_text()
        for name in re.findall(r"`([\w.]+)`", names):
            last = name.split(".")[-1]
            assert re.search(rf"^\s*(async def|def|class) {last}\b", source, re.M), f"{path} has no {name}"
            checked += 1
    assert checked >= 20, checked
