"""The exceptions hotr raises, all under one base::

    HotReloadError                  anything hotr reports
     +-- LoadError                  a version could not be loaded; the previous one stays live
     |    +-- BuildError            building it from its sources failed or timed out
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
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot load {self.path!r}: {self.reason}"


class SymbolNotFoundError(HotReloadError, AttributeError):
    """The live version of a library does not export the symbol asked for."""

    def __init__(self, path: str, name: str, version: int) -> None:
        super().__init__(f"{path!r} (version {version}) has no symbol {name!r}")
        self.path = path
        self.name = name
        self.version = version


class BuildError(LoadError):
    """Building a new version from its sources failed; the previous version stays live.

    Attributes:
        command: the command that failed, as a shell would show it.
        returncode: its exit status (None when it timed out or could not start).
        diagnostics: everything it printed (the compiler's messages, in full).
        timeout: the time limit in seconds when the build was killed for exceeding it, else None.

    `reason` replaces the message's account of what went wrong (a source file was removed).
    """

    def __init__(
        self,
        path: str,
        command: str,
        returncode: int | None,
        diagnostics: str,
        *,
        timeout: float | None = None,
        reason: str | None = None,
    ) -> None:
        if reason is None and timeout is not None:
            reason = f"the build did not finish within {timeout:g} s and was killed"
        elif reason is None and returncode is None:
            reason = "the build command could not be started"
        elif reason is None:
            reason = f"the build failed (exit status {returncode})"
        LoadError.__init__(self, path, reason)
        self.command = command
        self.returncode = returncode
        self.diagnostics = diagnostics
        self.timeout = timeout

    def __str__(self) -> str:
        command = f"\n$ {self.command}" if self.command else ""
        return f"{super().__str__()}{command}\n{self.diagnostics.rstrip()}"
