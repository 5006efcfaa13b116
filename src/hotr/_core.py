"""One reloader's parts, put together: where a change enters, and where a version ends.

A change enters through the ChangeTracker (the source calls its sinks; it publishes).  update()
takes it from there: the BuildRunner builds when inputs changed, then the Loader loads when the
library changed, into the VersionSet, which is where every version ends.  Drivers (_drivers.py)
wait on the tracker; the process registry (_process.py) closes the core at exit and abandons it
in a forked child.  `lock` makes loads, rollbacks, housekeeping and close() take turns; builds
run outside it.
"""

from __future__ import annotations

import _signal
import _thread
import os

from . import _process, _signals, _store
from ._drivers import ProgramView
from ._exceptions import BuildError, CrashError, HotReloadError
from ._history import History, VersionInfo
from ._library import Function, FunctionTable
from ._log import logger
from ._pipeline import Loader
from ._source import ChangeSource
from ._tracker import ChangeTracker
from ._versions import VersionSet

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from ._build import BuildRunner
    from ._catalog import PrototypeCatalog

    ErrorCallback = Callable[[HotReloadError], object]
    ReloadCallback = Callable[[int, int], object]


_ACCESS_SIGNALS = (_signal.SIGSEGV, _signal.SIGBUS)  # where si_addr is the address accessed
_HOUSEKEEP_RETRY = 0.01  # seconds until housekeeping put off by a busy reloader is tried again


class ReloadCore:
    """See the module docstring.  HotReloader is its public face."""

    def __init__(
        self,
        *,
        owner: object,
        label: str,
        library: str | None,
        inputs: Sequence[str],
        build: Sequence[str] | None,
        cc: str | None,
        flags: Sequence[str],
        compile_flags: Sequence[str],
        link_flags: Sequence[str],
        jobs: int | None,
        build_timeout: float,
        keep_globals: bool,
        probe: bool,
        ffi: Any,
        prototypes: bool,
        guard: bool,
        source: ChangeSource,
        backend: str,
        debounce: float,
        module: bool = False,
    ) -> None:
        self.label = label
        self.source = source
        self.lock = _thread.RLock()
        self.background_builds = False  # load(manual=True): a thread builds, update() loads
        self.tracker = ChangeTracker(
            source, library=library, debounce=debounce, backend=backend, builds=bool(inputs)
        )
        store = _store.store()
        self.directory = store.new_directory()
        self.builds: BuildRunner | None = None
        catalog: PrototypeCatalog | None = None
        if inputs:
            from ._build import Builder, BuildRunner, library_name  # only builds need subprocess
            from ._catalog import PrototypeCatalog

            library = library or os.path.join(self.directory, library_name(inputs[0]))
            builder = Builder(
                list(inputs),
                library,
                self.directory,
                list(build) if build else None,
                cc,
                flags,
                build_timeout,
                compile_flags=compile_flags,
                link_flags=link_flags,
                jobs=jobs,
                module=module,
            )
            preprocessor = builder.preprocessor()
            if prototypes and ffi is None and preprocessor is not None:
                catalog = PrototypeCatalog(preprocessor, inputs, builder.jobs(), builder.cwd())
            self.builds = BuildRunner(builder, self.tracker, label, catalog)
        assert library is not None  # HotReloader gives a library, or sources to build one
        self.path = library
        self.versions = VersionSet(store, self.tracker.poke)
        self.functions = FunctionTable(label, ffi, owner, self.crashed if guard else None, catalog)
        self._history = History()
        self.loader = Loader(
            label=label,
            path=self.path,
            store=store,
            directory=self.directory,
            versions=self.versions,
            functions=self.functions,
            history=self._history,
            tracker=self.tracker,
            sync=self.sync,
            keep_globals=keep_globals,
            probe=probe,
        )
        self._store = store
        self._on_reload: list[ReloadCallback] = []
        self._on_error: list[ErrorCallback] = []
        self._failure: HotReloadError | None = None  # the last load error, while none is live
        self._attempted = False  # update() was called: poll() and watches report from then on
        self._retrying = False  # a housekeeping retry is scheduled (see housekeep)
        self._closed = self._stopped = self._forked = False
        self._eventfd = -1
        self._eventfd_lock = _thread.allocate_lock()  # the descriptor is written from other threads
        self._eventfd_armed = False  # readable now
        self.view = ProgramView(self.tracker, self._refresh_fd)  # what the program has seen
        try:
            self.tracker.start(inputs)
        except BaseException as exc:
            store.release(self.directory)
            if isinstance(exc, OSError):
                raise HotReloadError(f"cannot watch {label!r}: {exc}") from exc
            raise
        _process.register(self)

    # -- state -------------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        """Stopped, closed, or inherited by a forked child: no more changes come."""
        return self._stopped or self._closed

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def stopped(self) -> bool:
        return self._stopped or self._closed

    @property
    def builds_on_update(self) -> bool:
        return self.builds is not None and not self.background_builds

    @property
    def version(self) -> int:
        pin = self.functions.live[0]
        return pin.number if pin is not None else 0

    def history(self) -> list[VersionInfo]:
        return self._history.infos()

    def _check_not_closed(self) -> None:
        """A forked child still calls the version it has; a closed reloader has none."""
        if self._closed and not self._forked:
            raise HotReloadError(f"the reloader for {self.label!r} is closed; its code is unloaded")

    def check_open(self) -> None:
        if self._forked:
            raise HotReloadError(
                f"the reloader for {self.label!r} belongs to the parent process; this forked "
                "child keeps calling the version loaded at the fork, but cannot reload"
            )
        if self._closed:
            raise HotReloadError(f"the reloader for {self.label!r} is closed")

    def actionable(self) -> bool:
        """True if update() has something to load (or build) now."""
        if self.ended or not self._attempted:
            return False
        if self.tracker.library_pending():
            return True
        return self.builds_on_update and self.build_wanted()

    def build_wanted(self) -> bool:
        return self.builds is not None and self.builds.wanted()

    # -- doing -------------------------------------------------------------------------------

    def sync(self) -> None:
        self.source.sync()

    def housekeep(self) -> None:
        """Unload what drained; put off while a load runs elsewhere.

        Put off, not dropped: the wake-up that led here (a version's last call returned, its
        last object was collected) may be the only one, so the waiters are woken again shortly
        to come back for it.
        """
        if not (self.versions.busy or self.loader.pending or self._store.leftovers):
            return  # nothing to do: the common case, on every wait and update
        if not self.lock.acquire(blocking=False):
            if not self._retrying:  # one retry at a time, however many waiters came by
                self._retrying = True
                self.source.call_at(self.source.clock() + _HOUSEKEEP_RETRY, self._retry)
            return
        try:
            if not self._closed:
                self.loader.housekeep()
                self.versions.housekeep()
        finally:
            self.lock.release()

    def _retry(self) -> None:
        self._retrying = False
        self.tracker.poke()

    def update(self, view: ProgramView | None = None, *, wait: bool = False) -> None:
        """Build if the inputs changed, load if the library changed.  Raises HotReloadError.

        `view` (the program's, for its own calls) is told exactly what this call took in: a
        change that came after that is still news to the program's next wait.  The program's
        update() (and `wait`) waits for another thread's build, then builds what changed since.
        """
        self.check_open()
        self._attempted = True
        self.sync()
        self.housekeep()
        took = self.tracker.snapshot()
        try:
            self._update(wait=wait or view is not None)
        finally:
            if view is not None:
                # What was taken in: the last load's and the last build's generations.
                inputs = self.builds.started_from if self.builds is not None else took.inputs
                taken = took._replace(
                    library=self.tracker.taken, built=self.tracker.taken_built, inputs=inputs
                )
                view.look(shared=True, at=taken)

    def _update(self, *, wait: bool) -> None:
        live = self.versions.current is not None
        if self.builds is not None and (self.builds_on_update or not live):
            try:
                # Asked for: the debounce is no reason to wait.
                self.builds.run(wait=wait or not live, held=True)
            except BuildError as exc:
                self.check_open()  # a close() killed the build: that is no build failure
                exc.path = self.label
                self._notify(self._on_error, exc)
                raise
        failure: HotReloadError | None = None
        interrupted: BaseException | None = None
        with self.lock:
            self.check_open()
            before = self.versions.loads
            live = self.versions.current is not None
            if not self.tracker.library_pending(held=True):
                if live:
                    return
                stale = (self.builds.failure if self.builds else None) or self._failure
                if stale is not None:
                    raise stale  # nothing changed since it failed: the same error
            try:
                with _signals.deferred():  # a change taken in is loaded, whatever interrupts
                    self.loader.load(self.tracker.take())
            except HotReloadError as exc:
                failure = exc
                if self.versions.current is None:
                    self._failure = exc
            except BaseException as exc:  # a Ctrl-C held back until the reload was done
                interrupted = exc
            else:
                self._failure = None
            after = self.versions.loads
        if failure is not None:
            self._notify(self._on_error, failure)
            raise failure
        if before and after != before:
            self._notify(self._on_reload, before, after)
        if interrupted is not None:
            raise interrupted

    def background_step(self, *, manual: bool) -> bool:
        """What a background thread does when woken: build (and with manual=False, load) what
        changed, unload what drained.  Failures are logged once each; it never raises.

        True after a load: the housekeeping is left for the thread's next step, a moment later
        (the program's thread, just told of the new version, needs the GIL to call it;
        unloading the old one at once made a reload of 1 MiB answer 140 us later)."""
        try:
            if manual:
                if self.build_wanted():
                    self._build_in_background()
            elif self.actionable():
                before = self.versions.loads
                self.update()
                if self.versions.loads != before:
                    return True
        except HotReloadError as exc:
            if not self.ended:
                logger.error("%s", _with_outcome(exc, self.version))
        self.housekeep()
        return False

    def _build_in_background(self) -> None:
        """load(manual=True)'s build; a failure reaches on_error callbacks, as in update()."""
        assert self.builds is not None
        try:
            self.builds.run(wait=False)
        except BuildError as exc:
            if not self.ended:
                exc.path = self.label
                self._notify(self._on_error, exc)
            raise

    def rollback(self) -> None:
        self.check_open()
        with self.lock:
            self.check_open()
            self.loader.contents.flush()
            self.versions.housekeep()
            if len(self.loader.contents) < 2:
                raise HotReloadError(f"{self.label!r} has no earlier version to roll back to")
            before = self.versions.loads
            failure: HotReloadError | None = None
            try:
                self.loader.rollback()
            except HotReloadError as exc:
                failure = exc
        if failure is not None:
            self._notify(self._on_error, failure)
            raise failure
        self._notify(self._on_reload, before, self.versions.loads)

    def crashed(
        self, function: str, signal: int, number: int, pc: int, accessed: int, where: str
    ) -> CrashError:
        """A guarded call of `function` in version `number` crashed: roll back if that version
        is the live one and an earlier one exists, tell on_error (and on_reload), and return
        the CrashError for the caller to raise."""
        before = self.versions.loads
        rolled: HotReloadError | None = None
        with self.lock:
            current = self.versions.current
            if self._forked:
                outcome = f"this forked child cannot reload; version {number} stays"
            elif self._closed:
                outcome = "the reloader is closed; nothing was rolled back"
            elif current is None or current.number != number:
                outcome = f"version {number} is no longer live; nothing was rolled back"
            elif len(self.loader.contents) < 2:
                outcome = f"there is no earlier version to roll back to; version {number} stays"
            else:
                try:
                    self.loader.rollback()
                except HotReloadError as exc:
                    rolled = exc
                    outcome = f"rolling back failed ({exc}); version {number} stays"
                else:
                    outcome = (
                        f"rolled back to the previous good version's code (now version "
                        f"{self.version})"
                    )
        error = CrashError(
            self.label,
            function,
            number,
            signal,
            pc,
            accessed if signal in _ACCESS_SIGNALS else None,
            os.path.basename(self.path) + where if where.startswith("+") else where,
            outcome,
        )
        logger.info("%s", error)
        if rolled is not None:
            self._notify(self._on_error, rolled)
        self._notify(self._on_error, error)
        if self.versions.loads != before:
            self._notify(self._on_reload, before, self.versions.loads)
        return error

    def function(self, name: str) -> Function:
        with self.lock:
            self._check_not_closed()
            return self.functions.get(name, self.versions.current)

    def defined(self) -> tuple[str, ...] | None:
        """The functions the live version's C sources define, when hotr read its prototypes."""
        with self.lock:
            current = self.versions.current
            return None if current is None else self.functions.defined(current)

    def handle(self) -> int:
        with self.lock:
            self._check_not_closed()
            current = self.versions.current
            if current is None or current.handle is None:
                raise HotReloadError(f"{self.label!r} is not loaded: call update() first")
            return current.handle

    def on_reload(self, callback: ReloadCallback) -> None:
        self._on_reload.append(callback)

    def on_error(self, callback: ErrorCallback) -> None:
        self._on_error.append(callback)

    def _notify(self, callbacks: list[Callable[..., object]], *args: object) -> None:
        for callback in list(callbacks):
            try:
                callback(*args)
            except Exception:
                logger.exception("callback %r for %s raised", callback, self.label)

    # -- the descriptor ----------------------------------------------------------------------

    def fileno(self) -> int:
        """A descriptor that is readable while something happened that the program has not
        taken in with update() or poll() (in any thread), or the reloader has ended."""
        self.check_open()
        with self.lock:
            if self._eventfd < 0:
                self._eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
                self.source.need_reader()  # whoever selects on it does not read events
                self.tracker.add_listener(self._refresh_fd)
                self._refresh_fd()
            return self._eventfd

    def _refresh_fd(self) -> None:
        """Make the descriptor readable, or quiet, as the news stand now (a listener, and
        after every update() and poll())."""
        with self._eventfd_lock:
            if self._eventfd < 0:
                return
            now, seen = self.tracker.snapshot(), self.view.shared
            news = now.ended or (now.library, now.inputs, now.losses) != (
                seen.library,
                seen.inputs,
                seen.losses,
            )
            if news and not self._eventfd_armed:
                os.eventfd_write(self._eventfd, 1)
            elif not news and self._eventfd_armed:
                os.eventfd_read(self._eventfd)
            self._eventfd_armed = news

    # -- ending ------------------------------------------------------------------------------

    def stop(self) -> None:
        if self._forked or self._stopped or self._closed:
            return
        self._stopped = True
        self.tracker.stop()

    def close(self) -> None:
        """Unload everything (cleanup hooks first), remove the private files; idempotent."""
        if self._closed:
            return
        if self.builds is not None:
            self.builds.cancel()
        with self.lock, _signals.deferred():  # a Ctrl-C in a hook ends nothing half-way
            if self._closed:
                return
            self._closed = True
            if self._forked:
                _process.forget(self)
                return
            self.tracker.stop()
            self.functions.close()
            self.loader.final_unload()
            self.loader.close()
            self.versions.close()
            self._store.release(self.directory)
            _process.forget(self)
            self.tracker.remove_listener(self._refresh_fd)
            with self._eventfd_lock:
                if self._eventfd >= 0:
                    os.close(self._eventfd)
                    self._eventfd = -1
                    self.source.drop_reader()
        logger.debug("closed the reloader for %s", self.label)

    def abandon(self) -> None:
        """In a forked child: the loaded code stays callable; nothing else happens here."""
        self._forked = self._closed = True
        self.lock = _thread.RLock()
        self.tracker.abandon()


def _with_outcome(exc: HotReloadError, version: int) -> str:
    """An error as a background thread logs it: what failed, then what stays live, then the
    compiler's output (if any) on lines of its own."""
    stays = f"version {version} stays live" if version else "nothing is loaded yet"
    if isinstance(exc, BuildError):
        return (
            f"cannot load {exc.path!r}: {exc.reason}; {stays}\n$ {exc.command}\n"
            + exc.diagnostics.rstrip()
        )
    return f"{exc}; {stays}"
