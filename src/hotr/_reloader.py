"""HotReloader: load a shared library, watch it, and swap in each new version safely.

The reload policy, in short:

* A change is read whole, checked to be a complete ELF shared object, copied into the private
  directory and loaded from the copy (dlopen RTLD_NOW).  Any failure raises LoadError and leaves
  the previous version live.
* Every live function is then pointed at the new version in one step under the GIL.
* The old version is retired.  It is unloaded (its ``cleanup`` hook called, then dlclose, then its
  copy deleted) by the first housekeeping (update, poll, a watcher's wait) that finds no call
  running in it: each live function counts calls in flight per version (see _shim.c).  Only
  versions that still have calls running stay mapped, so the number mapped is bounded by the calls
  in flight, however many reloads happen.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import ctypes
import dataclasses
import errno
import hashlib
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from . import _dl
from ._build import Builder, is_source
from ._elf import ElfError, check_shared_object
from ._exceptions import BuildError, HotReloadError, LoadError, SymbolNotFoundError
from ._library import CFunc, Function, Library
from ._polling import PollingWatcher
from ._shim import Pin, retarget
from ._store import PrivateStore
from ._version import Version, VersionInfo, library_name, stranded
from ._watch import DEFAULT_POLL_INTERVAL, Change, ChangeKind, FileWatcher, open_watcher

if TYPE_CHECKING:
    from ._watcher import Watcher

logger = logging.getLogger("hotr")

# Backend keys: (reloader token, None) for the library, (token, path) for a source or header.
_Key = tuple[object, str | None]
# How many versions r.history remembers.
_HISTORY = 100
# How many times update() re-reads a file whose writer overtook the read, on the first load.
_OVERTAKEN_RETRIES = 3
# How often a waiting watcher re-checks retired versions whose calls are still running (seconds).
_DRAIN_INTERVAL = 0.05
# How long interpreter exit waits for background threads to leave their waits (seconds).
_EXIT_WAIT = 1.0
# How often a watcher whose directory disappeared tries to watch it again (seconds).
_REWATCH_INTERVAL = 0.5


_VOID_FN = ctypes.CFUNCTYPE(None)
# int hotr_load(void **state, int version, int reloading), and hotr_unload alike (hotr.h).
_HOOK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int)
# probe=True: a child interpreter dlopens each new version first (constructors run there too).
_PROBE = (
    "import ctypes, os, sys\n"
    "try:\n"
    "    ctypes.CDLL(sys.argv[1], mode=os.RTLD_NOW | os.RTLD_LOCAL)\n"
    "except OSError as exc:\n"
    "    sys.exit(str(exc))\n"
)
_PROBE_TIMEOUT = 10
# Functions hotr itself calls in a version: checked to be code before the version is accepted.
_HOOKS = ("hotr_load", "hotr_unload", "cleanup")
# How many earlier contents rollback() can go back through.
_ROLLBACK_DEPTH = 8


class HotReloader:
    """Load the shared library at `path` and reload it whenever the file changes.

    Args:
        path: the ``.so`` file, or C source file(s) to compile into a private library.  Relative
            paths are resolved once, now.
        sources: files to build `path` from when they change (C sources for the default
            compiler command, anything for `build`).  Headers they include are watched too.
        build: a custom build command (argv list, run without a shell) that writes `path`,
            e.g. ``["make"]`` or ``["cargo", "build"]``.  Default: ``$CC -shared -fPIC``.
        cc: compiler for the default command (default ``$CC``, else ``cc``), e.g. ``"tcc"``.
        flags: extra flags for the default command, after the sources (``["-O2", "-lm"]``).
        build_timeout: seconds a build may run before it is killed and reported (default 60).
        keep_globals: copy global and static variables with the same name and size from the old
            version into the new one before its hotr_load runs (see hotr.h); r.history says what
            was carried and what was not.
        probe: load each new version in a child process first, so that a version whose
            constructor crashes (abort, segfault) is refused instead of killing this process.
            Costs a process start (about 20 ms) per reload; constructors run twice.
        ffi: a ``cffi.FFI`` whose ``cdef()`` declares the library's functions: they are then
            called through cffi (live cdata functions, same reload guarantees) instead of ctypes.
        backend: how changes are seen: ``"inotify"``, ``"poll"`` (stat and hash every
            ``$HOTR_POLL_INTERVAL`` seconds, default 0.5, for network file systems), or
            ``"auto"`` (default): ``$HOTR_BACKEND`` if set, else inotify unless the directory
            is on a network file system or inotify has no instances or watches left.
        debounce: minimum time between two reloads, in seconds (default 0.02).  The first change
            after a quiet spell is applied at once; changes arriving faster than this are
            coalesced into one reload of the final content.

    Raises:
        FileNotFoundError: `path` (or a source) does not exist.
        ValueError: the arguments do not name one library or some sources.
        HotReloadError: the private directory or the watch cannot be set up.

    Example::

        with hotr.HotReloader("./libhot.so") as r:
            lib = r.update()
            while True:
                lib.step()
                if r.poll():
                    r.update()
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        sources: Sequence[str | os.PathLike[str]] = (),
        build: Sequence[str] | None = None,
        cc: str | None = None,
        flags: Sequence[str] = (),
        build_timeout: float = 60.0,
        keep_globals: bool = False,
        probe: bool = False,
        ffi: Any = None,
        backend: str = "auto",
        debounce: float = 0.02,
        _shared: Watcher | None = None,
    ) -> None:
        targets = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        paths = [os.path.abspath(os.fspath(p)) for p in targets]
        inputs = [os.path.abspath(os.fspath(p)) for p in sources]
        if build is None and all(is_source(p) for p in paths):
            inputs, library = paths + inputs, None  # compile into the private directory
        elif len(paths) == 1:
            library = paths[0]
        else:
            raise ValueError("give one shared library, or C sources to build one from")
        if build is not None and not inputs:
            raise ValueError("a build command needs sources= to know when to run")
        for source in inputs:
            if not os.path.exists(source):
                raise FileNotFoundError(2, "No such source file", source)
        if library is not None and not inputs and not os.path.exists(library):
            raise FileNotFoundError(2, "No such shared library", library)
        self.debounce = debounce
        self.keep_globals = keep_globals
        self.probe = probe
        self._ffi = ffi
        self._cffi_types: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._state = ctypes.c_void_p()  # the library's own slot, kept across versions (hotr.h)
        self._contents: collections.deque[bytes] = collections.deque(maxlen=_ROLLBACK_DEPTH)
        self._on_reload: list[Callable[[int, int], object]] = []
        self._on_error: list[Callable[[HotReloadError], object]] = []
        self._pending = True  # the first update() loads
        self._current: Version | None = None
        self._retired: list[Version] = []
        self._functions: dict[str, Function] = {}
        self._loads = 0
        self._live: list[Pin | None] = [None]  # the live version's pin, set by retarget()
        self._last_reload = -float("inf")
        self._waiters = 0
        self._closed = False
        self._stopped = False
        self._building = False
        self._built = threading.Condition(self._lock)
        self._background_builds = False  # load(manual=True): a thread builds, update() loads
        self._task: asyncio.Task[None] | None = None  # aload()'s task
        self._owner_pid = os.getpid()
        self._watched: set[str] = set()
        self._lost = False  # the directory is gone; hotr retries every _REWATCH_INTERVAL
        self._lost_reported = False  # watch_for_changes() has returned -1 for that once
        self._store = PrivateStore()
        self._label = library or ", ".join(inputs)  # what messages call this library
        self.path = library or os.path.join(self._store.path, library_name(inputs[0]))
        self._builder = None
        if inputs:
            self._builder = Builder(
                inputs,
                self.path,
                self._store.path,
                list(build) if build else None,
                cc,
                flags,
                build_timeout,
            )
        self._build_pending = bool(inputs)
        self._build_seconds: float | None = None
        self._inputs: set[str] = set()
        self._changed: set[str] = set()
        self._history: collections.deque[VersionInfo] = collections.deque(maxlen=_HISTORY)
        self._unhashed: dict[int, bytes] = {}  # version number -> content, until hashed
        self._token = object()  # backend keys are (token, None) for the library, (token, path)
        self._shared = _shared
        self._watch_library = library is not None
        watched = [*inputs, *([library] if library else [])]
        try:
            self._watch = (
                _shared.backend if _shared else open_watcher(backend, map(os.path.dirname, watched))
            )
        except (OSError, ValueError) as exc:
            self._store.close()
            if isinstance(exc, ValueError):
                raise
            raise HotReloadError(f"cannot watch {self._label!r}: {exc}") from exc
        # Releases the descriptors and the private directory if the reloader is dropped unclosed;
        # the versions stay mapped then, since live functions may still point into them.
        self._release_lock = threading.Lock()
        self._finalizer = _finalizer(self, None if _shared else self._watch, self._store)
        try:
            self._start_watching(fallback=backend == "auto" and _shared is None)
        except OSError as exc:
            self._release()
            raise HotReloadError(f"cannot watch {self._label!r}: {exc}") from exc
        self.library = Library(self)
        _open_reloaders.add(self)

    # -- public API ---------------------------------------------------------------------------

    @property
    def version(self) -> int:
        """Number of successful loads so far (1 after the first)."""
        pin = self._live[0]
        return pin.number if pin is not None else 0

    @property
    def history(self) -> list[VersionInfo]:
        """The versions loaded so far, oldest first (the last 100)."""
        with self._lock:
            self._hash_history()
            return list(self._history)

    @property
    def closed(self) -> bool:
        """True once close() has run."""
        return self._closed

    @property
    def backend(self) -> str:
        """The watching backend in use: ``"inotify"`` or ``"poll"``."""
        return self._watch.name

    @property
    def stopped(self) -> bool:
        """True once stop() or close() has run: no more changes are seen."""
        return self._stopped or self._closed

    def fileno(self) -> int:
        """The inotify descriptor; it turns readable when the watched directory has events.

        Raises:
            HotReloadError: the polling backend has no descriptor, and a reloader driven by a
                hotr.Watcher shares the Watcher's.
        """
        if self._shared is not None:
            raise HotReloadError(f"{self._label!r} is watched by a hotr.Watcher: it has no fileno")
        try:
            return self._watch.fileno()
        except OSError as exc:
            raise HotReloadError(f"{self._label!r} is watched by polling: {exc}") from None

    def stop(self) -> None:
        """Stop watching: no more changes are seen, no more reloads happen (the background
        thread of hotr.load ends).  The loaded version stays live and callable until close().
        """
        with self._lock:
            if self._stopped or self._closed:
                return
            self._stopped = True
            self._unwatch()
            self._watch.wake()

    def update(self) -> Library:
        """Load the library, or reload it if the file changed since the last load.

        Returns the live Library (the same object every time).

        Raises:
            LoadError: the new file cannot be loaded (the message says why); the previous
                version stays live and keeps answering.
            HotReloadError: the reloader is closed.
        """
        with self._lock:
            self._check_open()
            # Unload what drained since the last call first: the version this call replaces
            # is unloaded by the next update(), poll() or watch, off the path to the new code.
            self._collect()
            if not (self._pending or self._build_pending):
                self._read_events()
            build = not self._background_builds or self._current is None
        if build:
            self._build_if_needed()
        with self._lock:
            before = self._loads
            try:
                while self._building and self._current is None:
                    self._built.wait()  # another thread builds the first version
                for _ in range(_OVERTAKEN_RETRIES):
                    if not (self._pending or self._current is None):
                        break
                    self._pending = False
                    self._reload()
                if self._current is None:
                    raise LoadError(self._label, "it kept changing while being read")
            except HotReloadError as exc:
                self._notify(self._on_error, exc)
                raise
            if before and self._loads != before:
                self._notify(self._on_reload, before, self._loads)
            return self.library

    def rollback(self) -> Library:
        """Go back to the content of the previous good version, loaded again as a new version.

        Calling it again goes one further back (up to 8 versions).  The file on disk is not
        touched: its next change loads as usual.

        Raises:
            HotReloadError: there is no earlier version to go back to.
            LoadError: the earlier content cannot be loaded now (its hotr_load refused).
        """
        with self._lock:
            self._check_open()
            self._collect()
            if len(self._contents) < 2:
                raise HotReloadError(f"{self._label!r} has no earlier version to roll back to")
            before = self._loads
            current = self._contents.pop()
            previous = self._contents.pop()
            try:
                code = check_shared_object(previous)
                self._install(previous, code, time.perf_counter(), rollback=True)
            except HotReloadError as exc:
                self._contents.extend((previous, current))
                self._notify(self._on_error, exc)
                raise
            self._notify(self._on_reload, before, self._loads)
            return self.library

    def on_reload(self, callback: Callable[[int, int], object]) -> Callable[[int, int], object]:
        """Call `callback(old_version, new_version)` after each successful reload or rollback.

        Runs in the thread that reloaded; an exception it raises is logged, not propagated.
        Returns `callback`, so it works as a decorator.
        """
        self._on_reload.append(callback)
        return callback

    def on_error(
        self, callback: Callable[[HotReloadError], object]
    ) -> Callable[[HotReloadError], object]:
        """Call `callback(error)` when a reload fails (the error is still raised or logged).

        Runs in the thread that reloaded; an exception it raises is logged, not propagated.
        Returns `callback`, so it works as a decorator.
        """
        self._on_error.append(callback)
        return callback

    def _notify(self, callbacks: Sequence[Callable[..., object]], *args: object) -> None:
        for callback in callbacks:
            try:
                callback(*args)
            except Exception:
                logger.exception("callback %r for %s raised", callback, self._label)

    def poll(self) -> bool:
        """Return True if a change is waiting for update(); never blocks."""
        with self._lock:
            self._check_open()
            self._read_events()
            self._collect()
            return self._pending or self._build_pending

    def watch_for_changes(self, timeout: float | None = None) -> int:
        """Block until the file changed (1), `timeout` seconds passed (0), or an error (-1).

        Changes closer together than `debounce` are reported once, `debounce` after the
        previous reload.  Errors (the directory was removed, the reloader stopped or closed)
        are logged.

        Raises:
            HotReloadError: a hotr.Watcher drives this reloader (use poll() and update()).
        """
        if self._shared is not None:
            raise HotReloadError(f"{self._label!r} is watched by a hotr.Watcher: use poll()")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                step = self._ready(deadline)
            if isinstance(step, int):
                return step
            self._wait(step)

    async def wait_for_change(self, timeout: float | None = None) -> bool:
        """Wait on the running event loop until a change is ready (True) or `timeout` (False).

        The inotify descriptor is watched with ``loop.add_reader``: no thread, no polling (the
        polling backend sleeps on the loop between its scans).  update() applies the change.

        Raises:
            HotReloadError: the reloader is stopped or closed, or its directory was removed.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                step = self._ready(deadline)
            if step == 1:
                return True
            if step == 0:
                return False
            if step == -1:
                raise HotReloadError(
                    f"{self._label!r} is not being watched (stopped, closed "
                    "or its directory is gone)"
                )
            assert not isinstance(step, int)
            await self._sleep_on_loop(loop, step)

    async def changes(self) -> AsyncIterator[VersionInfo]:
        """Reload on every change, on the running loop; yield each new version.

        ``async for version in r.changes(): ...``.  A version that fails to load is logged
        (and passed to on_error callbacks) and the iteration goes on; it ends when the reloader
        is stopped or closed.  Builds run in the loop's default executor, loads on the loop.
        """
        loop = asyncio.get_running_loop()
        while not self.stopped:
            try:
                if not await self.wait_for_change():
                    continue
            except HotReloadError:
                if self.stopped:
                    return
                await asyncio.sleep(_REWATCH_INTERVAL)  # the directory is gone: wait for it
                continue
            before = self.version
            try:
                if self._builder is not None and self._build_pending:
                    await loop.run_in_executor(None, self.update)
                else:
                    self.update()
            except HotReloadError as exc:
                if self.stopped:
                    return
                logger.error("%s", exc)
                continue
            if self.version != before:
                yield self.history[-1]

    async def _sleep_on_loop(self, loop: asyncio.AbstractEventLoop, wait: float | None) -> None:
        try:
            fd = self._watch.fileno()
        except OSError:  # the polling backend: sleep until its next scan is due
            await asyncio.sleep(_REWATCH_INTERVAL if wait is None else wait)
            return
        readable: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(fd, wake)
        try:
            await asyncio.wait_for(readable, wait)
        except asyncio.TimeoutError:
            pass
        finally:
            loop.remove_reader(fd)

    def _ready(self, deadline: float | None, *, loads: bool = True) -> int | float | None:
        """One step of waiting: 1 ready, 0 timed out, -1 error, else seconds to wait (None:
        until an event).  With loads=False only a pending build counts.  Lock held."""
        if self._closed or self._stopped:
            return -1
        try:
            self._read_events()
        except OSError as exc:
            logger.error("watching %s failed: %s", self.path, exc)
            return -1
        self._collect()
        if self._lost and not self._lost_reported:
            self._lost_reported = True
            return -1
        now = time.monotonic()
        wait = None if deadline is None else deadline - now
        if (self._pending and loads) or self._build_pending:
            ready_in = self._last_reload + self.debounce - now
            if ready_in <= 0:
                return 1
            wait = ready_in if wait is None else min(wait, ready_in)
        if self._retired:
            wait = _DRAIN_INTERVAL if wait is None else min(wait, _DRAIN_INTERVAL)
        if self._lost:
            wait = _REWATCH_INTERVAL if wait is None else min(wait, _REWATCH_INTERVAL)
        if wait is not None and wait <= 0:
            return 0
        return wait

    def _deliver(self, changes: list[Change]) -> None:
        """Changes for this reloader, read by its hotr.Watcher's thread."""
        with self._lock:
            if not self._closed and not self._stopped:
                self._apply(changes)

    def _background_wait(self, *, manual: bool) -> float | None:
        """Seconds until a background thread should look at this reloader again."""
        with self._lock:
            step = self._ready(None, loads=not manual)
        if step == 1:
            return 0.0
        return _REWATCH_INTERVAL if step == -1 else step

    def _has_work(self) -> bool:
        """Something is waiting on a timer: a debounced change, a draining version, a lost
        directory.  Read without the lock: a stale answer costs one more look."""
        return bool(
            self._pending or self._build_pending or self._retired or self._lost or self._unhashed
        )

    def _background_step(self, *, manual: bool) -> None:
        """What a background thread (hotr.load's, a hotr.Watcher's) does after each wake-up:
        reload when a change is ready; with manual=True only run the build, and leave the load
        to the program's update()."""
        with self._lock:
            if self._closed or self._stopped:
                return
            if self._ready(None, loads=not manual) != 1:
                return
        try:
            if manual:
                self._build_if_needed()
            else:
                self.update()
        except HotReloadError as exc:
            if not self.stopped:
                logger.error("%s; the previous version stays live", exc)

    def _wait(self, timeout: float | None) -> None:
        """Block on the backend; close() from another thread releases it only afterwards."""
        with self._lock:
            if self._closed or self._stopped:
                return
            self._waiters += 1
        try:
            self._watch.wait(timeout)
        finally:
            self._leave_wait()

    def _leave_wait(self) -> None:
        with self._lock:
            self._waiters -= 1
            if self._closed and self._waiters == 0:
                self._release()

    def close(self) -> None:
        """Unload every version (cleanup hooks first) and remove the private copies.

        Idempotent.  Live functions raise HotReloadError afterwards.  A version with calls still
        running in other threads is left mapped, never unmapped under them.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            _open_reloaders.discard(self)
            if self._shared is not None:
                self._unwatch()
                self._shared._forget(self)
            if self._task is not None and not self._task.done():
                with contextlib.suppress(RuntimeError):  # its loop is closed: nothing runs it
                    self._task.get_loop().call_soon_threadsafe(self._task.cancel)
            if os.getpid() == self._owner_pid:
                self._unload_all()
            self._watch.wake()
            if self._waiters == 0:
                self._release()
        logger.debug("closed reloader for %s", self.path)

    def __enter__(self) -> HotReloader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"version {self._loads}"
        return f"<hotr.HotReloader {self._label!r} {state}>"

    # -- watching -----------------------------------------------------------------------------

    def _start_watching(self, *, fallback: bool) -> None:
        """Add the first watches; out of inotify watches (ENOSPC) in auto mode, poll instead."""
        try:
            self._watch_inputs()
            if self._watch_library:
                self._rewatch()
        except OSError as exc:
            if not fallback or exc.errno != errno.ENOSPC:
                raise
            interval = float(os.environ.get("HOTR_POLL_INTERVAL", DEFAULT_POLL_INTERVAL))
            logger.warning("no inotify watches left (%s): polling every %g s", exc, interval)
            self._watch.close()
            self._watch = PollingWatcher(interval)
            self._finalizer.detach()
            self._finalizer = _finalizer(self, self._watch, self._store)
            self._inputs, self._watched = set(), set()
            self._start_watching(fallback=False)

    def _rewatch(self) -> None:
        """Watch the directory of the path, and of its target when it is a symlink."""
        wanted = {self.path, os.path.realpath(self.path)}
        key = (self._token, None)
        for gone in self._watched - wanted:
            self._watch.remove(gone, key)
        for path in sorted(wanted - self._watched):
            try:
                self._watch.add(path, key)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise
                if not self._lost:
                    logger.error("cannot watch the directory of %s: %s", path, exc.strerror)
                self._lost = True
                self._watched = set()
                return
        if self._lost:
            logger.info("watching %s again", self.path)
            self._pending = True
        self._lost = self._lost_reported = False
        self._watched = wanted

    def _watch_inputs(self) -> None:
        """Watch the sources and the headers the last build used (from its dependency files)."""
        wanted = self._builder.inputs() if self._builder is not None else set()
        for gone in self._inputs - wanted:
            self._watch.remove(gone, (self._token, gone))
        for path in wanted - self._inputs:
            self._watch.add(path, (self._token, path))
        self._inputs = wanted

    def _unwatch(self) -> None:
        """Remove every watch of this reloader (the backend may serve others)."""
        for path in self._watched:
            self._watch.remove(path, (self._token, None))
        for path in self._inputs:
            self._watch.remove(path, (self._token, path))
        self._watched, self._inputs = set(), set()

    def _read_events(self) -> None:
        if self._shared is None and not self._stopped:
            self._apply(self._watch.read())

    def _apply(self, changes: list[Change]) -> None:
        """Take in changes of this reloader's files (from its backend or a Watcher)."""
        for change in changes:
            _, path = cast(_Key, change.key)
            if path is not None:
                if change.kind is ChangeKind.WRITTEN:
                    self._build_pending = True
                    self._changed.add(path)
                elif change.kind is ChangeKind.LOST:
                    logger.error("the directory of %s was removed or renamed", path)
                    self._inputs.discard(path)
            elif change.kind is ChangeKind.LOST:
                logger.error(
                    "the directory of %s was removed or renamed; the loaded version stays live",
                    self.path,
                )
                self._lost = True
                self._watched = set()
            elif change.kind is ChangeKind.WRITTEN:
                self._pending = True
                self._changed.add(self.path)
        if self._stopped or not self._watch_library:
            return
        if self._lost:
            self._rewatch()
        elif self._pending and os.path.islink(self.path):
            self._rewatch()  # a retargeted symlink moves the file to watch

    def _build_if_needed(self) -> None:
        """Run the build when sources changed, without holding the lock: other threads keep
        calling poll() and update() (which loads nothing new meanwhile)."""
        with self._lock:
            builder = self._builder
            if builder is None or self._building:
                return
            if not (self._build_pending or self._current is None):
                return
            self._build_pending = False
            self._building = True
        seconds = None
        try:
            seconds = builder.run()
        except BuildError as exc:
            exc.path = self._label
            self._notify(self._on_error, exc)
            raise
        finally:
            with self._lock:
                self._building = False
                self._watch_inputs()
                if seconds is not None:
                    self._build_seconds = seconds
                    self._pending = True
                    logger.info("built %s in %.1f ms", self._label, seconds * 1000)
                self._built.notify_all()

    # -- loading ------------------------------------------------------------------------------

    def _reload(self) -> None:
        started = time.perf_counter()
        try:
            data = _read_regular_file(self.path)
        except FileNotFoundError:
            if self._current is None:
                raise LoadError(self._label, "the file does not exist") from None
            logger.info("%s was removed; version %d stays live", self.path, self._loads)
            return
        except OSError as exc:
            raise LoadError(self._label, f"cannot read it: {exc.strerror}") from exc
        if self._current is not None and data == self._current.data:
            logger.debug("%s was written with the same content; not reloading", self.path)
            return
        try:
            code = check_shared_object(data)
        except ElfError as exc:
            self._read_events()
            if self._pending:  # a newer write is already in: this one was overtaken
                logger.debug("%s: %s; a newer write follows", self.path, exc)
                return
            raise LoadError(self._label, str(exc)) from None
        self._install(data, code, started)

    def _install(
        self, data: bytes, code: list[tuple[int, int]], started: float, *, rollback: bool = False
    ) -> None:
        """Load checked bytes as the next version, hand the state over, switch to it."""
        try:
            copy = self._store.write(os.path.basename(self.path), data)
        except OSError as exc:
            raise LoadError(
                self._label, f"cannot write its private copy in {self._store.path!r}: {exc}"
            ) from exc
        if self.probe:
            self._probe(copy)
        try:
            handle = _dl.dlopen(copy)
        except OSError as exc:
            self._store.remove(copy)
            reason = str(exc).replace(f"{copy}: ", "")
            raise LoadError(self._label, reason) from None
        version = Version(self._loads + 1, handle, copy, data, time.time(), code)
        version.base = _dl.base_address(handle)
        for name in (*self._functions, *_HOOKS):
            address = version.symbol(name)
            if address and not version.is_code(address):
                _dl.dlclose(handle)
                self._store.remove(copy)
                raise LoadError(self._label, f"{name!r} is not in an executable segment")
        old = self._current
        carried: tuple[str, ...] = ()
        skipped: tuple[tuple[str, str], ...] = ()
        if old is not None:
            self._call_hook(old, "hotr_unload", reloading=1)
            if self.keep_globals:
                carried, skipped = self._carry_globals(old, version)
        status = self._call_hook(version, "hotr_load", reloading=int(old is not None))
        if status != 0:
            self._unload(version)
            if old is not None:
                self._call_hook(old, "hotr_load", reloading=1)
            stays = f"version {old.number} stays live" if old else "nothing was loaded"
            raise LoadError(self._label, f"its hotr_load returned {status}; {stays}")
        self._last_reload = time.monotonic()
        self._switch_to(version)
        self._loads += 1
        self._contents.append(data)
        load_seconds = time.perf_counter() - started
        self._history.append(
            VersionInfo(
                version.number,
                version.loaded_at,
                "",  # hashed by the next housekeeping, off the path to the new code
                load_seconds * 1000,
                None if self._build_seconds is None else self._build_seconds * 1000,
                tuple(sorted(self._changed)),
                rollback,
                carried,
                skipped,
            )
        )
        self._unhashed[version.number] = data
        self._changed.clear()
        self._build_seconds = None
        logger.info(
            "%s version %d of %s in %.2f ms",
            "rolled back to the previous content as" if rollback else "loaded",
            self._loads,
            self._label,
            load_seconds * 1000,
        )

    def _probe(self, copy: str) -> None:
        """Load `copy` in a child process first: a constructor that crashes kills only it."""
        try:
            proc = subprocess.run(
                [sys.executable, "-S", "-c", _PROBE, copy],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=_PROBE_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            self._store.remove(copy)
            raise LoadError(
                self._label, f"loading it in a probe process did not finish in {_PROBE_TIMEOUT} s"
            ) from None
        if proc.returncode < 0:
            self._store.remove(copy)
            name = signal.Signals(-proc.returncode).name
            raise LoadError(self._label, f"loading it crashed a probe process ({name})")
        if proc.returncode != 0:
            self._store.remove(copy)
            reason = proc.stderr.strip().replace(f"{copy}: ", "") or f"exit {proc.returncode}"
            raise LoadError(self._label, reason)

    def _call_hook(self, version: Version, name: str, *, reloading: int) -> int:
        """Call hotr_load / hotr_unload of `version` if it exports it; return its status."""
        address = version.symbol(name)
        if not address:
            return 0
        status = int(_HOOK(address)(ctypes.byref(self._state), version.number, reloading))
        if status != 0 and name == "hotr_unload":
            logger.warning("hotr_unload of version %d returned %d", version.number, status)
        return status

    def _carry_globals(
        self, old: Version, new: Version
    ) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
        """Copy same-name, same-size globals from `old` to `new`; report what was not."""
        before, after = old.globals(), new.globals()
        old_base, new_base = _dl.base_address(old.handle), _dl.base_address(new.handle)
        carried: list[str] = []
        skipped: dict[str, str] = {}
        for name, (offset, size) in after.variables.items():
            if name not in before.variables:
                skipped[name] = "new in this version"
                continue
            old_offset, old_size = before.variables[name]
            if old_size != size:
                skipped[name] = f"size changed from {old_size} to {size} bytes"
                continue
            ctypes.memmove(new_base + offset, old_base + old_offset, size)
            carried.append(name)
        for name in before.variables.keys() - after.variables.keys():
            skipped[name] = "removed in this version"
        for name in after.reset:
            skipped[name] = "marked HOTR_RESET"
        for name in after.ambiguous:
            skipped[name] = "defined more than once (static in several files)"
        if carried or skipped:
            logger.info(
                "globals carried into version %d: %s; not carried: %s",
                new.number,
                ", ".join(sorted(carried)) or "none",
                "; ".join(f"{n} ({why})" for n, why in sorted(skipped.items())) or "none",
            )
        return tuple(sorted(carried)), tuple(sorted(skipped.items()))

    def _switch_to(self, version: Version) -> None:
        names = list(self._functions)
        functions = [self._functions[n] for n in names]
        addresses = [version.symbol(n) or 0 for n in names]
        targets = [
            self._target(version, n, a) if a else 0 for n, a in zip(names, addresses, strict=True)
        ]
        missing: list[BaseException | None] = [None] * len(names)
        for i, (n, address) in enumerate(zip(names, addresses, strict=True)):
            if not address:
                missing[i] = SymbolNotFoundError(self._label, n, version.number)
                logger.warning(
                    "version %d of %s has no %r; calling it raises until a version provides it",
                    version.number,
                    self.path,
                    n,
                )
        retarget(functions, targets, version.pin, missing, self._live)
        if self._current is not None:
            self._retired.append(self._current)
        self._current = version

    def _function(self, name: str) -> Function:
        with self._lock:
            function = self._functions.get(name)
            if function is not None:
                return function
            if self._current is None:
                raise HotReloadError(f"{self._label!r} is not loaded: call update() first")
            address = self._current.symbol(name)
            if address is None:
                raise SymbolNotFoundError(self._label, name, self._current.number)
            if not self._current.is_code(address):
                raise HotReloadError(
                    f"{name!r} in {self._label!r} is not a function (not in executable code)"
                )
            target = self._target(self._current, name, address)
            if self._ffi is None:
                cfunc = CFunc(address)
                function = Function(cfunc, ctypes.addressof(cfunc))
            else:
                function = Function(target, 0)  # no slot: retarget() swaps the cdata itself
            function.__name__ = name
            missing = SymbolNotFoundError(self._label, name, self._current.number)
            retarget([function], [target], self._current.pin, [missing])
            self._functions[name] = function
            return function

    def _target(self, version: Version, name: str, address: int) -> object:
        """What a live function is pointed at: the address (ctypes) or a new cdata (cffi)."""
        if self._ffi is None:
            return address
        ctype = self._cffi_types.get(name)
        if ctype is None:
            # The declared type comes from the user's cdef(): ffi.dlopen of the same copy
            # returns glibc's existing handle (no second mapping), closed again at once.
            declared = self._ffi.dlopen(version.copy)
            try:
                ctype = self._ffi.typeof(getattr(declared, name))
            except (AttributeError, KeyError, TypeError) as exc:  # undeclared, variable, other
                raise HotReloadError(
                    f"{name!r} is not a function declared in the ffi's cdef(): {exc}"
                ) from None
            finally:
                self._ffi.dlclose(declared)
            self._cffi_types[name] = ctype
        return self._ffi.cast(ctype, address)

    def _handle(self) -> int:
        with self._lock:
            if self._current is None:
                raise HotReloadError(f"{self._label!r} is not loaded: call update() first")
            return self._current.handle

    # -- unloading ----------------------------------------------------------------------------

    def _hash_history(self) -> None:
        """Fill in the SHA-256 of versions loaded since the last housekeeping."""
        if not self._unhashed:
            return
        for i, info in enumerate(self._history):
            data = self._unhashed.pop(info.number, None)
            if data is not None:
                self._history[i] = dataclasses.replace(
                    info, sha256=hashlib.sha256(data).hexdigest()
                )
        self._unhashed.clear()  # versions already gone from the history

    def _collect(self) -> None:
        """Housekeeping: unload retired versions no call is running in, hash the history."""
        self._hash_history()
        for version in [v for v in self._retired if v.pin.inflight == 0]:
            self._retired.remove(version)
            self._unload(version)

    def _unload(self, version: Version) -> None:
        cleanup = version.symbol("cleanup")
        if cleanup:
            _VOID_FN(cleanup)()
        try:
            _dl.dlclose(version.handle)
        except OSError as exc:
            logger.warning("dlclose of version %d of %s: %s", version.number, self.path, exc)
        self._store.remove(version.copy)
        logger.debug("unloaded version %d of %s", version.number, self.path)

    def _unload_all(self) -> None:
        closed = [HotReloadError(f"{self._label!r} was closed") for _ in self._functions]
        retarget(list(self._functions.values()), [0] * len(closed), Pin(), closed)
        if self._current is not None:
            self._call_hook(self._current, "hotr_unload", reloading=0)
        versions = [*self._retired, *([self._current] if self._current else [])]
        self._retired, self._current = [], None
        for version in versions:
            if version.pin.inflight == 0:
                self._unload(version)
            else:
                logger.warning(
                    "version %d of %s still has calls running; it stays mapped",
                    version.number,
                    self.path,
                )
                stranded.append(version)

    def _check_open(self) -> None:
        if self._closed:
            raise HotReloadError(f"the reloader for {self._label!r} is closed")

    def _release(self) -> None:
        """Close the backend and remove the private directory, once; a second caller waits
        until the first is done (interpreter exit must not end while a thread is at it)."""
        # detach() and a call of our own, not self._finalizer(): once weakref's own exit hook
        # has run (it runs before hotr's), calling a finalizer does nothing.
        with self._release_lock:
            detached = self._finalizer.detach()
            if detached is not None:
                _, release, args, _ = detached
                release(*args)

    def _detach(self) -> None:
        """In a forked child: stop using what the parent owns, keep the mapped code.

        Only the forking thread lives on in the child: a lock another thread held at the fork
        stays held forever there, so the locks start anew.
        """
        self._lock = threading.RLock()
        self._built = threading.Condition(self._lock)
        self._release_lock = threading.Lock()
        self._closed = True
        self._release()


def _read_regular_file(path: str) -> bytes:
    """Read a whole regular file; O_NONBLOCK so a FIFO put in its place cannot hang hotr."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        want = info.st_size + 1  # one read(2) for the whole file, unless it is still growing
        chunks = [os.read(fd, want)]
        while len(chunks[-1]) == want and (chunk := os.read(fd, 1 << 20)):
            chunks.append(chunk)
            want = 1 << 20
        return b"".join(chunks)
    finally:
        os.close(fd)


def _finalizer(
    reloader: HotReloader, watch: FileWatcher | None, store: PrivateStore
) -> weakref.finalize[[FileWatcher | None, PrivateStore], HotReloader]:
    """Release `watch` and `store` when `reloader` is garbage-collected unclosed, or on demand.

    Not at exit: weakref runs its exit finalizers before hotr's own atexit close(), which must
    come first (cleanup hooks, then the files), with any background thread still waiting.
    """
    finalizer = weakref.finalize(reloader, _release, watch, store)
    finalizer.atexit = False
    return finalizer


def _release(watch: FileWatcher | None, store: PrivateStore) -> None:
    if watch is not None:
        watch.close()
    store.close()


_open_reloaders: weakref.WeakSet[HotReloader] = weakref.WeakSet()


def _close_all() -> None:
    """At exit: close every open reloader, let waiting threads leave (up to 1 s), release."""
    reloaders = list(_open_reloaders)
    for reloader in reloaders:
        try:
            reloader.close()
        except Exception:
            logger.exception("closing %r at exit failed", reloader)
    deadline = time.monotonic() + _EXIT_WAIT
    while any(r._waiters for r in reloaders) and time.monotonic() < deadline:
        time.sleep(0.005)  # daemon threads still run during atexit: they wake and leave
    for reloader in reloaders:
        reloader._release()


def _detach_all_in_child() -> None:
    for reloader in list(_open_reloaders):
        reloader._detach()
    _open_reloaders.clear()


atexit.register(_close_all)
os.register_at_fork(after_in_child=_detach_all_in_child)
