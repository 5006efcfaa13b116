"""The objects users hold: the live Library and its live Functions."""

from __future__ import annotations

import ctypes
from _ctypes import FUNCFLAG_CDECL, CFuncPtr
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from ._shim import LiveFunction

if TYPE_CHECKING:
    from ._reloader import HotReloader


class CFunc(CFuncPtr):  # the flags and default restype of ctypes.CDLL's functions
    _flags_ = FUNCFLAG_CDECL
    _restype_ = ctypes.c_int


def _forward(name: str, doc: str) -> Any:
    """A property that reads and writes `name` on the wrapped ctypes function, as ctypes does."""
    return property(
        lambda self: getattr(self._cfunc, name),
        lambda self, value: setattr(self._cfunc, name, value),
        doc=doc,
    )


class Function(LiveFunction):
    """A C function of a hot-reloaded library that always calls the live version.

    Set ``argtypes``, ``restype`` and ``errcheck`` as on a ctypes function; they are kept across
    reloads.  Calling it costs about the same as calling a plain ctypes function.
    """

    __name__: str

    argtypes = _forward("argtypes", "ctypes argument types (None: convert by value).")
    restype = _forward("restype", "ctypes return type (default ctypes.c_int).")
    errcheck = _forward("errcheck", "Called with (result, func, args) after each call.")

    def __repr__(self) -> str:
        return f"<hotr.Function {self.__name__!r}>"


class Library:
    """The live library: ``lib.name`` is a Function that follows every reload.

    Its only attributes are the library's symbols, so a C function called ``version`` or
    ``close`` is ``lib.version`` / ``lib.close``; hotr's own state lives on the HotReloader.
    ``ctypes.c_int.in_dll(lib, "name")`` works on the version live at that moment.
    """

    def __init__(self, reloader: HotReloader) -> None:
        self.__reloader = reloader

    def __getattr__(self, name: str) -> Function:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        function = self.__reloader._function(name)
        setattr(self, name, function)  # later lookups are plain attribute hits
        return function

    def __getitem__(self, name: str) -> Function:
        return getattr(self, name)  # type: ignore[no-any-return]

    @property
    def _handle(self) -> int:
        return self.__reloader._handle()

    def __repr__(self) -> str:
        r = self.__reloader
        return f"<hotr.Library {r._label!r} version {r.version}>"

    def __enter__(self) -> Library:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__reloader.close()


def reloader_of(library: Library) -> HotReloader:
    """Return the HotReloader behind `library` (e.g. one made by hotr.load), to close it."""
    return cast("HotReloader", vars(library)["_Library__reloader"])
