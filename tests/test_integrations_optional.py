"""The framework integrations are optional extras: none is imported unless asked for, a missing one says
what to install.

Each probe runs in a fresh interpreter (as tests/test_public_api.py does for openai), so what this
test process has imported does not count. "Not installed" is a ``None`` entry in ``sys.modules``,
which makes Python's import fail exactly as for a missing package.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

FRAMEWORKS = ("agents", "smolagents", "pydantic_ai")


def probe(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_importing_the_package_and_its_integrations_imports_no_framework() -> None:
    proc = probe(
        "import sys, code_interpreter, code_interpreter.integrations\n"
        f"print([m for m in {FRAMEWORKS!r} if m in sys.modules])"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("module", "framework", "extra"),
    [
        ("openai_agents", "agents", "openai-agents"),
        ("smolagents", "smolagents", "smolagents"),
        ("pydantic_ai", "pydantic_ai", "pydantic-ai"),
    ],
)
def test_without_the_extra_the_import_error_names_it(module: str, framework: str, extra: str) -> None:
    proc = probe(
        f"import sys\nsys.modules[{framework!r}] = None  # not installed\n"
        "try:\n"
        f"    import code_interpreter.integrations.{module}\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert f"pip install 'code-interpreter[{extra}]'" in proc.stdout, proc.stdout
    installed = probe(f"import code_interpreter.integrations.{module}")
    assert installed.returncode == 0, installed.stderr  # with the extra (the test extra has it) it imports
