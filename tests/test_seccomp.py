"""The seccomp allowlist (issue #22) and what the sandbox's own network and PATH give real code (issue #25).

Every sandbox case runs with NO policy in the path, in ``strict`` mode as root and in ``namespaces``
mode as an unprivileged user (``.ci/escape-nonroot`` runs this file too). The corpus of realistic
scripts the census was taken from (``tests/census/``) must run under the enforced allowlist with no
call refused but the reviewed ones; a refused call fails with EPERM and the result says a sandbox rule
blocked it; code can serve and connect on its own loopback while the host's stays out of reach.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from _executor_fixtures import INSIDE_UID, sandbox_mode, small_settings, started_executor
from code_interpreter.errors import IsolationUnavailable
from code_interpreter.executor import Executor, census, isolation_problem
from code_interpreter.executor.report import blocked_note
from code_interpreter.runtime.sandbox import seccomp

MODE = sandbox_mode()
REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "census"

#: Calls no sandboxed code may make: escapes, kernel attack surface, changes to the host.
NEVER = (
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp", "mount", "umount2",
    "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsmount", "fsconfig", "fspick",
    "mount_setattr", "unshare", "setns", "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key",
    "request_key", "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "open_by_handle_at", "name_to_handle_at",
    "seccomp", "clone3", "setuid", "setgid", "setreuid", "setresuid", "setgroups", "capset", "chown",
    "fchown", "lchown", "mknod", "mknodat", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "sethostname", "setdomainname", "reboot", "swapon", "swapoff", "syslog", "acct", "quotactl",
    "personality", "fanotify_init", "iopl", "ioperm", "lookup_dcookie", "vhangup", "mbind",
    "set_mempolicy", "migrate_pages", "move_pages",
)  # fmt: skip


# -- the list itself ------------------------------------------------------------------------------------
def test_the_allowlist_holds_none_of_the_calls_a_sandbox_must_refuse() -> None:
    assert sorted(set(NEVER) & set(seccomp.ALLOWED)) == []
    assert sorted(set(seccomp.REVIEWED_REFUSALS) & set(seccomp.ALLOWED)) == []


def test_security_md_lists_every_allowed_call_and_what_needs_it() -> None:
    text = (REPO / "SECURITY.md").read_text(encoding="utf-8")
    census_part = text.split("## The seccomp census", 1)[1].split("\n## ", 1)[0]
    missing = [
        name for name in [*seccomp.ALLOWED, *seccomp.REVIEWED_REFUSALS] if f"`{name}`" not in census_part
    ]
    assert missing == []


@pytest.mark.parametrize(
    ("blocked", "texts", "expected"),
    [
        ({"unshare": 1}, ("", "PermissionError: [Errno 1] Operation not permitted", None), "unshare"),
        ({"socket(AF_NETLINK)": 2}, ("Operation not permitted",), "socket(AF_NETLINK) (2 times)"),
        ({"unshare": 1}, ("all fine", "", None), None),  # refused, but nothing in the output shows it
        ({}, ("PermissionError: [Errno 1] Operation not permitted",), None),  # EPERM from elsewhere
        (None, ("PermissionError",), None),
    ],
)
def test_the_note_names_the_refused_calls_only_when_the_code_shows_an_eperm(
    blocked: Any, texts: tuple[str | None, ...], expected: str | None
) -> None:
    note = blocked_note(blocked, *texts)
    if expected is None:
        assert note is None
    else:
        assert note is not None and expected in note and "sandbox rule" in note


def test_census_tables_say_which_workload_made_each_call(tmp_path: Path) -> None:
    log = tmp_path / "census.jsonl"
    rows = [
        {"label": "# census: a", "mode": MODE, "census": True, "syscalls": {"read": 3, "socket(AF_INET)": 1}},
        {"label": "# census: b", "mode": MODE, "census": True, "syscalls": {"read": 1, "mbind": 2}},
        {"label": "print(1)", "mode": MODE, "census": True, "syscalls": {"socket(AF_NETLINK)": 1}},
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table, labels = census.read_logs([log])
    assert table["read"] == {"a": 3, "b": 1} and table["socket(AF_NETLINK)"] == {"cell: print(1)": 1}
    assert labels == {"a", "b", "cell: print(1)"}
    assert census.allowed("socket(AF_INET)") and not census.allowed("socket(AF_NETLINK)")
    assert census.allowed("clone") and not census.allowed("clone(namespace flags)")
    text = census.render(table, labels)
    assert text.startswith("4 system calls seen, across 3 workloads")
    assert "socket(AF_NETLINK)           REFUSED     1  cell: print(1)" in text
    assert (
        "mbind                        reviewed    1  b" in text
        and "read                         allowed" in text
    )


# -- in the sandbox --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
async def executor(sandbox_runtime: Any, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Executor]:
    settings = small_settings(tmp_path_factory.mktemp("seccomp-home"), isolation=MODE)
    async for ex in started_executor(settings, sandbox_runtime):
        yield ex


async def run(ex: Executor, code: str, **kw: Any) -> Any:
    return await ex.execute(code, user_id="seccomp", timeout=kw.pop("timeout", 10), **kw)


LIBC = "import ctypes, ctypes.util, os\nlibc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)\n"
REFUSED = {
    # unshare(CLONE_NEWUSER) would work for any process without the filter (the census shows it)
    "unshare": LIBC + "if libc.unshare(0x10000000) != 0:\n"
    "    e = ctypes.get_errno(); raise PermissionError(e, os.strerror(e))",
    "socket(AF_NETLINK)": "import socket\nsocket.socket(socket.AF_NETLINK, socket.SOCK_RAW)",
    "clone(namespace flags)": LIBC + "if libc.syscall(56, 0x40000000 | 17, 0, 0, 0, 0) < 0:\n"
    "    e = ctypes.get_errno(); raise PermissionError(e, os.strerror(e))",
    "keyctl": LIBC + "if libc.syscall(250, 0, 0, 0, 0, 0) < 0:\n"
    "    e = ctypes.get_errno(); raise OSError(e, os.strerror(e))",
}


@pytest.mark.parametrize("call", sorted(REFUSED))
async def test_a_refused_call_fails_with_eperm_and_the_result_says_a_sandbox_rule_blocked_it(
    executor: Executor, call: str
) -> None:
    r = await run(executor, REFUSED[call])
    assert not r.success and "Operation not permitted" in (r.error or ""), r.error
    notes = [n for n in r.notes if "sandbox rule" in n]
    assert len(notes) == 1 and f"refused {call} with EPERM" in notes[0], r.notes


async def test_the_sandboxed_process_holds_no_listener_that_could_answer_its_own_calls(
    executor: Executor,
) -> None:
    """The child hands the filter's listener to its supervisor and closes it before any user code runs."""
    code = """
import os
links = {}
for fd in range(1024):
    try:
        links[fd] = os.readlink(f'/proc/self/fd/{fd}')
    except OSError:
        pass
print(sorted(v.split(':')[0] for v in links.values()))
print([v for v in links.values() if 'seccomp' in v])
"""
    r = await run(executor, code)
    assert r.success, r.error
    kinds, seccomp_fds = r.output.splitlines()
    assert seccomp_fds == "[]"
    # stdin, stdout, stderr, the status pipe, the request socket (and the fd listing /proc/self/fd)
    assert kinds.count("'socket'") == 1 and "anon_inode" not in kinds, kinds


async def test_a_flood_of_refused_calls_keeps_the_deadline_and_spares_a_neighbour(executor: Executor) -> None:
    """Every refusal is a round trip through the supervisor: a loop of them must not outlive its timeout."""
    flood = LIBC + "while True:\n    libc.syscall(250, 0, 0, 0, 0, 0)\n"
    started = time.monotonic()
    flooded, neighbour = await asyncio.gather(
        run(executor, flood, timeout=2), executor.execute("print(6 * 7)", user_id="neighbour", timeout=5)
    )
    assert flooded.error_type == "SandboxTimeout" and time.monotonic() - started < 4
    assert neighbour.success and neighbour.output == "42\n"


async def test_only_refusals_the_code_trips_over_get_a_note(executor: Executor) -> None:
    handled = await run(
        executor, "import socket\ntry:\n    socket.socket(16, 3)\nexcept OSError:\n    print('ok')"
    )
    assert handled.success and handled.output == "ok\n" and handled.notes == ()
    # Raising its own priority is refused by the kernel (no CAP_SYS_NICE), not by the filter.
    kernel = await run(executor, "import os\nos.setpriority(os.PRIO_PROCESS, 0, -5)")
    assert not kernel.success and "PermissionError" in (kernel.error or "")
    assert [n for n in kernel.notes if "sandbox rule" in n] == []


async def test_the_corpus_runs_with_no_call_refused_but_the_reviewed_ones(
    sandbox_runtime: Any, tmp_path: Path
) -> None:
    """The census's own scripts, under the enforced allowlist: every one succeeds, nothing else refused."""
    settings = small_settings(tmp_path / "home", isolation=MODE, runtime_dir=sandbox_runtime.root,
                              memory_limit_mb=1024, max_processes=64, max_timeout=120)  # fmt: skip
    log = tmp_path / "refused.jsonl"
    log.touch()
    log.chmod(0o666)
    workloads = census.scripts([CORPUS])
    assert len(workloads) >= 12
    problems = await census.run_workloads(workloads, settings, log, census=False)
    assert problems == []
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    labels = {e["label"].removeprefix(census.LABEL) for e in entries}
    assert {w.name for w in workloads} <= labels  # every workload ran and was logged
    refused = {call for e in entries for call in e["syscalls"]}
    assert refused <= set(seccomp.REVIEWED_REFUSALS), refused


async def test_census_mode_records_every_call_and_names_the_workload(
    sandbox_runtime: Any, tmp_path: Path
) -> None:
    settings = small_settings(tmp_path / "home", isolation=MODE, runtime_dir=sandbox_runtime.root)
    log = tmp_path / "census.jsonl"
    log.touch()
    log.chmod(0o666)
    tiny = census.Workload("tiny", ("import socket\nsocket.socket(socket.AF_INET6).close()\nprint('ok')",))
    assert await census.run_workloads([tiny], settings, log, census=True) == []
    table, labels = census.read_logs([log])
    assert table["socket(AF_INET6)"] == {"tiny": 1} and "tiny" in labels
    assert "tiny" in table["write"] and "tiny" in table["close"]
    assert seccomp.LOG_ENV not in os.environ and seccomp.CENSUS_ENV not in os.environ


# -- loopback ------------------------------------------------------------------------------------------
async def test_code_serves_and_connects_on_its_own_loopback_but_not_the_hosts(
    executor: Executor, tcp_server: tuple[int, list[Any]]
) -> None:
    port, accepted = tcp_server
    code = f"""
import socket, threading
for family, host in ((socket.AF_INET, '127.0.0.1'), (socket.AF_INET6, '::1')):
    srv = socket.socket(family)
    srv.bind((host, 0))
    srv.listen()
    def echo(srv=srv):
        conn, _ = srv.accept()
        conn.sendall(conn.recv(100).upper())
        conn.close()
    t = threading.Thread(target=echo)
    t.start()
    c = socket.create_connection(srv.getsockname()[:2], timeout=5)
    c.sendall(b'inside ' + host.encode())
    print(c.recv(100).decode())
    t.join()
    c.close()
    srv.close()
try:
    socket.create_connection(('127.0.0.1', {port}), timeout=5)
    print('REACHED THE HOST')
except OSError as e:
    print('host loopback:', type(e).__name__)
"""
    r = await run(executor, code)
    assert r.success, r.error
    assert r.output == "INSIDE 127.0.0.1\nINSIDE ::1\nhost loopback: ConnectionRefusedError\n"
    assert accepted == []


# -- python on PATH, through the real API -------------------------------------------------------------------
async def test_python_on_path_is_the_runtimes_own_inside_the_same_sandbox(
    make_settings: Any, sandbox_runtime: Any
) -> None:
    from code_interpreter import CodeInterpreter

    code = """
import subprocess
probe = ("import os, sys, socket, numpy; "
         "print(sys.prefix, numpy.__version__, os.getuid(), socket.gethostname(), os.getcwd())")
for name in ('python', 'python3'):
    ran = subprocess.run([name, '-c', probe], capture_output=True, text=True, check=True)
    print(name, ran.stdout.strip())
print('host', subprocess.run(['python', '-c', 'import socket; socket.create_connection(("1.1.1.1", 53), 2)'],
                             capture_output=True, text=True).returncode)
"""
    settings = make_settings(runtime_dir=sandbox_runtime.root, policy="off", isolation="auto")
    async with CodeInterpreter(settings) as interp:
        r = await interp.execute(code, user_id="py-on-path")
    assert r["success"], r["error"]
    lines = r["output"].splitlines()
    for name, line in zip(("python", "python3"), lines, strict=False):
        label, prefix, version, uid, host, cwd = line.split()
        assert version[0].isdigit()  # the runtime's numpy imports
        assert label == name and Path(prefix) == sandbox_runtime.path
        assert (int(uid), host, cwd) == (INSIDE_UID[MODE], "sandbox", "/mnt/data")
    assert lines[2] == "host 1"  # the subprocess has the sandbox's network: no route out


# -- isolation="namespaces" as root ---------------------------------------------------------------------
async def test_explicit_namespaces_isolation_is_refused_as_root(sandbox_runtime: Any, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        assert isolation_problem("namespaces") is None  # what an unprivileged host gets: the sandbox
        return
    ex = Executor(small_settings(tmp_path / "home", isolation="namespaces"), sandbox_runtime)
    try:
        with pytest.raises(IsolationUnavailable, match=r"host's uid 0 .* isolation='strict'"):
            await ex.start()
    finally:
        await ex.close()
