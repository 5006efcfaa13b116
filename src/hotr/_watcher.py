"""hotr.Watcher: one watching backend and one thread for any number of libraries."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, cast

from ._exceptions import HotReloadError
from ._library import Library, reloader_of
from ._reloader import HotReloader
from ._watch import Change, FileWatcher, open_watcher

logger = logging.getLogger("hotr")


class Watcher:
    """Watch many libraries with one inotify descriptor and one daemon thread.

    A plugin host with dozens of libraries needs neither a descriptor nor a thread per library:
    changes to one library wake the thread once and reload only that library.

    Args:
        backend: ``"inotify"``, ``"poll"`` or ``"auto"`` (default: ``$HOTR_BACKEND``, else
            inotify unless it is unavailable).  Chosen once for all libraries: pass ``"poll"``
            when they live on a network file system.
        manual: the thread only watches (and runs builds); each library is reloaded when the
            program calls ``hotr.reloader_of(lib).update()``, e.g. once per frame.

    Example::

        with hotr.Watcher() as watcher:
            plugins = [watcher.add(path) for path in glob.glob("plugins/*.so")]
            ...  # each plugin reloads in the background when its file changes
    """

    def __init__(self, *, backend: str = "auto", manual: bool = False) -> None:
        self.manual = manual
        # One backend serves every library added later, so "auto" cannot look at their file
        # systems: it means inotify unless inotify is unavailable (pass "poll" for NFS & co.).
        self.backend: FileWatcher = open_watcher(backend, [])
        self._lock = threading.Lock()
        self._reloaders: dict[object, HotReloader] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="hotr:watcher", daemon=True)
        self._thread.start()

    def add(
        self, path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], **options: Any
    ) -> Library:
        """Load a library (or build it from sources) and reload it on changes.

        `options` are HotReloader's (sources, build, cc, flags, keep_globals, probe, debounce...).
        Returns its live Library; ``hotr.reloader_of(lib)`` is its HotReloader.

        Raises:
            FileNotFoundError, LoadError: as HotReloader and update() do.
            HotReloadError: the watcher is closed.
        """
        if self._closed:
            raise HotReloadError("the watcher is closed")
        reloader = HotReloader(path, _shared=self, **options)
        reloader._background_builds = self.manual
        try:
            library = reloader.update()
        except BaseException:
            reloader.close()
            raise
        with self._lock:
            self._reloaders[reloader._token] = reloader
        self.backend.wake()
        return library

    def remove(self, library: Library) -> None:
        """Stop watching `library` and close it (cleanup hooks run, private copies go)."""
        reloader_of(library).close()

    @property
    def libraries(self) -> list[Library]:
        """The libraries being watched."""
        with self._lock:
            return [r.library for r in self._reloaders.values()]

    def close(self) -> None:
        """Close every library and stop the thread (within one wait); idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            reloaders = list(self._reloaders.values())
        for reloader in reloaders:
            reloader.close()
        self.backend.wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
        self.backend.close()

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
        return f"<hotr.Watcher {self.backend.name} {len(self._reloaders)} libraries>"

    def _forget(self, reloader: HotReloader) -> None:
        with self._lock:
            self._reloaders.pop(reloader._token, None)

    def _run(self) -> None:
        busy: list[HotReloader] = []  # reloaders with a timer running (debounce, drain, rewatch)
        while not self._closed:
            self.backend.wait(self._next_wait(busy))
            if self._closed:
                break
            try:
                changes = self.backend.read()
            except OSError as exc:
                logger.error("the watcher failed to read changes: %s", exc)
                time.sleep(0.5)
                continue
            with self._lock:
                reloaders = dict(self._reloaders)
            by_owner: dict[object, list[Change]] = {}
            for change in changes:
                owner, _ = cast(tuple[object, object], change.key)
                by_owner.setdefault(owner, []).append(change)
            # Only the reloaders that got changes or have a timer running are looked at: a
            # change to one library costs the same with 1 or 100 watched.
            due = {id(r): r for r in busy if not r.closed}
            for token, owned in by_owner.items():
                if token in reloaders:
                    reloaders[token]._deliver(owned)
                    due[id(reloaders[token])] = reloaders[token]
            for reloader in due.values():
                reloader._background_step(manual=self.manual)
            busy = [r for r in due.values() if r._has_work()]

    def _next_wait(self, busy: list[HotReloader]) -> float | None:
        waits = [r._background_wait(manual=self.manual) for r in busy]
        known = [w for w in waits if w is not None]
        return min(known) if known else None
