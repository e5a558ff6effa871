"""A plain Jupyter kernel (jupyter_client + ipykernel) as a contender, run on the sandbox runtime's python.

The kernel runs on the very interpreter the executor uses, so both import the same numpy, pandas and
matplotlib. ipykernel and its dependencies are installed with ``pip --target`` into a temporary
directory put first on the kernel's PYTHONPATH (cached across runs in the system temp dir); nothing is
added to the runtime itself. jupyter_client, on the host side, is an optional extra: without it the
comparison rows say "not installed".
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._progress import step

# jupyter_core warns about its directory layout unless this is set; the new layout is what we want.
os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")

KERNEL_NAME = "code-interpreter-bench"
START_TIMEOUT_S = 120.0
RUN_TIMEOUT_S = 300.0


def unavailable() -> str | None:
    """Why the kernel contender cannot run here (a short table cell), or None when it can."""
    if importlib.util.find_spec("jupyter_client") is None:
        return "not installed (pip install jupyter_client ipykernel)"
    return None


async def kernel_site(python: Path, version: str) -> Path:
    """A directory holding ipykernel and its dependencies for ``python`` (installed once, then reused)."""
    cache = Path(tempfile.gettempdir()) / f"code-interpreter-bench-ipykernel-py{version}"
    if (cache / ".complete").is_file():
        return cache
    step(f"installing ipykernel for {python} into {cache} (once; about 20 s)")
    staging = Path(tempfile.mkdtemp(prefix=cache.name + ".", dir=cache.parent))
    cmd = [
        sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--target", str(staging), "ipykernel",
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise RuntimeError(
            f"pip could not install ipykernel for the kernel comparison:\n{out.decode()[-2000:]}"
        )
    await asyncio.to_thread(_publish, staging, cache)
    return cache


def _publish(staging: Path, cache: Path) -> None:
    (staging / ".complete").touch()
    try:
        staging.rename(cache)
    except OSError:  # another run finished first: use its copy
        shutil.rmtree(staging, ignore_errors=True)


def write_kernelspec(kernels_dir: Path, python: Path, env: Mapping[str, str]) -> None:
    """A kernelspec running ipykernel on ``python`` with ``env`` (the sandbox's child environment)."""
    spec_dir = kernels_dir / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "bench (sandbox runtime python)",
        "language": "python",
        "env": dict(env),
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))


class Kernel:
    """One started kernel with its client: run code, read its pid, shut it down."""

    def __init__(self, kernels_dir: Path, work: Path, connection_file: Path) -> None:
        from jupyter_client import AsyncKernelManager
        from jupyter_client.kernelspec import KernelSpecManager

        self.work = work
        self.km = AsyncKernelManager(
            kernel_name=KERNEL_NAME,
            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels_dir)]),
            connection_file=str(connection_file),
        )
        self.kc: Any = None

    async def start(self) -> None:
        """Start the kernel process and wait until it answers."""
        self.work.mkdir(parents=True, exist_ok=True)
        # the kernel's own stderr (its TCP warning, tracebacks) goes to a log, not between the tables
        with open(self.work / "kernel.log", "ab") as log:  # noqa: ASYNC230 - opening a new local file
            await self.km.start_kernel(cwd=str(self.work), stdout=log, stderr=log)
        self.kc = self.km.client()
        self.kc.start_channels()
        await self.kc.wait_for_ready(timeout=START_TIMEOUT_S)

    @property
    def pid(self) -> int | None:
        """The kernel process id."""
        pid = getattr(self.km.provisioner, "pid", None)
        return int(pid) if pid is not None else None

    async def run(self, code: str) -> str:
        """Execute ``code``; return its stdout; raise RuntimeError when it fails."""
        out: list[str] = []
        errors: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content.get("name") == "stdout":
                out.append(content["text"])
            elif kind == "error":
                errors.append(f"{content.get('ename')}: {content.get('evalue')}")

        reply = await self.kc.execute_interactive(code, timeout=RUN_TIMEOUT_S, output_hook=hook)
        if reply["content"].get("status") != "ok":
            raise RuntimeError("kernel execution failed: " + ("; ".join(errors) or str(reply["content"])))
        return "".join(out)

    async def stop(self) -> None:
        """Shut the kernel down (now) and close the client's channels."""
        if self.kc is not None:
            self.kc.stop_channels()
        if self.km.has_kernel:
            await self.km.shutdown_kernel(now=True)


class KernelFactory:
    """Creates kernels that share one kernelspec, temp dir and environment."""

    def __init__(self, root: Path, python: Path, site: Path, env: Mapping[str, str]) -> None:
        self.root = root
        self.kernels_dir = root / "kernels"
        kernel_env = dict(env)
        kernel_env["PYTHONPATH"] = str(site)
        # IPython keeps a profile and a history database: keep them in the temp dir, not in ~/.ipython.
        kernel_env["IPYTHONDIR"] = str(root / "ipython")
        kernel_env["JUPYTER_PLATFORM_DIRS"] = "1"
        write_kernelspec(self.kernels_dir, python, kernel_env)
        self._n = 0

    def new(self) -> Kernel:
        """A kernel (not started yet) with its own working directory and connection file."""
        self._n += 1
        return Kernel(self.kernels_dir, self.root / f"work-{self._n}", self.root / f"kernel-{self._n}.json")
