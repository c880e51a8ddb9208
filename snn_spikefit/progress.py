"""Progress bars: one switch for the whole library, tqdm's convention by default.

Every verb that loops over data (``fit``, ``recalibrate_bn``, ``evaluate``, ``prune``,
``compress``) takes ``progress=None`` by default, which defers to the library-wide switch
:func:`set_progress`. The switch starts at ``None``: tqdm's ``disable=None``, a bar only when
the output is a terminal, so ``make demo > log`` or a CI job gets no carriage-return lines.
``progress=True``/``False`` on a call, or ``set_progress(True/False)``, overrides it
(the call's own argument wins). tqdm's own ``TQDM_DISABLE=1`` environment variable also works.

>>> set_progress(False); get_progress()
False
>>> set_progress(None)
"""

from __future__ import annotations

from typing import Any, Iterable

from tqdm.auto import tqdm

from .errors import SpikeFitTypeError

__all__ = ["set_progress", "get_progress", "progress_bar"]

_SWITCH: bool | None = None


def set_progress(enabled: bool | None) -> None:
    """Show bars always (``True``), never (``False``), or only on a terminal (``None``, the default)."""
    global _SWITCH
    if enabled is not None and not isinstance(enabled, bool):
        raise SpikeFitTypeError(f"enabled={enabled!r} is not allowed; use True, False or None (bars on a terminal only)")
    _SWITCH = enabled


def get_progress() -> bool | None:
    """The library-wide switch (see :func:`set_progress`)."""
    return _SWITCH


def progress_bar(iterable: Iterable, *, progress: bool | None = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` shown as ``progress`` (a call's argument), else the switch says."""
    if progress is not None and not isinstance(progress, bool):
        raise SpikeFitTypeError(f"progress={progress!r} is not allowed; use True, False or None")
    choice = _SWITCH if progress is None else progress
    return tqdm(iterable, disable=None if choice is None else not choice, **kwargs)
