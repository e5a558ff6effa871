"""The inside package (runs in the sandbox): load_file, tracebacks, exit codes, figures, file collection.

These tests run the REAL sandbox runtime interpreter (the ``sandbox_runtime`` fixture), which does not
have ``code_interpreter`` installed, and load ``inside/`` by file path under a private name exactly as
the zygote does (``_bootstrap.load_inside_package``). A small driver process preloads numpy, pandas
and matplotlib once and forks one child per execution, like the zygote — but WITHOUT the OS sandbox
(no namespaces, uid drop or seccomp): the full path through the sandbox is tested with the executor.
"""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import code_interpreter.runtime.inside as inside_pkg
from code_interpreter.runtime.inside import collect_generated

INSIDE_DIR = Path(inside_pkg.__file__).resolve().parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# The driver: a miniature zygote. Protocol: one JSON request per line on stdin, one JSON reply per
# line on stdout. Each "run" forks a child that redirects fds 0/1/2 and calls run_user_code.
DRIVER = r"""
import json, os, runpy, signal, sys, traceback
runtime_dir = sys.argv[1]
heavy = ("numpy", "pandas", "matplotlib", "PIL")
boot = runpy.run_path(os.path.join(os.path.dirname(runtime_dir), "_bootstrap.py"))
rt = boot["load_inside_package"](runtime_dir)
info = {
    "name": rt.__name__,
    "heavy_after_load": [m for m in heavy if m in sys.modules],
    "code_interpreter_imported": any(m.split(".")[0] == "code_interpreter" for m in sys.modules),
}
info["preloaded"] = rt.preload(["numpy", "pandas", "matplotlib.pyplot", "seaborn", "no_such_module_ci_test"])
info["mplbackend"] = os.environ.get("MPLBACKEND")

def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()

reply(info)
for line in sys.stdin:
    req = json.loads(line)
    if req["op"] == "collect":
        args = (req["work_dir"], set(req["exclude"]), req["max_files"], req["max_bytes"])
        files, notes = rt.collect_generated(*args)
        reply({"files": files, "notes": notes})
        continue
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        status = 99
        try:
            signal.alarm(60)
            os.chdir(req["work_dir"])
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(os.open(req["stdout"], os.O_WRONLY | os.O_CREAT, 0o600), 1)
            os.dup2(os.open(req["stderr"], os.O_WRONLY | os.O_CREAT, 0o600), 2)
            status = rt.run_user_code(req["code"], req["files"], req["work_dir"])
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    _, wait_status = os.waitpid(pid, 0)
    reply({"status": os.waitstatus_to_exitcode(wait_status)})
"""


@dataclass(frozen=True, slots=True)
class Run:
    """What one execution left behind."""

    status: int
    stdout: str
    stderr: str
    work_dir: Path


class Driver:
    """The runtime interpreter running DRIVER; executes code in forked children."""

    def __init__(self, python: Path, tmp: Path) -> None:
        script = tmp / "driver.py"
        script.write_text(DRIVER)
        home = tmp / "home"
        home.mkdir()
        # An environment from nothing, as in the sandbox; DISPLAY is set so matplotlib's
        # "non-interactive, cannot be shown" warning path is live and its silencing is tested.
        env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "DISPLAY": ":0"}
        self.tmp = tmp
        self.count = 0
        self.proc = subprocess.Popen(
            [str(python), "-I", str(script), str(INSIDE_DIR)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp,
        )
        self.info: dict[str, Any] = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"the driver died (exit {self.proc.poll()})"
        result: dict[str, Any] = json.loads(line)
        return result

    def _send(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def run(
        self, code: str, files: dict[str, dict[str, str]] | None = None, work_dir: Path | None = None
    ) -> Run:
        """Execute ``code`` in a fresh child with its own (or the given) work dir."""
        self.count += 1
        if work_dir is None:
            work_dir = self.tmp / f"work-{self.count}"
            work_dir.mkdir()
        out, err = self.tmp / f"out-{self.count}.txt", self.tmp / f"err-{self.count}.txt"
        reply = self._send(
            {
                "op": "run",
                "code": code,
                "files": files or {},
                "work_dir": str(work_dir),
                "stdout": str(out),
                "stderr": str(err),
            }
        )
        return Run(reply["status"], out.read_text(), err.read_text(), work_dir)

    def collect(self, work_dir: Path, exclude: set[str], max_files: int, max_bytes: int) -> dict[str, Any]:
        """collect_generated, called in the runtime interpreter."""
        return self._send(
            {
                "op": "collect",
                "work_dir": str(work_dir),
                "exclude": sorted(exclude),
                "max_files": max_files,
                "max_bytes": max_bytes,
            }
        )

    def close(self) -> None:
        """End the driver (closing stdin ends its loop)."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def driver(sandbox_runtime: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Driver]:
    """One driver (a preloaded runtime interpreter) for the module."""
    d = Driver(Path(sandbox_runtime.python), tmp_path_factory.mktemp("runtime-driver"))
    try:
        yield d
    finally:
        d.close()


class _Marker:
    """Unpickling this creates a file: proof that a pickle was (or was not) loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture(scope="module")
def inputs(driver: Driver, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Input files of every supported kind; the pandas/PIL ones are written by the runtime itself."""
    d = tmp_path_factory.mktemp("inputs")
    (d / "data.csv").write_text("x,y\n1,a\n2,b\n")
    (d / "semi.csv").write_text("x;y;z\n1;2;3\n")
    (d / "data.tsv").write_text("x\ty\n1\tz,w\n2\tv\n")
    (d / "obj.json").write_text(json.dumps({"a": [1, 2], "b": {"c": None}}))
    (d / "records.json").write_text(json.dumps([{"a": 1}, {"a": 2}]))
    (d / "rows.jsonl").write_text('{"a": 1, "b": "x"}\n{"a": 2, "b": "y"}\n{"a": 3, "b": "z"}\n')
    (d / "notes.txt").write_text("héllo ✓\nline 2\n", encoding="utf-8")
    (d / "readme.md").write_text("# Title\n")
    (d / "blob.xyz").write_bytes(b"\x00\x01\x02")
    (d / "table.txt").write_text("p,q\n5,6\n")
    np.save(d / "arr.npy", np.arange(6, dtype=np.int32).reshape(2, 3))
    np.savez(d / "arrs.npz", first=np.ones(3), second=np.zeros((2, 2)))
    with sqlite3.connect(d / "shop.sqlite") as conn:
        conn.execute("CREATE TABLE items (name TEXT, price REAL)")
        conn.executemany("INSERT INTO items VALUES (?, ?)", [("pen", 1.5), ("ink", 3.0)])
    conn.close()
    marker = d / "PICKLE_WAS_LOADED"
    (d / "evil.pkl").write_bytes(pickle.dumps(_Marker(marker)))
    np.save(d / "evil.npy", np.array([_Marker(marker)], dtype=object), allow_pickle=True)
    assert not marker.exists()
    made = driver.run(
        "import pandas as pd\nfrom PIL import Image\n"
        f"d = {str(d)!r}\n"
        "with pd.ExcelWriter(d + '/book.xlsx') as w:\n"
        "    pd.DataFrame({'a': [1, 2]}).to_excel(w, sheet_name='First', index=False)\n"
        "    pd.DataFrame({'b': ['x', 'y', 'z']}).to_excel(w, sheet_name='Second', index=False)\n"
        "pd.DataFrame({'only': [7]}).to_excel(d + '/single.xlsx', sheet_name='S', index=False)\n"
        "frame = pd.DataFrame({'k': [1, 2, 3], 'v': [0.5, 1.5, 2.5]})\n"
        "frame.to_parquet(d + '/t.parquet')\n"
        "frame.to_feather(d + '/t.feather')\n"
        "Image.new('RGB', (3, 2), (255, 0, 0)).save(d + '/red.png')\n"
    )
    assert made.status == 0, made.stderr
    files = {
        name.replace(".", "_"): {
            "path": str(d / name),
            "filename": name,
            "type": Path(name).suffix.lstrip("."),
        }
        for name in sorted(os.listdir(d))
    }
    # A declared type wins over the extension: this .txt is declared a csv.
    files["table_txt"]["type"] = "csv"
    return {"dir": d, "marker": marker, "files": files}


def test_loaded_by_path_stdlib_only_and_preloaded(driver: Driver) -> None:
    info = driver.info
    assert info["name"] == "_ci_inside"
    assert info["heavy_after_load"] == []  # nothing heavy imported at load time
    assert info["code_interpreter_imported"] is False
    assert info["preloaded"] == ["numpy", "pandas", "matplotlib.pyplot", "seaborn"]
    assert info["mplbackend"] == "Agg"


LOADER_CASES = [
    (
        "data_csv",
        "print(type(v).__name__, v.shape, list(v.columns), v['x'].sum())",
        "DataFrame (2, 2) ['x', 'y'] 3",
    ),
    ("semi_csv", "print(v.shape, list(v.columns))", "(1, 3) ['x', 'y', 'z']"),
    ("data_tsv", "print(v.shape, list(v.columns), v['y'][0])", "(2, 2) ['x', 'y'] z,w"),
    ("table_txt", "print(type(v).__name__, list(v.columns))", "DataFrame ['p', 'q']"),
    (
        "book_xlsx",
        "print(sorted(v), v['First']['a'].tolist(), v['Second'].shape)",
        "['First', 'Second'] [1, 2] (3, 1)",
    ),
    ("single_xlsx", "print(type(v).__name__, v['only'].tolist())", "DataFrame [7]"),
    ("obj_json", "print(type(v).__name__, v['a'], v['b'])", "dict [1, 2] {'c': None}"),
    ("records_json", "print(type(v).__name__, v)", "list [{'a': 1}, {'a': 2}]"),
    ("rows_jsonl", "print(type(v).__name__, v.shape, v['b'].tolist())", "DataFrame (3, 2) ['x', 'y', 'z']"),
    ("t_parquet", "print(type(v).__name__, v['v'].sum())", "DataFrame 4.5"),
    ("t_feather", "print(type(v).__name__, v['k'].tolist())", "DataFrame [1, 2, 3]"),
    ("notes_txt", "print(type(v).__name__, repr(v))", "str 'héllo ✓\\nline 2\\n'"),
    ("readme_md", "print(type(v).__name__, repr(v))", "str '# Title\\n'"),
    (
        "red_png",
        "from PIL import Image\n"
        "print(isinstance(v, Image.Image), v.format, v.size, v.mode, v.getpixel((0, 0)))",
        "True PNG (3, 2) RGB (255, 0, 0)",
    ),
    ("arr_npy", "print(type(v).__name__, v.shape, v.dtype, int(v.sum()))", "ndarray (2, 3) int32 15"),
    ("arrs_npz", "print(sorted(v.files), v['second'].shape)", "['first', 'second'] (2, 2)"),
    (
        "shop_sqlite",
        "print(type(v).__name__, v.execute('select name, price from items order by name').fetchall())",
        "Connection [('ink', 3.0), ('pen', 1.5)]",
    ),
    ("blob_xyz", "print(type(v).__name__, v)", "bytes b'\\x00\\x01\\x02'"),
]


@pytest.mark.parametrize(("file_id", "show", "expected"), LOADER_CASES, ids=[c[0] for c in LOADER_CASES])
def test_load_file(driver: Driver, inputs: dict[str, Any], file_id: str, show: str, expected: str) -> None:
    run = driver.run(f"v = load_file({file_id!r})\n{show}\n", inputs["files"])
    assert (run.status, run.stderr) == (0, "")
    assert run.stdout == expected + "\n"


def test_sqlite_connection_is_read_only(driver: Driver, inputs: dict[str, Any]) -> None:
    code = (
        "import sqlite3\nconn = load_file('shop_sqlite')\n"
        "try:\n    conn.execute(\"insert into items values ('x', 1)\")\n"
        "except sqlite3.OperationalError as e:\n    print('refused:', e)\n"
    )
    run = driver.run(code, inputs["files"])
    assert run.status == 0, run.stderr
    assert run.stdout.startswith("refused:") and "readonly" in run.stdout
    with sqlite3.connect(inputs["dir"] / "shop.sqlite") as conn:
        assert conn.execute("select count(*) from items").fetchone() == (2,)
    conn.close()


@pytest.mark.parametrize(
    ("file_id", "declared"),
    [("evil_pkl", "pkl"), ("evil_pkl", ""), ("evil_pkl", "pickle"), ("evil_npy", "npy")],
)
def test_pickles_are_never_unpickled(
    driver: Driver, inputs: dict[str, Any], file_id: str, declared: str
) -> None:
    files = {k: dict(v) for k, v in inputs["files"].items()}
    files[file_id]["type"] = declared
    run = driver.run(
        f"try:\n    load_file({file_id!r})\nexcept ValueError as e:\n    print(type(e).__name__, '|', e)\n",
        files,
    )
    assert run.status == 0, run.stderr
    assert run.stdout.startswith("PickleRefusedError | ")
    assert "never" in run.stdout and "unpickl" in run.stdout
    assert not inputs["marker"].exists()
    # uncaught, the user sees the message and their own line, not the loader's frames
    run = driver.run(f"x = 1\nload_file({file_id!r})\n", files)
    assert run.status == 1
    assert 'File "<code>", line 2, in <module>' in run.stderr
    assert "PickleRefusedError" in run.stderr and "_loaders.py" not in run.stderr
    assert not inputs["marker"].exists()


def test_unknown_file_id_lists_available_ids(driver: Driver, inputs: dict[str, Any]) -> None:
    code = "try:\n    load_file('nope')\nexcept KeyError as e:\n    print(type(e).__name__, '|', e)\n"
    run = driver.run(code, inputs["files"])
    assert run.status == 0, run.stderr
    assert run.stdout.startswith("UnknownFileError | Unknown file id 'nope'.")
    assert "'data_csv' (data.csv)" in run.stdout and "FILES" in run.stdout
    empty = driver.run("get_file_path('nope')\n")
    assert empty.status == 1
    assert "no files were passed to this execution (FILES is empty)" in empty.stderr
    assert "_loaders.py" not in empty.stderr and 'File "<code>", line 1' in empty.stderr


def test_files_mapping_paths_and_filename_lookup(driver: Driver, inputs: dict[str, Any]) -> None:
    code = (
        "print(FILES['data_csv'] == get_file_path('data_csv') == get_file_path('data.csv'))\n"
        "print(load_file('data.csv').shape)\n"
        "try:\n    FILES['x'] = '/etc/passwd'\nexcept TypeError:\n    print('read-only')\n"
        "print(len(FILES), FILES['data_csv'])\n"
    )
    run = driver.run(code, inputs["files"])
    assert run.status == 0, run.stderr
    expected_path = str(inputs["dir"] / "data.csv")
    assert run.stdout == f"True\n(2, 2)\nread-only\n{len(inputs['files'])} {expected_path}\n"


def test_traceback_points_at_user_line_without_helper_frames(driver: Driver) -> None:
    run = driver.run("x = 1\ny = 0\nz = x / y\nprint('not reached')\n")
    assert run.status == 1 and run.stdout == ""
    lines = run.stderr.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[1] == '  File "<code>", line 3, in <module>'
    assert lines[2] == "    z = x / y"
    assert lines[-1] == "ZeroDivisionError: division by zero"
    assert run.stderr.count("File ") == 1  # no helper (or zygote) frame


def test_traceback_through_functions_and_libraries(driver: Driver) -> None:
    code = "import json\n\ndef parse(text):\n    return json.loads(text)\n\nparse('{')\n"
    run = driver.run(code)
    assert run.status == 1
    frames = [line.strip() for line in run.stderr.splitlines() if line.strip().startswith("File ")]
    assert frames[0] == 'File "<code>", line 6, in <module>'
    assert frames[1] == 'File "<code>", line 4, in parse'
    assert all("json" in f for f in frames[2:]) and len(frames) > 2  # library frames kept
    assert "return json.loads(text)" in run.stderr
    assert str(INSIDE_DIR) not in run.stderr
    assert run.stderr.rstrip().endswith("line 1 column 2 (char 1)")


def test_chained_exception_keeps_both_tracebacks(driver: Driver) -> None:
    code = "try:\n    {}['k']\nexcept KeyError as e:\n    raise ValueError('bad') from e\n"
    run = driver.run(code)
    assert run.status == 1
    assert 'File "<code>", line 2, in <module>' in run.stderr
    assert "direct cause of the following exception" in run.stderr
    assert 'File "<code>", line 4, in <module>' in run.stderr
    assert run.stderr.rstrip().endswith("ValueError: bad")


@pytest.mark.parametrize(
    ("code", "line", "fragment"),
    [
        ("print('a')\nif True print(1)\n", 2, "if True print(1)"),
        ("x = (\n", 1, "x = ("),
        ("def f():\nreturn 1\n", 2, "return 1"),
    ],
)
def test_syntax_error_shows_line_and_caret(driver: Driver, code: str, line: int, fragment: str) -> None:
    run = driver.run(code)
    assert run.status == 1 and run.stdout == ""  # nothing ran
    assert f'File "<code>", line {line}' in run.stderr
    assert fragment in run.stderr
    assert "^" in run.stderr
    assert "Error:" in run.stderr.splitlines()[-1]  # SyntaxError or IndentationError
    assert "Traceback" not in run.stderr


def test_nul_byte_is_a_syntax_error(driver: Driver) -> None:
    run = driver.run("print(1)\nx = 1\0\n")
    assert (run.status, run.stdout) == (1, "")
    assert run.stderr == "SyntaxError: source code cannot contain null bytes (line 2)\n"


@pytest.mark.parametrize(
    ("code", "status", "stderr"),
    [
        ("print('ok')", 0, ""),
        ("import sys\nsys.exit(0)\nprint('no')", 0, ""),
        ("import sys\nsys.exit()", 0, ""),
        ("import sys\nsys.exit(3)", 3, ""),
        ("raise SystemExit(2)", 2, ""),
        ("import sys\nsys.exit(256 + 4)", 4, ""),
        ("import sys\nsys.exit('bye now')", 1, "bye now\n"),
        ("import sys\ntry:\n    sys.exit(5)\nfinally:\n    print('cleanup')", 5, ""),
    ],
)
def test_exit_codes(driver: Driver, code: str, status: int, stderr: str) -> None:
    run = driver.run(code)
    assert (run.status, run.stderr) == (status, stderr)


def test_keyboard_interrupt_is_reported(driver: Driver) -> None:
    run = driver.run("print('before')\nraise KeyboardInterrupt\n")
    assert (run.status, run.stdout) == (1, "before\n")
    assert 'File "<code>", line 2' in run.stderr and run.stderr.rstrip().endswith("KeyboardInterrupt")


def test_fresh_main_namespace_each_run(driver: Driver) -> None:
    first = driver.run("leak = 42\nimport sys\nsys.modules['json'].LEAK = 1\nprint(__name__)\n")
    assert (first.status, first.stdout) == (0, "__main__\n")
    code = (
        "print('leak' in globals(), sorted(k for k in globals() if not k.startswith('__')))\n"
        "import pickle, dataclasses, sys, json\n"
        "print(hasattr(json, 'LEAK'))\n"
        "@dataclasses.dataclass\nclass P:\n    x: int\n"
        "print(pickle.loads(pickle.dumps(P(3))), sys.modules['__main__'].P is P, sys.argv)\n"
    )
    run = driver.run(code)
    assert run.status == 0, run.stderr
    assert run.stdout == "False ['FILES', 'get_file_path', 'load_file']\nFalse\nP(x=3) True ['<code>']\n"


def test_modules_written_to_work_dir_are_importable_and_threads_joined(driver: Driver) -> None:
    code = (
        "open('helper_mod.py', 'w').write('VALUE = 7\\n')\n"
        "import helper_mod, threading, time\nprint(helper_mod.VALUE)\n"
        "def late():\n    time.sleep(0.2)\n    print('thread done', flush=True)\n"
        "threading.Thread(target=late).start()\n"
    )
    run = driver.run(code)
    assert (run.status, run.stderr) == (0, "")
    assert run.stdout == "7\nthread done\n"


def test_plt_show_without_savefig_produces_a_png(driver: Driver) -> None:
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [4, 1, 9])\nplt.show()\nplt.gcf().show()\n"
    run = driver.run(code)
    assert (run.status, run.stderr) == (0, "")  # no "non-interactive" warning, though DISPLAY is set
    assert sorted(os.listdir(run.work_dir)) == ["figure_1.png"]
    assert _png_size((run.work_dir / "figure_1.png").read_bytes()) == (640, 480)


def test_user_figure_file_is_never_overwritten(driver: Driver) -> None:
    code = (
        "open('figure_1.png', 'wb').write(b'mine')\n"
        "import matplotlib.pyplot as plt\n"
        "plt.figure(); plt.plot([1, 2])\nplt.figure(); plt.bar(['a'], [1])\n"
    )
    run = driver.run(code)
    assert run.status == 0, run.stderr
    assert sorted(os.listdir(run.work_dir)) == ["figure_1.png", "figure_2.png", "figure_3.png"]
    assert (run.work_dir / "figure_1.png").read_bytes() == b"mine"
    for name in ("figure_2.png", "figure_3.png"):
        assert (run.work_dir / name).read_bytes()[:8] == PNG_SIGNATURE


def test_figures_saved_even_when_the_code_fails(driver: Driver) -> None:
    run = driver.run("import matplotlib.pyplot as plt\nplt.plot([1, 2])\n1 / 0\n")
    assert run.status == 1 and "ZeroDivisionError" in run.stderr
    assert os.listdir(run.work_dir) == ["figure_1.png"]


def test_figure_saved_by_the_user_is_not_duplicated_unless_changed(driver: Driver) -> None:
    code = (
        "import matplotlib.pyplot as plt, io\n"
        "plt.plot([1, 2]); plt.savefig('chart.png', bbox_inches='tight'); plt.show()\n"
        "fig2 = plt.figure(); plt.plot([3, 4]); fig2.savefig('second.png'); plt.title('changed after save')\n"
        "fig3 = plt.figure(); plt.plot([5]); buf = io.BytesIO(); fig3.savefig(buf, format='png')\n"
    )
    run = driver.run(code)
    assert run.status == 0, run.stderr
    # chart.png: saved and unchanged, not repeated; fig2 changed after its save; fig3 only went to memory
    assert sorted(os.listdir(run.work_dir)) == ["chart.png", "figure_1.png", "figure_2.png", "second.png"]


def test_no_figure_no_png(driver: Driver) -> None:
    run = driver.run("import matplotlib.pyplot as plt\nprint(plt.get_backend())\n")
    assert (run.status, run.stdout.strip().lower(), os.listdir(run.work_dir)) == (0, "agg", [])


def _tree(root: Path, outside: Path) -> None:
    """A work dir with nested folders, links, a FIFO and caches."""
    (root / "out" / "deep" / "er").mkdir(parents=True)
    (root / "a.csv").write_text("a\n1\n")
    (root / "out" / "b.png").write_bytes(PNG_SIGNATURE + b"x" * 10)
    (root / "out" / "deep" / "er" / "c.json").write_text("{}")
    (root / "z.txt").write_text("zz")
    (root / "noext").write_bytes(b"\x00")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "m.pyc").write_bytes(b"x")
    (root / ".cache" / "matplotlib").mkdir(parents=True)
    (root / ".cache" / "matplotlib" / "fontlist.json").write_text("{}")
    (root / "input").mkdir()
    (root / "input" / "uploaded.csv").write_text("u\n")
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (root / "link.txt").symlink_to(outside / "secret.txt")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    os.mkfifo(root / "pipe")


EXPECTED_TREE = [
    ("a.csv", 4, "text/csv", "csv"),
    ("noext", 1, "application/octet-stream", "bin"),
    ("out/b.png", 18, "image/png", "png"),
    ("out/deep/er/c.json", 2, "application/json", "json"),
    ("z.txt", 2, "text/plain", "txt"),
]


def test_collect_generated_nested_skips_links_and_special_files(driver: Driver, tmp_path: Path) -> None:
    root = tmp_path / "work"
    root.mkdir()
    _tree(root, tmp_path / "outside")
    in_runtime = driver.collect(root, {"input"}, 20, 10**6)
    host_files, host_notes = collect_generated(str(root), {str(root / "input")}, 20, 10**6)
    for files, notes in ((in_runtime["files"], in_runtime["notes"]), (host_files, host_notes)):
        assert notes == []
        assert [(f["filename"], f["size"], f["mime"], f["type"]) for f in files] == EXPECTED_TREE
        assert all(f["path"] == str(root / f["filename"]) for f in files)


def test_collect_generated_caps_with_notes(tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / f"f{i}.txt").write_bytes(b"0123456789")
    files, notes = collect_generated(str(tmp_path), set(), 3, 10**6)
    assert [f["filename"] for f in files] == ["f0.txt", "f1.txt", "f2.txt"]
    assert notes == ["2 more files not returned: the limit is 3 files per execution"]
    files, notes = collect_generated(str(tmp_path), {"f4.txt"}, 20, 25)
    assert [f["filename"] for f in files] == ["f0.txt", "f1.txt"]
    assert notes == [
        "2 more files (20 bytes) not returned: the limit is 25 bytes of generated files per execution"
    ]
    files, notes = collect_generated(str(tmp_path), set(), 0, 0)
    assert files == [] and notes == ["5 more files not returned: the limit is 0 files per execution"]


def test_load_file_options_reach_table_readers_only(driver: Driver, inputs: dict[str, Any]) -> None:
    code = (
        "print(load_file('book_xlsx', sheet_name='Second')['b'].tolist())\n"
        "print(load_file('data_csv', usecols=['y'])['y'].tolist())\n"
        "try:\n    load_file('notes_txt', encoding='ascii')\nexcept TypeError as e:\n    print(e)\n"
    )
    run = driver.run(code, inputs["files"])
    assert run.status == 0, run.stderr
    first, second, third = run.stdout.splitlines()
    assert (first, second) == ("['x', 'y', 'z']", "['a', 'b']")
    assert third.startswith("load_file options are only passed to table readers") and "'notes.txt'" in third


def test_collect_generated_odd_names_and_excludes(tmp_path: Path) -> None:
    (tmp_path / "ok.txt").write_text("ok")
    os.close(os.open(os.fsencode(tmp_path) + b"/bad\xff.txt", os.O_CREAT | os.O_WRONLY, 0o600))
    (tmp_path / "skip").mkdir()
    (tmp_path / "skip" / "inner.txt").write_text("x")
    # an absolute exclude outside the work dir is ignored, one inside excludes a whole folder
    files, notes = collect_generated(str(tmp_path), {"/etc/passwd", str(tmp_path / "skip")}, 20, 10**6)
    assert [f["filename"] for f in files] == ["ok.txt"]
    assert notes == ["1 files not returned: their names are not valid UTF-8"]
