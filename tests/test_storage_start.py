"""Starting storage on a newcomer's machine (#25): an unreadable inherited HOME, a server that cannot
start, a data dir that cannot be made, and bad MONGODB_URIs — each a clear message, never a traceback.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import code_interpreter
from _embedded import no_server_left
from _process_env import process_env
from code_interpreter.errors import ConfigurationError, StorageUnavailable
from code_interpreter.interpreter import CodeInterpreter
from code_interpreter.settings import Settings
from code_interpreter.storage import RetryPolicy, Storage
from conftest import start_secantus

FAST = RetryPolicy(attempts=2, total_s=2.0, wait_initial_s=0.05, wait_max_s=0.2, server_selection_ms=300)
HANG_GUARD_S = 90  # bounds a hang only: a server start on the loaded 2-core machine may take seconds
NOBODY = 65534
PLUGIN = Path(code_interpreter.__file__).resolve().parent.parent


def cli(
    *args: str, env: dict[str, str], cwd: Path, python: str = sys.executable
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-m", "code_interpreter.cli", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=HANG_GUARD_S,
    )  # fmt: skip


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("code-interpreter: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# -- an unreadable inherited HOME ----------------------------------------------------------------------


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A world-traversable temp dir (pytest's own tmp dirs are 0700 to root): removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="ci-test-nonroot-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _as_another_user(home: Path) -> tuple[list[str], dict[str, str]]:
    """A command prefix and environment that run the CLI as a user who cannot read its inherited HOME.

    As root: uid 65534 through setpriv, on Debian's python3 with this test run's packages on its path
    (as .ci/escape-nonroot does, without building a venv), and HOME=/root, which is 0700. As another
    user: this interpreter, with HOME a directory of mode 000.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODE_INTERPRETER_", "MONGODB_URI"))}
    env.update(CODE_INTERPRETER_HOME=str(home / "data"), CODE_INTERPRETER_EMBEDDED_IDLE_S="0.2")
    if os.getuid() != 0:
        locked = home / "locked-home"
        locked.mkdir(mode=0o000)
        return [sys.executable], {**env, "HOME": str(locked)}
    python = "/usr/bin/python3"
    if not (Path(python).exists() and shutil.which("setpriv")):
        pytest.skip("needs /usr/bin/python3 and setpriv to run as uid 65534")
    if not shutil.which("unshare"):
        pytest.skip("needs unshare to show this run's packages to uid 65534")
    (home / "data").mkdir()
    os.chown(home / "data", NOBODY, NOBODY)
    # This run's packages may sit under a directory only root may enter (tox makes .tox 0700): a bind
    # mount in a private mount namespace shows them at a world-readable path, for this command only.
    site, plugin = home / "site", home / "plugin"
    site.mkdir()
    plugin.mkdir()
    env.update(HOME="/root", PYTHONPATH=os.pathsep.join([str(site), str(plugin)]), PYTHONNOUSERSITE="1")
    mount = 'mount --bind "$1" "$2" && mount --bind "$3" "$4" && shift 4 && exec "$@"'
    prefix = [
        "unshare", "--mount", "--propagation", "private", "sh", "-c", mount, "sh",
        sysconfig.get_paths()["purelib"], str(site), str(PLUGIN), str(plugin),
        "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", python,
    ]  # fmt: skip
    probe = subprocess.run([*prefix, "-c", "import code_interpreter, secantus"], env=env, capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"uid {NOBODY} cannot import this run's packages with {python}: {probe.stderr[-300:]!r}")
    return prefix, env


async def test_the_embedded_server_starts_when_the_inherited_home_is_unreadable(shared_tmp: Path) -> None:
    """#25: HOME=/root for another uid: SecantusDB's config lookup read HOME and the server died at start."""
    prefix, env = _as_another_user(shared_tmp)
    assert not os.access(env["HOME"], os.R_OK) or os.getuid() == 0  # root reads anything; uid 65534 not
    proc = await asyncio.to_thread(
        subprocess.run, [*prefix, "-m", "code_interpreter.cli", "files", "list"],
        env=env, cwd=shared_tmp, capture_output=True, text=True, timeout=HANG_GUARD_S,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "No files for user cli."
    assert (shared_tmp / "data" / "db" / "data").is_dir()
    await no_server_left(shared_tmp / "data", HANG_GUARD_S)


# -- a server that cannot start, a data dir that cannot be made ------------------------------------------


async def test_a_server_that_cannot_start_says_why_and_what_to_do(tmp_path: Path) -> None:
    home = tmp_path / "home"
    data = home / "db" / "data"
    data.mkdir(parents=True)
    squatter, _ = await asyncio.to_thread(start_secantus, data)  # another server holds the data dir
    try:
        storage = Storage(Settings(home=home, mongodb_uri=None, embedded_idle_s=0.2), retry=FAST)
        async with asyncio.timeout(HANG_GUARD_S):
            with pytest.raises(StorageUnavailable) as caught:
                await storage.start()
    finally:
        squatter.terminate()
        await asyncio.to_thread(squatter.wait, 30)
    message = str(caught.value)
    assert "did not start" in message and "it exited saying" in message
    assert "busy" in message.lower() or "lock" in message.lower()  # the server's own words
    assert f"another server seems to hold its data directory {data}" in message
    assert "CODE_INTERPRETER_HOME" in message and str(home / "db" / "server.log") in message
    await no_server_left(home, HANG_GUARD_S)


def test_a_data_dir_that_cannot_be_made_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    env = process_env(tmp_path / "a-file" / "home", "", "db", tmp_path / "runtime")
    del env["MONGODB_URI"]
    line = one_line_error(cli("files", "list", env=env, cwd=tmp_path), "cannot use", "CODE_INTERPRETER_HOME")
    assert "Traceback" not in line and str(tmp_path / "a-file") in line


# -- bad URIs ----------------------------------------------------------------------------------------------

SRV = "mongodb+srv://alice:s3cret@cluster0.nonexistent.invalid/app?authSource=admin"


async def test_an_unresolvable_srv_uri_is_storage_unavailable_naming_it_without_the_password(
    tmp_path: Path,
) -> None:
    settings = Settings(home=tmp_path, mongodb_uri=SRV)
    async with asyncio.timeout(HANG_GUARD_S):
        with pytest.raises(StorageUnavailable) as caught:
            await CodeInterpreter(settings).start()
    message = str(caught.value)
    assert "mongodb+srv://***@cluster0.nonexistent.invalid/app?authSource=admin" in message
    assert "s3cret" not in message and "alice" not in message
    assert "_mongodb._tcp.cluster0.nonexistent.invalid" in message and "mongodb://HOST:PORT" in message


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        (
            "foo://bar:1/db",
            "it starts with foo://, but a MongoDB URI starts with mongodb:// or mongodb+srv://",
        ),
        ("mongodb+srv://bob:pw@cluster0.example.com:27017/", "must not include a port number"),
    ],
)
async def test_a_malformed_uri_is_our_configuration_error_naming_the_whole_uri(
    tmp_path: Path, uri: str, says: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        await Storage(Settings(home=tmp_path, mongodb_uri=uri), retry=FAST).start()
    message = str(caught.value)
    assert says in message and "write it as mongodb://HOST:27017/" in message
    assert uri.split("://")[1].split("@")[-1] in message and ":pw@" not in message


@pytest.mark.parametrize(
    ("uri", "needles"),
    [
        (SRV, ("***@cluster0.nonexistent.invalid", "DNS lookup")),
        ("foo://bar:1/db", ("'foo://bar:1/db' is invalid", "mongodb://")),
    ],
)
def test_the_cli_says_a_bad_uri_in_one_line(tmp_path: Path, uri: str, needles: tuple[str, ...]) -> None:
    env = process_env(tmp_path / "home", uri, "db", tmp_path / "runtime")
    line = one_line_error(cli("files", "list", env=env, cwd=tmp_path), "MONGODB_URI", *needles)
    assert "s3cret" not in line
