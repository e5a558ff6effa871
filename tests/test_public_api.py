"""The public API: exactly the intended names, and the seed-compatible module functions end to end.

The module functions run against the real server, with ``db_handler=`` (an AsyncDatabase, and an
object with a ``.db``) and through the environment, on the shared sandbox runtime.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

import code_interpreter as ci
from _executor_fixtures import REQUIRED_LAYERS, sandbox_mode
from code_interpreter import compat, tokens
from code_interpreter.errors import ConfigurationError
from code_interpreter.files import FileManager
from code_interpreter.settings import Settings

PUBLIC_NAMES = [
    "AgentResult",
    "BudgetExceeded",
    "CodeInterpreter",
    "CodeInterpreterError",
    "ConfigurationError",
    "ExecutionEvent",
    "ExecutionFailed",
    "ExecutionRequest",
    "ExecutionResult",
    "FileManager",
    "FileNotFound",
    "FileTooLarge",
    "IsolationUnavailable",
    "PackageInstallError",
    "PackageManager",
    "PackageNotApproved",
    "PolicyViolation",
    "QuotaExceeded",
    "SandboxCrashed",
    "SandboxError",
    "SandboxTimeout",
    "Settings",
    "StorageUnavailable",
    "ToolArgumentError",
    "ToolContext",
    "ToolDispatcher",
    "ToolResult",
    "aclose_default_interpreters",
    "cleanup_expired_files",
    "delete_user_file",
    "execute_code",
    "get_file_manager",
    "get_interpreter_status",
    "get_package_manager",
    "list_user_files",
    "run_agent",
    "tokens",
    "tool_definitions",
    "upload_file",
]


def test_importing_the_package_leaves_the_openai_sdk_to_the_agent_loop() -> None:
    """`import code_interpreter` (the CLI, LangChain users) pays for the openai SDK only at run_agent."""
    probe = (
        "import sys, code_interpreter as ci\n"
        "print('openai' in sys.modules, 'run_agent' in dir(ci))\n"
        "ci.run_agent\n"
        "print('openai' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.split() == ["False", "True", "True"]


TOKENS_NAMES = [
    "DiscordLink",
    "ImageCount",
    "ModelPrice",
    "PriceTable",
    "TokenCounter",
    "TokenEstimate",
    "UsageStore",
    "count_message_tokens",
    "count_request_tokens",
    "count_text_tokens",
    "count_tool_tokens",
    "encoding_for_model",
    "ensure_offline_cache",
    "estimate_cost",
    "image_tokens",
    "image_upper_bound",
    "parse_discord_url",
    "patch_count",
]

LEDGER_NAMES = [
    "COLLECTION",
    "FLUSH_EVERY",
    "FLUSH_INTERVAL_S",
    "MAX_PENDING",
    "ComputeCost",
    "ComputePrices",
    "ExecutionLedger",
    "ExecutionLink",
    "ExecutionUsage",
    "current_link",
    "default_compute_prices",
    "format_usd",
    "linked",
    "price_execution",
    "render_report",
]

# Every key of the seed's get_interpreter_status().
SEED_STATUS_KEYS = {
    "venv_exists",
    "python_path",
    "installed_packages",
    "package_count",
    "last_cleanup",
    "total_user_files",
    "total_file_size_mb",
    "file_expiration_hours",
    "max_file_size_mb",
}


# -- exported names ------------------------------------------------------------------------------------


def test_exported_members() -> None:
    assert ci.__all__ == PUBLIC_NAMES  # sorted, exactly the intended names
    for name in ci.__all__:
        assert getattr(ci, name) is not None, name
    namespace: dict[str, Any] = {}
    exec("from code_interpreter import *", namespace)  # what a star import gives
    assert sorted(k for k in namespace if k != "__builtins__") == PUBLIC_NAMES


def test_tokens_exported_members() -> None:
    assert tokens.__all__ == TOKENS_NAMES
    for name in tokens.__all__:
        assert getattr(tokens, name) is not None, name


def test_ledger_exported_members() -> None:
    from code_interpreter import ledger

    assert ledger.__all__ == LEDGER_NAMES
    for name in ledger.__all__:
        assert getattr(ledger, name) is not None, name


def test_the_entry_points_outside_the_root_stay_where_users_find_them() -> None:
    """The CLI entry point, the LangChain integration and the shipped tool schema keep their paths."""
    import tomllib
    from importlib import resources

    from code_interpreter.cli import main
    from code_interpreter.integrations.langchain import close_tools, make_tools

    pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"] == {"code-interpreter": "code_interpreter.cli:main"}
    assert callable(main) and callable(make_tools) and callable(close_tools)
    schema = resources.files("code_interpreter").joinpath("tool_schemas", "execute_python_code.json")
    assert '"execute_python_code"' in schema.read_text(encoding="utf-8")


def test_the_shutdown_helper_is_exported() -> None:
    """Bots close the default interpreters at shutdown: ``await ci.aclose_default_interpreters()``."""
    assert ci.aclose_default_interpreters is compat.aclose_default_interpreters


def test_package_approval_needs_no_database() -> None:
    pm = ci.get_package_manager()
    assert pm.is_package_approved("numpy")[0] is True
    ok, reason = pm.is_package_approved("numpy; id")
    assert ok is False and reason


# -- the module functions ------------------------------------------------------------------------------


@pytest.fixture
async def env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mongo_uri: str, db_name: str, sandbox_runtime: Any
) -> AsyncIterator[Path]:
    """The environment a deployment sets; the default interpreters are closed after the test."""
    for key in list(os.environ):
        if key.startswith("CODE_INTERPRETER_") and key != "CODE_INTERPRETER_TEST_RUNTIME":
            monkeypatch.delenv(key)
    home = tmp_path / "home"
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("CODE_INTERPRETER_HOME", str(home))
    monkeypatch.setenv("CODE_INTERPRETER_DATABASE", db_name)
    monkeypatch.setenv("CODE_INTERPRETER_RUNTIME_DIR", str(sandbox_runtime.root))
    try:
        yield home
    finally:
        await compat.aclose_default_interpreters()


class Handler:
    """The seed's db handler: an object holding the database as ``.db``."""

    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self.db = db


async def _expired_upload(db: AsyncDatabase[Any], user_id: int) -> str:
    """A file uploaded three days ago by a FileManager with an injected clock (so it has expired now)."""
    past = datetime.now(UTC) - timedelta(days=3)
    fm = FileManager(db, Settings.from_env(), clock=lambda: past)
    up = await fm.upload_file(user_id, b"old\n", "old.txt")
    assert up["success"]
    return str(up["file_id"])


async def test_module_functions_with_an_async_database(env: Path, mongo_db: AsyncDatabase[Any]) -> None:
    data = b"x,y\n1,2\n3,4\n"
    up = await ci.upload_file(7, data, "data.csv", db_handler=mongo_db)
    assert up["success"] and up["filename"] == "data.csv" and up["file_type"] == "csv"
    fid = up["file_id"]
    # It went to the handler's database.
    assert await mongo_db["user_files"].count_documents({"file_id": fid}) == 1
    assert [f["file_id"] for f in await ci.list_user_files(7, db_handler=mongo_db)] == [fid]
    assert await ci.list_user_files(8, db_handler=mongo_db) == []

    code = f"df = load_file({fid!r})\nprint(int(df['y'].sum()))\n"
    code += "import matplotlib.pyplot as plt\nplt.plot([1, 2])"
    result = await ci.execute_code(code, 7, user_files=[up], db_handler=mongo_db)  # the seed's file dicts
    assert result["success"], result["error"]
    assert result["output"] == "6\n" and result["isolation"] == sandbox_mode()
    (png,) = result["generated_files"]
    fm = ci.get_file_manager(mongo_db)
    assert await fm.read_file(png["file_id"], 7) == png["data"]
    assert await fm.read_file(fid, 7) == data

    assert await ci.delete_user_file(fid, 8, db_handler=mongo_db) is False  # not theirs
    assert await ci.delete_user_file(fid, 7, db_handler=mongo_db) is True
    assert await ci.delete_user_file(fid, 7, db_handler=mongo_db) is False  # already gone
    gone = await ci.execute_code("print('ran')", 7, user_files=[fid], db_handler=mongo_db)
    assert gone["success"] is False and "was not found" in gone["error"]

    old = await _expired_upload(mongo_db, 7)
    assert await ci.cleanup_expired_files(db_handler=mongo_db) == 1
    assert await mongo_db["user_files"].count_documents({"file_id": old}) == 0
    assert await ci.cleanup_expired_files(db_handler=mongo_db) == 0


async def test_module_functions_with_a_db_attribute(env: Path, mongo_db: AsyncDatabase[Any]) -> None:
    handler = Handler(mongo_db)
    up = await ci.upload_file("42", b"hello", "greeting.txt", "text", db_handler=handler)
    assert up["success"] and up["file_type"] == "text"
    # 42 and "42" are the same user; the handler and its database share one default interpreter.
    assert [f["file_id"] for f in await ci.list_user_files(42, db_handler=handler)] == [up["file_id"]]
    assert await compat.default_interpreter(handler) is await compat.default_interpreter(mongo_db)
    fm = ci.get_file_manager(handler)
    assert fm.db is mongo_db and await fm.read_file(up["file_id"], 42) == b"hello"
    old = await _expired_upload(mongo_db, 42)
    assert await ci.cleanup_expired_files(db_handler=handler) == 1
    assert await fm.get_file(old, 42) is None
    assert await ci.delete_user_file(up["file_id"], 42, db_handler=handler) is True
    assert await ci.list_user_files(42, db_handler=handler) == []


async def test_a_wrong_db_handler_is_a_clear_error(env: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"AsyncDatabase or have a \.db attribute"):
        await ci.list_user_files(1, db_handler=object())
    with pytest.raises(ConfigurationError, match="AsyncDatabase"):
        ci.get_file_manager(Handler("not a database"))  # type: ignore[arg-type]


async def test_module_functions_through_the_environment(
    env: Path, mongo_db: AsyncDatabase[Any], monkeypatch: pytest.MonkeyPatch, sandbox_runtime: Any
) -> None:
    status = await ci.get_interpreter_status()
    assert set(status) >= SEED_STATUS_KEYS
    assert status["venv_exists"] is True and status["python_path"] == str(sandbox_runtime.python)
    # Everything in the runtime, the baseline included, as the seed's list of names.
    assert {"numpy", "pandas", "matplotlib"} <= set(status["installed_packages"])
    assert status["package_count"] == len(status["installed_packages"])
    assert isinstance(status["on_demand_packages"], list)  # those installed for a call, shown apart
    assert status["file_expiration_hours"] == 48 and status["max_file_size_mb"] == 50
    stored_before = status["total_user_files"]
    assert isinstance(stored_before, int) and isinstance(status["total_file_size_mb"], float | int)
    assert status["isolation"] == sandbox_mode()  # auto: strict as root, namespaces otherwise
    layers = status["layers"]
    assert layers is not None and status["executor"]["started"] is True
    assert REQUIRED_LAYERS[sandbox_mode()] <= {name for name, active in layers.items() if active}
    assert status["storage"]["reachable"] is True and status["storage"]["database"] == mongo_db.name
    assert status["settings"]["home"] == str(env)

    up = await ci.upload_file(3, b"1\n2\n3\n", "n.txt")
    assert await mongo_db["user_files"].count_documents({"file_id": up["file_id"]}) == 1  # the env's database
    assert (await ci.get_interpreter_status())["total_user_files"] == stored_before + 1
    code = f"print(sum(int(x) for x in open(FILES[{up['file_id']!r}])))"
    result = await ci.execute_code(code, 3, user_files=[up["file_id"]], timeout=0)
    assert result["success"], result["error"]
    assert result["output"] == "6\n" and any("not positive" in n for n in result["notes"])
    assert (env / "cache" / up["file_id"]).is_dir()  # CODE_INTERPRETER_HOME is used
    fm = ci.get_file_manager()
    assert await fm.read_file(up["file_id"], 3) == b"1\n2\n3\n"

    # A changed environment takes effect: the default interpreter is replaced, the old one closed.
    before = await compat.default_interpreter()
    zygote = status["executor"]["zygote_pid"]
    assert isinstance(zygote, int)
    os.kill(zygote, 0)  # alive
    other_db = f"ci_test_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("CODE_INTERPRETER_DATABASE", other_db)
    try:
        assert await ci.list_user_files(3) == []
        after = await compat.default_interpreter()
        assert after is not before and after.settings.database == other_db
        with pytest.raises(ProcessLookupError):
            os.kill(zygote, 0)  # the replaced interpreter's zygote is gone (and reaped)
        assert ci.get_file_manager() is after.files

        # At shutdown: every default interpreter of this loop is closed and forgotten.
        assert await compat.aclose_default_interpreters() == 1
        assert compat._interpreters == {}
        with pytest.raises(RuntimeError, match="no default file store yet"):
            ci.get_file_manager()
    finally:
        await mongo_db.client.drop_database(other_db)


async def test_status_never_creates_the_runtime(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime_dir = env.parent / "no-runtime-yet"
    monkeypatch.setenv("CODE_INTERPRETER_RUNTIME_DIR", str(runtime_dir))
    status = await ci.get_interpreter_status()
    assert status["venv_exists"] is False and status["package_count"] == 0
    assert status["layers"] is None and status["executor"]["started"] is False
    assert "first execution" in status["executor"]["reason"]
    assert not runtime_dir.exists()
