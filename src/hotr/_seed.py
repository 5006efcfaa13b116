"""The seed C library's four functions, with its contracts: None or -1 on failure, reason logged.

For code ported from C; new code should use HotReloader, whose errors are exceptions.
"""

from __future__ import annotations

import os

from ._exceptions import HotReloadError
from ._library import Library
from ._log import logger
from ._reloader import HotReloader


def hot_reload_init(lib_path: str | os.PathLike[str]) -> HotReloader | None:
    """Start watching `lib_path`; None (reason logged) if it cannot be watched.  A `lib_path`
    that is no path at all is a TypeError, as C's compiler would refuse it."""
    if not isinstance(lib_path, (str, os.PathLike)):
        fix = ": decode it, os.fsdecode(lib_path)" if isinstance(lib_path, bytes) else ""
        raise TypeError(
            "hot_reload_init(lib_path): lib_path must be the library's path (a str or "
            f"os.PathLike), not {type(lib_path).__name__}{fix}"
        )
    try:
        return HotReloader(lib_path)
    except (OSError, ValueError, HotReloadError) as exc:
        logger.error("hot_reload_init(%r) failed: %s", lib_path, exc)
        return None


def hot_reload_update(reloader: HotReloader) -> Library | None:
    """Load or reload; the live Library, or None (reason logged) if the new version failed."""
    _check(reloader, "hot_reload_update")
    try:
        return reloader.update()
    except HotReloadError as exc:
        logger.error("hot_reload_update failed: %s", exc)
        return None


def watch_for_changes(reloader: HotReloader, timeout: float | None = None) -> int:
    """Block until a change (1), `timeout` seconds without one (0), or an error (-1)."""
    _check(reloader, "watch_for_changes")
    return reloader.watch_for_changes(timeout)


def hot_reload_cleanup(reloader: HotReloader) -> None:
    """Unload everything and release the watch and private copies (calls cleanup hooks)."""
    _check(reloader, "hot_reload_cleanup")
    reloader.close()


def _check(reloader: object, function: str) -> None:
    """TypeError naming `function` unless `reloader` is a HotReloader."""
    if not isinstance(reloader, HotReloader):
        failed = " (hot_reload_init() returned None: it failed, see the log)"
        raise TypeError(
            f"{function}(reloader): reloader must be the HotReloader that hot_reload_init() "
            f"returned, not {type(reloader).__name__}{failed if reloader is None else ''}"
        )
