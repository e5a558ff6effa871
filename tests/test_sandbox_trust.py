"""The sandbox's second round of trust, tested as an attacker would, with NO policy in the path.

No residue between users (user B scans all of its own readable memory for user A's code and file
name), nothing outlives its supervisor, every mount carries the flags it promises, no host packages
are visible, forged deeply nested reports stop cleanly, and everyday process pools finish. Runs in
``strict`` mode as root and in ``namespaces`` mode as an unprivileged user, like the escape suite.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from _executor_fixtures import alive, processes_running, sandbox_mode, small_settings, started_executor
from code_interpreter.executor import ExecutionEvent, Executor, FileRef

MODE = sandbox_mode()


@pytest.fixture(scope="module")
async def executor(sandbox_runtime: Any, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Executor]:
    home = tmp_path_factory.mktemp("trust-home")
    settings = small_settings(home, isolation=MODE, max_timeout=60)
    async for ex in started_executor(settings, sandbox_runtime):
        yield ex


def everything(result: Any) -> str:
    return "\n".join([result.output, result.stderr, result.error or ""])


# -- no residue between users ----------------------------------------------------------------------

# Scans every readable mapping of the process for each marker, given as two halves that are never
# joined in this process: a hit is a contiguous copy that came from somewhere else.
SCAN = """
import ctypes, json
ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: the uid switch left /proc/self/mem root's
markers = {MARKERS}
halves = {{name: (bytes.fromhex(a), bytes.fromhex(b)) for name, (a, b) in markers.items()}}
hits = dict.fromkeys(markers, 0)
scanned = 0
CHUNK = 16 * 2**20
with open('/proc/self/maps') as fh:
    maps = fh.read().splitlines()
mem = open('/proc/self/mem', 'rb', buffering=0)
for line in maps:
    addr, perms = line.split()[:2]
    if 'r' not in perms or line.endswith(('[vvar]', '[vsyscall]', '[vvar_vclock]')):
        continue
    start, end = (int(x, 16) for x in addr.split('-'))
    pos = start
    while pos < end:
        size = min(CHUNK + 64, end - pos)
        try:
            mem.seek(pos)
            data = mem.read(size)
        except OSError:
            break
        scanned += len(data)
        for name, (a, b) in halves.items():
            i = data.find(a)
            while i != -1:
                if data[i + len(a):i + len(a) + len(b)] == b:
                    hits[name] += 1
                i = data.find(a, i + 1)
        del data
        pos += CHUNK
print(json.dumps({{"hits": hits, "scanned": scanned}}))
"""


def _split(marker: str) -> tuple[str, str]:
    raw = marker.encode()
    return raw[:10].hex(), raw[10:].hex()


def scan_code(markers: dict[str, str]) -> str:
    return SCAN.format(MARKERS=repr({name: _split(m) for name, m in markers.items()}))


def scan_host_process(pid: int, markers: dict[str, str]) -> dict[str, int]:
    """The same scan, run by the test on a host process it may read (the zygote, a warm supervisor)."""
    hits = dict.fromkeys(markers, 0)
    needles = {name: m.encode() for name, m in markers.items()}
    with open(f"/proc/{pid}/maps") as fh:
        maps = fh.read().splitlines()
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            addr, perms = line.split()[:2]
            if "r" not in perms or "[v" in line:
                continue
            start, end = (int(x, 16) for x in addr.split("-"))
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except OSError:
                continue
            for name, needle in needles.items():
                hits[name] += data.count(needle)
    return hits


async def test_a_later_user_finds_nothing_of_an_earlier_one_in_its_memory(
    executor: Executor, tmp_path: Path
) -> None:
    code_marker = "CI-CODE-" + secrets.token_hex(12)
    name_marker = "CI-NAME-" + secrets.token_hex(12)
    markers = {"code": code_marker, "name": name_marker}
    folder = tmp_path / name_marker
    folder.mkdir()
    data = folder / f"{name_marker}.csv"
    data.write_text("a,b\n1,2\n")
    os.chmod(folder, 0o755)
    os.chmod(data, 0o644)
    ref = FileRef(file_id=f"file-{name_marker}", path=data, filename=f"{name_marker}.csv", file_type="csv")
    alice = f"secret = {code_marker!r}\nprint(len(secret), load_file({ref.file_id!r}).shape)"
    pool = executor._config(executor.runtime).pool_size
    for _ in range(3 * pool):  # more executions than warm supervisors: the pool is refilled meanwhile
        r = await executor.execute(alice, user_id="alice", files=[ref], timeout=20)
        assert r.success and r.output.strip().endswith("(1, 2)"), everything(r)
    # The scanner finds a marker that is in the process: alice's own code scanning itself.
    own_code = alice + "\n" + scan_code({"code": code_marker})
    own = await executor.execute(own_code, user_id="alice", files=[ref], timeout=60)
    assert own.success, everything(own)
    assert json.loads(own.output.splitlines()[-1])["hits"]["code"] >= 1
    # Bob's sandbox: every readable byte of its own memory, for both markers.
    bob = await executor.execute(scan_code(markers), user_id="bob", timeout=60)
    assert bob.success, everything(bob)
    report = json.loads(bob.output.splitlines()[-1])
    assert report["scanned"] > 50 * 2**20  # the preloaded interpreter's memory was read, not a stub
    assert report["hits"] == {"code": 0, "name": 0}
    # From the host: the zygote and its warm supervisors, which fork every later execution.
    zygote = executor.status()["zygote_pid"]
    assert zygote
    assert scan_host_process(zygote, markers) == {"code": 0, "name": 0}
    for warm in _children(zygote):
        assert scan_host_process(warm, markers) == {"code": 0, "name": 0}


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


# -- nothing outlives its supervisor ---------------------------------------------------------------


async def _start_and_wait(executor: Executor, code: str, limit: float) -> tuple[asyncio.Task[Any], int, int]:
    printed = asyncio.Event()

    def on_event(event: ExecutionEvent) -> None:
        if "ready" in event.text:
            printed.set()

    task = asyncio.create_task(executor.execute(code, user_id="u", timeout=limit, on_event=on_event))
    await asyncio.wait_for(printed.wait(), 60)
    [(supervisor, child)] = executor.processes()
    return task, supervisor, child


SPAWNS = (
    "import subprocess, time\n"
    "subprocess.Popen(['/bin/sleep', '{tag}'])\n"
    "subprocess.Popen(['/bin/sh', '-c', 'sleep {tag}'])\n"
    "time.sleep(0.5)\nprint('ready', flush=True)\ntime.sleep(60)"
)


async def test_killing_the_supervisor_leaves_nothing_of_the_execution(executor: Executor) -> None:
    tag = str(900_000 + secrets.randbelow(99_999))
    task, supervisor, child = await _start_and_wait(executor, SPAWNS.format(tag=tag), 50)
    assert processes_running(f"sleep\x00{tag}")  # the grandchildren exist before the kill
    os.kill(supervisor, signal.SIGKILL)
    r = await asyncio.wait_for(task, 30)
    assert not r.success and (r.error or "").startswith("Sandbox crashed"), r.error
    for _ in range(20):  # within 2 s
        if not (alive(child) or processes_running(f"sleep\x00{tag}")):
            break
        await asyncio.sleep(0.1)
    assert not alive(supervisor) and not alive(child)
    assert processes_running(f"sleep\x00{tag}") == []
    ok = await executor.execute("print(6 * 7)", user_id="u", timeout=10)
    assert ok.success and ok.output == "42\n"


async def test_a_stuck_supervisor_is_killed_by_the_host_and_verified_gone(executor: Executor) -> None:
    tag = str(800_000 + secrets.randbelow(99_999))
    task, supervisor, child = await _start_and_wait(executor, SPAWNS.format(tag=tag), 1)
    os.kill(supervisor, signal.SIGSTOP)  # it can no longer enforce the deadline: the host must
    r = await asyncio.wait_for(task, 30)
    assert not r.success and "did not report" in (r.error or ""), r.error
    # The host's timeout path killed and verified: nothing is left by the time the result arrives.
    assert not alive(supervisor) and not alive(child)
    for _ in range(20):
        if not processes_running(f"sleep\x00{tag}"):
            break
        await asyncio.sleep(0.1)
    assert processes_running(f"sleep\x00{tag}") == []


# -- every mount carries the flags it promises ---------------------------------------------------------

MOUNTS = """
import json, os
rows = []
with open('/proc/self/mountinfo') as fh:
    for line in fh:
        fields = line.split()
        point, options = fields[4], set(fields[5].split(','))
        st = os.statvfs(point)
        rows.append({'point': point, 'options': sorted(options), 'rdonly': bool(st.f_flag & os.ST_RDONLY),
                     'nosuid': bool(st.f_flag & os.ST_NOSUID), 'noexec': bool(st.f_flag & os.ST_NOEXEC)})
print(json.dumps(rows))
"""


async def test_every_mount_in_the_view_has_its_flags(executor: Executor, tmp_path: Path) -> None:
    data = tmp_path / "in.csv"
    data.write_text("a\n1\n")
    os.chmod(data, 0o644)
    ref = FileRef(file_id="f1", path=data, filename="in.csv", file_type="csv")
    r = await executor.execute(MOUNTS, user_id="u", files=[ref], timeout=10)
    assert r.success, everything(r)
    rows = json.loads(r.output)
    hidden = set(executor.status()["hidden_host_packages"])
    scratch = {"/mnt/data", "/tmp", "/dev/shm"}
    by_point = {row["point"]: row for row in rows}
    assert {"/", "/proc", "/mnt/inputs", "/mnt/inputs/f1/in.csv", *scratch} <= set(by_point)
    for row in rows:
        point, options = row["point"], set(row["options"])
        assert "nosuid" in options and row["nosuid"], row
        if point.startswith("/dev/") and point != "/dev/shm":
            assert "noexec" in options, row  # device nodes: nodev cannot apply
            continue
        assert "nodev" in options, row
        if point in scratch:
            assert "rw" in options and "noexec" in options and not row["rdonly"], row
        elif point == "/proc":
            assert "noexec" in options, row
        else:
            assert "ro" in options and row["rdonly"], row
            if point == "/" or point.startswith("/mnt/inputs") or point in hidden:
                assert "noexec" in options and row["noexec"], row
    # Writing an input is refused: by its permissions first where they forbid it (strict mode, EACCES),
    # and by the read-only mount where they would allow it (namespaces mode: the file is the host user's).
    w = await executor.execute(
        "try:\n    open('/mnt/inputs/f1/in.csv', 'a')\nexcept OSError as e:\n    print(e.errno)",
        user_id="u",
        files=[ref],
        timeout=10,
    )
    assert w.output.strip() == ("13" if MODE == "strict" else "30")


# -- no host packages ------------------------------------------------------------------------------


async def test_the_host_interpreters_packages_are_not_visible(executor: Executor) -> None:
    hidden = executor.status()["hidden_host_packages"]
    # On the host, these directories hold packages (pip at least): the test is not vacuous.
    assert hidden and any(os.listdir(p) for p in hidden if os.path.isdir(p)), hidden  # noqa: ASYNC240
    code = f"""
import os, sys
paths = {hidden!r}
print('entries', sum(len(os.listdir(p)) for p in paths if os.path.isdir(p)))
sys.path.extend(paths)
try:
    import pip
    print('IMPORTED pip', pip.__file__)
except ImportError as e:
    print('no pip', type(e).__name__)
"""
    r = await executor.execute(code, user_id="u", timeout=10)
    assert r.success, everything(r)
    assert "entries 0" in r.output and "no pip" in r.output and "IMPORTED" not in r.output


# -- forged reports ----------------------------------------------------------------------------------


async def test_a_deeply_nested_forged_report_stops_cleanly(executor: Executor) -> None:
    log = executor.settings.home / "executor" / "zygote.log"
    before = log.read_text() if log.exists() else ""
    code = (
        "import os, struct\nbody = b'[' * 200000 + b']' * 200000\n"
        "for fd in range(3, 64):\n    try:\n        os.write(fd, struct.pack('>I', len(body)) + body)\n"
        "    except OSError:\n        pass\nprint('forged')"
    )
    r = await executor.execute(code, user_id="u", timeout=10)
    assert not r.success and (r.error or "").startswith("Execution stopped: "), r.error
    assert "nested too deeply" in (r.error or "")
    after = log.read_text() if log.exists() else ""
    assert "Traceback" not in after[len(before) :] and "RecursionError" not in after[len(before) :]
    ok = await executor.execute("print(6 * 7)", user_id="u", timeout=10)
    assert ok.success and ok.output == "42\n"


# -- process pools and threads finish ----------------------------------------------------------------

POOLS = {
    "multiprocessing.Pool": (
        "from multiprocessing import Pool\nwith Pool(2) as p:\n    print(sum(p.map(abs, range(-50, 50))))",
        "2500",
    ),
    "Pool never closed": (
        "from multiprocessing import Pool\np = Pool(2)\nprint(sum(p.map(abs, [-1, 2])))",
        "3",
    ),
    "ProcessPoolExecutor never shut down": (
        "from concurrent.futures import ProcessPoolExecutor\nex = ProcessPoolExecutor(2)\n"
        "print(sum(ex.map(abs, range(-10, 10))))",
        "100",
    ),
    "non-daemon thread that never ends": (
        "import threading, time\nthreading.Thread(target=time.sleep, args=(1000,), name='forever').start()\n"
        "print('done')",
        "done",
    ),
}


@pytest.mark.parametrize("name", sorted(POOLS))
async def test_process_pools_and_threads_finish_promptly(executor: Executor, name: str) -> None:
    code, expected = POOLS[name]
    r = await executor.execute(code, user_id="u", timeout=50)
    assert r.success, everything(r)
    assert r.output.strip() == expected
    assert r.execution_time < 30  # a hang guard: the code itself takes well under a second
    if "thread" in name:
        assert "'forever'" not in r.output and "forever" in r.stderr and "were stopped" in r.stderr


@pytest.fixture(scope="module")
async def sklearn_runtime(sandbox_runtime: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The shared runtime with scikit-learn (and so joblib/loky) installed, as a user's import would do."""
    from code_interpreter.packages import PackageManager
    from code_interpreter.settings import Settings

    settings = Settings(home=tmp_path_factory.mktemp("sk-home"), runtime_dir=sandbox_runtime.root)
    pm = PackageManager(settings)
    await pm.install(["scikit-learn"])
    return sandbox_runtime


JOBLIB = {
    "joblib Parallel(n_jobs=2)": (
        "from joblib import Parallel, delayed\n"
        "print(sum(Parallel(n_jobs=2)(delayed(abs)(i) for i in range(-5, 5))))",
        "25",
    ),
    "GridSearchCV(n_jobs=-1)": (
        "from sklearn.datasets import load_iris\nfrom sklearn.model_selection import GridSearchCV\n"
        "from sklearn.tree import DecisionTreeClassifier\nX, y = load_iris(return_X_y=True)\n"
        "grid = {'max_depth': [1, 2, 3]}\n"
        "g = GridSearchCV(DecisionTreeClassifier(random_state=0), grid, n_jobs=-1, cv=3)\n"
        "print(g.fit(X, y).best_params_)",
        "{'max_depth': 3}",
    ),
}


@pytest.mark.parametrize("name", sorted(JOBLIB))
async def test_joblib_and_scikit_learn_parallelism_finish(
    sklearn_runtime: Any, tmp_path_factory: pytest.TempPathFactory, name: str
) -> None:
    code, expected = JOBLIB[name]
    settings = small_settings(
        tmp_path_factory.mktemp("sk"), isolation=MODE, memory_limit_mb=1024, max_timeout=90
    )
    async for ex in started_executor(settings, sklearn_runtime):
        r = await ex.execute(code, user_id="u", timeout=80)
        assert r.success, everything(r)
        assert r.output.strip().splitlines()[-1] == expected
        assert r.execution_time < 60, r.execution_time  # a hang guard: loky used to wait for the timeout


def test_the_suite_knows_its_mode() -> None:
    assert ("strict" if os.geteuid() == 0 else "namespaces") == MODE
    assert sys.platform.startswith("linux")


# -- the same walls around live sessions ------------------------------------------------------------


@pytest.fixture
async def sessions(executor: Executor) -> AsyncIterator[Any]:
    from code_interpreter.executor.sessions import SessionManager

    async def get() -> Executor:
        return executor

    manager = SessionManager(executor.settings, None, get)
    yield manager
    await manager.close_all()


async def test_live_sessions_of_two_users_share_no_residue(executor: Executor, sessions: Any) -> None:
    marker = "CI-SESS-" + secrets.token_hex(12)
    bob_before = await sessions.run_cell("bob", "s", "x = 1", [], 20)  # started before alice's data exists
    assert bob_before.success, everything(bob_before)
    for i in range(3):
        r = await sessions.run_cell("alice", "s", f"kept_{i} = {marker!r} * 2\nprint(len(kept_{i}))", [], 20)
        assert r.success and r.output.strip() == str(2 * len(marker)), everything(r)
    own = await sessions.run_cell("alice", "s", scan_code({"m": marker}), [], 60)
    assert own.success and json.loads(own.output.splitlines()[-1])["hits"]["m"] >= 1, everything(own)
    for user in ("bob", "carol"):  # bob's live process, and carol's started after alice's cells
        r = await sessions.run_cell(user, "s", scan_code({"m": marker}), [], 60)
        assert r.success, everything(r)
        assert json.loads(r.output.splitlines()[-1])["hits"] == {"m": 0}, user


LIVE_ATTACKS = """
import ctypes, ctypes.util, os, socket
libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)
print('env', sorted(k for k in os.environ if 'SECRET' in k or 'KEY' in k))
try:
    socket.create_connection(('127.0.0.1', 22), timeout=2); print('CONNECTED')
except OSError as e:
    print('net refused', e.errno)
print('unshare', libc.unshare(0x10000000), 'mount', libc.mount(b'none', b'/mnt/data', b'tmpfs', 0, None))
for p in ('/usr/pwned', '/etc/passwd', '/mnt/inputs/x'):
    try:
        open(p, 'a').write('x'); print('WROTE', p)
    except OSError as e:
        print('write refused', e.errno)
os.kill(1, 9)
print('pid', os.getpid(), 'still here')
"""


async def test_the_main_escapes_are_contained_inside_a_live_session(
    executor: Executor, sessions: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI_SESSION_SECRET_KEY", "should-never-show")
    first = await sessions.run_cell("mallory", "s", "import os\nstash = dict(os.environ)", [], 20)
    assert first.success, everything(first)
    r = await sessions.run_cell("mallory", "s", LIVE_ATTACKS, [], 30)
    assert r.success, everything(r)
    out = r.output
    assert "env []" in out and "CONNECTED" not in out and "net refused" in out
    assert "unshare -1 mount -1" in out
    assert "WROTE" not in out and out.count("write refused") == 3
    assert "pid 1 still here" in out  # pid 1 of its own namespace: nothing else to hit
    after = await sessions.run_cell(
        "mallory", "s", "print(len(stash) > 0, 'should-never-show' in str(stash))", [], 20
    )
    assert after.success and after.output == "True False\n", everything(after)
