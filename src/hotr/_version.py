"""A loaded version of a library, and what r.history tells about it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ._dl import dlsym
from ._elf import Globals, read_globals
from ._shim import Pin


@dataclass(eq=False)
class Version:
    """One loaded version: its handle, private copy, content and in-flight counter."""

    number: int
    handle: int
    copy: str
    data: bytes  # kept to tell a rewrite with the same bytes from a change, by one memcmp
    loaded_at: float
    code: list[tuple[int, int]]  # executable ranges, relative to the load base
    base: int = 0
    pin: Pin = field(init=False)
    _globals: Globals | None = None
    _symbols: dict[str, int | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pin = Pin(self.number)

    def symbol(self, name: str) -> int | None:
        """dlsym(name) in this version, looked up once: reloads ask for the same names often."""
        if name not in self._symbols:
            self._symbols[name] = dlsym(self.handle, name)
        return self._symbols[name]

    def is_code(self, address: int) -> bool:
        """True if `address` lies in one of this version's executable segments."""
        offset = address - self.base
        return any(low <= offset < high for low, high in self.code)

    def globals(self) -> Globals:
        """The variables keep_globals may carry, read from the symbol table once."""
        if self._globals is None:
            self._globals = read_globals(self.data)
        return self._globals


@dataclass(frozen=True)
class VersionInfo:
    """A loaded version, as r.history reports it.

    Attributes:
        number: its version number (1 for the first load).
        loaded_at: when it was loaded (seconds since the epoch).
        sha256: SHA-256 of the library file's content, hex (as sha256sum prints it).
        load_ms: milliseconds from reading the file to the new code being live.
        build_ms: milliseconds the build took, or None when no build ran for it.
        changed: the files whose change led to this version (empty for the first load).
        rollback: True when rollback() loaded it (the content of an earlier version).
        carried: with keep_globals, the globals copied over from the previous version.
        not_carried: with keep_globals, (name, reason) of the globals that were not.
    """

    number: int
    loaded_at: float
    sha256: str
    load_ms: float
    build_ms: float | None
    changed: tuple[str, ...]
    rollback: bool = False
    carried: tuple[str, ...] = ()
    not_carried: tuple[tuple[str, str], ...] = ()


def library_name(source: str) -> str:
    stem = os.path.splitext(os.path.basename(source))[0]
    return f"lib{stem}.so"


# Versions that still had calls running when their reloader closed.  They stay mapped for the
# life of the process (unmapping them would crash those calls); this list keeps their pins alive.
stranded: list[Version] = []
