"""Escape attempts against the real sandbox, with NO policy in the path: every case must be contained.

Each case runs user code through ``Executor.execute`` directly (the AST policy is not involved) and
checks, from the host, that nothing got out: secrets unseen, host files untouched, no connection
made, the zygote and the host alive, a concurrent normal execution unaffected. The suite runs in
``strict`` mode as root and in ``namespaces`` mode as an unprivileged user (``.ci/run`` runs both);
where the two modes differ, the test says how.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from _executor_fixtures import (
    BOMB_TIMEOUT,
    INSIDE_UID,
    SECRET,
    processes_running,
    root_owned_secret,
    sandbox_mode,
    small_settings,
    started_executor,
)
from code_interpreter.executor import Executor, FileRef

PROJECT_FILE = Path(__file__).resolve().parent.parent / "pyproject.toml"


MODE = sandbox_mode()
UID = INSIDE_UID[MODE]


@pytest.fixture(scope="module")
def root_secret(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return root_owned_secret(tmp_path_factory.mktemp("escape"))


@pytest.fixture(scope="module")
async def executor(
    sandbox_runtime: Any, tmp_path_factory: pytest.TempPathFactory, root_secret: Path
) -> AsyncIterator[Executor]:
    home = tmp_path_factory.mktemp("escape-home")
    settings = small_settings(home, isolation=MODE)
    async for ex in started_executor(settings, sandbox_runtime, extra=(root_secret.parent,)):
        yield ex


@pytest.fixture
def host_env_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CI_ESCAPE_API_KEY", SECRET)
    return SECRET


async def run(ex: Executor, code: str, user: str = "attacker", **kw: Any) -> Any:
    return await ex.execute(code, user_id=user, timeout=kw.pop("timeout", 5), **kw)


def everything(result: Any) -> str:
    return "\n".join([result.output, result.stderr, result.error or ""])


# -- secrets ---------------------------------------------------------------------------------------
async def test_host_environment_is_invisible(executor: Executor, host_env_secret: str) -> None:
    code = """
import os, glob
print(sorted(os.environ))
for p in glob.glob('/proc/*/environ'):
    try:
        print(p, open(p, 'rb').read())
    except OSError as e:
        print(p, 'denied', e.errno)
"""
    r = await run(executor, code)
    assert r.success, r.error
    assert host_env_secret not in everything(r)
    assert "CI_ESCAPE_API_KEY" not in everything(r)
    assert "'HOME'" in r.output  # the rebuilt environment is there


async def test_root_only_file_is_unreadable(executor: Executor, root_secret: Path) -> None:
    # The directory is bound into the view on purpose: only the identity stands between code and file
    # (strict: a real switch to uid 65534; namespaces: the host's unprivileged uid, no capabilities).
    other = 0 if MODE == "strict" else 1  # an id the code is not: root, or an id its namespace never mapped
    code = f"""
import os
print('uid', os.getuid(), os.getgid())
print('caps', open('/proc/self/status').read().split('CapEff:')[1].split()[0])
try:
    print(open({str(root_secret)!r}).read())
except PermissionError:
    print('denied')
secret = {str(root_secret)!r}
for f in (lambda: os.setuid({other}), lambda: os.setgid({other}), lambda: os.chmod(secret, 0o777)):
    try:
        f(); print('ESCALATED')
    except OSError as e:
        print('refused', e.errno)
"""
    r = await run(executor, code)
    assert r.success, r.error
    assert f"uid {UID} {UID}" in r.output and "caps 0000000000000000" in r.output
    assert "denied" in r.output and r.output.count("refused") == 3
    assert SECRET not in everything(r) and "ESCALATED" not in r.output
    assert oct(root_secret.stat().st_mode & 0o777) == "0o600"  # noqa: ASYNC240


async def test_host_paths_are_not_in_the_view(executor: Executor, tmp_path: Path) -> None:
    marker = tmp_path / "host-file.txt"
    marker.write_text(SECRET)
    os.chmod(marker, 0o644)
    project = PROJECT_FILE  # the host's checkout: world-readable, so only the mount view can hide it
    code = f"""
import os
paths = [{str(marker)!r}, '/root/.bash_history', {str(project)!r}, '/etc/shadow']
for p in paths + ['/proc/1/root/etc/shadow']:
    print(p, os.path.exists(p))
print(sorted(os.listdir('/')))
"""
    r = await run(executor, code)
    assert r.success, r.error
    assert f"{marker} False" in r.output
    assert f"{project} False" in r.output and "/etc/shadow False" in r.output
    assert SECRET not in everything(r)


async def test_another_users_file_is_not_visible(executor: Executor, tmp_path: Path) -> None:
    data = tmp_path / "a.csv"
    data.write_text("x,y\n1,2\n")
    os.chmod(data, 0o644)
    ref = FileRef(file_id="fileA", path=data, filename="a.csv", file_type="csv")
    a = await run(executor, "print(FILES); print(load_file('fileA').shape)", user="alice", files=[ref])
    assert a.success, a.error
    assert "(1, 2)" in a.output
    b = await run(
        executor,
        "import os\nprint(FILES, os.listdir('/mnt/inputs'))\ntry:\n    load_file('fileA')\n"
        "except Exception as e:\n    print(type(e).__name__)",
        user="bob",
    )
    assert b.success, b.error
    assert "{} []" in b.output and "a.csv" not in everything(b)


async def test_input_files_are_read_only(executor: Executor, tmp_path: Path) -> None:
    data = tmp_path / "in.txt"
    data.write_text("original")
    os.chmod(data, 0o644)
    ref = FileRef(file_id="f1", path=data, filename="in.txt", file_type="txt")
    code = (
        "p = get_file_path('f1')\ntry:\n    open(p, 'w').write('changed')\n"
        "except OSError as e:\n    print('refused', e.errno)"
    )
    r = await run(executor, code, files=[ref])
    assert "refused" in r.output, everything(r)
    assert data.read_text() == "original"


# -- network ---------------------------------------------------------------------------------------
async def test_no_route_to_host_loopback_or_internet(
    executor: Executor, tcp_server: tuple[int, list[Any]]
) -> None:
    port, accepted = tcp_server
    code = f"""
import socket, time
for addr in (('127.0.0.1', {port}), ('1.1.1.1', 53), ('169.254.169.254', 80)):
    t = time.monotonic()
    try:
        socket.create_connection(addr, timeout=30).close()
        print('CONNECTED', addr)
    except OSError as e:
        print('failed', addr, type(e).__name__, e.errno, round(time.monotonic() - t, 2))
try:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('1.1.1.1', 53))
except OSError as e:
    print('udp failed', e.errno)
a, b = socket.socketpair()
a.send(b'ok'); print('unix', b.recv(2))
"""
    # A connection left to hang runs into the execution's timeout (10 s, below the connect timeout):
    # the execution then fails.
    r = await run(executor, code, timeout=10)
    assert r.success, r.error
    assert "CONNECTED" not in r.output
    assert r.output.count("failed") == 4
    assert "unix b'ok'" in r.output
    assert accepted == []
    # "At once": each attempt was refused with an errno, not left to run into its connect timeout.
    # How fast a refusal is lives in the benchmarks (limits); here 10 s is only a hang guard.
    refused = [line.split() for line in r.output.splitlines() if line.startswith("failed (")]
    assert len(refused) == 3
    for *_, kind, errno, seconds in refused:
        assert kind != "TimeoutError" and errno != "None", r.output
        assert float(seconds) < 10, r.output


# -- processes ---------------------------------------------------------------------------------------
async def test_spawned_processes_stay_inside(executor: Executor, tmp_path: Path) -> None:
    target = tmp_path / "spawned-marker"
    code = f"""
import os, subprocess
cmd = 'echo pwned > {target}; id -u; touch /mnt/data/inside.txt'
r = subprocess.run(['/bin/sh', '-c', cmd], capture_output=True, text=True)
print('rc', r.returncode, r.stdout.strip(), r.stderr.strip()[:80])
pid = os.posix_spawn('/usr/bin/touch', ['touch', '{target}'], {{}})
print('spawn', os.waitpid(pid, 0)[1])
os.system('echo x > {target}')
"""
    r = await run(executor, code)
    assert r.success, r.error
    assert f"rc 0 {UID}" in r.output or f"rc 1 {UID}" in r.output, r.output
    assert not target.exists()
    assert [g.filename for g in r.generated] == ["inside.txt"]


async def test_killing_parent_and_pid1_hurts_nobody(executor: Executor) -> None:
    zygote = executor.status()["zygote_pid"]
    r1 = await run(
        executor, "import os\nprint(os.getpid(), os.getppid(), flush=True)\nos.kill(1, 9)\nprint('alive')"
    )
    assert r1.success and "1 0" in r1.output and "alive" in r1.output, everything(r1)
    r2 = await run(
        executor, "import os\nprint(os.getppid(), flush=True)\nos.kill(os.getppid(), 9)\nprint('after')"
    )
    # The parent lives outside the PID namespace: getppid() is 0, and kill(0) reaches only the child's own
    # process group (it leads one, so never the supervisor, which in namespaces mode has the same uid):
    # pid 1, which ignores SIGKILL from inside its own namespace.
    assert r2.success and r2.output == "0\nafter\n", everything(r2)
    r3 = await run(
        executor,
        "import os\nfor p in range(2, 200):\n    try:\n        os.kill(p, 9)\n"
        "    except OSError:\n        pass",
    )
    assert r3.success
    assert executor.status()["zygote_pid"] == zygote
    ok = await run(executor, "print(6 * 7)")
    assert ok.success and ok.output == "42\n"


async def test_subclass_and_frame_walks_are_contained(executor: Executor, tmp_path: Path) -> None:
    target = tmp_path / "walk-marker"
    code = f"""
import sys
wrap = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]
system = wrap.__init__.__globals__['system']
print('system', system('echo walked > {target}'))
f = sys._getframe()
while f.f_back is not None:
    f = f.f_back
imp = f.f_globals['__builtins__']
imp = imp['__import__'] if isinstance(imp, dict) else imp.__import__
os = imp('os')
print('uid', os.getuid())
try:
    open('/proc/1/root/../../etc/shadow')
except OSError as e:
    print('no shadow', e.errno)
"""
    r = await run(executor, code)
    assert r.success, r.error
    assert f"uid {UID}" in r.output
    assert not target.exists()


async def test_ctypes_syscalls_fail(executor: Executor) -> None:
    other = 0 if MODE == "strict" else 1
    code = """
import ctypes, ctypes.util, os
libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)
def call(name, *args):
    r = getattr(libc, name)(*args)
    print(name, r, os.strerror(ctypes.get_errno()))
call('unshare', 0x10000000)                 # CLONE_NEWUSER
call('unshare', 0x00020000)                 # CLONE_NEWNS
call('mount', b'none', b'/mnt/data', b'tmpfs', 0, None)
call('syscall', 272, 0x40000000)            # unshare(CLONE_NEWNET)
call('syscall', 101, 16, 1, 0, 0)           # ptrace(PTRACE_ATTACH, 1)
call('syscall', 165, b'/', b'/mnt', None, 4096 | 16384, None)  # mount(MS_BIND|MS_REC)
call('syscall', 321, 0, 0, 0)               # bpf
call('setuid', OTHER)
call('chroot', b'/tmp')
""".replace("OTHER", str(other))
    r = await run(executor, code)
    assert r.success, r.error
    lines = [
        line
        for line in r.output.splitlines()
        if line.split()[0] in {"unshare", "mount", "syscall", "setuid", "chroot"}
    ]
    assert len(lines) == 9
    assert all(line.split()[1] == "-1" for line in lines), r.output


async def test_writes_outside_the_work_dir_fail(executor: Executor) -> None:
    code = """
import os
targets = ['/usr/pwned', '/etc/passwd', '/pwned', '/mnt/inputs/x', '/dev/shm/../pwned']
for p in targets + ['/proc/sys/kernel/hostname']:
    try:
        open(p, 'a').write('x')
        print('WROTE', p)
    except OSError as e:
        print('refused', p, e.errno)
open('/tmp/scratch', 'w').write('ok')
open('/mnt/data/out.txt', 'w').write('ok')
"""
    r = await run(executor, code)
    assert r.success, r.error
    assert "WROTE" not in r.output and r.output.count("refused") == 6
    assert [g.filename for g in r.generated] == ["out.txt"]  # /tmp is scratch, not returned


# -- resource bombs (each alongside a normal execution) ---------------------------------------------
BOMBS = {
    "fork_bomb": (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        "timeout",
    ),
    "memory_bomb": ("x = []\nwhile True:\n    x.append(b'x' * (32 * 2**20))", "memory"),
    "cpu_spin": ("while True:\n    pass", "timeout"),
    "disk_filler": ("f = open('big.bin', 'wb')\nwhile True:\n    f.write(b'x' * 2**20)", "error"),
    "output_flood": ("while True:\n    print('y' * 1000)", "timeout"),
    "fd_exhaustion": ("fs = []\nwhile True:\n    fs.append(open('/dev/null'))", "error"),
    "thread_bomb": (
        "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(60,)).start()",
        "timeout",
    ),
}


@pytest.mark.parametrize("name", sorted(BOMBS))
async def test_bombs_are_contained(executor: Executor, name: str) -> None:
    code, expected = BOMBS[name]
    zygote = executor.status()["zygote_pid"]
    normal_code = "import pandas as pd\nprint(pd.DataFrame({'a': [1, 2, 3]}).a.sum())"
    bomb, normal = await asyncio.gather(
        executor.execute(code, user_id="bomber", timeout=BOMB_TIMEOUT),
        executor.execute(normal_code, user_id="bystander", timeout=BOMB_TIMEOUT + 3),
    )
    assert normal.success and normal.output == "6\n", everything(normal)
    assert not bomb.success
    # Stopped at its limit, not left to run: the error says which limit. The time is a hang guard only
    # (a loaded machine tears a bomb down slowly); how long containment takes lives in the benchmarks.
    assert bomb.execution_time < BOMB_TIMEOUT + 10
    error = bomb.error or ""
    if expected == "timeout":
        assert (
            error.startswith(f"Execution timeout after {int(BOMB_TIMEOUT)} seconds")
            and bomb.return_code == -1
        )
    elif expected == "memory":
        assert "Memory limit exceeded" in error
    else:
        assert "Traceback" in error and "<code>" in error
    if name == "output_flood":
        assert bomb.truncated and "bytes dropped here" in bomb.output and len(bomb.output) < 4200
    if name == "disk_filler":
        assert "No space left" in error or "File too large" in error
    assert executor.status()["zygote_pid"] == zygote
    again = await executor.execute("print('still fine')", user_id="bomber", timeout=3)
    assert again.success and again.output == "still fine\n"


async def test_nothing_of_a_timed_out_child_survives(executor: Executor) -> None:
    code = "import subprocess, time\nsubprocess.Popen(['/bin/sleep', '1234'])\n"
    code += "print('started', flush=True)\ntime.sleep(100)"
    r = await executor.execute(code, user_id="u", timeout=1)
    assert r.return_code == -1 and "started" in r.output
    for _ in range(50):  # the namespace is torn down after the result is reported
        if not processes_running("sleep\x001234"):
            break
        await asyncio.sleep(0.1)
    assert processes_running("sleep\x001234") == []


# -- the supervisor's status channel ----------------------------------------------------------------

FORGE = """
import json, os, struct

def frame(message):
    body = json.dumps(message).encode()
    return struct.pack(">I", len(body)) + body

forged = {forged}
for fd in sorted(int(n) for n in os.listdir("/proc/self/fd")):
    if fd > 2:
        try:
            os.write(fd, forged)
        except OSError:
            pass
print("forged")
"""


@pytest.mark.parametrize(
    ("forged", "why"),
    [
        ('struct.pack(">I", 9) + b"not json!"', "invalid report"),
        ('frame({"op": "done", "rc": 0, "files": [{"filename": "big.bin", "size": 10**12}]})', "cap"),
        ('frame({"op": "done", "rc": 0, "files": [{"filename": "x", "size": 1}] * 10_000})', "file list"),
        ('frame({"op": "done", "rc": 0, "files": [{"filename": 7, "size": 1}]}) + b"x"', "file entry"),
        ('struct.pack(">I", 2**31) + b"{}"', "oversized"),
    ],
)
async def test_forged_status_reports_stop_the_execution(executor: Executor, forged: str, why: str) -> None:
    """User code that writes its own frames into every inherited fd cannot pass them off as a result."""
    before = executor.status()["zygote_pid"]
    r = await run(executor, FORGE.format(forged=forged))
    assert not r.success and r.generated == ()
    assert why in (r.error or "") and "Execution stopped" in (r.error or "")
    assert executor.status()["zygote_pid"] == before
    ok = await run(executor, "print(6 * 7)")
    assert ok.success and ok.output.strip() == "42"


async def test_a_forged_file_name_is_only_a_name(executor: Executor) -> None:
    """A forged, well-formed report can only describe the execution's own bytes; names stay plain data."""
    entry = '{"filename": "../../../etc/cron.d/x", "size": 4}'
    r = await run(
        executor, FORGE.format(forged=f'frame({{"op": "done", "rc": 0, "files": [{entry}]}}) + b"PWND"')
    )
    # its own bytes, under a relative name
    assert [(f.filename, f.data) for f in r.generated] == [("etc/cron.d/x", b"PWND")]
