"""A change source for tests: nothing changes unless the test says so, and time stands still
until the test moves it.

Pass it as a reloader's backend; write real files as tools do, then announce them::

    backend = hotr.testing.ScriptedBackend()
    r = hotr.HotReloader("libsim.so", backend=backend, debounce=0.02)
    r.update()
    rebuild("libsim.so")            # the real file, as a real tool writes it
    backend.written("libsim.so")    # what inotify would have reported
    assert r.poll()
    r.update()
    rebuild("libsim.so")
    backend.written("libsim.so")    # again, within the debounce interval: not yet...
    assert not r.poll()
    backend.advance(0.02)           # ...until the clock has moved on
    assert r.poll()

So debounce, lost directories, an overflowed event queue and other timing-bound behaviour can be
tested without sleeping, beside tests on the real file system.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ._source import absolute

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._source import Event, Sink

__all__ = ["ScriptedBackend"]


@dataclass(order=True)
class _Timer:
    when: float
    serial: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class _Watch:
    backend = "scripted"

    def __init__(self, owner: ScriptedBackend, path: str, sink: Sink) -> None:
        self._owner = owner
        self.path = path
        self.sink = sink

    def close(self) -> None:
        self._owner._unwatch(self)


class ScriptedBackend:
    """A change source driven by hand (see the module docstring).

    Args:
        start: the clock's first reading, in seconds.
    """

    name = "scripted"

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self._timers: list[_Timer] = []
        self._serial = itertools.count()
        self._watches: dict[str, list[_Watch]] = {}

    # -- what reloaders call -----------------------------------------------------------------

    def clock(self) -> float:
        """The scripted time, in seconds."""
        return self._now

    def call_at(self, when: float, callback: Callable[[], None]) -> _Timer:
        """Run `callback` when advance() moves the clock to `when` or past it."""
        timer = _Timer(when, next(self._serial), callback)
        with self._lock:
            heapq.heappush(self._timers, timer)
        return timer

    def watch(self, path: str, sink: Sink, backend: str) -> _Watch:
        """Report to `sink` what the test announces for `path` (`backend` is ignored)."""
        watch = _Watch(self, absolute(path), sink)
        with self._lock:
            self._watches.setdefault(watch.path, []).append(watch)
        return watch

    def sync(self) -> None:
        """Nothing happens by itself here."""

    def fileno(self) -> None:
        """There is no descriptor: every event is delivered as it is announced."""

    def need_reader(self) -> None:
        """Every event is delivered as it is announced anyway."""

    def drop_reader(self) -> None:
        """Every event is delivered as it is announced anyway."""

    # -- what tests call ---------------------------------------------------------------------

    @property
    def watched(self) -> list[str]:
        """The paths being watched now, sorted."""
        with self._lock:
            return sorted(p for p, ws in self._watches.items() if ws)

    def written(self, path: str | os.PathLike[str]) -> None:
        """Announce that `path` has complete new content (as IN_CLOSE_WRITE or a rename)."""
        self._tell(path, "written")

    def removed(self, path: str | os.PathLike[str]) -> None:
        """Announce that `path` was deleted."""
        self._tell(path, "gone")

    def lost(self, path: str | os.PathLike[str]) -> None:
        """Announce that the directory holding `path` went away."""
        self._tell(path, "lost")

    def overflow(self) -> None:
        """Announce that events were dropped: every watcher looks at its files again."""
        with self._lock:
            watches = [w for ws in self._watches.values() for w in ws]
        for watch in watches:
            watch.sink("rescan")

    def advance(self, seconds: float) -> None:
        """Move the clock on by `seconds`, running the timers that come due, in order."""
        target = self._now + seconds
        while True:
            with self._lock:
                if not self._timers or self._timers[0].when > target:
                    break
                timer = heapq.heappop(self._timers)
            self._now = max(self._now, timer.when)
            if not timer.cancelled:
                timer.callback()
        self._now = target

    def _tell(self, path: str | os.PathLike[str], event: Event) -> None:
        key = absolute(os.fspath(path))
        with self._lock:
            watches = list(self._watches.get(key, ()))
        if not watches:
            raise ValueError(f"nothing watches {key!r} (watched: {self.watched})")
        for watch in watches:
            watch.sink(event)

    def _unwatch(self, watch: _Watch) -> None:
        with self._lock:
            watches = self._watches.get(watch.path, [])
            if watch in watches:
                watches.remove(watch)
