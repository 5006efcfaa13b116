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
    """Start watching `lib_path`; None (reason logged) if it cannot be watched."""
    try:
        return HotReloader(lib_path)
    except (OSError, ValueError, HotReloadError) as exc:
        logger.error("hot_reload_init(%r) failed: %s", lib_path, exc)
        return None


def hot_reload_update(reloader: HotReloader) -> Library | None:
    """Load or reload; the live Library, or None (reason logged) if the new version failed."""
    try:
        return reloader.update()
    except HotReloadError as exc:
        logger.error("hot_reload_update failed: %s", exc)
        return None


def watch_for_changes(reloader: HotReloader, timeout: float | None = None) -> int:
    """Block until a change (1), `timeout` seconds without one (0), or an error (-1)."""
    return reloader.watch_for_changes(timeout)


def hot_reload_cleanup(reloader: HotReloader) -> None:
    """Unload everything and release the watch and private copies (calls cleanup hooks)."""
    reloader.close()
