"""hotr.Watcher: one thread for any number of libraries."""

from __future__ import annotations

import _thread
import os
from types import TracebackType

from . import _env
from ._drivers import BackgroundDriver
from ._exceptions import HotReloadError
from ._library import Library, reloader_of
from ._reloader import HotReloader, core_of

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any


class Watcher:
    """Keep many libraries up to date with one daemon thread.

    A plugin host with dozens of libraries needs no thread per library: a change to one wakes
    the thread once and reloads only that library.  Every library in the process is watched
    through one inotify instance, Watcher or not.

    Args:
        backend: the default backend of the libraries added (``"inotify"``, ``"poll"`` or
            ``"auto"``, the default); ``add(..., backend=...)`` overrides it per library.
        manual: the thread only watches (and runs builds); each library is reloaded when the
            program calls ``hotr.reloader_of(lib).update()``, e.g. once per frame.

    Example::

        with hotr.Watcher() as watcher:
            plugins = [watcher.add(path) for path in glob.glob("plugins/*.so")]
            ...  # each plugin reloads in the background when its file changes
    """

    def __init__(self, *, backend: str = "auto", manual: bool = False) -> None:
        if not isinstance(backend, str):
            raise TypeError(f"backend must be 'auto', 'inotify' or 'poll', not {backend!r}")
        if not isinstance(manual, bool):
            raise TypeError(f"manual must be True or False, not {manual!r}")
        if backend not in _env.BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: use one of {', '.join(_env.BACKENDS)}")
        self.manual = manual
        self._backend = backend
        self._lock = _thread.allocate_lock()
        self._reloaders: list[HotReloader] = []
        self._closed = False
        self._driver = BackgroundDriver("hotr:watcher", manual=manual, until_empty=False)

    def add(
        self, path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], **options: Any
    ) -> Library:
        """Load a library (or build it from sources) and reload it on changes.

        `options` are HotReloader's (sources, build, cc, flags, keep_globals, probe, guard, backend,
        debounce...).  Returns its live Library; ``hotr.reloader_of(lib)`` is its HotReloader.

        Raises:
            FileNotFoundError, LoadError: as HotReloader and update() do.
            HotReloadError: the watcher is closed, or was made before this process forked.
        """
        if self._closed:
            raise HotReloadError("the watcher is closed")
        if self._driver.inherited:
            raise HotReloadError(
                "the watcher belongs to the parent process; make a new hotr.Watcher in this child"
            )
        options.setdefault("backend", self._backend)
        reloader = HotReloader(path, **options)
        core = core_of(reloader)
        core.background_builds = self.manual
        try:
            reloader.update()
        except BaseException:
            reloader.close()
            raise
        with self._lock:
            self._reloaders.append(reloader)
        self._driver.attach(core, reloader)
        return reloader.library

    def remove(self, library: Library) -> None:
        """Stop watching `library` and close it (cleanup hooks run, private copies go).

        ValueError if this Watcher did not add it; a library removed already is left as it is.
        """
        if not isinstance(library, Library):
            raise TypeError(
                "Watcher.remove(library): library must be the hotr.Library that "
                f"Watcher.add() returned, not {type(library).__name__}"
            )
        reloader = reloader_of(library)
        with self._lock:
            if reloader in self._reloaders:
                self._reloaders.remove(reloader)
            elif reloader.closed:
                return  # removed already (or closed): nothing left to do
            else:
                raise ValueError(
                    f"Watcher.remove(library): {reloader.path!r} is not one this Watcher "
                    "added (hotr.load's, or another Watcher's): close it where it was made"
                )
        self._driver.detach(core_of(reloader))
        reloader.close()

    @property
    def libraries(self) -> list[Library]:
        """The libraries being watched."""
        with self._lock:
            return [r.library for r in self._reloaders if not r.closed]

    def close(self) -> None:
        """Close every library and stop the thread; idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            reloaders, self._reloaders = self._reloaders, []
        self._driver.close()
        for reloader in reloaders:
            reloader.close()

    def __enter__(self) -> Watcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<hotr.Watcher {len(self.libraries)} libraries>"
