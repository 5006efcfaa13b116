"""The objects users hold: the live Library and its live Functions, and the table that switches
every function of a reloader to a new version in one step."""

from __future__ import annotations

import ctypes
import types
from _ctypes import FUNCFLAG_CDECL, CFuncPtr
from types import TracebackType

from . import _dl
from ._exceptions import HotReloadError, SymbolNotFoundError
from ._log import logger
from ._shim import TRAMPOLINE, LiveFunction, Pin, install_guard, retarget

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ._catalog import PrototypeCatalog
    from ._reloader import HotReloader
    from ._typed import Signature
    from ._versions import Version

    # on_crash(function, signal, version, pc, accessed, where) -> the CrashError to raise
    CrashHandler = Callable[[str, int, int, int, int, str], BaseException]


GUARD_SUPPORTED = TRAMPOLINE != 0  # guarded calls: Linux on x86-64 (see _guard.c)
_ON_CRASH = "hotr.on_crash"  # where a guarded Function keeps its reloader's crash handler


class CFunc(CFuncPtr):  # the flags and default restype of ctypes.CDLL's functions
    _flags_ = FUNCFLAG_CDECL
    _restype_ = ctypes.c_int


def _forward(name: str, doc: str) -> Any:
    """A property that reads and writes `name` on the wrapped ctypes function, as ctypes does;
    a value the user sets is theirs: prototypes never replace it."""

    def set_value(self: Function, value: Any) -> None:
        setattr(self._cfunc, name, value)
        vars(self).setdefault(_CHOSEN, set()).add(name)

    return property(lambda self: getattr(self._cfunc, name), set_value, doc=doc)


_CHOSEN = "hotr.chosen"  # on a Function: the attributes its user set


class Function(LiveFunction):
    """A C function of a hot-reloaded library that always calls the live version.

    Set ``argtypes``, ``restype`` and ``errcheck`` as on a ctypes function; they are kept across
    reloads.  When hotr builds the library from C sources, ``argtypes`` and ``restype`` start
    as the C prototype says, and follow it when a new version changes it, unless you set them.
    Calling it costs about the same as calling a plain ctypes function.  It keeps its reloader
    alive: a function you hold goes on following reloads.
    """

    __name__: str

    argtypes = _forward("argtypes", "ctypes argument types (None: convert by value).")
    restype = _forward("restype", "ctypes return type (default ctypes.c_int).")
    errcheck = _forward("errcheck", "Called with (result, func, args) after each call.")

    def __repr__(self) -> str:
        return f"<hotr.Function {self.__name__!r}>"

    def _crashed(
        self, signal: int, version: int, pc: int, accessed: int, where: str
    ) -> BaseException:
        """Called by the shim after a guarded call of this function crashed: the CrashError
        to raise (the reloader rolls back first)."""
        on_crash: CrashHandler = vars(self)[_ON_CRASH]
        return on_crash(self.__name__, signal, version, pc, accessed, where)


class FunctionTable:
    """The live functions of one reloader: made on first use, switched to each new version."""

    def __init__(
        self,
        label: str,
        ffi: Any,
        owner: object,
        on_crash: CrashHandler | None,
        catalog: PrototypeCatalog | None = None,
    ) -> None:
        self.live: list[Pin | None] = [None]  # the live version's pin, set by retarget()
        self._on_crash = on_crash  # None: calls are not guarded
        if on_crash is not None:
            install_guard()
        self._label = label
        self._ffi = ffi
        self._owner = owner
        self._functions: dict[str, Function] = {}
        self._cffi_types: dict[str, Any] = {}
        self._missing: set[str] = set()  # names the live version lacks, reported once
        self._catalog = catalog

    @property
    def on_crash(self) -> CrashHandler | None:
        """Where a guarded call's crash goes (the reloader's handler); None: not guarded."""
        return self._on_crash

    @property
    def names(self) -> list[str]:
        """The names of the functions made so far."""
        return list(self._functions)

    def get(self, name: str, version: Version | None) -> Function:
        """The live function `name`, made now if needed (`version` is the live one)."""
        function = self._functions.get(name)
        if function is not None:
            return function
        if version is None:
            raise HotReloadError(f"{self._label!r} is not loaded: call update() first")
        address = version.symbol(name)
        if address is None:
            raise _not_found(self._label, name, version)
        if not version.callable(address):
            raise HotReloadError(
                f"{name!r} in {self._label!r} is not a function (not in executable code)"
            )
        target = self._target(version, name, address)
        guard = self._on_crash is not None
        if self._ffi is None:
            cfunc = CFunc(address)
            function = Function(cfunc, ctypes.addressof(cfunc), self._owner, guard)
        elif guard:  # a cdata of the function's type at the trampoline, for good
            trampoline = self._ffi.cast(self._ffi.typeof(target), TRAMPOLINE)
            function = Function(trampoline, 0, self._owner, True)
        else:
            function = Function(target, 0, self._owner)  # no slot: retarget() swaps the cdata
        function.__name__ = name
        if guard:
            vars(function)[_ON_CRASH] = self._on_crash
            target = address
        self._type(function, self._signatures(version))
        retarget([function], [target], version.pin, [None])
        self._functions[name] = function
        return function

    def switch(self, version: Version) -> None:
        """Point every function at `version` in one step (a missing one raises when called)."""
        names = list(self._functions)
        addresses = [version.symbol(n) or 0 for n in names]
        if self._on_crash is not None:
            install_guard()  # back on top if a handler was installed since (chained to)
        targets: list[object] = list(addresses)
        if self._ffi is not None and self._on_crash is None:
            targets = [
                self._target(version, n, a) if a else 0
                for n, a in zip(names, addresses, strict=True)
            ]
        missing: list[BaseException | None] = [None] * len(names)
        for i, address in enumerate(addresses):
            if address:
                continue
            name = names[i]
            error = missing[i] = _not_found(self._label, name, version)
            if name not in self._missing:
                self._missing.add(name)
                logger.warning("%s; calling it raises until a version provides it", error)
        if self._missing:  # reported once until a version brings them back
            self._missing.intersection_update(n for n, e in zip(names, missing, strict=True) if e)
        if self._catalog is not None:
            signatures = self._signatures(version)
            for name in names:
                self._type(self._functions[name], signatures)
        retarget(list(self._functions.values()), targets, version.pin, missing, self.live)

    def close(self) -> None:
        """Every function raises HotReloadError from now on."""
        functions = list(self._functions.values())
        closed = [HotReloadError(f"{self._label!r} was closed") for _ in functions]
        retarget(functions, [0] * len(functions), Pin(), closed, self.live)
        self.live[0] = None

    def _signatures(self, version: Version) -> dict[str, Signature] | None:
        """The prototypes of the build that made `version` (None: not typed by hotr)."""
        if self._catalog is None:
            return None
        built = self._catalog.built(version.sha256())
        return built.typed if built is not None else {}

    def defined(self, version: Version) -> tuple[str, ...] | None:
        """The functions the sources of `version` define (None: hotr did not read them)."""
        if self._catalog is None:
            return None
        built = self._catalog.built(version.sha256())
        return built.defined if built is not None else None

    def _type(self, function: Function, signatures: dict[str, Signature] | None) -> None:
        """Give `function` its prototype's types (the defaults if it has none), except what
        its user set.  Only a changed type is written."""
        if signatures is None:
            return
        restype, argtypes = signatures.get(function.__name__, (ctypes.c_int, None))
        chosen = vars(function).get(_CHOSEN, ())
        cfunc = function._cfunc
        if "restype" not in chosen and cfunc.restype is not restype:
            cfunc.restype = restype
        if "argtypes" not in chosen and cfunc.argtypes != argtypes:
            cfunc.argtypes = argtypes

    def _target(self, version: Version, name: str, address: int) -> object:
        """What a live function is pointed at: the address (ctypes) or a new cdata (cffi)."""
        if self._ffi is None:
            return address
        ctype = self._cffi_types.get(name)
        if ctype is None:
            # The declared type comes from the user's cdef(): ffi.dlopen of the same copy
            # returns glibc's existing handle (no second mapping), closed again at once.
            with _dl.LOCK:
                declared = self._ffi.dlopen(version.path)
            try:
                ctype = self._ffi.typeof(getattr(declared, name))
            except (AttributeError, KeyError, TypeError) as exc:  # undeclared, variable, other
                raise HotReloadError(
                    f"{name!r} is not a function declared in the ffi's cdef(): {exc}"
                ) from None
            finally:
                with _dl.LOCK:
                    self._ffi.dlclose(declared)
            self._cffi_types[name] = ctype
        return self._ffi.cast(ctype, address)


def _not_found(label: str, name: str, version: Version) -> SymbolNotFoundError:
    """The error for a function `name` that `version` lacks, saying why when it is clear: a C
    function compiled as C++ has only a mangled name."""
    mangled = version.cxx_names(name)
    if not mangled:
        return SymbolNotFoundError(label, name, version.number)
    return SymbolNotFoundError(
        label,
        name,
        version.number,
        (
            f"it has only the C++ (mangled) name {mangled[0]!r}, so its source was compiled "
            "as C++ (a C++ compiler such as g++ or clang++ compiles .c files as C++ too): "
            "declare it extern \"C\", or build .c sources with a C compiler (cc='gcc')"
        ),
    )


_PARTS = "hotr.parts"  # where a Library keeps its reloader, lookup and handle
MODULE_KEY = "hotr.reloader"  # where a hot-reloaded extension module keeps its reloader


class Library:
    """The live library: ``lib.name`` and ``lib["name"]`` are Functions that follow every reload.

    Its only attributes are the library's symbols, so a C function called ``version`` or
    ``close`` is ``lib.version`` / ``lib.close``, and ``lib["name"]`` reaches any C name at all
    (``lib["_handle"]``, ``lib["__init__"]``); hotr's own state lives on the HotReloader.
    ``ctypes.c_int.in_dll(lib, "name")`` works on the version live at that moment.
    """

    def __init__(
        self,
        reloader: HotReloader,
        lookup: Callable[[str], Function],
        handle: Callable[[], int],
    ) -> None:
        # Under a name no C identifier can have: every C name stays free for lib.name.
        vars(self)[_PARTS] = (reloader, lookup, handle)

    def __getattr__(self, name: str) -> Function:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        function: Function = vars(self)[_PARTS][1](name)
        setattr(self, name, function)  # later lookups are plain attribute hits
        return function

    def __getitem__(self, name: str) -> Function:
        if not isinstance(name, str):
            raise TypeError(f"a symbol name is a str, not {type(name).__name__} ({name!r})")
        return vars(self)[_PARTS][1](name)  # type: ignore[no-any-return]

    @property
    def _handle(self) -> int:
        """The live version's dlopen handle (what ctypes' in_dll reads)."""
        return vars(self)[_PARTS][2]()  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<hotr.Library of {vars(self)[_PARTS][0]!r}>"

    def __enter__(self) -> Library:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        vars(self)[_PARTS][0].close()


def reloader_of(library: Library | types.ModuleType) -> HotReloader:
    """Return the HotReloader behind `library` (made by hotr.load) or behind a module (made by
    hotr.load_module), to close it or drive it."""
    if isinstance(library, types.ModuleType) and MODULE_KEY in vars(library):
        found: HotReloader = vars(library)[MODULE_KEY]
        return found
    if not isinstance(library, Library):
        raise TypeError(
            "reloader_of() takes a hotr.Library or a module from hotr.load_module, not "
            + (
                f"the module {library.__name__!r}"
                if isinstance(library, types.ModuleType)
                else type(library).__name__
            )
        )
    reloader: HotReloader = vars(library)[_PARTS][0]
    return reloader
