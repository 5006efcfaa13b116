"""HotReloader: the public face of one reloader (the work is done by ReloadCore, _core.py)."""

from __future__ import annotations

import os
from _collections_abc import Sequence  # collections.abc imports collections (1.5 ms)
from types import TracebackType

from . import _drivers, _env
from ._build import is_source
from ._core import ReloadCore
from ._exceptions import HotReloadError
from ._history import VersionInfo
from ._library import GUARD_SUPPORTED, Library
from ._reactor import reactor
from ._source import ChangeSource, absolute

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from typing import Any, ClassVar

    from ._core import ErrorCallback, ReloadCallback
    from .testing import ScriptedBackend

PathArg = str | os.PathLike[str]
_INF = float("inf")


class HotReloader:
    """Watch a shared library, or C sources to build one, and reload it when it changes.

    Nothing is loaded until the first update().  Relative paths are resolved once, now.

    Args:
        path: the ``.so`` file, or C source file(s) to compile into a private library.
        sources: files to build `path` from when they change (C sources for the default
            compiler command, anything for `build`).  Headers they include are watched too.
        build: a custom build command as a list of arguments (run without a shell) that
            writes `path`, e.g. ``["make"]`` or ``["cargo", "build"]``.  Default: ``$CC
            -shared -fPIC``.
        cc: compiler for the default command (default ``$CC``, else ``cc``), e.g. ``"tcc"``.
        flags: a list of extra flags for the default command (``["-O2", "-lm"]``); each goes
            to the compile steps, the link step, or both, by its kind (docs/builds.md).
        compile_flags: extra flags for the compile steps only.
        link_flags: extra flags for the link step only.
        jobs: most compilers running at once (default: the number of CPUs).
        build_timeout: seconds a build may run before it is killed and reported (default 60);
            for the default compilers, each compiler or linker run.
        keep_globals: copy global and static variables with the same name and size from the old
            version into the new one before its hotr_load runs (see hotr.h); r.history says what
            was carried and what was not.
        probe: load each new version in a child process first, so that a version whose
            constructor crashes (abort, segfault) is refused instead of killing this process
            (for hotr.load_module, its module init too).  Costs a process start (about 20 ms)
            per reload; constructors run twice.
        ffi: a ``cffi.FFI`` whose ``cdef()`` declares the library's functions: they are then
            called through cffi (live cdata functions, same reload guarantees) instead of ctypes.
        prototypes: when hotr builds C sources with its default command, give each function the
            ``argtypes`` and ``restype`` of its C prototype, read from the preprocessed sources
            of each build (default True; see docs/prototypes.md).  Types you set yourself win.
        guard: a crash (SIGSEGV, SIGBUS, SIGFPE, SIGILL) in the version's own code during a call
            raises hotr.CrashError in the caller, after rolling back to the previous good
            version, instead of killing the process (docs/guard.md).  Default: ``$HOTR_GUARD``
            (``1``: on), else off.
        backend: how changes are seen: ``"inotify"``, ``"poll"`` (stat and hash every
            ``$HOTR_POLL_INTERVAL`` seconds, default 0.5, for network file systems), ``"auto"``
            (default: ``$HOTR_BACKEND`` if set, else inotify unless the file is on a network
            file system or inotify cannot be had), or a ``hotr.testing.ScriptedBackend``.
        debounce: seconds of quiet that end a burst of changes (default 0.02).  The first
            change after a quiet spell is applied at once; the changes that follow it closer
            than this are one reload of the final content, once the file has been quiet for
            `debounce` (at least once a second if it never is).

    Raises:
        FileNotFoundError: `path` (or a source) does not exist.
        TypeError, ValueError: an argument has the wrong type or value (the message names it).
        HotReloadError: the private directory or the watch cannot be set up.

    Example::

        with hotr.HotReloader("./libhot.so") as r:
            lib = r.update()
            while True:
                lib.step()
                if r.poll():
                    r.update()
    """

    _module: ClassVar[bool] = False  # builds an extension module (hotr.load_module)

    def __init__(
        self,
        path: PathArg | Sequence[PathArg],
        *,
        sources: Sequence[PathArg] = (),
        build: Sequence[str] | None = None,
        cc: str | None = None,
        flags: Sequence[str] = (),
        compile_flags: Sequence[str] = (),
        link_flags: Sequence[str] = (),
        jobs: int | None = None,
        build_timeout: float = 60.0,
        keep_globals: bool = False,
        probe: bool = False,
        ffi: Any = None,
        prototypes: bool = True,
        guard: bool | None = None,
        backend: str | ScriptedBackend = "auto",
        debounce: float = 0.02,
    ) -> None:
        paths = checked_paths(path, "path")
        inputs = checked_paths(sources, "sources") if sources else []
        _arguments(build, "build")
        _arguments(flags, "flags")
        _arguments(compile_flags, "compile_flags")
        _arguments(link_flags, "link_flags")
        if jobs is not None and type(jobs) is not int:
            raise TypeError(f"jobs must be a whole number or None, not {jobs!r}")
        if jobs is not None and jobs < 1:
            raise ValueError(f"jobs: expected a whole number, at least 1; got {jobs!r}")
        if build is not None and not build:
            raise ValueError("build is empty: give the command that builds the library")
        _seconds(build_timeout, "build_timeout", zero=False)
        _seconds(debounce, "debounce", zero=True)
        if cc is not None and not isinstance(cc, str):
            raise TypeError(f"cc must be a compiler's name (e.g. cc='tcc') or None, not {cc!r}")
        if cc is not None and not cc.strip():
            raise ValueError("cc is empty: name a compiler (e.g. cc='tcc'), or None for $CC")
        for flag, name in (
            (keep_globals, "keep_globals"),
            (probe, "probe"),
            (prototypes, "prototypes"),
        ):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, not {flag!r}")
        if ffi is not None and not callable(getattr(ffi, "dlopen", None)):
            raise TypeError(f"ffi must be a cffi.FFI or None, not {type(ffi).__name__}")
        if build is None and all(is_source(p, module=self._module) for p in paths):
            inputs, library = paths + inputs, None  # compile into the private directory
        elif len(paths) == 1:
            library = paths[0]
        else:
            raise ValueError("path: give one shared library, or C sources to build one from")
        if build is not None and not inputs:
            raise ValueError("build: a build command needs sources= to know when to run")
        for source in inputs:
            if not os.path.exists(source):
                raise FileNotFoundError(2, "No such source file", source)
        if library is None:  # a source compiled twice would fail every link ("multiple definition")
            files: dict[tuple[int, int], str] = {}
            for source in inputs:
                info = os.stat(source)
                first = files.get((info.st_dev, info.st_ino))
                if first is not None:
                    raise ValueError(
                        f"path names one source twice ({first!r}, {source!r}): give it once"
                    )
                files[info.st_dev, info.st_ino] = source
        if library is not None and not inputs and not os.path.exists(library):
            raise FileNotFoundError(2, "No such shared library", library)
        if guard is None:
            guard = _env.guard()
        elif not isinstance(guard, bool):
            raise TypeError(f"guard: expected True or False, got {type(guard).__name__}")
        if guard and not GUARD_SUPPORTED:
            raise HotReloadError("guard=True: guarded calls need Linux on x86-64")
        if isinstance(backend, str):
            if backend not in _env.BACKENDS:
                raise ValueError(
                    f"unknown backend {backend!r}: use one of {', '.join(_env.BACKENDS)}"
                )
            watcher: ChangeSource = reactor()
            chosen = backend
        elif isinstance(getattr(backend, "name", None), str) and callable(
            getattr(backend, "watch", None)
        ):
            watcher, chosen = backend, backend.name
        else:
            raise TypeError(
                "backend must be 'auto', 'inotify', 'poll' or a hotr.testing.ScriptedBackend, "
                f"not {type(backend).__name__}"
            )
        self._core = ReloadCore(
            owner=self,
            label=library or _sources_label(inputs),
            library=library,
            inputs=inputs,
            build=build,
            cc=cc,
            flags=flags,
            compile_flags=compile_flags,
            link_flags=link_flags,
            jobs=jobs,
            build_timeout=build_timeout,
            keep_globals=keep_globals,
            probe=probe,
            ffi=ffi,
            prototypes=prototypes,
            guard=guard,
            source=watcher,
            backend=chosen,
            debounce=debounce,
            module=self._module,
        )
        self.library = Library(self, self._core.function, self._core.handle)

    @property
    def path(self) -> str:
        """The library file: the one given, or the private one built from the sources."""
        return self._core.path

    @property
    def version(self) -> int:
        """Number of the live version (1 after the first load; 0 before)."""
        return self._core.version

    @property
    def history(self) -> list[VersionInfo]:
        """The versions loaded so far, oldest first (the last 100)."""
        return self._core.history()

    @property
    def closed(self) -> bool:
        """True once close() has run."""
        return self._core.closed

    @property
    def stopped(self) -> bool:
        """True once stop() or close() has run: no more changes are seen."""
        return self._core.stopped

    @property
    def backend(self) -> str:
        """How changes are seen: ``"inotify"``, ``"poll"`` (or both, ``"inotify+poll"``)."""
        return self._core.tracker.backend

    def update(self) -> Library:
        """Load the library, or reload it if it changed (rebuilding changed sources first).

        Returns the live Library (the same object every time).  Safe to call from any thread,
        beside a background thread (hotr.load) and other waiters: each change loads once.

        Raises:
            LoadError: the new version cannot be loaded (BuildError: cannot be built); the
                message says why, and the previous version stays live.
            HotReloadError: the reloader is closed.
        """
        self._core.update(self._core.view)
        return self.library

    def poll(self) -> bool:
        """True if a change is waiting for update(); never blocks.

        It answers "has the library changed since the version I have?": before the first
        update() there is no version, so it is False (call update() to load).
        """
        self._core.check_open()
        self._core.sync()
        self._core.housekeep()
        seen = self._core.tracker.snapshot()  # first: a change after it is news to a wait
        waiting = self._core.actionable()
        self._core.view.look(shared=True, at=seen)
        return waiting

    def watch_for_changes(self, timeout: float | None = None) -> int:
        """Block until a change (1), `timeout` seconds without one (0), or an error (-1).

        It reports each change once per thread: one that happened since this thread's last
        update(), poll() or wait (a thread's first wait: since the last update() or poll()),
        even if another thread or hotr.load's thread has loaded it meanwhile.  Any number of
        threads may wait at once; each of them sees each change.  -1 means the reloader is
        stopped or closed, or a watched directory went away (reported once; hotr watches for it
        to come back).

        Raises:
            TypeError, ValueError: `timeout` is not None or a number of seconds >= 0.
        """
        if timeout is not None:
            _seconds(timeout, "timeout", zero=True)
        return _drivers.wait(self._core, timeout, self._core.view)

    async def wait_for_change(self, timeout: float | None = None) -> bool:
        """Wait on the running event loop until a change is ready (True) or `timeout` (False).

        No thread of its own and no polling: the process's watch thread wakes the loop.
        update() applies the change.

        Raises:
            HotReloadError: the reloader is stopped or closed, or its directory was removed.
            TypeError, ValueError: `timeout` is not None or a number of seconds >= 0.
        """
        if timeout is not None:
            _seconds(timeout, "timeout", zero=True)
        return await _drivers.wait_async(self._core, timeout, self._core.view)

    def changes(self) -> AsyncIterator[VersionInfo]:
        """Reload on every change, on the running loop; yield each new version.

        ``async for version in r.changes(): ...``.  A version that fails to load is logged
        (and passed to on_error callbacks) and the iteration goes on; it ends when the reloader
        is stopped or closed.  Builds run in the loop's default executor, loads on the loop.
        """
        return _drivers.follow(self._core, _drivers.Cursor(self._core.view.seen()))

    def fileno(self) -> int:
        """A descriptor for select/selectors/event loops: readable while a change has
        happened that no update() or poll() has taken in yet (and once the reloader ends)."""
        return self._core.fileno()

    def rollback(self) -> Library:
        """Go back to the content of the previous good version, loaded again as a new version.

        Calling it again goes one further back (up to 8 versions).  The file on disk is not
        touched: its next change loads as usual.

        Raises:
            HotReloadError: there is no earlier version to go back to.
            LoadError: the earlier content cannot be loaded now (its hotr_load refused).
        """
        self._core.rollback()
        return self.library

    def on_reload(self, callback: ReloadCallback) -> ReloadCallback:
        """Call `callback(old_version, new_version)` after each successful reload or rollback.

        Runs in the thread that reloaded; an exception it raises is logged, not propagated.
        Returns `callback`, so it works as a decorator.
        """
        _callable(callback, "on_reload")
        self._core.on_reload(callback)
        return callback

    def on_error(self, callback: ErrorCallback) -> ErrorCallback:
        """Call `callback(error)` when a reload fails (the error is still raised or logged).

        Runs in the thread that reloaded; an exception it raises is logged, not propagated.
        Returns `callback`, so it works as a decorator.
        """
        _callable(callback, "on_error")
        self._core.on_error(callback)
        return callback

    def stop(self) -> None:
        """Stop watching: no more changes are seen, no more reloads happen (the background
        thread of hotr.load ends).  The loaded version stays live and callable until close().
        """
        self._core.stop()

    def close(self) -> None:
        """Unload every version (cleanup hooks first) and remove the private copies.

        Idempotent.  Live functions raise HotReloadError afterwards.  A version with calls still
        running in other threads is unloaded when the last of them returns, never under them.
        """
        self._core.close()

    def __enter__(self) -> HotReloader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # Garbage-collected unclosed: the versions end as with close() (no live function can
        # be holding on to them: each keeps its reloader alive).
        core = getattr(self, "_core", None)
        if core is not None:
            try:  # at interpreter shutdown anything may be gone
                core.close()
            except Exception:
                pass

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"version {self.version}"
        return f"<hotr.HotReloader {self._core.label!r} {state}>"


def core_of(reloader: HotReloader) -> ReloadCore:
    """The ReloadCore behind `reloader`, for hotr.load and Watcher to drive."""
    return reloader._core


def checked_paths(value: object, name: str) -> list[str]:
    """Absolute paths from one path or a list of them; TypeError/ValueError name `name`, the
    parameter they came in as."""
    items = [value] if isinstance(value, (str, os.PathLike)) else value
    if isinstance(items, (bytes, bytearray)) or not isinstance(items, Sequence):
        fix = f": decode it, os.fsdecode({name})" if isinstance(value, (bytes, bytearray)) else ""
        raise TypeError(
            f"{name} must be a path or a list of paths, not {type(value).__name__}{fix}"
        )
    paths = []
    for item in items:
        text = os.fspath(item) if isinstance(item, (str, os.PathLike)) else item
        if not isinstance(text, str):
            fix = ": decode each, os.fsdecode()" if isinstance(text, (bytes, bytearray)) else ""
            raise TypeError(f"{name} must hold paths, not {type(text).__name__} ({text!r}){fix}")
        if not text:
            raise ValueError(f"{name} is an empty path")
        paths.append(absolute(text))
    if not paths:
        raise ValueError(f"{name} is an empty list")
    return paths


def _arguments(value: object, name: str) -> None:
    """A command or flags must be a list of arguments: a string would be split into letters."""
    if value is None:
        return
    if isinstance(value, (str, bytes)):
        raise TypeError(
            f"{name} must be a list of arguments, e.g. {name}={value.split()!r}, not a string"
        )
    if not isinstance(value, Sequence) or not all(isinstance(a, str) for a in value):
        raise TypeError(f"{name} must be a list of strings")


def _shown(value: float) -> str:
    """repr(value), but a long int by its number of digits: repr() of one over 4300 digits
    raises ValueError (sys.get_int_max_str_digits)."""
    if isinstance(value, float) or -(10**30) < value < 10**30:
        return repr(value)
    magnitude = abs(value)
    digits = max(1, int(magnitude.bit_length() * 0.30102999566398120))  # log10(2): near it
    while 10**digits <= magnitude:
        digits += 1
    while digits > 1 and 10 ** (digits - 1) > magnitude:
        digits -= 1
    return f"an integer of {digits} digits"


def _callable(value: object, name: str) -> None:
    """A callback must be callable: one that is not would fail only at the first reload."""
    if not callable(value):
        raise TypeError(f"{name} must be a callable, not {type(value).__name__}")


def _seconds(value: object, name: str, *, zero: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    shown = _shown(value)
    try:
        seconds = float(value)
    except OverflowError:  # an int past float's range: no clock waits that long
        seconds = _INF if value > 0 else -_INF
    if seconds == _INF:
        raise ValueError(f"{name} must be a finite number of seconds, not {shown}")
    if not seconds >= 0 or (seconds == 0 and not zero):  # NaN is not either
        raise ValueError(
            f"{name} must be a number of seconds {'>=' if zero else '>'} 0, not {shown}"
        )


def _sources_label(inputs: Sequence[str]) -> str:
    """How messages name a reloader of sources: all of a few, the first of many."""
    if len(inputs) <= 3:
        return ", ".join(inputs)
    return f"{inputs[0]} and {len(inputs) - 1} more sources"
