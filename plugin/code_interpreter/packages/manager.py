"""PackageManager: the sandbox runtime, approval of package names, and installs before code runs.

Before an execution, :meth:`PackageManager.prepare` reads the code's imports from its syntax tree,
finds the top-level modules the runtime lacks (a cached directory listing, no interpreter spawned),
installs every approved one in a single pip run, and reports the rest: a required module that is not
approved is refused with one clear message; an import guarded by ``try/except ImportError`` is not
an error. Installs run on the host (``pip --python``), wheels only, never inside the sandbox.

Re-creation: :meth:`PackageManager.rebuild_runtime` builds a new generation aside, reinstalls the
baseline and the packages still in use, swaps ``current`` atomically and calls the ``on_swap`` hooks
(the executor moves its zygote); the old generation is removed later, once no lease holds it.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PackageInstallError, PackageNotApproved
from ..settings import Settings
from . import generations
from .approval import Approval, name_problem
from .fsutil import ProgressCallback
from .imports import ImportScan, canonicalize, import_candidates, import_map, scan_imports
from .locks import async_lock, root_lock
from .pip import pip_install
from .plan import InstallPlan, plan_installs
from .record import PackageRecord
from .runtime import Runtime, current_target, runtime_for

__all__ = ["ImportScan", "PackageManager", "PrepareResult", "SwapHook"]

log = logging.getLogger(__name__)

SwapHook = Callable[[Runtime], Awaitable[None] | None]
"""Called with the new runtime after the current runtime changes (the executor restarts its zygote)."""

RECORD_FILE = "packages.json"
# A retired generation is kept at least this long past the longest execution, for children that
# were forked from it without a lease (they finish within max_timeout).
GRACE_MARGIN_S = 60.0


@dataclass(frozen=True, slots=True)
class PrepareResult:
    """What :meth:`PackageManager.prepare` did before an execution."""

    installed: tuple[str, ...] = ()
    """Distributions installed for this call (canonical names)."""
    refused: tuple[tuple[str, str], ...] = ()
    """(module or package, reason) for each required one that may not be installed."""
    optional_missing: tuple[str, ...] = ()
    """Modules imported inside try/except ImportError that are still missing (not an error)."""
    notes: tuple[str, ...] = ()
    """Remarks for the result (e.g. an optional package that could not be installed)."""

    @property
    def ok(self) -> bool:
        """True when nothing required was refused: the code may run."""
        return not self.refused

    def refusal_message(self) -> str:
        """One message for the model naming what was refused and what is approved ("" when nothing was)."""
        if not self.refused:
            return ""
        # The reason already names the package (clipped); the name itself may be megabytes long.
        parts = "; ".join(reason for _, reason in self.refused[:10])
        if len(self.refused) > 10:
            parts += f"; and {len(self.refused) - 10} more"
        return f"Package not available: {parts}"

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view."""
        return {
            "installed": list(self.installed),
            "refused": [list(r) for r in self.refused],
            "optional_missing": list(self.optional_missing),
            "notes": list(self.notes),
        }


class PackageManager:
    """Owns the sandbox runtime: approval, import → distribution mapping, installs, the record, rebuilds."""

    def __init__(self, settings: Settings, *, provided_modules: Iterable[str] = ()) -> None:
        self.settings = settings
        self.approval = Approval(settings.approved_packages)
        self.provided_modules: set[str] = set(provided_modules)
        """Modules the executor injects into every child (never installed, never refused)."""
        self.on_swap: list[SwapHook] = []
        """Hooks called after the current runtime changes (rebuild, or repair of a broken one)."""
        self.pip_calls = 0
        """pip runs started by this manager (a counter tests and status use)."""
        self._runtime: Runtime | None = None
        self._listing: tuple[Path, int, frozenset[str], dict[str, str]] | None = None
        self._available: tuple[frozenset[str], set[str], frozenset[str]] | None = None  # available_modules
        self._current: tuple[Runtime, str, str, str] | None = None  # _still_current's strings, per runtime
        self._record = PackageRecord(settings.runtime_path / RECORD_FILE)

    # -- names ---------------------------------------------------------------------------------------
    def is_package_approved(self, name: str) -> tuple[bool, str]:
        """(approved?, reason): only a plain PEP 508 name on the approved list passes."""
        return self.approval.check(name)

    def distribution_for_import(self, module: str) -> str | None:
        """The distribution that provides top-level ``module`` (None for the standard library)."""
        if not isinstance(module, str) or not module:
            return None
        top = module.split(".", 1)[0]
        if not top.isidentifier() or top in sys.stdlib_module_names:
            return None
        mapped = import_map().get(top)
        return canonicalize(mapped if mapped is not None else top)

    def scan_imports(self, code: str) -> ImportScan:
        """Top-level modules ``code`` imports (AST); empty on a SyntaxError."""
        return scan_imports(code)

    # -- the runtime ---------------------------------------------------------------------------------
    @property
    def runtime(self) -> Runtime:
        """The runtime in use (or where it would be, before :meth:`ensure_runtime`)."""
        return self._runtime if self._runtime is not None else runtime_for(self.settings)

    async def ensure_runtime(self, progress: ProgressCallback | None = None) -> Runtime:
        """Create or repair the runtime if needed and return it; a change of generation fires on_swap."""
        known = self._runtime
        # Every execution comes through here: when `current` still names our generation and its python is
        # there, skip re-reading the runtime's record files (a burst of calls would stall the event loop).
        if known is not None and self._still_current(known):
            return known
        rt = await generations.ensure_runtime(self.settings, progress=progress)
        old = self._runtime
        self._runtime = rt
        if old is not None and old.path != rt.path:
            self._listing = None
            await self._fire_swap(rt)
        return rt

    def _still_current(self, rt: Runtime) -> bool:
        """``current`` still names ``rt``'s generation and its python exists: a readlink and a stat."""
        if self._current is None or self._current[0] is not rt:
            self._current = (rt, str(rt.root), os.path.normpath(rt.path), str(rt.python))
        _, root, path, python = self._current
        target = current_target(root)
        return target is not None and os.path.normpath(target) == path and os.path.exists(python)

    def available_modules(self, runtime: Runtime | None = None) -> frozenset[str]:
        """Top-level modules importable in the runtime: stdlib, site-packages and provided modules."""
        listed = self._scan_site(runtime or self.runtime)[0]
        cached = self._available  # every execution asks: the union is made once per listing
        if cached is not None and cached[0] is listed and cached[1] == self.provided_modules:
            return cached[2]
        union = listed | self.provided_modules
        self._available = (listed, set(self.provided_modules), union)
        return union

    def runtime_versions(self) -> dict[str, str] | None:
        """``{"python", "pandas", "numpy"}`` versions of the runtime as installed (None before it exists).

        What the tool description tells the model it writes for; a package not installed is left out.
        """
        rt = self.runtime
        if not rt.exists():
            return None
        dists = self.installed_distributions(rt)
        out = {"python": str(rt.info().get("full_version") or rt.version)}
        out.update((name, dists[name]) for name in ("pandas", "numpy") if dists.get(name))
        return out

    def installed_distributions(self, runtime: Runtime | None = None) -> dict[str, str]:
        """Canonical distribution name → version of everything in the runtime's site-packages."""
        return dict(self._scan_site(runtime or self.runtime)[1])

    def _scan_site(self, rt: Runtime) -> tuple[frozenset[str], dict[str, str]]:
        # A directory listing, cached by site-packages' mtime (an install adds entries, so it changes).
        try:
            mtime = os.stat(rt.site_packages).st_mtime_ns
        except OSError:
            mtime = -1
        cached = self._listing
        if cached is not None and cached[0] == rt.path and cached[1] == mtime:
            return cached[2], cached[3]
        modules: set[str] = set(rt.stdlib_module_names())
        dists: dict[str, str] = {}
        try:
            entries = list(os.scandir(rt.site_packages))
        except OSError:
            entries = []
        for entry in entries:
            n = entry.name
            if n.endswith(".dist-info"):
                name, _, version = n[: -len(".dist-info")].partition("-")
                dists[canonicalize(name)] = version
            elif n.endswith((".egg-info", ".pth", ".libs", ".data")) or n.startswith("__"):
                continue
            elif n.endswith(".py"):
                modules.add(n[:-3])
            elif n.endswith((".so", ".pyd")):
                modules.add(n.split(".", 1)[0])
            elif n.isidentifier() and entry.is_dir():
                modules.add(n)
        result = (frozenset(modules), dists)
        self._listing = (rt.path, mtime, *result)
        return result

    # -- installs ------------------------------------------------------------------------------------
    async def prepare(
        self,
        code: str,
        install_packages: Sequence[str] | None = None,
        *,
        progress: ProgressCallback | None = None,
    ) -> PrepareResult:
        """Install what ``code`` imports and the runtime lacks (approved only, one pip run) before it runs.

        What may not be installed is decided first, from names and the runtime's listing, without any
        lock: a refusal returns at once, never waiting behind another caller's install or build.

        Args:
            code: the Python source about to run.
            install_packages: extra distributions the tool call asked for (same approval).
            progress: optional progress callback for runtime creation and installs.

        Returns:
            PrepareResult; when ``refused`` is not empty the caller should not run the code.

        Raises:
            PackageInstallError: a required approved package could not be installed.
        """
        requested, refused = self._requested(install_packages)
        planned = self.runtime
        modules, plan = self._plan(planned, code, requested, refused)
        if plan.refused:
            return _refusal(plan)
        rt = await self.ensure_runtime(progress)
        if rt.path != planned.path:  # built or swapped meanwhile: what is missing may differ there
            modules, plan = self._plan(rt, code, requested, refused)
            if plan.refused:
                return _refusal(plan)
        installed: list[str] = []
        notes: list[str] = []
        missing = list(plan.optional_missing)
        if plan.work:
            installed, notes, missing = await self._install_planned(plan, progress)
        self._touch(modules)
        return PrepareResult(
            installed=tuple(installed),
            optional_missing=tuple(sorted(set(missing))),
            notes=tuple(notes),
        )

    def _requested(self, names: Sequence[str] | None) -> tuple[list[str], list[tuple[str, str]]]:
        """(approved canonical names, (name, reason) refusals) of the distributions a call asked for."""
        requested: list[str] = []
        refused: list[tuple[str, str]] = []
        for name in names or ():
            ok, reason = self.approval.check(name)
            if ok:
                requested.append(canonicalize(name))
            else:
                refused.append((str(name), reason))
        return requested, refused

    def _plan(
        self, rt: Runtime, code: str, requested: Sequence[str], refused: Sequence[tuple[str, str]]
    ) -> tuple[tuple[str, ...], InstallPlan]:
        """(the modules ``code`` imports, what to install and refuse) against ``rt`` as it is now."""
        # The quick pass (no syntax tree) answers the common case: every candidate is installed.
        candidates = import_candidates(code)
        if candidates is not None and not self._needs_work(rt, candidates, requested):
            return tuple(candidates), InstallPlan(refused=tuple(refused))
        scan = scan_imports(code)
        if not self._needs_work(rt, scan.modules, requested):
            return scan.modules, InstallPlan(refused=tuple(refused))
        approval = self.approval
        if not rt.is_complete():  # the first build brings the baseline, whatever the approved list says
            approval = Approval([*approval.approved, *self.settings.runtime_packages])
        plan = plan_installs(
            scan,
            requested,
            refused,
            available=self.available_modules(rt),
            installed=self.installed_distributions(rt),
            approval=approval,
            distribution_for=self.distribution_for_import,
        )
        return scan.modules, plan

    async def _install_planned(
        self, plan: InstallPlan, progress: ProgressCallback | None
    ) -> tuple[list[str], list[str], list[str]]:
        """Install what ``plan`` still lacks, under the runtime's lock: (installed, notes, still missing)."""
        # One install at a time per runtime root: a second caller needing the same package waits,
        # then finds it installed (checked again here) and starts no pip run of its own.
        async with async_lock(self.runtime.root / "<prepare>"):
            rt = self.runtime
            available = self.available_modules(rt)
            have = self.installed_distributions(rt)
            required = {
                d: mods
                for d, mods in plan.required.items()
                if any(m not in available for m in mods) or (not mods and d not in have)
            }
            optional = {d: mods for d, mods in plan.optional.items() if any(m not in available for m in mods)}
            installed, notes = await self._install_required_and_optional(rt, required, optional, progress)
            missing = list(plan.optional_missing)
            missing += [m for d, mods in optional.items() if d not in installed for m in mods]
            available = self.available_modules(rt)
            for dist, modules in required.items():
                notes += [
                    f"{dist} was installed but provides no module {m!r}"
                    for m in modules
                    if m not in available
                ]
        return installed, notes, missing

    def _needs_work(self, rt: Runtime, modules: Collection[str], requested: Sequence[str]) -> bool:
        if not modules and not requested:
            return False  # imports nothing: no listing to read
        available = self.available_modules(rt)
        if any(m not in available for m in modules):
            return True
        if not requested:
            return False
        have = self._scan_site(rt)[1]
        return any(d not in have for d in requested)

    async def _install_required_and_optional(
        self,
        rt: Runtime,
        required: Mapping[str, Sequence[str]],
        optional: Mapping[str, Sequence[str]],
        progress: ProgressCallback | None,
    ) -> tuple[list[str], list[str]]:
        notes: list[str] = []
        everything = sorted({*required, *optional})
        if not everything:
            return [], notes
        try:
            await self._pip(rt, everything, progress)
            return everything, notes
        except PackageInstallError as exc:
            if not optional:
                raise
            first = str(exc).splitlines()[0]
            notes.append(f"optional packages not installed ({', '.join(sorted(optional))}): {first}")
        if required:
            await self._pip(rt, sorted(required), progress)  # raises when a required one fails
        return sorted(required), notes

    async def _pip(self, rt: Runtime, dists: Sequence[str], progress: ProgressCallback | None) -> None:
        self.pip_calls += 1
        try:
            await pip_install(rt, dists, settings=self.settings, progress=progress)
        finally:
            self._listing = None
        versions = self.installed_distributions(rt)
        self._record.reload()
        self._record.add({d: versions.get(d, "") for d in dists})

    async def install(self, names: Sequence[str], progress: ProgressCallback | None = None) -> list[str]:
        """Install approved distributions that are missing, in one pip run; return those installed.

        Raises:
            PackageNotApproved: a name is not a plain approved name (nothing is installed then).
            PackageInstallError: pip failed.
        """
        checks = [(n, *self.approval.check(n)) for n in names]
        bad = [reason for _, ok, reason in checks if not ok]
        if bad:
            raise PackageNotApproved("; ".join(bad))
        rt = await self.ensure_runtime(progress)
        async with async_lock(rt.root / "<prepare>"):
            rt = self.runtime
            have = self.installed_distributions(rt)
            missing = sorted({canonicalize(n) for n in names} - set(have))
            if missing:
                await self._pip(rt, missing, progress)
        return missing

    def _touch(self, modules: Iterable[str]) -> None:
        dists = {d for m in modules if (d := self.distribution_for_import(m))}
        if dists:
            self._record.touch(dists)

    # -- record and status ---------------------------------------------------------------------------
    def installed_packages(self) -> list[dict[str, Any]]:
        """Packages installed on demand: name, version, installed_at, last_used (ISO 8601 UTC)."""
        self._record.reload()
        return self._record.entries()

    def status(self) -> dict[str, Any]:
        """Runtime status for get_interpreter_status().

        ``installed_packages`` names every distribution in the runtime (the baseline numpy, pandas …
        included), as the seed's list of names; ``on_demand_packages`` are those installed for a call.
        """
        rt = self.runtime
        everything = sorted(self.installed_distributions(rt)) if rt.exists() else []
        last = self._record.last_cleanup
        return {
            "venv_exists": rt.exists(),
            "python_path": str(rt.python),
            "runtime_path": str(rt.path),
            "python_version": rt.version,
            "installed_packages": everything,
            "package_count": len(everything),
            "on_demand_packages": self.installed_packages(),
            "last_cleanup": None if last is None else _iso(last),
            "needs_rebuild": self.needs_rebuild(),
            "pip_calls": self.pip_calls,
        }

    # -- re-creation ---------------------------------------------------------------------------------
    def needs_rebuild(self, now: float | None = None) -> bool:
        """True when the current runtime is older than settings.runtime_rebuild_days (never when None)."""
        days = self.settings.runtime_rebuild_days
        if days is None:
            return False
        created = self.runtime.info().get("created_at")
        if not isinstance(created, int | float):
            return False
        return (time.time() if now is None else now) - created >= days * 86400.0

    async def rebuild_runtime(self, progress: ProgressCallback | None = None) -> Runtime:
        """Build a fresh runtime aside with the baseline and the packages still in use, then swap it in.

        Executions running in the old generation finish undisturbed (its files stay until no lease
        holds it and a grace time has passed); the on_swap hooks move users to the new one.
        """
        root = self.settings.runtime_path.absolute()
        async with root_lock(root):
            self.collect_old_runtimes()
            old = runtime_for(self.settings)
            self._record.reload()
            keep = [n for n in self._in_use() if self.approval.check(n)[0]]
            baseline = list(self.settings.runtime_packages)
            extra = [n for n in keep if n not in {canonicalize(b) for b in baseline if not name_problem(b)}]
            new = await generations.build_generation(
                self.settings, packages=[*baseline, *extra], progress=progress, swap=False
            )
            generations.swap_current(root, new.path)
            if old.path.exists() and old.path != new.path:
                generations.retire_generation(old.path)
            self._listing = None
            self._record.keep_only(keep, self.installed_distributions(new))
            self._record.set_last_cleanup(time.time())
            self._record.save()
        self._runtime = new
        await self._fire_swap(new)
        return new

    async def maybe_rebuild(self, progress: ProgressCallback | None = None) -> Runtime | None:
        """Rebuild when :meth:`needs_rebuild` says so; return the new runtime or None."""
        return await self.rebuild_runtime(progress) if self.needs_rebuild() else None

    def collect_old_runtimes(self, now: float | None = None) -> list[Path]:
        """Remove retired generations nobody leases, after a grace time past the longest execution."""
        grace = float(self.settings.max_timeout) + GRACE_MARGIN_S
        return generations.collect_generations(self.settings.runtime_path.absolute(), grace_s=grace, now=now)

    def _in_use(self) -> list[str]:
        days = self.settings.runtime_rebuild_days
        if days is None:
            return self._record.names()
        return self._record.used_since(time.time() - days * 86400.0)

    async def _fire_swap(self, new: Runtime) -> None:
        for hook in list(self.on_swap):
            try:
                result = hook(new)
                if inspect.isawaitable(result):
                    await result
            except Exception:  # one failing hook must not stop the others or the swap
                log.exception("on_swap hook %r failed", hook)


def _refusal(plan: InstallPlan) -> PrepareResult:
    """The result for code that cannot run as written (nothing installed: it would be wasted work)."""
    notes = ("nothing was installed because a required package was refused",) if plan.work else ()
    return PrepareResult(refused=plan.refused, optional_missing=plan.optional_missing, notes=notes)


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
