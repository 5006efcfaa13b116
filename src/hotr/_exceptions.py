"""The exceptions hotr raises, all under one base::

    HotReloadError                  anything hotr reports
     +-- LoadError                  a version could not be loaded; the previous one stays live
     +-- SymbolNotFoundError        the loaded version has no such symbol (also an AttributeError)

Messages are full sentences that name the file or symbol and the likely cause.
"""

from __future__ import annotations


class HotReloadError(Exception):
    """Base class of every error hotr raises."""


class LoadError(HotReloadError):
    """A new version of a library could not be loaded; the previous version stays live.

    Attributes:
        path: the library file the version was read from.
        reason: why it was rejected, in words (not an ELF file, truncated, undefined symbol...).
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot load {path!r}: {reason}")
        self.path = path
        self.reason = reason


class SymbolNotFoundError(HotReloadError, AttributeError):
    """The live version of a library does not export the symbol asked for."""

    def __init__(self, path: str, name: str, version: int) -> None:
        super().__init__(f"{path!r} (version {version}) has no symbol {name!r}")
        self.path = path
        self.name = name
        self.version = version
