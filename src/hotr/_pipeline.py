"""The load pipeline: from a changed file to the new code live, or a LoadError and nothing lost.

1. **Copy.** One C call (copy_file) reads a small file and writes it into the private file that
   housekeeping made ahead, or has the kernel copy a large one (copy_file_range); the source is
   opened O_NONBLOCK and must be a regular file, so a FIFO put in its place cannot hang hotr.
2. **Compare.** The same bytes as the live version: nothing to do (a rewrite is not a change).
3. **Check.** The copy (its bytes, or a mapping of a large one) is checked to be a complete ELF
   shared object for this machine (_elf.py).  Nobody else can write the copy, so the checked
   bytes are the loaded bytes.
4. **Place and probe.** $ORIGIN links are put beside the copy (_origin.py); with probe=True a
   child process loads it first.
5. **Map.** dlopen(RTLD_NOW | RTLD_LOCAL); every function hotr will call must be in code.
6. **Hand over.** The old version's hotr_unload(1), globals carried, the new version's
   hotr_load; a refusal hands the state back to the old version.
7. **Switch.** Every live function to the new version in one step; the old version retires.

Steps 5 to 7 run with signals held back, and every way out of them (a refusal, an error, an
interruption) undoes the hand-over and ends the new version through VersionSet.discard.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
import time

from . import _origin, _signals
from ._elf import (
    ElfError,
    ElfInfo,
    Key,
    Variable,
    check_shared_file,
    check_shared_object,
    map_read,
    unique_symbols,
)
from ._exceptions import LoadError
from ._history import Content, Contents, History, VersionInfo
from ._library import FunctionTable
from ._log import logger
from ._shim import copy_file, same_bytes
from ._store import PrivateStore, fitting
from ._tracker import ChangeTracker, Pending
from ._versions import Version, VersionSet

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Protocol
else:
    Protocol = object  # the protocols are for the type checker (typing costs 3 ms)

# int hotr_load(void **state, int version, int reloading), and hotr_unload alike (hotr.h).
_HOOK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int)
HOOKS = ("hotr_load", "hotr_unload", "cleanup")  # what hotr itself calls in a version
# probe=True: a child interpreter dlopens each new version first (constructors run there too).
_PROBE = (
    "import ctypes, os, sys\n"
    "try:\n"
    "    ctypes.CDLL(sys.argv[1], mode=os.RTLD_NOW | os.RTLD_LOCAL)\n"
    "except OSError as exc:\n"
    "    sys.exit(str(exc))\n"
)
# An extension module's probe also runs its init (argv: path, name, the parent's sys.path):
# only a crash refuses the version; an exception is left for the real init to report (it may
# need what only this process has, such as another hot-reloaded module).
_PROBE_MODULE = (
    _PROBE + "import importlib.machinery, importlib.util\n"
    "sys.path[:] = sys.argv[3].split(os.pathsep)\n"
    "loader = importlib.machinery.ExtensionFileLoader(sys.argv[2], sys.argv[1])\n"
    "spec = importlib.util.spec_from_file_location(sys.argv[2], sys.argv[1], loader=loader)\n"
    "try:\n"
    "    loader.exec_module(importlib.util.module_from_spec(spec))\n"
    "except BaseException:\n"
    "    pass\n"
)

_PROBE_TIMEOUT = 10
_MAP_ABOVE = 1 << 16  # files this large are mapped, not read, to be checked and compared
# A large version's first bytes: two builds of a library differ there (the build ID is in the
# first page), so a rewrite is told from a change without mapping the live copy.
_START = 4096
Start = tuple[int, bytes]  # a file's size and first _START bytes (b"" for a small file)
Spare = tuple[str, str, int]  # a private file made for a copy: name asked for, path, descriptor


class Extension(Protocol):
    """What a version is beyond a library: a Python extension module (_modules.py)."""

    name: str  # the module's name (its init is PyInit_<last part>)

    def init(self, version: Version) -> None:
        """Run the module's initialisation in the mapped `version`; raises LoadError."""

    def switch(self, version: Version) -> None:
        """Make the module `version` live (in the step that switches its functions)."""


class Loader:
    """Loads new versions of one library into its VersionSet (callers hold the load lock)."""

    def __init__(
        self,
        *,
        label: str,
        path: str,
        store: PrivateStore,
        directory: str,
        versions: VersionSet,
        functions: FunctionTable,
        history: History,
        tracker: ChangeTracker,
        sync: Callable[[], None],
        keep_globals: bool,
        probe: bool,
    ) -> None:
        self._label = label
        self._path = path
        self._store = store
        self._directory = directory
        self._versions = versions
        self._functions = functions
        self._history = history
        self._tracker = tracker
        self._sync = sync
        self.contents = Contents(store, directory)
        self.keep_globals = keep_globals
        self.probe = probe
        self._unique: list[str] = []  # the STB_GNU_UNIQUE symbols last warned of
        # Copies of versions refused after dlopen: the loader may keep one mapped (a module's
        # failed init), and a dlopen of the same path would return it, not the new file.
        self._refused: set[str] = set()
        self._to_scan: list[tuple[str, bytes | None, int]] = []  # for housekeep()
        self._spare: Spare | None = None  # the next version's private file, made ahead
        self._state = ctypes.c_void_p()  # the library's own slot, kept across versions (hotr.h)
        self.extension: Extension | None = None

    def load(self, taken: Pending) -> bool:
        """Load the library file as the next version.  True if a new version went live; False
        if there was nothing new (same bytes, file removed, overtaken by a newer write).

        Raises LoadError; the change is then consumed and waits for the next one.  Ctrl-C and
        SIGTERM are held back until the load is done or undone (then raised); any other
        exception leaves the change pending: the next load retries it.
        """
        with _signals.deferred():
            return self._load(taken)

    def _load(self, taken: Pending) -> bool:
        started = time.perf_counter()
        current = self._versions.current
        try:
            copied = self._copy(self._path, current.content if current is not None else None)
        except FileNotFoundError:
            self._tracker.consume(taken)
            if current is None:
                raise LoadError(self._label, "the file does not exist") from None
            logger.info("%s was removed; version %d stays live", self._path, current.number)
            return False
        except OSError as exc:
            self._tracker.consume(taken)
            raise LoadError(self._label, f"cannot read it: {exc.strerror or exc}") from exc
        except LoadError:
            self._tracker.consume(taken)
            raise
        if copied is None:
            self._tracker.consume(taken)
            logger.debug("%s was written with the same content; not reloading", self._path)
            return False
        copy, content = copied
        try:
            inspected = _inspect(copy, content, current)
        except ElfError as exc:
            self._store.remove(copy)
            self._sync()
            if self._tracker.newer_than(taken):
                logger.debug("%s: %s; a newer write follows", self._path, exc)
                return False  # overtaken: the newer write is loaded next
            self._tracker.consume(taken)
            raise LoadError(self._label, str(exc)) from None
        except BaseException:
            self._store.remove(copy)
            raise
        if inspected is None:
            self._store.remove(copy)
            self._tracker.consume(taken)
            logger.debug("%s was written with the same content; not reloading", self._path)
            return False
        try:
            self._install(copy, content, inspected, started, taken)
        except LoadError:
            self._tracker.consume(taken)
            raise
        return True

    def rollback(self) -> None:
        """Load the content of the previous good version again, as a new version.

        Raises LoadError if it cannot be loaded now; the contents are then as they were.
        """
        with _signals.deferred():
            self._rollback()

    def _rollback(self) -> None:
        previous, current = self.contents.take_previous()
        try:
            copied = self._copy(previous, None)
            assert copied is not None
            copy, content = copied
            inspected = _inspect(copy, content, None)
            assert inspected is not None
            self._install(copy, content, inspected, time.perf_counter(), None)
        except BaseException:
            self.contents.restore(previous, current)
            raise
        self.contents.drop(previous)
        self.contents.drop(current)

    def final_unload(self) -> None:
        """The live version's hotr_unload(reloading=0) when close() ends it: at once, or when
        the last call running in it returns (the hook frees state those calls use)."""
        current = self._versions.current
        if current is not None:
            current.on_end = lambda: self._call_hook(current, "hotr_unload", reloading=0)

    # -- the steps ---------------------------------------------------------------------------

    def _copy(self, source: Content, live: bytes | None) -> tuple[str, bytes | None] | None:
        """Copy `source` (a file, or bytes) into a new private file; return its path, and its
        bytes when it is small (a large one is copied by the kernel and mapped to be checked).
        None when the file holds the bytes `live` (nothing is written)."""
        name, copy, out = self._create()
        try:
            if isinstance(source, bytes):
                content: bytes | None = source
                _write_all(out, source)
            else:
                content, same = copy_file(source, out, _MAP_ABOVE, live)
                if same:
                    self._spare, out = (name, copy, out), -1  # empty still: the next one's
                    return None
        except BaseException:
            self._store.remove(copy)
            raise
        finally:
            if out >= 0:
                os.close(out)
        return copy, content

    def _create(self) -> Spare:
        """The private file for the next version's copy (its name as asked for, its path, a
        descriptor to write it): the one housekeep() made ahead when it is still the right
        one (creating a file costs more than writing it)."""
        spare, self._spare = self._spare, None
        name = self._next_name()
        if spare is not None:
            if spare[0] == name:
                return spare
            self._drop(spare)
        try:
            return (name, *self._store.create(self._directory, name))
        except OSError as exc:
            raise LoadError(
                self._label, f"cannot write its private copy in {self._directory!r}: {exc}"
            ) from exc

    def _next_name(self) -> str:
        """The name of the next version's private copy: never that of one still mapped."""
        number, base = self._versions.loads + 1, os.path.basename(self._path)
        name, tries = fitting(f"v{number}-{base}"), 1
        while os.path.join(self._directory, name) in self._refused:
            tries += 1
            name = fitting(f"v{number}.{tries}-{base}")
        return name

    def _drop(self, spare: Spare) -> None:
        os.close(spare[2])
        self._store.remove(spare[1])

    def close(self) -> None:
        """Let go of the file made ahead for a next version."""
        spare, self._spare = self._spare, None
        if spare is not None:
            self._drop(spare)

    def _install(
        self,
        copy: str,
        content: bytes | None,
        inspected: tuple[ElfInfo, Start],
        started: float,
        taken: Pending | None,
    ) -> None:
        """Map checked bytes as the next version, hand the state over, switch to it."""
        info, start = inspected
        try:
            path, remove = _origin.place(copy, self._path, info)
        except OSError as exc:
            self._store.remove(copy)
            raise LoadError(self._label, f"cannot prepare its $ORIGIN links: {exc}") from exc
        if self.probe:
            try:
                self._probe(path)
            except BaseException:
                self._remove(remove)
                raise
        version = self._versions.begin(path, remove, info, content, time.time())
        version.start = start
        old = self._versions.current
        handed = 0  # 1: the old version let go of the state; 2: the new one took it
        try:
            try:
                version.map()
            except OSError as exc:
                reason = str(exc).replace(f"{path}: ", "")
                raise LoadError(self._label, reason) from None
            self._check_code(version)
            if self.keep_globals:
                version.globals()  # read now, while its copy is sure to be there
            if old is not None:
                self._call_hook(old, "hotr_unload", reloading=1)
                handed = 1
            carried, skipped = self._carry(old, version)
            status = self._call_hook(version, "hotr_load", reloading=int(old is not None))
            if status != 0:
                stays = f"version {old.number} stays live" if old else "nothing was loaded"
                raise LoadError(self._label, f"its hotr_load returned {status}; {stays}")
            handed = 2
            if self.extension is not None:
                self.extension.init(version)
            self._functions.switch(version)
            if self.extension is not None:
                self.extension.switch(version)
            self._versions.go_live(version)
            if taken is not None:
                self._tracker.consume(taken)
        except BaseException:
            if handed == 2:
                self._call_hook(version, "hotr_unload", reloading=int(old is not None))
            if handed >= 1 and old is not None:
                self._call_hook(old, "hotr_load", reloading=1)
            self._versions.discard(version)
            self._refused.add(copy)
            raise
        load_ms = (time.perf_counter() - started) * 1000
        self._history.record(
            version,
            VersionInfo(
                version.number,
                version.loaded_at,
                "",
                load_ms,
                None
                if taken is None or taken.build_seconds is None
                else taken.build_seconds * 1000,
                tuple(sorted(taken.changed)) if taken is not None else (),
                taken is None,
                carried,
                skipped,
                build_output=taken.build_output if taken is not None else "",
            ),
        )
        self.contents.keep(path, content)
        logger.info(
            "%s version %d of %s in %.2f ms",
            "loaded" if taken is not None else "rolled back to the previous content as",
            version.number,
            self._label,
            load_ms,
        )
        self._to_scan.append((path, content, version.number))  # after the new code answers

    @property
    def pending(self) -> bool:
        """True if housekeep() has something to do."""
        return bool(self._to_scan) or self.contents.pending

    def housekeep(self) -> None:
        """What can wait until the new code runs: keep contents for rollback, look for symbols
        that keep a version mapped (a scan of its whole symbol table), and make the next
        version's private file."""
        self.contents.flush()
        to_scan, self._to_scan = self._to_scan, []
        for path, content, number in to_scan:
            self._warn_unique(path, content, number)
        if to_scan and self._spare is None:
            # Held back: a Ctrl-C as the file is made would leave its descriptor open for good.
            with _signals.deferred():
                try:
                    self._spare = self._create()
                except LoadError:
                    pass  # the load that needs the file makes it, and says why it cannot

    def _warn_unique(self, path: str, content: bytes | None, number: int) -> None:
        """Warn when a version has STB_GNU_UNIQUE symbols (once for each new set of them)."""
        try:
            if content is not None:
                names = unique_symbols(content)
            else:
                with (
                    open(path, "rb", buffering=0) as f,
                    map_read(f) as image,
                ):
                    names = unique_symbols(image)
        except (OSError, ValueError, struct.error):
            return
        if names and names != self._unique:
            logger.warning(
                "version %d of %s has STB_GNU_UNIQUE symbols, so it can never be unloaded and "
                "later versions share these with it: %s (build C++ with -fno-gnu-unique; hotr "
                "adds it when it runs g++)",
                number,
                self._label,
                ", ".join(names),
            )
        self._unique = names

    def _remove(self, path: str) -> None:
        if os.path.isdir(path):
            self._store.remove_directory(path)
        else:
            self._store.remove(path)

    def _check_code(self, version: Version) -> None:
        for name in self._functions.names:
            address = version.symbol(name)
            if address and not version.callable(address):
                raise LoadError(self._label, f"{name!r} is not a function (not in executable code)")
        absent = version.info.absent  # most libraries define no hook: no lookup for those
        for name in HOOKS:
            address = version.hook(name) if name not in absent else None
            if address and not version.is_code(address):
                raise LoadError(self._label, f"{name!r} is not in an executable segment")

    def _probe(self, path: str) -> None:
        """Load `path` in a child process first (an extension module's init too): a
        constructor or init that crashes kills only it."""
        import signal  # probe=True only: not at import time

        from ._commands import communicate, kill_group, start_in_session

        # Waited for as a build is: done when the probe exits, though a process a constructor
        # started (twice: here too) may hold its output open for long after; in a session of
        # its own, so that a probe that hangs is killed with what it started.
        argv = [sys.executable, "-S", "-c", _PROBE, path]
        if self.extension is not None:
            argv[3:] = [_PROBE_MODULE, path, self.extension.name, os.pathsep.join(sys.path)]
        proc = None
        try:
            with _signals.deferred():  # a Ctrl-C between starting it and owning it: no orphan
                proc = start_in_session(argv)
            printed, expired = communicate(proc, _PROBE_TIMEOUT)
        except BaseException:  # Ctrl-C: end the probe, and what its constructors started
            if proc is not None:
                kill_group(proc)
                proc.wait()
            raise
        if expired:
            raise LoadError(
                self._label, f"loading it in a probe process did not finish in {_PROBE_TIMEOUT} s"
            )
        if proc.returncode < 0:
            name = signal.Signals(-proc.returncode).name
            raise LoadError(self._label, f"loading it crashed a probe process ({name})")
        if proc.returncode != 0:
            reason = printed.strip().replace(f"{path}: ", "") or f"exit {proc.returncode}"
            raise LoadError(self._label, reason)

    def _call_hook(self, version: Version, name: str, *, reloading: int) -> int:
        """Call hotr_load / hotr_unload of `version` if it exports it; return its status."""
        address = version.hook(name) if name not in version.info.absent else None
        if not address:
            return 0
        status = int(_HOOK(address)(ctypes.byref(self._state), version.number, reloading))
        if status != 0 and name == "hotr_unload":
            logger.warning("hotr_unload of version %d returned %d", version.number, status)
        return status

    def _carry(
        self, old: Version | None, new: Version
    ) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
        """keep_globals: copy same-name, same-size globals from `old` to `new`; say what was
        not carried and why."""
        if not self.keep_globals or old is None:
            return (), ()
        try:
            before, after = old.globals(), new.globals()
        except OSError as exc:  # read at load time, so only if a copy went missing meanwhile
            logger.warning("globals not carried into version %d: %s", new.number, exc)
            return (), (("*", f"the symbol table could not be read: {exc.strerror}"),)
        pairs = _match(before.variables, after.variables)
        carried: list[str] = []
        skipped: dict[str, str] = dict(after.skipped)
        for key, variable in after.variables.items():
            was = before.variables.get(pairs.get(key, key))
            if was is None:
                skipped[variable.name] = "new in this version"
            elif was.size != variable.size:
                skipped[variable.name] = f"size changed from {was.size} to {variable.size} bytes"
            else:
                ctypes.memmove(new.base + variable.offset, old.base + was.offset, variable.size)
                carried.append(variable.name)
        for key in before.variables.keys() - after.variables.keys() - set(pairs.values()):
            skipped.setdefault(before.variables[key].name, "removed in this version")
        if carried or skipped:
            logger.info(
                "globals carried into version %d: %s; not carried: %s",
                new.number,
                ", ".join(sorted(carried)) or "none",
                "; ".join(f"{n} ({why})" for n, why in sorted(skipped.items())) or "none",
            )
        return tuple(sorted(carried)), tuple(sorted(skipped.items()))


def _match(before: dict[Key, Variable], after: dict[Key, Variable]) -> dict[Key, Key]:
    """New key -> old key for statics whose source file was renamed: a static that is the only
    one of its name and kind on both sides is the same variable."""
    lone_before = _lone(k for k in before.keys() - after.keys() if k[0])
    lone_after = _lone(k for k in after.keys() - before.keys() if k[0])
    return {key: lone_before[name] for name, key in lone_after.items() if name in lone_before}


def _lone(keys: Iterable[Key]) -> dict[tuple[str, str], Key]:
    """(name, kind) -> key, for the names that only one key has."""
    by_name: dict[tuple[str, str], list[Key]] = {}
    for key in keys:
        by_name.setdefault(key[1:], []).append(key)
    return {name: found[0] for name, found in by_name.items() if len(found) == 1}


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _inspect(
    copy: str, content: bytes | None, current: Version | None
) -> tuple[ElfInfo, Start] | None:
    """Check a private copy (its bytes when small, else a mapping); None if a large one holds
    exactly the bytes of the `current` version (nothing to load: copy_file compared a small
    one), else what the loader needs of it and its start (see _START).  ElfError says why it
    is refused."""
    if content is not None:  # the usual case, on every reload: no mapping, no second read
        if not content:
            raise ElfError("the file is empty (a writer may still be creating it)")
        return check_shared_object(content, HOOKS), (len(content), b"")
    info, start = check_shared_file(copy, HOOKS, _START)
    if (
        current is not None
        and current.content is None
        and current.start == start  # else they differ: no need to map the live copy
        and _same_file(copy, current.path)
    ):
        return None
    return info, start


def _same_file(copy: str, path: str) -> bool:
    with (
        open(copy, "rb", buffering=0) as f,
        map_read(f) as image,
        open(path, "rb", buffering=0) as g,
        map_read(g) as live,
    ):
        return same_bytes(image, live)
