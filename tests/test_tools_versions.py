"""The model is told the Python, pandas and numpy versions it writes for, and gets a hint when its code
trips on a well-known removal (#25: the runtime has pandas 3 and numpy 2; `applymap` and `'M'` failed
and the model had to guess why)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest

from code_interpreter.agent import run_agent
from code_interpreter.interpreter import CodeInterpreter
from code_interpreter.packages import PackageManager
from code_interpreter.settings import Settings
from code_interpreter.tools import ToolContext, ToolDispatcher, tool_definitions
from code_interpreter.tools.hints import hint_for
from openai_server import ScriptedOpenAI, completion

VERSIONS = "import sys, pandas, numpy\nprint(sys.version.split()[0], pandas.__version__, numpy.__version__)"


async def test_the_description_names_the_versions_the_sandbox_runs(interp: CodeInterpreter) -> None:
    seen = await interp.execute(VERSIONS, user_id="v1")
    python, pandas, numpy = seen["output"].split()  # asked of the sandbox itself
    with ScriptedOpenAI([completion("ok")]) as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)
        try:
            hello = [{"role": "user", "content": "hi"}]
            await run_agent(client, "gpt-4o-mini", hello, ToolContext(user_id="v1"), interpreter=interp)
        finally:
            await client.close()
        description = server.requests[0]["tools"][0]["function"]["description"]
    line = description.splitlines()[-1]
    assert line.startswith(f"- The runtime has Python {python}, pandas {pandas} and numpy {numpy}: write for")
    assert "DataFrame.applymap (use DataFrame.map)" in line and "'ME'" in line and "np.nan" in line


def test_before_the_runtime_exists_the_description_says_current_releases(tmp_path: Path) -> None:
    assert PackageManager(Settings(home=tmp_path)).runtime_versions() is None
    line = tool_definitions("responses")[0]["description"].splitlines()[-1]
    assert line.startswith("- The runtime has current releases of Python 3, pandas and numpy")
    old = tool_definitions(versions={"python": "3.11.2", "pandas": "1.5.3", "numpy": "1.26.4"})
    assert old[0]["function"]["description"].splitlines()[-1] == (
        "- The runtime has Python 3.11.2, pandas 1.5.3 and numpy 1.26.4: write for these versions."
    )  # an operator's older pins: no talk of removals that did not happen


def _call(code: str) -> dict[str, Any]:
    args = json.dumps({"code": code, "timeout": 30, "install_packages": None})
    return {
        "id": "call_1",
        "type": "function",
        "function": {"name": "execute_python_code", "arguments": args},
    }


FRAME = (
    "import pandas as pd\ndf = pd.DataFrame({'v': [1, 2]}, index=pd.date_range('2024-01-01', periods=2))\n"
)


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        (FRAME + "print(df.applymap(str))", "DataFrame.applymap was removed in pandas 3; use DataFrame.map"),
        (FRAME + "print(df.resample('M').sum())", "'M' is 'ME'"),
        (FRAME + "print(df.resample('H').sum())", "lower case in pandas 3: 'h', 'min'"),
        ("import numpy as np\nprint(np.NaN)", "numpy 2 removed that alias"),
    ],
)
async def test_a_well_known_removal_gets_a_hint_in_what_the_model_reads(
    interp: CodeInterpreter, code: str, hint: str
) -> None:
    result = await ToolDispatcher(interp).dispatch(_call(code), ToolContext(user_id="v2"))
    assert result.is_error
    [note] = [
        line for line in result.content.splitlines() if line.startswith("- this code looks written for")
    ]
    assert hint in note


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("AttributeError: 'DataFrame' object has no attribute 'applymap'", "use DataFrame.map"),
        ("AttributeError: 'Series' object has no attribute 'append'", "pd.concat"),
        ("ValueError: Invalid frequency: Y. Failed to parse with error message: ...", "'YE'"),
        ("TypeError: NDFrame.fillna() got an unexpected keyword argument 'method'", ".ffill()"),
        ("AttributeError: module 'numpy' has no attribute 'product'", "np.prod"),
        ("KeyError: 'region'", None),  # an ordinary error: no hint
        ("AttributeError: 'DataFrame' object has no attribute 'revenue'", None),
        ("", None),
    ],
)
def test_hints_match_only_the_removals(error: str, expected: str | None) -> None:
    hint = hint_for(f'Traceback (most recent call last):\n  File "<code>", line 3\n{error}')
    if expected is None:
        assert hint is None
    else:
        assert hint is not None and expected in hint
