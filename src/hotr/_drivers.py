"""The ways a program waits for changes: a blocking call, an asyncio wait, a background thread.

None of them reads an event source.  Each remembers the tracker's counters from when it began
and waits until they move (the tracker wakes every waiter on every publication), so any number
of drivers, threads and tasks may wait on one reloader at once, and each sees each change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from ._exceptions import HotReloadError
from ._history import VersionInfo
from ._tracker import ChangeTracker, Snapshot

logger = logging.getLogger("hotr")

CHANGED, TIMED_OUT, FAILED = 1, 0, -1  # what watch_for_changes returns (the seed's contract)


class Drivable(Protocol):
    """What a driver needs of a reloader (the ReloadCore)."""

    tracker: ChangeTracker
    label: str

    @property
    def ended(self) -> bool:
        """Stopped, closed, or inherited by a forked child."""

    @property
    def builds_on_update(self) -> bool:
        """True if update() runs the builds (not a background thread)."""

    @property
    def version(self) -> int:
        """The live version's number."""

    def actionable(self) -> bool:
        """True if update() has something to load (or build) now."""

    def build_wanted(self) -> bool:
        """True if the sources changed since the last build started."""

    def sync(self) -> None:
        """Deliver events that already happened."""

    def housekeep(self) -> None:
        """Unload drained versions (never raises)."""

    def update(self) -> None:
        """Build and load what changed (raises HotReloadError)."""

    def history(self) -> list[VersionInfo]:
        """The versions loaded so far."""

    def background_step(self, *, manual: bool) -> None:
        """What a background thread does when woken (never raises)."""


class Cursor:
    """What one consumer has seen: the tracker's counters when it last looked.

    A wait reports what happened since its cursor's last look, so a change another driver has
    loaded meanwhile (hotr.load's thread) is still reported, once.  Every call of one consumer
    (the program's update, poll and waits) shares one cursor; a driver of hotr's own has its own.
    """

    def __init__(self, tracker: ChangeTracker, on_look: Callable[[], None] | None = None) -> None:
        self.seen = tracker.snapshot()
        self._tracker = tracker
        self._on_look = on_look

    def look(self) -> None:
        """The consumer has seen everything up to now."""
        with self._tracker.cond:
            self.seen = self._tracker.snapshot()
        if self._on_look is not None:
            self._on_look()


def _verdict(core: Drivable, seen: Snapshot) -> int | None:
    """CHANGED, FAILED, or None to go on waiting (the tracker's cond held)."""
    if core.ended:
        return FAILED
    if core.actionable():
        return CHANGED
    now = core.tracker.snapshot()
    if now.library > seen.library or (core.builds_on_update and now.inputs > seen.inputs):
        return CHANGED  # another driver may have taken it in already: it still happened
    if now.losses > seen.losses:
        return FAILED
    return None


def wait(core: Drivable, timeout: float | None, cursor: Cursor) -> int:
    """Block until a change (CHANGED), `timeout` seconds without one (TIMED_OUT), or the
    reloader cannot report changes: stopped, closed, a directory gone (FAILED, once)."""
    deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
    seen = cursor.seen
    try:
        while True:
            core.sync()
            core.housekeep()
            with core.tracker.cond:
                verdict = _verdict(core, seen)
                if verdict is not None:
                    return verdict
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return TIMED_OUT
                core.tracker.cond.wait(remaining)
    finally:
        cursor.look()


async def wait_async(core: Drivable, timeout: float | None, cursor: Cursor) -> bool:
    """wait() on the running event loop: True for a change, False after `timeout` seconds.

    Raises HotReloadError when the reloader cannot report changes (stopped, closed, a
    directory gone).
    """
    try:
        return await _wait_async(core, timeout, cursor.seen)
    finally:
        cursor.look()


async def _wait_async(core: Drivable, timeout: float | None, seen: Snapshot) -> bool:
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + max(timeout, 0.0)
    while True:
        core.sync()
        core.housekeep()
        woken: asyncio.Future[None] = loop.create_future()

        def wake(woken: asyncio.Future[None] = woken) -> None:
            loop.call_soon_threadsafe(_resolve, woken)

        core.tracker.add_listener(wake)  # before the check: nothing published after it is lost
        try:
            with core.tracker.cond:
                verdict = _verdict(core, seen)
            if verdict == CHANGED:
                return True
            if verdict == FAILED:
                raise HotReloadError(
                    f"{core.label!r} is not being watched (stopped, closed or its directory "
                    "is gone)"
                )
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(woken, remaining)
        finally:
            core.tracker.remove_listener(wake)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def follow(core: Drivable) -> AsyncIterator[VersionInfo]:
    """Reload on every change, on the running loop; yield each new version (also one another
    driver loaded).  Builds run in the loop's default executor, loads on the loop; failures are
    logged and skipped."""
    loop = asyncio.get_running_loop()
    cursor = Cursor(core.tracker)
    yielded = core.version
    while not core.ended:
        try:
            if not await wait_async(core, None, cursor):
                continue
        except HotReloadError:
            if core.ended:
                return
            continue  # a directory went away: the next wait blocks until it is back
        try:
            if core.build_wanted():
                await loop.run_in_executor(None, core.update)
            else:
                core.update()
        except HotReloadError as exc:
            if core.ended:
                return
            logger.error("%s", exc)
            continue
        finally:
            cursor.look()
        if core.version != yielded:
            yielded = core.version
            yield core.history()[-1]


class BackgroundDriver:
    """One daemon thread that keeps any number of reloaders up to date (hotr.load, Watcher).

    Each reloader's tracker wakes the thread on every publication; the thread then steps the
    reloaders that were woken.  With `manual`, a step only builds: loads wait for the program's
    update().  With `until_empty`, the thread ends when its last reloader ends.
    """

    def __init__(self, name: str, *, manual: bool, until_empty: bool) -> None:
        self.manual = manual
        self._name = name
        self._until_empty = until_empty
        self._cond = threading.Condition()
        self._cores: dict[int, tuple[Drivable, object]] = {}
        self._due: dict[int, Drivable] = {}
        self._listeners: dict[int, object] = {}
        self._closed = False
        self._thread: threading.Thread | None = None

    def attach(self, core: Drivable, keepalive: object) -> None:
        """Drive `core` from now on; `keepalive` (its HotReloader) is held as long as it is."""

        def wake() -> None:
            with self._cond:
                self._due[id(core)] = core
                self._cond.notify()

        with self._cond:
            self._cores[id(core)] = (core, keepalive)
            self._listeners[id(core)] = wake
            self._due[id(core)] = core
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()
        core.tracker.add_listener(wake)

    def detach(self, core: Drivable) -> None:
        """Stop driving `core`."""
        with self._cond:
            self._cores.pop(id(core), None)
            self._due.pop(id(core), None)
            wake = self._listeners.pop(id(core), None)
            self._cond.notify()
        if wake is not None:
            core.tracker.remove_listener(wake)  # type: ignore[arg-type]

    def close(self) -> None:
        """End the thread (after the step it is in)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._due and not self._closed:
                    if self._until_empty and not self._cores:
                        return
                    self._cond.wait()
                if self._closed:
                    return
                batch = list(self._due.values())
                self._due.clear()
            for core in batch:
                if core.ended:
                    self.detach(core)
                    continue
                try:
                    core.background_step(manual=self.manual)
                except Exception:
                    logger.exception(
                        "hotr's background reloader for %s failed; it carries on", core.label
                    )
