"""The ways a program waits for changes: a blocking call, an asyncio wait, a background thread.

None of them reads an event source.  Each remembers the tracker's counters from when it began
and waits until they move (the tracker wakes every waiter on every publication), so any number
of drivers, threads and tasks may wait on one reloader at once, and each sees each change.
"""

from __future__ import annotations

import _thread
import itertools
import os
import select
import sys
import time
from _weakref import ref

from ._exceptions import HotReloadError
from ._history import VersionInfo
from ._log import logger
from ._shim import is_main_thread
from ._signals import deferred
from ._source import ChangeSource
from ._threads import LONGEST_WAIT, Handle, start
from ._tracker import ChangeTracker, Snapshot

TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio  # imported by the async functions themselves: it costs ~20 ms at import
    from collections.abc import AsyncIterator, Callable
    from contextvars import ContextVar
    from typing import Protocol
else:
    from _contextvars import ContextVar  # contextvars itself is one import more

    Protocol = object  # the protocols are for the type checker (typing costs 3 ms)


CHANGED, TIMED_OUT, FAILED = 1, 0, -1  # what watch_for_changes returns (the seed's contract)
# How long a background thread waits after a load to unload the old version: the program's
# thread, just told of the new one, has the GIL to itself to call it.
_HOUSEKEEP_AFTER_LOAD = 0.01
_SIGNAL_LOOK = 0.25  # seconds the main thread blocks at most before looking for a signal again


class Drivable(Protocol):
    """What a driver needs of a reloader (the ReloadCore)."""

    tracker: ChangeTracker
    source: ChangeSource
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

    def update(self, *, wait: bool = False) -> None:
        """Build and load what changed (raises HotReloadError); with `wait`, after a build
        another thread is running."""

    def history(self) -> list[VersionInfo]:
        """The versions loaded so far."""

    def background_step(self, *, manual: bool) -> bool:
        """What a background thread does when woken (never raises); True if it loaded a new
        version and left the housekeeping for a step a moment later."""


class Doorbell:
    """How a thread waits: on an eventfd that tracker listeners ring, and on the change source's
    own descriptor, whose events it then delivers itself (for every watcher) instead of waiting
    for them to be handed over by hotr's thread.  A thread keeps one for all its waits
    (`thread_bell()`): making an eventfd and a poller for each wait, and registering and
    closing them under deferred(), cost each reload's wait more than its read."""

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()  # ring() may come from another thread after close()
        self._fd = -1  # first: close() works on a bell whose eventfd could not be made
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._poller = select.poll()
        self._poller.register(self._fd, select.POLLIN)
        self._polled: set[int] = set()  # the sources' descriptors registered with the poller
        self.busy = False  # a wait of its thread uses it (see thread_bell)

    def ring(self) -> None:
        """Wake the waiting thread (a listener).  Not from that thread's innermost wait itself:
        it publishes while it delivers events or loads, and looks at what changed before it
        waits again.  From a wait nested in it (a signal handler's), it does: the outer wait's
        poll() goes on when the handler returns, without looking."""
        if getattr(_bells, "active", None) is self:
            return
        with self._lock:
            if self._fd >= 0:
                os.eventfd_write(self._fd, 1)

    def wait(self, sources: list[ChangeSource], timeout: float | None) -> bool:
        """Return once rung, once a source had events (delivered now), or after `timeout`;
        True if it delivered events of every source (no sync() is needed right after)."""
        by_fd = {fd: s for s in sources if (fd := s.fileno()) is not None}
        if by_fd.keys() != self._polled:
            for fd in self._polled - by_fd.keys():
                self._poller.unregister(fd)
            for fd in by_fd.keys() - self._polled:
                self._poller.register(fd, select.POLLIN)
            self._polled = set(by_fd)
        if timeout is not None:  # the caller's loop waits again for what is left
            timeout = min(timeout, LONGEST_WAIT)
        ready = self._poller.poll(None if timeout is None else max(0, -int(-timeout * 1000 // 1)))
        synced = 0
        for fd, _ in ready:
            if fd == self._fd:
                try:
                    os.eventfd_read(self._fd)
                except BlockingIOError:
                    pass
            elif fd in by_fd:
                by_fd[fd].sync()
                synced += 1
        return synced == len(sources)

    def close(self) -> None:
        """Close the eventfd (safe to call twice)."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __del__(self) -> None:
        self.close()


_bells = _thread._local()


def thread_bell() -> Doorbell:
    """The calling thread's doorbell, or a new one when a wait of the thread already uses it (a
    signal handler that waits, inside a wait)."""
    bell: Doorbell | None = getattr(_bells, "bell", None)
    if bell is not None and not bell.busy:
        return bell
    with deferred():  # a Ctrl-C here leaves no descriptor behind
        fresh = Doorbell()
        if bell is None:
            _bells.bell = fresh
        return fresh


def _after_fork_in_child() -> None:
    """The forking thread's doorbell is shared with the parent now: the child makes its own."""
    global _bells
    _bells = _thread._local()


os.register_at_fork(after_in_child=_after_fork_in_child)


class View(Protocol):
    """What one consumer has seen of a reloader: the tracker's counters when it last looked.

    A wait reports what happened since its consumer last looked, so a change another driver
    loaded meanwhile (hotr.load's thread) is still reported, once.
    """

    def seen(self) -> Snapshot:
        """The counters at the consumer's last look."""

    def look(self, *, at: Snapshot) -> None:
        """The consumer has seen everything up to `at` (the counters its wait judged)."""


class Cursor:
    """The View of one of hotr's own drivers (changes()), from the counters `seen`."""

    def __init__(self, seen: Snapshot) -> None:
        self._seen = seen

    def seen(self) -> Snapshot:
        return self._seen

    def look(self, *, at: Snapshot) -> None:
        self._seen = at


# Each thread, and each asyncio task, has its own view of each reloader (a context variable),
# so one thread's look never hides a change from another.  A task starts with a copy of its
# creator's context, so each look also names who took it (see `_looker`): a look inherited from
# the creator is not the task's own, or every task's first wait would report again what the
# creator had not seen when it made the task, however long ago another task loaded it.
_looks: ContextVar[dict[int, tuple[object, Snapshot]]] = ContextVar("hotr_looks")
_views = itertools.count()


def _looker() -> object:
    """Who is looking: a weak reference to the running asyncio task, else the thread's id."""
    asyncio = sys.modules.get("asyncio")  # never imported here: a program without it has no task
    # _get_running_loop() first: current_task() raises without a loop, which costs every poll()
    # of a program that imported asyncio a microsecond.
    if asyncio is not None and asyncio._get_running_loop() is not None:
        task = asyncio.current_task()
        if task is not None:
            return ref(task)
    return _thread.get_ident()


class ProgramView:
    """The View of the program: its own for each thread and task (see `_looks`); a thread's or
    task's first wait starts from the program's last update() or poll() in any of them."""

    def __init__(self, tracker: ChangeTracker, on_look: Callable[[], None]) -> None:
        self._tracker = tracker
        self._key = next(_views)
        self._on_look = on_look
        self.shared = tracker.snapshot()

    def seen(self) -> Snapshot:
        mine = _looks.get({}).get(self._key)
        if mine is None or mine[0] != _looker():  # a weak reference equals one to the same task
            return self.shared
        return mine[1]

    def look(self, *, shared: bool = False, at: Snapshot | None = None) -> None:
        """This thread (task) has seen everything up to now (or up to `at`); with `shared`, so
        has the program (update() and poll() take changes in for everyone)."""
        now = self._tracker.snapshot() if at is None else at
        _looks.set({**_looks.get({}), self._key: (_looker(), now)})
        if shared:
            self.shared = now
            self._on_look()


def _verdict(core: Drivable, seen: Snapshot) -> tuple[int | None, Snapshot]:
    """CHANGED, FAILED, or None to go on waiting, and the counters judged (the tracker's lock
    held).

    A change is reported once per view, whoever takes it in: the view remembers it has seen
    it, once the wait has returned its verdict.  A wait that ends by an exception (Ctrl-C,
    cancellation) has told nobody, so its view sees nothing new.  (A change still waiting to be
    loaded is what poll() reports, not a wait.)
    """
    now = core.tracker.snapshot()
    if core.ended:
        return FAILED, now
    if core.builds_on_update:
        # A save is news once: when the inputs change, not again when update() has built it.
        # A library written otherwise (a build command's output changed by hand) is news too.
        changed = now.inputs > seen.inputs or (now.library - now.built > seen.library - seen.built)
    else:
        changed = now.library > seen.library
    if changed:
        return CHANGED, now  # another driver may have taken it in already: it still happened
    if now.losses > seen.losses:
        return FAILED, now
    return None, now


def wait(core: Drivable, timeout: float | None, view: View) -> int:
    """Block until a change (CHANGED), `timeout` seconds without one (TIMED_OUT), or the
    reloader cannot report changes: stopped, closed, a directory gone (FAILED, once)."""
    deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
    seen = view.seen()
    bell: Doorbell | None = None
    outer: Doorbell | None = None  # the bell of the wait this one is nested in (see ring())
    synced = False  # the bell's wait has just delivered what happened
    try:
        while True:
            if not synced:
                core.sync()
            with core.tracker.lock:
                verdict, now = _verdict(core, seen)
            if verdict is not None:
                view.look(at=now)
                return verdict  # the housekeeping waits for the next call: the change first
            core.housekeep()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                view.look(at=now)
                return TIMED_OUT
            if bell is None:  # only when it must block: a change already there needs none
                bell = thread_bell()
                bell.busy = True
                outer, _bells.active = getattr(_bells, "active", None), bell
                # No deferred() needed: the finally below removes it whenever it was added (and
                # an equal listener added twice is there once).
                core.tracker.add_listener(bell.ring)
                continue  # check again: nothing published from now on is missed
            if is_main_thread():
                # A Ctrl-C landing after the interpreter last looked and before poll() began
                # does not interrupt poll(): look again now and then.
                remaining = _SIGNAL_LOOK if remaining is None else min(remaining, _SIGNAL_LOOK)
            synced = bell.wait([core.source], remaining)
    finally:
        if bell is not None:
            # The bell is free first: a Ctrl-C here at worst leaves the listener, which rings
            # it for nothing until this thread's next wait removes it.
            _bells.active, bell.busy = outer, False
            core.tracker.remove_listener(bell.ring)


async def wait_async(core: Drivable, timeout: float | None, view: View) -> bool:
    """wait() on the running event loop: True for a change, False after `timeout` seconds.

    Raises HotReloadError when the reloader cannot report changes (stopped, closed, a
    directory gone).
    """
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + max(timeout, 0.0)
    core.source.need_reader()  # the loop does not read the event source: hotr's thread does
    try:
        return await _wait_on_loop(core, loop, deadline, view)
    finally:
        core.source.drop_reader()


async def _wait_on_loop(
    core: Drivable,
    loop: asyncio.AbstractEventLoop,
    deadline: float | None,
    view: View,
) -> bool:
    import asyncio

    seen = view.seen()
    while True:
        core.sync()
        core.housekeep()
        woken: asyncio.Future[None] = loop.create_future()

        def wake(woken: asyncio.Future[None] = woken) -> None:
            loop.call_soon_threadsafe(_resolve, woken)

        core.tracker.add_listener(wake)  # before the check: nothing published after it is lost
        try:
            with core.tracker.lock:
                verdict, now = _verdict(core, seen)
            if verdict is not None:
                view.look(at=now)
            if verdict == CHANGED:
                return True
            if verdict == FAILED:
                raise HotReloadError(
                    f"{core.label!r} is not being watched (stopped, closed or its directory "
                    "is gone)"
                )
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                view.look(at=now)
                return False
            try:
                await asyncio.wait_for(woken, remaining)
            except asyncio.TimeoutError:
                pass
        finally:
            core.tracker.remove_listener(wake)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def follow(core: Drivable, cursor: Cursor) -> AsyncIterator[VersionInfo]:
    """Reload on every change, on the running loop; yield each new version (also one another
    driver loaded).  Builds run in the loop's default executor, loads on the loop; failures are
    logged and skipped."""
    import asyncio

    loop = asyncio.get_running_loop()
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
            if core.build_wanted():  # after another's build: the change it reported is built
                await loop.run_in_executor(None, lambda: core.update(wait=True))
            else:
                core.update()
        except HotReloadError as exc:
            if core.ended:
                return
            logger.error("%s", exc)
            continue
        for info in [v for v in core.history() if v.number > yielded]:
            yielded = info.number
            yield info


class BackgroundDriver:
    """One daemon thread that keeps any number of reloaders up to date (hotr.load, Watcher).

    Each reloader's tracker wakes the thread on every publication; the thread then steps the
    reloaders that were woken.  With `manual`, a step only builds: loads wait for the program's
    update().  With `until_empty`, the thread ends when its last reloader ends.  In a forked
    child it drives nothing and never takes its lock (the parent's thread may have held it).
    """

    def __init__(self, name: str, *, manual: bool, until_empty: bool) -> None:
        self.manual = manual
        self._pid = os.getpid()
        self._name = name
        self._until_empty = until_empty
        self._lock = _thread.allocate_lock()
        self._bell = Doorbell()
        self._cores: dict[int, tuple[Drivable, object]] = {}
        self._due: dict[int, Drivable] = {}
        self._later: dict[int, tuple[float, Drivable]] = {}  # cores to step again, and when
        self._listeners: dict[int, Callable[[], None]] = {}
        self._closed = False
        self._thread: Handle | None = None

    @property
    def inherited(self) -> bool:
        """Whether this process is a child forked from the one that made the driver."""
        return os.getpid() != self._pid

    def attach(self, core: Drivable, keepalive: object) -> None:
        """Drive `core` from now on; `keepalive` (its HotReloader) is held as long as it is."""
        if self.inherited:
            raise HotReloadError(f"{self._name} belongs to the parent process of this fork")

        def wake() -> None:
            if self.inherited:
                return
            with self._lock:
                self._due[id(core)] = core
            self._bell.ring()

        with self._lock:
            self._cores[id(core)] = (core, keepalive)
            self._listeners[id(core)] = wake
            self._due[id(core)] = core
            if self._thread is None:
                self._thread = start(self._run, self._name, hold_signals=False)
        core.tracker.add_listener(wake)
        self._bell.ring()

    def detach(self, core: Drivable) -> None:
        """Stop driving `core`."""
        if self.inherited:
            return
        with self._lock:
            self._cores.pop(id(core), None)
            self._due.pop(id(core), None)
            self._later.pop(id(core), None)
            wake = self._listeners.pop(id(core), None)
        if wake is not None:
            core.tracker.remove_listener(wake)
        self._bell.ring()

    def close(self) -> None:
        """End the thread (after the step it is in)."""
        if self.inherited:
            return
        with self._lock:
            self._closed = True
            thread = self._thread
        self._bell.ring()
        if thread is not None and thread.ident != _thread.get_ident():
            thread.join(timeout=5)

    def _run(self) -> None:
        _bells.active = self._bell  # this thread waits on it: its own publications need no ring
        try:
            while True:
                with self._lock:
                    if self._closed or (self._until_empty and not self._cores):
                        return
                    now = time.monotonic()
                    for key, (when, core) in list(self._later.items()):
                        if when <= now:
                            del self._later[key]
                            self._due[key] = core
                    batch = list(self._due.values())
                    self._due.clear()
                    sources = list(
                        {id(c.source): c.source for c, _ in self._cores.values()}.values()
                    )
                    soonest = min((when for when, _ in self._later.values()), default=None)
                if not batch:
                    self._bell.wait(sources, None if soonest is None else soonest - now)
                    continue
                for core in batch:
                    if core.ended:
                        self.detach(core)
                        continue
                    try:
                        if core.background_step(manual=self.manual):
                            when = time.monotonic() + _HOUSEKEEP_AFTER_LOAD
                            with self._lock:  # loads in a row: the first one's time stands
                                self._later.setdefault(id(core), (when, core))
                    except BaseException:  # a callback's sys.exit() too: it ended the thread
                        logger.exception(
                            "hotr's background reloader for %s failed; it carries on", core.label
                        )
        finally:
            self._bell.close()
