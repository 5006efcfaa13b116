"""The versions of one library, and the one place each of them ends.

A version's life::

    LOADING --dlopen--> MAPPED --switch--> LIVE --replaced--> RETIRED --no call left--> ENDED
                          |                  |                                         ^
                          +-- refused, rolled back, interrupted; close(), exit, GC ----+

A version is in its VersionSet from before dlopen is called, and `Version.end` (its cleanup()
hook, then dlclose, then its copy deleted) is the only way out: exactly once, whatever ends it.
A version with calls still running is never ended under them; its Pin's on_idle ends it (or
wakes the reloader to) when the last one returns.  A version that is a Python extension module
has a `hold` as well: while objects of it may exist it is not unmapped, and one that can never
be unloaded safely (single-phase modules, static types) ends kept mapped.
"""

from __future__ import annotations

import _thread
import ctypes
import os

from . import _dl, _signals
from ._elf import ElfInfo, Globals, cxx_names, map_read, read_globals
from ._log import logger
from ._shim import Pin
from ._store import PrivateStore

_VOID_FN = ctypes.CFUNCTYPE(None)
# Why a version must stay mapped: (for good, reason), or None when it may be unmapped now.
Hold = tuple[bool, str] | None
# Held from a version's dlclose to its stage "ended": what reads the stages (r.history) never
# finds a version unmapped but not yet ended.  Only that: a lock a reader could hold for long
# would make housekeeping skip an unload (it gives way to a busy reloader and waits for the
# next wake-up, which may never come).
UNMAPPING = _thread.RLock()


def _after_fork_in_child() -> None:
    global UNMAPPING
    UNMAPPING = _thread.RLock()  # another thread of the parent may have held it


os.register_at_fork(after_in_child=_after_fork_in_child)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Literal

    # Where a version is in its life (see the module docstring); "ending": its cleanup() hook
    # was called, dlclose and the copy are next.
    Stage = Literal["loading", "mapped", "live", "retired", "ending", "ended"]


class Version:
    """One loaded version: its private copy, handle, in-flight counter and stage."""

    def __init__(
        self,
        number: int,
        path: str,
        remove: str,
        info: ElfInfo,
        content: bytes | None,
        store: PrivateStore,
        loaded_at: float,
    ) -> None:
        self.number = number
        self.path = path  # the copy dlopen maps
        self.info = info
        self.content = content  # the bytes, when the file is small (to tell a rewrite)
        self.start: tuple[int, bytes] = (0, b"")  # a large one's size and first bytes (loader)
        self.loaded_at = loaded_at
        self.handle: int | None = None
        self.base = 0
        self.pin = Pin(number)
        self.stage: Stage = "loading"
        self._remove = remove  # the copy, or the directory holding it and its $ORIGIN links
        self._store = store
        self._symbols: dict[str, int | None] = {}
        self._globals: Globals | None = None
        self._sha256: str | None = None
        self.hold: Callable[[], Hold] | None = None  # set for an extension module
        self.extra_handles = 0  # dlopen references its own code took (CPython's import)
        self.kept = ""  # why it ended still mapped ("": it was unmapped)
        self.on_end: Callable[[], object] | None = None  # end() calls it first, while mapped

    def staying(self) -> str:
        """Why this version stays mapped for good, whatever the program drops; "" if it may be
        unmapped some day."""
        if self.kept or self.hold is None or self.handle is None:
            return self.kept
        hold = self.hold()
        return hold[1] if hold is not None and hold[0] else ""

    def waiting(self) -> bool:
        """True while objects of this version may still exist (it is not unmapped then)."""
        if self.hold is None:
            return False
        hold = self.hold()
        return hold is not None and not hold[0]

    def map(self) -> None:
        """dlopen the copy (runs its constructors).  Raises OSError with the loader's reason."""
        self.handle = _dl.dlopen(self.path)
        self.stage = "mapped"
        self.base = _dl.base_address(self.handle)
        self.pin.set_code([(self.base + low, self.base + high) for low, high in self.info.code])

    def symbol(self, name: str) -> int | None:
        """dlsym(name) in this version, looked up once."""
        if name not in self._symbols:
            assert self.handle is not None
            self._symbols[name] = _dl.dlsym(self.handle, name)
        return self._symbols[name]

    def is_code(self, address: int) -> bool:
        """True if `address` lies in one of this version's executable segments."""
        offset = address - self.base
        return any(low <= offset < high for low, high in self.info.code)

    def owns(self, address: int) -> bool:
        """True if `address` lies in this version's mapping (code or data)."""
        return _dl.owner(address) == self.path

    def callable(self, address: int) -> bool:
        """True if `address` is code: this version's, or a dependency's (dlsym finds the
        symbols of the libraries a version needs, as ctypes.CDLL does)."""
        if self.is_code(address):
            return True
        return _dl.owner(address) != self.path and _dl.executable(address)

    def hook(self, name: str) -> int | None:
        """The address of hook `name` (hotr_load, cleanup...) if this version defines it; one
        a dependency defines is the dependency's, not this version's."""
        if name in self.info.absent:
            return None  # not in its string table: a dlsym would find a dependency's, or none
        address = self.symbol(name)
        if address is None or self.is_code(address) or _dl.owner(address) == self.path:
            return address
        return None

    def globals(self) -> Globals:
        """The variables keep_globals may carry, read from the copy's symbol table once."""
        if self._globals is None:
            if self.content is not None:
                self._globals = read_globals(self.content, self.info.relro)
            else:
                with (
                    open(self.path, "rb") as f,
                    map_read(f) as mapped,
                ):
                    self._globals = read_globals(mapped, self.info.relro)
        return self._globals

    def cxx_names(self, name: str) -> list[str]:
        """The C++ (mangled) names this version has for a function `name`, read from the
        copy's symbol table (a missing function is explained by them)."""
        if self.content is not None:
            return cxx_names(self.content, name)
        try:
            with open(self.path, "rb") as f, map_read(f) as mapped:
                return cxx_names(mapped, name)
        except OSError:
            return []

    def sha256(self) -> str:
        """SHA-256 of the version's content, hex, computed when first asked for: from its bytes
        (a small library), or its copy while it is live; "" once a large one's copy is gone."""
        if self._sha256 is None:
            import hashlib  # only when history is read, or a version ends

            try:
                if self.content is not None:
                    digest = hashlib.sha256(self.content)
                else:
                    with open(self.path, "rb") as f:
                        digest = hashlib.sha256(f.read())
            except OSError:
                return ""
            self._sha256 = digest.hexdigest()
        return self._sha256

    def end(self) -> None:
        """End this version: cleanup() if it was mapped, dlclose, delete the copy; once.

        Signals are held back meanwhile, so a Ctrl-C cannot leave it half-ended.  Never raises
        for a failure to unmap or delete (logged; the copy is retried later).
        """
        if self.stage == "ended":
            return
        with _signals.deferred():
            hold = self.hold() if self.hold is not None and self.handle is not None else None
            if hold is not None:
                self.kept, self.handle = hold[1], None  # never dlclosed: its code stays
            if self.handle is not None and self.stage != "ending":
                self.stage = "ending"
                on_end, self.on_end = self.on_end, None
                if on_end is not None:
                    on_end()
                cleanup = self.hook("cleanup")
                if cleanup and self.is_code(cleanup):
                    _VOID_FN(cleanup)()
            with UNMAPPING:
                if self.handle is not None:
                    handle, self.handle = self.handle, None
                    try:
                        for _ in range(1 + self.extra_handles):
                            _dl.dlclose(handle)
                    except OSError as exc:
                        logger.warning("dlclose of version %d failed: %s", self.number, exc)
                self.stage = "ended"
            # r.history keeps the version: a small one's bytes stay for its hash (history is
            # short), nothing else does
            self._globals, self._symbols = None, {}
            if self._remove != self.path:  # the directory of its $ORIGIN links (_origin.py)
                self._store.remove_directory(self._remove)
            else:
                self._store.remove(self._remove)
        if self.kept:
            logger.debug("version %d stays mapped: %s", self.number, self.kept)
        else:
            logger.debug("unloaded version %d (%s)", self.number, self.path)


class VersionSet:
    """The live version, the retired ones still mapped, and the ones being loaded.

    Callers hold the reloader's load lock, except for the on_idle path of a closed set.
    """

    def __init__(self, store: PrivateStore, wake: Callable[[], None]) -> None:
        self.current: Version | None = None
        self.loads = 0  # successful loads so far
        self._store = store
        self._wake = wake  # tells the reloader's drivers a retired version has drained
        self._retired: list[Version] = []
        self._loading: list[Version] = []

    def begin(
        self, path: str, remove: str, info: ElfInfo, content: bytes | None, loaded_at: float
    ) -> Version:
        """A new version, registered before dlopen is called."""
        version = Version(self.loads + 1, path, remove, info, content, self._store, loaded_at)
        self._loading.append(version)
        return version

    def go_live(self, version: Version) -> None:
        """`version` is live (its functions are switched); the previous one retires."""
        self._loading.remove(version)
        old, self.current = self.current, version
        version.stage = "live"
        self.loads += 1
        if old is not None:
            old.stage = "retired"
            old.pin.on_idle = self._wake
            self._retired.append(old)

    def discard(self, version: Version) -> None:
        """`version` was refused or its load interrupted: end it now."""
        if version in self._loading:
            self._loading.remove(version)
        version.end()

    def housekeep(self) -> None:
        """End every retired version no call runs in, and any load left half-done."""
        for version in list(self._loading):  # no load runs now (the caller holds the lock)
            self.discard(version)
        for version in [v for v in self._retired if v.pin.inflight == 0 and not v.waiting()]:
            self._retired.remove(version)
            version.pin.on_idle = None
            version.end()
        self._store.retry()

    @property
    def busy(self) -> bool:
        """True while a retired version waits to be unloaded (or a load was cut short)."""
        return bool(self._retired or self._loading)

    def close(self) -> None:
        """End every version; one with calls running ends when its last call returns."""
        for group in (self._loading, self._retired):
            while group:
                self._close_one(group[0])
                group.pop(0)
        if self.current is not None:
            self._close_one(self.current)
            self.current = None

    @staticmethod
    def _close_one(version: Version) -> None:
        if version.pin.inflight == 0:
            version.pin.on_idle = None
            version.end()
        else:
            logger.info(
                "version %d has calls running; it is unloaded when they return", version.number
            )
            version.pin.on_idle = _ender(version)


def _ender(version: Version) -> Callable[[], None]:
    """on_idle of a version of a closed reloader: end it in the thread whose call returned."""

    def end() -> None:
        version.pin.on_idle = None
        version.end()

    return end
