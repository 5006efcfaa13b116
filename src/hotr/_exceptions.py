"""The exceptions hotr raises, all under one base::

    HotReloadError                  anything hotr reports
     +-- LoadError                  a version could not be loaded; the previous one stays live
     |    +-- BuildError            building it from its sources failed or timed out
     +-- SymbolNotFoundError        the loaded version has no such symbol (also an AttributeError)
     +-- CrashError                 a guarded call crashed in the version's code; the process lives

Messages are full sentences that name the file or symbol and the likely cause.
"""

from __future__ import annotations

import _signal  # the constants, without the signal module's enums (imported at a crash)


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
    """The live version of a library does not export the symbol asked for.  `hint` says why,
    when hotr can tell (a C function compiled as C++ has a mangled name)."""

    def __init__(self, path: str, name: str, version: int, hint: str = "") -> None:
        because = f"; {hint}" if hint else ""
        super().__init__(f"{path!r} (version {version}) has no symbol {name!r}{because}")
        self.path = path
        self.name = name
        self.version = version
        self._hint = hint

    def __reduce__(self) -> tuple[object, ...]:
        return type(self), (self.path, self.name, self.version, self._hint)  # pickles (pools)


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

    def __reduce__(self) -> tuple[object, ...]:
        """Pickles (to a process pool's caller): made again, then given every attribute."""
        return type(self), (self.path, self.command, self.returncode, ""), vars(self).copy()

    def __str__(self) -> str:
        command = f"\n$ {self.command}" if self.command else ""
        return f"{super().__str__()}{command}\n{self.diagnostics.rstrip()}"


class CrashError(HotReloadError):
    """A guarded call crashed in the loaded version's own code (see docs/guard.md).

    The call was ended, the process and its state live on.  After a crash in the live version
    hotr has already rolled back to the previous good version when this is raised, unless
    there was none.

    Attributes:
        path: the library the version was loaded from.
        function: the name of the function that was called.
        version: the number of the version that crashed.
        signal: the signal the fault raised (signal.SIGSEGV, SIGBUS, SIGFPE or SIGILL).
        address: the address of the faulting instruction.
        accessed: the address it accessed, for SIGSEGV and SIGBUS (else None).
        where: the faulting instruction as ``symbol+offset``, or ``libname.so+offset`` (the
            address in the file, for addr2line) when no exported symbol covers it.
        outcome: what hotr did about it, in words (rolled back, or why not).
    """

    def __init__(
        self,
        path: str,
        function: str,
        version: int,
        signal: int,
        address: int,
        accessed: int | None,
        where: str,
        outcome: str,
    ) -> None:
        super().__init__(path, function, version, signal, address, accessed, where, outcome)
        self.path = path  # args has every argument: the error pickles, to a process pool's caller
        self.function = function
        self.version = version
        import signal as signals

        try:
            self.signal: signals.Signals | int = signals.Signals(signal)
        except ValueError:
            self.signal = signal
        self.address = address
        self.accessed = accessed
        self.where = where
        self.outcome = outcome

    def __str__(self) -> str:
        name = getattr(self.signal, "name", f"signal {self.signal}")
        at = f"{self.where} ({self.address:#x})" if self.where else f"{self.address:#x}"
        what = _WHAT.get(int(self.signal), "a fault")
        if self.accessed is not None:
            what += f" at {self.accessed:#x}"
        return (
            f"{self.function}() crashed in version {self.version} of {self.path!r}: {name}, "
            f"{what}, at {at}; {self.outcome}"
        )


_WHAT: dict[int, str] = {
    _signal.SIGSEGV: "an invalid memory access",
    _signal.SIGBUS: "a bus error",
    _signal.SIGFPE: "an arithmetic error (e.g. integer division by zero)",
    _signal.SIGILL: "an illegal instruction (e.g. __builtin_trap)",
}
