"""matplotlib in the child: Agg backend, a silent ``show()``, and open figures saved as PNG at the end."""

from __future__ import annotations

import functools
import os
import re
import sys
import warnings
from typing import Any

__all__ = ["MAX_AUTO_FIGURES", "configure_matplotlib", "save_open_figures"]

#: At most this many open figures are saved automatically per execution (each save costs tens of ms).
MAX_AUTO_FIGURES = 20

# Figure.show() (and pyplot.show() where $DISPLAY is set) warns that Agg cannot show windows;
# in the sandbox show() means "return the chart", which the end-of-run save does.
_SHOW_WARNING = r".*is non-interactive, and thus cannot be shown"


def _mark_saved(original: Any) -> Any:
    @functools.wraps(original)
    def savefig(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        target = args[0] if args else kwargs.get("fname")
        if isinstance(target, (str, os.PathLike)):
            # The user saved this figure to a file: do not return it a second time as figure_N.png
            # unless it changes afterwards (any artist change sets stale back to True).
            self._ci_saved_to_file = True
            self.stale = False
        return result

    savefig._ci_wrapped = True  # type: ignore[attr-defined]
    return savefig


def _silence_show_warning() -> None:
    """``filterwarnings`` for Agg's show() warning, without rebuilding the filter when it is already first.

    Each cell calls this twice; filterwarnings compiles (a cache lookup), removes and re-inserts the same
    entry. When the entry is already at the front, the list would end up unchanged: only the filters'
    version is bumped, as filterwarnings does (warnings shown once per location show again after it).
    """
    if _FILTERS_MUTATED is not None and warnings.filters and warnings.filters[0] == _SHOW_FILTER:
        _FILTERS_MUTATED()
        return
    warnings.filterwarnings("ignore", message=_SHOW_WARNING, category=UserWarning)


# The entry filterwarnings puts first (patterns compare by their text and flags), and the hook it calls
# after any change (a private function: without it, filterwarnings every time).
_SHOW_FILTER = ("ignore", re.compile(_SHOW_WARNING, re.I), UserWarning, None, 0)
_FILTERS_MUTATED = getattr(warnings, "_filters_mutated", None)


def configure_matplotlib() -> None:
    """Silence Agg's show() warning and track savefig calls; idempotent, a no-op without matplotlib."""
    _silence_show_warning()
    figure_module = sys.modules.get("matplotlib.figure")
    if figure_module is None:
        return
    figure_cls = figure_module.Figure
    if not getattr(figure_cls.savefig, "_ci_wrapped", False):
        figure_cls.savefig = _mark_saved(figure_cls.savefig)


def _note(message: str) -> None:
    stream = sys.stderr or sys.__stderr__
    if stream is not None:
        stream.write(message + "\n")


def _save_one(figure: Any, work_dir: str, start: int) -> tuple[str | None, int]:
    """Save ``figure`` as the first free figure_N.png (N >= start); return (path or None, next N)."""
    index = start
    while True:
        path = os.path.join(work_dir, f"figure_{index}.png")
        index += 1
        try:
            # "xb": never overwrite a file of the user's, even one created since we looked.
            handle = open(path, "xb")  # noqa: SIM115 - closed below, removed on failure
        except FileExistsError:
            continue
        try:
            with handle:
                figure.savefig(handle, format="png")
        except Exception as exc:
            os.unlink(path)
            _note(f"Note: an open figure could not be saved as PNG ({type(exc).__name__}: {exc}).")
            return None, index - 1
        return path, index


def save_open_figures(work_dir: str) -> list[str]:
    """Save every open pyplot figure not already saved to a file as ``figure_N.png``; return the paths."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return []
    numbers = pyplot.get_fignums()
    saved: list[str] = []
    next_index = 1
    for number in numbers[:MAX_AUTO_FIGURES]:
        figure = pyplot.figure(number)
        if getattr(figure, "_ci_saved_to_file", False) and not figure.stale:
            continue
        path, next_index = _save_one(figure, work_dir, next_index)
        if path is not None:
            saved.append(path)
    if len(numbers) > MAX_AUTO_FIGURES:
        _note(
            f"Note: {len(numbers) - MAX_AUTO_FIGURES} more open figures were not saved (at most "
            f"{MAX_AUTO_FIGURES} are saved automatically); save them with plt.savefig or close unneeded ones."
        )
    pyplot.close("all")
    return saved
