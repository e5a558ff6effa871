"""The AST policy: a table of refused constructs and a table of ordinary code it must let through."""

from __future__ import annotations

import pytest

from code_interpreter.policy import PolicyFinding, check_code, policy_message

# (code, expected construct substring, expected reason substring, line)
REFUSED = [
    # network clients
    ("import socket", "import of socket", "network", 1),
    ("x = 1\nimport urllib.request", "import of urllib.request", "network", 2),
    ("from urllib import request", "urllib.request", "network", 1),
    ("from urllib.request import urlopen", "urllib.request", "network", 1),
    ("import http.client", "http.client", "network", 1),
    ("from http import client", "http.client", "network", 1),
    ("import requests", "requests", "network", 1),
    ("import httpx as h", "httpx", "network", 1),
    ("import aiohttp", "aiohttp", "network", 1),
    ("import ftplib", "ftplib", "network", 1),
    ("import smtplib", "smtplib", "network", 1),
    ("import telnetlib", "telnetlib", "network", 1),
    ("import paramiko", "paramiko", "network", 1),
    ("from socket import create_connection", "socket", "network", 1),
    # next to the harmless uses let through below
    ("import socket\nsocket.gethostname()\nsocket.socket()", "import of socket", "network", 1),
    ("import socket as s\ns.create_connection(('x', 1))", "import of socket", "network", 1),
    ("import socket\nprint(socket.gethostname())\nn = socket", "import of socket", "network", 1),
    ("import socket\ngetattr(socket, 'socket')()", "import of socket", "network", 1),
    ("from socket import gethostname, socket", "import of socket.socket", "network", 1),
    ("from socket import *", "import of socket.*", "network", 1),
    ("def f(): pass\nf.__code__ = g.__code__", "__code__", "internals", 2),
    ("def f(): pass\nprint(f.__code__)", "__code__", "internals", 2),
    ("def f(): pass\nprint(f.__code__.co_consts)", "__code__", "internals", 2),
    ("def f(): pass\nc = f.__code__.replace(co_name='x')", "__code__", "internals", 2),
    ("import xmlrpc.client", "xmlrpc", "network", 1),
    ("import urllib3", "urllib3", "network", 1),
    # process spawning
    ("import subprocess", "subprocess", "processes", 1),
    ("from subprocess import run", "subprocess", "processes", 1),
    ("import os\nos.system('id')", "os.system", "processes", 2),
    ("import os\nos.popen('id').read()", "os.popen", "processes", 2),
    ("import os\nos.execv('/bin/sh', ['sh'])", "os.execv", "processes", 2),
    ("import os\nos.execvpe('sh', [], {})", "os.execvpe", "processes", 2),
    ("import os\nos.spawnl(os.P_WAIT, '/bin/true')", "os.spawnl", "processes", 2),
    ("import os\nos.posix_spawn('/bin/sh', ['sh'], {})", "os.posix_spawn", "processes", 2),
    ("import os\nos.posix_spawnp('sh', ['sh'], {})", "os.posix_spawnp", "processes", 2),
    ("import os\npid = os.fork()", "os.fork", "processes", 2),
    ("import os\nos.forkpty()", "os.forkpty", "processes", 2),
    ("import os as o\no.system('id')", "os.system", "processes", 2),
    ("from os import system\nsystem('id')", "os.system", "processes", 1),
    ("from os import system as s", "os.system", "processes", 1),
    ("import os\nrun = os.system", "os.system", "processes", 2),
    ("import posix\nposix.system('id')", "posix.system", "processes", 2),
    ("import pty\npty.spawn('sh')", "pty", "processes", 1),
    ("import asyncio\nasyncio.create_subprocess_exec('id')", "create_subprocess_exec", "processes", 2),
    ("import asyncio\nasyncio.create_subprocess_shell('id')", "create_subprocess_shell", "processes", 2),
    ("import os\nos.kill(os.getppid(), 9)", "os.kill", "signalling", 2),
    ("import os\nos.killpg(0, 9)", "os.killpg", "signalling", 2),
    ("from os import *", "from os import *", "star import", 1),
    ("__import__('os').system('id')", "os.system", "processes", 1),
    ("__import__('subprocess')", "__import__('subprocess')", "processes", 1),
    ("import importlib\nimportlib.import_module('subprocess')", "subprocess", "processes", 2),
    ("import importlib\nimportlib.import_module('socket').socket()", "socket", "network", 2),
    ("import os\ngetattr(os, 'system')('id')", "getattr(os, 'system')", "processes", 2),
    ("exec('import subprocess')", "exec() running import of subprocess", "processes", 1),
    ("x = 2\neval(\"__import__('os').system('id')\")", "eval() running os.system", "processes", 2),
    # native code
    ("import ctypes", "ctypes", "native", 1),
    ("from ctypes import CDLL", "ctypes", "native", 1),
    ("import ctypes.util", "ctypes", "native", 1),
    ("import cffi", "cffi", "native", 1),
    # interpreter internals
    ("().__class__.__bases__[0].__subclasses__()", "__subclasses__", "internals", 1),
    ("def f(): pass\nf.__globals__['os']", "__globals__", "internals", 2),
    ("__builtins__.__import__('os')", "__builtins__", "internals", 1),
    ("b = __builtins__", "__builtins__", "internals", 1),
    ("def f(): pass\nf.__code__", "__code__", "internals", 2),
    ("def f(): pass\nf.__closure__", "__closure__", "internals", 2),
    ("import sys\nsys._getframe(1).f_globals", "sys._getframe", "internals", 2),
    ("import sys\nsys._current_frames()", "sys._current_frames", "internals", 2),
    ("def g():\n    yield 1\ng().gi_frame.f_back", "gi_frame", "internals", 3),
    ("try:\n    1/0\nexcept Exception as e:\n    e.__traceback__.tb_frame", "tb_frame", "internals", 4),
    ("import inspect\ninspect.currentframe().f_back", "inspect.currentframe", "internals", 2),
    ("import inspect\ninspect.stack()", "inspect.stack", "internals", 2),
    ("from inspect import currentframe", "inspect.currentframe", "internals", 1),
    ("getattr(object, '__subclasses__')()", "getattr(…, '__subclasses__')", "internals", 1),
    ("getattr(f, '__globals__')", "__globals__", "internals", 1),
    ("vars(f)['__builtins__']", "__builtins__", "internals", 1),
    ("import gc\ngc.get_referrers(x)", "gc.get_referrers", "internals", 2),
    ("import gc\ngc.get_objects()", "gc.get_objects", "internals", 2),
    # nested in functions, classes, comprehensions
    ("def f():\n    import socket", "socket", "network", 2),
    ("class A:\n    def m(self):\n        import os\n        os.system('x')", "os.system", "processes", 4),
    ("[__import__('os').popen(c) for c in cmds]", "os.popen", "processes", 1),
]

ALLOWED = [
    "import re\npat = re.compile(r'\\d+')",
    "s = 'a-b'.replace('-', '_')",
    "import pandas as pd\ndf = pd.DataFrame({'a': [1]})\ndf = df.rename(columns={'a': 'b'})",
    "import pandas as pd\ndf = pd.DataFrame({'a': [1], 'b': [2]})\ndf.eval('c = a + b')",
    "model.eval()",
    "import os\np = os.path.join('out', 'x.csv')\nos.path.exists(p)\nos.path.basename(p)",
    "import os\nos.makedirs('out', exist_ok=True)",
    "import sys\nprint(sys.version)",
    "x = [1]\nprint(id(x))",
    "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.grid()\nplt.show()",
    "gc_content = 0.4\nmy_gc = gc_content * 2\ndef compute_gc(seq):\n    return seq.count('G')",
    "import gc\ngc.collect()",
    "import os",
    "with open('out.csv', 'w') as fh:\n    fh.write('a,b\\n')",
    "import urllib.parse\nurllib.parse.quote('a b')",
    "from urllib.parse import urlparse",
    "import json, csv, math, statistics, datetime, collections, itertools, functools",
    "from http import HTTPStatus",
    "import multiprocessing\nwith multiprocessing.Pool(2) as p:\n    p.map(abs, [1, -2])",
    "from concurrent.futures import ThreadPoolExecutor",
    "import os\nos.environ.get('HOME')\nos.getcwd()\nos.listdir('.')\nos.getpid()",
    "x = eval('1 + 2')",
    "exec('y = 3')",
    "obj.system = 1\nprint(obj.system)",
    "def system(cmd):\n    return cmd\nsystem('ls')",
    "class A:\n    def __init__(self):\n        self.name = type(self).__name__",
    "print(getattr(obj, '__name__', 'x'), getattr(obj, 'shape'))",
    "import numpy as np\narr = np.arange(10)\narr.reshape(2, 5)",
    "import inspect\ninspect.signature(print)\ninspect.getsource",
    "text = 'import socket; os.system(1)'  # in a string and a comment: import subprocess",
    "f_back = 3\nframe = {'f_globals': 1}.get('f_globals')",
    "import sys\nsys.stdout.write('x')\nsys.exit(0)",
    "import shutil, pathlib, zipfile, tarfile, tempfile",
    "import seaborn as sns\nsns.set_theme()",
    "import sklearn.linear_model as lm\nm = lm.LinearRegression().fit(X, y)",
    "import asyncio\nasyncio.run(main())",
    "import signal\nsignal.signal(signal.SIGALRM, handler)",
    "import socket\nprint(socket.gethostname())",
    "import socket as s\nhost = s.gethostname()",
    "from socket import gethostname\nprint(gethostname())",
    "def f(a, b=1): pass\nprint(f.__code__.co_varnames, f.__code__.co_argcount, f.__code__.co_name)",
    "def f(:",  # syntax errors are the executor's to report
    "",
]


@pytest.mark.parametrize(("code", "construct", "reason", "line"), REFUSED)
def test_refused(code: str, construct: str, reason: str, line: int) -> None:
    findings = check_code(code)
    assert findings, f"not refused: {code!r}"
    first = findings[0]
    assert construct in first.construct, first
    assert reason in first.reason or reason in policy_message(findings), first
    assert first.line == line
    message = policy_message(findings)
    assert message.startswith(f"Security validation failed: {first.construct} at line {line} — ")


@pytest.mark.parametrize("code", ALLOWED)
def test_allowed(code: str) -> None:
    assert check_code(code) == []


@pytest.mark.parametrize(("code", "construct", "reason", "line"), REFUSED[:10] + REFUSED[-15:])
def test_mode_off_refuses_nothing(code: str, construct: str, reason: str, line: int) -> None:
    assert check_code(code, mode="off") == []


def test_message_shape_with_hint_and_more_findings() -> None:
    findings = check_code("import requests\nimport subprocess\nimport ctypes")
    assert [f.line for f in findings] == [1, 2, 3]
    msg = policy_message(findings)
    assert msg == (
        "Security validation failed: import of requests at line 1 — network access is not available in the "
        "sandbox. Work with the user's uploaded files (load_file, FILES) instead. "
        "Also refused: import of subprocess at line 2, import of ctypes at line 3."
    )


def test_one_finding_per_line_and_reason() -> None:
    findings = check_code("import urllib.request\nurllib.request.urlopen('http://x').read()")
    assert [(f.line, f.construct) for f in findings] == [
        (1, "import of urllib.request"),
        (2, "urllib.request"),
    ]


def test_finding_to_dict() -> None:
    (f,) = check_code("import ctypes")
    assert f.to_dict() == {
        "construct": "import of ctypes",
        "line": 1,
        "reason": "loading native code through ctypes/cffi is not allowed",
        "hint": "",
    }
    assert isinstance(f, PolicyFinding)


def test_empty_message() -> None:
    assert policy_message([]) == ""


def test_large_script_is_checked_quickly_enough_to_run_per_call() -> None:
    code = "\n".join(f"x{i} = [j * {i} for j in range(10)]" for i in range(2000)) + "\nimport socket\n"
    findings = check_code(code)
    assert [(f.line, f.construct) for f in findings] == [(2001, "import of socket")]
