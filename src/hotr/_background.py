"""hotr.load(): a library that reloads itself from a daemon thread."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence

from ._exceptions import HotReloadError
from ._reloader import HotReloader, Library

logger = logging.getLogger("hotr")


def load(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    sources: Sequence[str | os.PathLike[str]] = (),
    build: Sequence[str] | None = None,
    cc: str | None = None,
    flags: Sequence[str] = (),
    build_timeout: float = 60.0,
    keep_globals: bool = False,
    probe: bool = False,
    debounce: float = 0.02,
) -> Library:
    """Load the library at `path` now and reload it in the background whenever it changes.

    The arguments are HotReloader's: `path` may be C sources, built now and rebuilt on every
    save of them or of a header they include.

    A daemon thread waits on the watch and calls update(); a version that fails to load is
    logged (logger ``hotr``) and the previous one keeps running.  The reloader closes at
    interpreter exit, or earlier with ``hotr.reloader_of(lib).close()`` or ``with lib:``.

    Raises:
        FileNotFoundError: `path` does not exist.
        LoadError: the first version cannot be loaded.

    Example::

        lib = hotr.load("./libhot.so")  # or hotr.load("example.c")
        while True:
            lib.step()  # runs the newest build
    """
    reloader = HotReloader(
        path,
        sources=sources,
        build=build,
        cc=cc,
        flags=flags,
        build_timeout=build_timeout,
        keep_globals=keep_globals,
        probe=probe,
        debounce=debounce,
    )

    try:
        library = reloader.update()
    except BaseException:
        reloader.close()
        raise
    thread = threading.Thread(
        target=_follow,
        args=(reloader,),
        name=f"hotr:{os.path.basename(reloader.path)}",
        daemon=True,
    )
    thread.start()
    return library


def _follow(reloader: HotReloader) -> None:
    while not reloader.closed:
        if reloader.watch_for_changes() <= 0:
            continue  # -1: closed (the loop ends) or the directory is gone (it waits inside)
        try:
            reloader.update()
        except HotReloadError as exc:
            if not reloader.closed:
                logger.error("%s; the previous version stays live", exc)
