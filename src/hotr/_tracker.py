"""Change tracking for one reloader: which of its files changed, when a change is due, who waits.

A reloader's files are its library (when the user names a file) and its inputs (sources, and the
headers its last build used).  The change source calls the tracker's sinks; the tracker folds
those raw changes into *published* ones: the first change after a quiet spell at once; one that
follows within `debounce` starts a burst, published once the file has been quiet for `debounce`
(or at least once a second, if it never is).  A burst of saves makes one or two reloads of the
final content, and never a lost one.

Publishing bumps counters (a Snapshot) and calls every listener: the doorbells of waiting
threads, asyncio futures, background drivers, the fileno() descriptor.  Nobody takes an event
away from anybody else: each consumer remembers the counters it has seen, so any number of
threads and tasks may wait on one reloader and each of them sees each change.
"""

from __future__ import annotations

import _thread

from ._log import logger
from ._polling import signature
from ._record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from functools import partial

    from ._source import ChangeSource, Event, Sink, Timer, Watch

    Listener = Callable[[], None]
else:
    from _functools import partial  # functools imports collections: 1.5 ms


class Snapshot(Record):  # a NamedTuple: made on every wait and every look, cheaply
    """The tracker's counters at one moment; compare two to learn what happened between."""

    library: int  # published changes of the library file, and finished builds
    built: int  # finished builds (counted in `library` too)
    inputs: int  # published changes of the inputs (sources, headers)
    losses: int  # times a watched directory went away
    ended: bool  # stopped or closed: no more changes will come


class Pending(Record):
    """What a load about to start takes in: the library generation and why it changed."""

    library: int
    changed: frozenset[str]
    build_seconds: float | None
    build_output: str  # what that build printed (its warnings)


class ChangeTracker:
    """See the module docstring.

    Locks: `_watch_lock` (the watch set; held while calling the source) comes before the
    source's own locks, which come before `lock` (the counters).  Listeners are called with
    `lock` released.
    """

    def __init__(
        self,
        source: ChangeSource,
        *,
        library: str | None,
        debounce: float,
        backend: str,
        builds: bool,
    ) -> None:
        self.lock = _thread.RLock()
        self._source = source
        self._library_path = library
        self._debounce = debounce
        self._backend = backend
        self._watch_lock = _thread.allocate_lock()
        self._watches: dict[str, Watch] = {}
        self._signatures: dict[str, tuple[int, ...] | None] = {}
        self._listeners: list[Listener] = []
        self._library = 0
        self._built = 0
        self._consumed = 0  # the library generation the last load took in
        self.taken = 0  # the library generation the last load started from (take)
        self.taken_built = 0  # the builds finished by then
        self._inputs = 1 if builds else 0  # a build is wanted before the first load
        self._losses = 0
        self._ended = False
        self._dirty_library = False
        self._dirty_inputs = False
        self._raw: set[str] = set()  # changed, not yet published
        self._changed: set[str] = set()  # published, not yet loaded
        self._build_seconds: float | None = None
        self._build_output = ""
        self._lost: set[str] = set()  # watched paths whose directory is gone
        self._building = False  # between take_inputs() and build_done()
        self._last_library = self._last_inputs = -float("inf")  # last publications
        self._raw_library = self._raw_inputs = -float("inf")  # last raw changes
        self._burst_library = self._burst_inputs = False  # held until quiet for `debounce`
        self._timer: Timer | None = None

    # -- the watch set -----------------------------------------------------------------------

    def start(self, inputs: Iterable[str]) -> None:
        """Watch the library (if a file) and `inputs`.  Raises OSError if one cannot be."""
        with self._watch_lock:
            try:
                if self._library_path is not None:
                    self._watch(self._library_path)
                for path in sorted(set(inputs)):
                    self._watch(path)
            except BaseException:
                self._close_watches()
                raise

    def watch_inputs(self, inputs: Iterable[str]) -> None:
        """Make the watched inputs exactly `inputs` (a build learns its headers)."""
        wanted = set(inputs) - {self._library_path}
        with self._watch_lock:
            if self._ended:
                return
            for path in set(self._watches) - wanted - {self._library_path}:
                self._watches.pop(path).close()
            for path in sorted(wanted - set(self._watches)):
                try:
                    self._watch(path)
                except OSError as exc:
                    logger.warning(
                        "cannot watch %s: %s; its changes will not be seen",
                        path,
                        exc.strerror or exc,
                    )

    @property
    def backend(self) -> str:
        """How the files are watched: ``"inotify"``, ``"poll"``, both, or the source's name."""
        with self._watch_lock:
            kinds = sorted({w.backend for w in self._watches.values()})
        return "+".join(kinds) if kinds else self._backend

    def stop(self) -> None:
        """Stop watching for good and wake every waiter."""
        with self._watch_lock:
            self._close_watches()
            with self.lock:
                self._ended = True
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                listeners = self._bump()
        if listeners:
            _call(listeners)

    def abandon(self) -> None:
        """In a forked child: forget the watches without touching the parent's reactor."""
        self._watch_lock = _thread.allocate_lock()
        self.lock = _thread.RLock()
        self._watches = {}
        self._ended = True
        self._listeners = []

    def _watch(self, path: str) -> None:
        self._signatures[path] = signature(path)
        self._watches[path] = self._source.watch(path, self._sink(path), self._backend)

    def _close_watches(self) -> None:
        for watch in self._watches.values():
            watch.close()
        self._watches.clear()

    # -- what the source reports -------------------------------------------------------------

    def _sink(self, path: str) -> Sink:
        return partial(self._event, path)

    def _event(self, path: str, event: Event) -> None:
        if event == "gone":  # nothing to do until it is back (a linker's every build)
            self._signatures[path] = None
            return
        rescanned = None
        if event == "rescan":  # events were dropped: did this file change meanwhile?
            rescanned = signature(path)
            if rescanned is not None and rescanned == self._signatures.get(path):
                return
            event = "written" if rescanned is not None else "gone"
        listeners: list[Listener] = []
        with self.lock:
            if self._ended:
                return
            if event == "written":
                # What a rescan compares with: the file as taken in (take) or found now.
                self._signatures[path] = rescanned
                if path in self._lost:
                    self._lost.discard(path)
                    logger.info("%s is back; watching it again", path)
                now = self._source.clock()
                if path == self._library_path:
                    self._burst_library = self._dirty_library or (
                        now < self._last_library + self._debounce
                    )
                    self._dirty_library, self._raw_library = True, now
                else:
                    self._burst_inputs = (
                        self._dirty_inputs or now < self._last_inputs + self._debounce
                    )
                    self._dirty_inputs, self._raw_inputs = True, now
                self._raw.add(path)
                listeners = self._schedule()
            elif event == "lost":
                self._signatures[path] = None
                if path not in self._lost:
                    self._lost.add(path)
                    logger.error(
                        "the directory of %s was removed or renamed; the loaded version stays "
                        "live, and hotr watches for it to come back",
                        path,
                    )
                self._losses += 1
                listeners = self._bump()
            else:
                self._signatures[path] = None
        if listeners:
            _call(listeners)

    def _schedule(self) -> list[Listener]:
        """A raw change came in: publish what is due now, the rest once its debounce interval
        has passed.  The library and the inputs each have their own interval: a build's new
        library does not hold back the next save of a source."""
        listeners = self._publish(self._source.clock())
        self._arm()
        return listeners

    def _arm(self) -> None:
        """Set the timer for the earliest change held back (lock held)."""
        library = self._dirty_library and not self._building
        if self._timer is not None or not (library or self._dirty_inputs):
            return  # the usual case after a change: published at once, nothing held back
        due = [
            self._due(burst, published, raw)
            for dirty, burst, published, raw in (
                (library, self._burst_library, self._last_library, self._raw_library),
                (self._dirty_inputs, self._burst_inputs, self._last_inputs, self._raw_inputs),
            )
            if dirty
        ]
        self._timer = self._source.call_at(min(due), self._on_timer)

    def _on_timer(self) -> None:
        with self.lock:
            self._timer = None
            listeners = self._publish(self._source.clock())
            self._arm()
        if listeners:
            _call(listeners)

    def _due(self, burst: bool, published: float, raw: float) -> float:
        """When a held change is published: `debounce` after the previous publication, or in a
        burst once quiet for `debounce` (at most a second, or 5 x debounce, after the last)."""
        if not burst:
            return published + self._debounce
        return min(raw + self._debounce, published + max(1.0, 5 * self._debounce))

    def _publish(self, now: float) -> list[Listener]:
        """Publish each kind of change whose debounce interval has passed (lock held)."""
        published = False
        held = self._building  # a build is writing the library: see build_done()
        if (
            self._dirty_library
            and not held
            and now >= self._due(self._burst_library, self._last_library, self._raw_library)
        ):
            self._library += 1
            self._dirty_library = False
            self._last_library = now
            self._changed |= self._raw & {self._library_path or ""}
            self._raw -= {self._library_path or ""}
            published = True
        if self._dirty_inputs and now >= self._due(
            self._burst_inputs, self._last_inputs, self._raw_inputs
        ):
            self._inputs += 1
            self._dirty_inputs = False
            self._last_inputs = now
            self._changed |= self._raw - {self._library_path or ""}
            self._raw &= {self._library_path or ""}
            published = True
        return self._bump() if published else []

    def _bump(self) -> list[Listener]:
        """The listeners to call for a publication (lock held; call them with it released)."""
        return list(self._listeners)

    # -- what the reloader tells it ----------------------------------------------------------

    def build_done(self, seconds: float | None, output: str = "") -> None:
        """The build take_inputs() began has ended (`seconds` None: it failed; `output`: what
        a build that succeeded printed).

        What it wrote to a watched library (a custom build's output) is its own doing: those
        events are read now and folded into it, not reported afterwards as another change.
        A successful build's library is ready to load at once.
        """
        self._source.sync()
        with self.lock:
            self._building = False
            self._dirty_library = False
            self._raw.discard(self._library_path or "")
            listeners: list[Listener] = []
            if seconds is not None:
                self._library += 1
                self._built += 1
                self._build_seconds, self._build_output = seconds, output
                listeners = self._bump()
        if listeners:
            _call(listeners)

    def poke(self) -> None:
        """Wake every waiter without a change (a retired version has drained)."""
        with self.lock:
            listeners = self._bump()
        if listeners:
            _call(listeners)

    # -- what consumers read -----------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The counters now."""
        with self.lock:
            return Snapshot(self._library, self._built, self._inputs, self._losses, self._ended)

    def take(self) -> Pending:
        """What a load starting now takes in.  The load reads the file after this, so library
        changes not yet published (held back by the debounce) are taken in too."""
        with self.lock:
            if self._dirty_library:
                self._library += 1
                self._dirty_library = False
                self._changed.add(self._library_path or "")
                self._raw.discard(self._library_path or "")
            if self._library_path is not None:
                self._signatures[self._library_path] = signature(self._library_path)
            self.taken, self.taken_built = self._library, self._built
            return Pending(
                self._library, frozenset(self._changed), self._build_seconds, self._build_output
            )

    def take_inputs(self) -> int:
        """The input generation a build starting now takes in (it reads the sources after
        this, so changes not yet published are taken in too)."""
        with self.lock:
            if self._dirty_inputs:
                self._inputs += 1
                self._dirty_inputs = False
                self._changed |= self._raw - {self._library_path}
                self._raw &= {self._library_path or ""}
            for path in self._signatures.keys() - {self._library_path}:
                self._signatures[path] = signature(path)
            self._building = True  # the library's own changes are the build's from now on
            return self._inputs

    def newer_than(self, taken: Pending) -> bool:
        """True if the library changed again after `taken` was taken."""
        with self.lock:
            return self._library > taken.library or self._dirty_library

    def consume(self, taken: Pending) -> None:
        """A load took `taken` in (it loaded, or failed for good): forget those changes."""
        with self.lock:
            self._consumed = max(self._consumed, taken.library)
            self._changed -= taken.changed
            if taken.build_seconds is not None and self._build_seconds == taken.build_seconds:
                self._build_seconds, self._build_output = None, ""

    def library_pending(self, *, held: bool = False) -> bool:
        """True if the library changed (or was built) since the last load took it in; with
        `held`, a change the debounce still holds back counts too (update() was asked for)."""
        with self.lock:
            return self._library > self._consumed or (
                held and self._dirty_library and not self._building
            )

    def inputs_held(self) -> bool:
        """True if an input changed and the debounce still holds it back."""
        with self.lock:
            return self._dirty_inputs

    def add_listener(self, listener: Listener) -> None:
        """Call `listener()` after every publication (from whichever thread publishes); one
        added again (an equal one) is called once."""
        with self.lock:
            if listener not in self._listeners:
                self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling `listener`."""
        with self.lock:
            if listener in self._listeners:
                self._listeners.remove(listener)


def _call(listeners: list[Listener]) -> None:
    for listener in listeners:
        try:
            listener()
        except Exception:
            logger.debug("a hotr listener failed", exc_info=True)
