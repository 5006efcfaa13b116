"""The process-wide change source: one thread, one inotify instance, the polling scanner, timers.

Every reloader and Watcher in the process watches through `reactor()`.  Whoever reads the
inotify descriptor (sync(), under one lock) tells every watcher of what it read, so any thread
may: threads that wait read it themselves, and so do update() and poll().  The reactor's thread
reads it only for consumers that do not (an asyncio wait, a fileno() descriptor); it scans
polled paths when they are due and runs the timers reloaders set (debounce).  It never runs
user code: sinks and timers only record state and wake whoever waits.

`Reactor.watch` is the one place a backend is chosen: the argument, else ``$HOTR_BACKEND``,
else inotify unless the path is on a network file system or inotify cannot be had; a fallback
to polling is logged at WARNING with its reason.
"""

from __future__ import annotations

import _thread
import errno
import itertools
import os
import select
import time

from . import _env, _libc
from ._inotify import InotifyWatch, InotifyWatches
from ._log import logger
from ._polling import PollWatch, PollWatches
from ._signals import deferred
from ._threads import LONGEST_WAIT, Handle, start

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from heapq import heappop, heappush

    from ._source import Sink
else:
    from _heapq import heappop, heappush  # heapq is one import more

# statfs(2) f_type of file systems whose changes may come from elsewhere, unseen by inotify.
_REMOTE_FILE_SYSTEMS = {
    0x6969: "NFS",
    0x517B: "SMB",
    0xFF534D42: "CIFS",
    0xFE534D42: "SMB2",
    0x01021997: "9p",
    0x65735546: "FUSE",
    0x00C36400: "Ceph",
    0x5346414F: "AFS",
}
# inotify_init1 / inotify_add_watch failures that polling can stand in for.
_NO_INOTIFY = (errno.EMFILE, errno.ENFILE, errno.ENOSYS, errno.ENOSPC)


def remote_file_system(path: str) -> str | None:
    """The name of the network file system holding `path` (or its nearest existing ancestor)."""
    while True:
        try:
            return _REMOTE_FILE_SYSTEMS.get(_libc.statfs_type(path))
        except OSError:
            parent = os.path.dirname(path)
            if parent == path:
                return None
            path = parent


class WakePipe:
    """A self-pipe: wake() makes the read end readable, so a thread blocked in poll() returns."""

    def __init__(self) -> None:
        self.fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def wake(self) -> None:
        """Make the read end readable (a full pipe is readable already)."""
        try:
            os.write(self._write_fd, b"!")
        except OSError:
            pass

    def drain(self) -> None:
        """Read the wake-ups that arrived, so the next wait blocks again."""
        try:
            os.read(self.fd, 512)
        except OSError:
            pass

    def close(self) -> None:
        """Close both ends; safe to call twice."""
        if self.fd >= 0:
            os.close(self.fd)
            os.close(self._write_fd)
            self.fd = self._write_fd = -1


class _Timer:
    __slots__ = ("callback", "cancelled", "serial", "when")

    def __init__(self, when: float, serial: int, callback: Callable[[], None]) -> None:
        self.when, self.serial, self.callback = when, serial, callback
        self.cancelled = False

    def __lt__(self, other: _Timer) -> bool:  # the heap's order: earliest first, then FIFO
        return (self.when, self.serial) < (other.when, other.serial)

    def cancel(self) -> None:
        self.cancelled = True


class _Watch:
    """A watch handed out by the reactor: inotify or polling underneath, and it may move to
    polling if inotify gives out later (no watches left when a path resolves anew)."""

    def __init__(self, reactor: Reactor, path: str, sink: Sink) -> None:
        self._reactor = reactor
        self.path = path
        self.sink = sink
        self.inner: InotifyWatch | PollWatch | None = None
        self.closed = False

    @property
    def backend(self) -> str:
        return self.inner.backend if self.inner is not None else "none"

    def close(self) -> None:
        self._reactor.unwatch(self)


class Reactor:
    """See the module docstring.  One per process (`reactor()`); a forked child makes its own."""

    name = "reactor"

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()  # timers, the thread, lazy set-up; held only briefly
        self._timers: list[_Timer] = []
        self._serial = itertools.count()
        self._wake = WakePipe()
        self._inotify: InotifyWatches | None = None
        self._inotify_fd = -1  # registered with the thread's poller
        self._polling = PollWatches()
        self._by_inner: dict[int, _Watch] = {}
        self._warned: set[str] = set()
        self._readers = 0  # consumers that need events read for them (need_reader)
        self._thread: Handle | None = None
        self._abandoned = False

    @staticmethod
    def clock() -> float:
        """time.monotonic(): the clock of call_at() and of debounce."""
        return time.monotonic()

    def call_at(self, when: float, callback: Callable[[], None]) -> _Timer:
        """Run `callback` in the reactor's thread once clock() reaches `when`."""
        timer = _Timer(when, next(self._serial), callback)
        with self._lock:
            heappush(self._timers, timer)
            earliest = self._timers[0] is timer
            self._start()
        if earliest:
            self._wake.wake()
        return timer

    def watch(self, path: str, sink: Sink, backend: str) -> _Watch:
        """Report changes of `path` to `sink`; `backend` is auto, inotify or poll.

        Raises:
            OSError: inotify was asked for and cannot watch `path`.
            ValueError: a HOTR_* variable has a bad value.
        """
        chosen = backend if backend != "auto" else _env.backend()
        interval = _env.poll_interval()
        handle = _Watch(self, path, sink)
        if chosen == "auto":
            remote = remote_file_system(os.path.dirname(path))
            if remote is not None:
                logger.warning(
                    "%s is on %s, which inotify cannot watch: polling every %g s",
                    path,
                    remote,
                    interval,
                )
                chosen = "poll"
        if chosen != "poll":
            try:
                inner = self._inotify_watches().watch(path, self._forward(handle))
            except OSError as exc:
                if chosen == "inotify" or exc.errno not in _NO_INOTIFY:
                    raise
                self._warn_fallback(path, exc, interval)
            else:
                self._adopt(handle, inner)
                return handle
        self._adopt(
            handle, self._polling.watch(path, self._forward(handle), interval, self.clock())
        )
        self._wake.wake()  # the thread's next wait must end at this path's first scan
        return handle

    def unwatch(self, handle: _Watch) -> None:
        """Stop reporting `handle`'s path."""
        handle.closed = True
        inner, handle.inner = handle.inner, None
        if inner is not None and not self._abandoned:
            self._by_inner.pop(id(inner), None)
            inner.close()

    def sync(self, *, blocking: bool = True) -> None:
        """Deliver what already happened: queued inotify events, due scans, due timers.

        With `blocking` False the inotify queue is skipped while another thread reads it (that
        thread reads it to the end, for everyone).
        """
        if self._abandoned:
            return
        if self._inotify is not None:
            self._inotify.read(blocking=blocking)
        if self._polling.active:
            self._polling.scan(self.clock())
        if self._timers:
            self._run_timers()

    def fileno(self) -> int | None:
        """The inotify descriptor (None before anything is watched with inotify)."""
        return None if self._abandoned or self._inotify is None else self._inotify.fd

    def need_reader(self) -> None:
        """A consumer that does not read events itself is waiting (an asyncio wait, a fileno()
        descriptor): the reactor's thread reads inotify for it until drop_reader().

        Threads that wait read the descriptor themselves (see fileno()), and update() and poll()
        read it too, so otherwise the thread leaves it alone: waking for every event in a
        watched directory (an editor's temporary files, a build's objects) would only take the
        GIL from the program.
        """
        with self._lock:
            self._readers += 1
            self._start()
        self._wake.wake()

    def drop_reader(self) -> None:
        """The consumer of need_reader() has gone."""
        with self._lock:
            self._readers -= 1

    def abandon(self) -> None:
        """In a forked child: this reactor's thread is gone and its descriptors are shared with
        the parent.  Drop them without touching the parent's watches; do nothing from now on."""
        self._abandoned = True
        if self._inotify is not None:
            self._inotify.abandon()
        try:
            self._wake.close()
        except OSError:
            pass

    # -- inside ------------------------------------------------------------------------------

    def _forward(self, handle: _Watch) -> Sink:
        return lambda event: None if handle.closed else handle.sink(event)

    def _adopt(self, handle: _Watch, inner: InotifyWatch | PollWatch) -> None:
        handle.inner = inner
        self._by_inner[id(inner)] = handle
        with self._lock:
            self._start()

    def _inotify_watches(self) -> InotifyWatches:
        with self._lock:
            if self._inotify is None:
                self._inotify = InotifyWatches(
                    self._moved_to_polling,
                    lambda seconds, callback: self.call_at(self.clock() + seconds, callback),
                )
                self._inotify_fd = self._inotify.fd
                self._wake.wake()  # the thread may have to add the new descriptor to its poller
            return self._inotify

    def _moved_to_polling(self, inner: InotifyWatch, exc: OSError) -> None:
        """inotify could not follow a path that resolved anew: poll it from now on."""
        handle = self._by_inner.pop(id(inner), None)
        if handle is None or handle.closed:
            return
        interval = _env.poll_interval()
        self._warn_fallback(handle.path, exc, interval)
        self._adopt(
            handle, self._polling.watch(handle.path, self._forward(handle), interval, self.clock())
        )
        self._wake.wake()

    def _warn_fallback(self, path: str, exc: OSError, interval: float) -> None:
        reason = exc.strerror or str(exc)
        log = logger.debug if reason in self._warned else logger.warning
        self._warned.add(reason)
        log("inotify cannot watch %s (%s): polling it every %g s", path, reason, interval)

    def _start(self) -> None:
        """Start the thread (lock held)."""
        if self._thread is None and not self._abandoned:
            self._thread = start(self._run, "hotr", hold_signals=True)

    def _next_wait(self) -> float | None:
        with self._lock:
            while self._timers and self._timers[0].cancelled:
                heappop(self._timers)
            due = [self._timers[0].when] if self._timers else []
        scan = self._polling.next_due()
        if scan is not None:
            due.append(scan)
        # The loop runs the timers that are due and waits again: a wait is at most a day.
        return min(max(0.0, min(due) - self.clock()), LONGEST_WAIT) if due else None

    def _run_timers(self) -> None:
        now = self.clock()
        ready: list[_Timer] = []
        with self._lock:
            while self._timers and self._timers[0].when <= now:
                timer = heappop(self._timers)
                if not timer.cancelled:
                    ready.append(timer)
        if not ready:
            return
        with deferred():  # a timer popped is a timer run: a Ctrl-C waits for them
            for timer in ready:
                try:
                    timer.callback()
                except Exception:
                    logger.exception("a hotr timer failed")

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._wake.fd, select.POLLIN)
        registered = -1
        while not self._abandoned:
            wanted = self._inotify_fd if self._readers > 0 else -1
            if wanted != registered:
                if registered >= 0:
                    poller.unregister(registered)
                if wanted >= 0:
                    poller.register(wanted, select.POLLIN)
                registered = wanted
            wait = self._next_wait()
            try:
                ready = poller.poll(None if wait is None else int(wait * 1000) + 1)
            except OSError:  # the descriptors went away (a forked child abandoning them)
                return
            if any(fd == self._wake.fd for fd, _ in ready):
                self._wake.drain()
            try:
                self.sync(blocking=False)  # a waiting program thread may be reading it already
            except Exception:
                logger.exception("hotr's watch thread hit an error; it carries on")


_reactor: Reactor | None = None
_reactor_lock = _thread.allocate_lock()


def reactor() -> Reactor:
    """The process's reactor, made on first use (and anew in a forked child)."""
    global _reactor
    with _reactor_lock:
        if _reactor is None:
            _reactor = Reactor()
        return _reactor


def _after_fork_in_child() -> None:
    global _reactor, _reactor_lock
    _reactor_lock = _thread.allocate_lock()
    if _reactor is not None:
        _reactor.abandon()
        _reactor = None


os.register_at_fork(after_in_child=_after_fork_in_child)
