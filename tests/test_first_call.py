"""The first call from Python on a fresh home says why it is slow (#25: ~30 s with no output while the
runtime was built; only the CLI showed progress)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

FIRST_CALL = textwrap.dedent(
    """
    import asyncio, sys
    import code_interpreter as ci

    async def main() -> None:
        settings = ci.Settings(home=sys.argv[1], mongodb_uri=sys.argv[2], database=sys.argv[3],
                               runtime_dir=sys.argv[1] + "/runtime", runtime_packages=(), preload_modules=())
        async with ci.CodeInterpreter(settings) as interp:  # no logging configured, no progress callback
            result = await interp.execute("print(6 * 7)", user_id=1)
            print(result["output"].strip())

    asyncio.run(main())
    """
)


def test_a_first_call_that_builds_the_runtime_says_so_without_any_logging_setup(
    tmp_path: Path, mongo_uri: str, db_name: str
) -> None:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", FIRST_CALL, str(tmp_path / "home"), mongo_uri, db_name],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    first = run()
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "42"
    [said] = [line for line in first.stderr.splitlines() if "sandbox runtime" in line]
    assert said.startswith(
        f"code_interpreter: creating the sandbox runtime in {tmp_path / 'home' / 'runtime'}"
    )
    assert "about a minute" in said and "once per runtime directory" in said and "progress=" in said
    again = run()  # the runtime exists now: nothing to announce
    assert again.returncode == 0 and again.stdout.strip() == "42", again.stderr
    assert "sandbox runtime" not in again.stderr
