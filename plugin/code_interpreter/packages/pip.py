"""Installing into the sandbox runtime with the *host's* pip (``pip --python``), wheels only.

The runtime holds no pip of its own: nothing the sandbox can run installs packages, and the
user's pip configuration (index, find-links, certificates, proxy) applies unchanged.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Callable, Sequence

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from ..errors import PackageInstallError
from ..settings import Settings
from .fsutil import ProgressCallback, chmod_world_readable, no_progress
from .locks import generation_lock
from .procs import OUTPUT_TAIL_LINES, run_command, run_streaming
from .runtime import Runtime

__all__ = ["MIN_PIP_VERSION", "host_pip_version", "pip_install"]

MIN_PIP_VERSION = (22, 3)  # first pip with ``--python``
# pip retries network errors itself (--retries); one more attempt here covers a flaky index or proxy
# that fails a whole run, without multiplying the wait when the index is simply unreachable.
NETWORK_ATTEMPTS = 2
NETWORK_RETRY_WAIT_S = 1.0

# -- pip ------------------------------------------------------------------------------------------------

_pip_checked: dict[str, tuple[int, ...]] = {}


async def host_pip_version() -> tuple[int, ...]:
    """The host pip's version; raises PackageInstallError when pip is missing or older than 22.3."""
    if sys.executable in _pip_checked:
        return _pip_checked[sys.executable]
    try:
        out = await run_command(
            [sys.executable, "-m", "pip", "--version"], timeout=60, what="run the host's pip"
        )
    except PackageInstallError as exc:
        raise PackageInstallError(
            f"pip is not available to the host interpreter {sys.executable}: install pip>=22.3 "
            "in the environment that runs code_interpreter"
        ) from exc
    m = re.match(r"pip (\d+)\.(\d+)", out.strip())
    version = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    if version < MIN_PIP_VERSION:
        raise PackageInstallError(
            f"the host's pip is {out.split(' from ')[0].strip() or 'unknown'}; packages are installed into "
            "the sandbox runtime with `pip --python`, which needs pip>=22.3: "
            f"run `{sys.executable} -m pip install -U pip`"
        )
    _pip_checked[sys.executable] = version
    return version


async def pip_install(
    runtime: Runtime,
    requirements: Sequence[str],
    *,
    settings: Settings,
    progress: ProgressCallback | None = None,
) -> str:
    """Install ``requirements`` into ``runtime`` with the host's pip: wheels only, under the install lock.

    Keeps the user's pip configuration (index, find-links, certificates). Returns pip's output.

    Raises:
        PackageInstallError: pip failed (its output's tail and the likely cause are in the message).
    """
    reqs = [r.strip() for r in requirements]
    if not reqs:
        return ""
    for r in reqs:
        # Names are validated by the package manager; this guard keeps options out of pip even so.
        if not r or r.startswith("-") or any(c.isspace() for c in r.replace(" ", "")):
            raise PackageInstallError(f"refusing to pass {r!r} to pip: not a requirement")
    await host_pip_version()
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(runtime.python),
        "install",
        "--only-binary=:all:",
        "--no-input",
        "--disable-pip-version-check",
        "--no-warn-script-location",
        "--progress-bar",
        "off",
    ]
    if settings.pip_constraints is not None:
        cmd += ["--constraint", str(settings.pip_constraints)]
    cmd += ["--", *reqs]
    report = progress or no_progress

    async def attempt() -> str:
        report(f"pip install {' '.join(reqs)}", None)
        code, out = await run_streaming(cmd, timeout=settings.pip_timeout, on_line=_pip_progress(report))
        if code == 0:
            return out
        kind = _classify_pip_failure(out)
        if kind == "network":
            raise _PipNetworkError(code, out)
        raise PackageInstallError(_pip_failure_message(reqs, kind, out, runtime, code))

    async with generation_lock(runtime.path):
        try:
            # Only network failures are retried: a missing wheel or a full disk will not fix itself.
            async for try_ in AsyncRetrying(
                retry=retry_if_exception_type(_PipNetworkError),
                stop=stop_after_attempt(NETWORK_ATTEMPTS),
                wait=wait_fixed(NETWORK_RETRY_WAIT_S),
                reraise=True,
            ):
                with try_:
                    out = await attempt()
        except _PipNetworkError as exc:
            message = _pip_failure_message(reqs, "network", exc.out, runtime, exc.code)
            raise PackageInstallError(message) from None
        await asyncio.to_thread(chmod_world_readable, runtime.site_packages, True)
    return out


class _PipNetworkError(Exception):
    """pip could not reach the index (retried by tenacity, then reported as PackageInstallError)."""

    def __init__(self, code: int, out: str) -> None:
        super().__init__(f"pip exit {code}: network")
        self.code = code
        self.out = out


def _pip_progress(report: ProgressCallback) -> Callable[[str], None]:
    def on_line(line: str) -> None:
        s = line.strip()
        if s.startswith(("Collecting", "Downloading", "Installing collected", "Successfully installed")):
            report(s, None)

    return on_line


_NETWORK_MARKERS = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Connection refused",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Name or service not known",
    "ConnectTimeout",
    "Read timed out",
    "ProxyError",
    "Network is unreachable",
    "Could not fetch URL",
)


def _classify_pip_failure(out: str) -> str:
    if "No space left on device" in out or "Errno 28" in out:
        return "disk"
    if any(m in out for m in _NETWORK_MARKERS):
        return "network"
    if "No matching distribution found" in out or "Could not find a version that satisfies" in out:
        return "nodist"
    if "ResolutionImpossible" in out or "conflict" in out.lower():
        return "conflict"
    return "other"


def _pip_failure_message(reqs: Sequence[str], kind: str, out: str, runtime: Runtime, code: int) -> str:
    names = ", ".join(reqs)
    tail = "\n".join(out.strip().splitlines()[-OUTPUT_TAIL_LINES:])
    why = {
        "disk": f"the disk is full: free space under {runtime.root} and retry "
        "(the runtime is left as it was)",
        "network": "the package index could not be reached: check the network or pip's index settings "
        "(pip config list), then retry",
        "nodist": "no wheel was found for it: only prebuilt wheels are installed (no setup.py runs), "
        "so a package published only as a source distribution is refused",
        "conflict": "its requirements conflict with installed packages or the constraints file",
        "other": f"pip exited with status {code}",
    }[kind]
    return f"Could not install {names}: {why}.\n--- pip output (tail) ---\n{tail}"
