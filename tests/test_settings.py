from pathlib import Path

import pytest

from code_interpreter.errors import ConfigurationError
from code_interpreter.settings import Settings


def test_defaults_follow_the_seed() -> None:
    s = Settings(home=Path("/x"))
    assert s.file_expiration_hours == 48.0
    assert s.max_file_size == 50 * 2**20
    assert (s.default_timeout, s.max_timeout) == (60, 300)
    assert s.max_output_bytes == 100_000
    assert s.runtime_rebuild_days == 7
    assert s.runtime_path == Path("/x/runtime")


def test_from_env_reads_prefix_and_mongodb_uri() -> None:
    env = {
        "CODE_INTERPRETER_MAX_TIMEOUT": "120",
        "CODE_INTERPRETER_FILE_EXPIRATION_HOURS": "0.5",
        "CODE_INTERPRETER_RUNTIME_PACKAGES": "numpy, pandas",
        "CODE_INTERPRETER_HOME": "/data/ci",
        "CODE_INTERPRETER_DAILY_BUDGET_USD": "2.5",
        "MONGODB_URI": "mongodb://user:secret@db.example:27017/",
    }
    s = Settings.from_env(env, policy="off")
    assert s.max_timeout == 120
    assert s.file_expiration_hours == 0.5
    assert s.runtime_packages == ("numpy", "pandas")
    assert s.home == Path("/data/ci")
    assert s.daily_budget_usd == 2.5
    assert s.policy == "off"
    assert "secret" not in str(s.to_dict())


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"CODE_INTERPRETER_MAX_TIMEOUT": "ten"}, "CODE_INTERPRETER_MAX_TIMEOUT"),
        ({"CODE_INTERPRETER_ISOLATION": "docker"}, "choose one of"),
        ({"CODE_INTERPRETER_DEFAULT_TIMEOUT": "400"}, "must not exceed"),
        ({"CODE_INTERPRETER_MAX_FILE_SIZE": "0"}, "must be positive"),
    ],
)
def test_bad_values_say_what_is_wrong(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("asked", "expected", "noted"),
    [(None, 60, False), (10, 10, False), (0, 60, True), (-5, 60, True), (10_000, 300, True)],
)
def test_clamp_timeout(asked: float | None, expected: float, noted: bool) -> None:
    value, note = Settings(home=Path("/x")).clamp_timeout(asked)
    assert value == expected
    assert (note is not None) == noted


def test_every_path_setting_takes_a_str_and_expands_the_home(tmp_path: Path) -> None:
    """Issue #25: ``Settings.from_env(runtime_dir="/some/dir")`` kept a str and a later ``/`` failed."""
    paths = {"runtime_dir": str(tmp_path / "rt"), "pip_constraints": "~/c.txt", "prices_file": "p.json"}
    s = Settings.from_env({}, home=str(tmp_path), **paths)
    assert s.runtime_path / "python" == tmp_path / "rt" / "python"  # no TypeError
    assert s.home == tmp_path and s.runtime_dir == tmp_path / "rt"
    assert s.pip_constraints == Path.home() / "c.txt" and s.prices_file == Path("p.json")
    assert Settings(home="~/ci-data").home == Path.home() / "ci-data"  # type: ignore[arg-type]
    assert s.replace(runtime_dir=str(tmp_path / "other")).runtime_dir == tmp_path / "other"
    assert Settings(home=tmp_path).runtime_dir is None  # None stays None
    with pytest.raises(ConfigurationError, match="runtime_dir must be a path"):
        Settings(home=tmp_path, runtime_dir=42)  # type: ignore[arg-type]
