"""Hold signals back while hotr changes state that must never be left half-done.

Python runs signal handlers in the main thread between two bytecodes, so a Ctrl-C
(KeyboardInterrupt) can land anywhere: between dlopen and recording its handle, between one
version's hotr_unload and the next one's hotr_load, between a cleanup() hook and dlclose.  In
`deferred()`, the Python handlers of the usual signals are replaced by one that only records
the signal; on the way out the real handlers are put back and run for what was recorded, so a
KeyboardInterrupt is raised after the step, not in the middle of it.  Other threads need nothing:
signal handlers never run there.
"""

from __future__ import annotations

import _signal  # the signal module's wrappers convert to enums: 4 us a call instead of 0.3
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

# Ctrl-C, and what `kill` and service managers send.
_HELD: tuple[int, ...] = (signal.SIGINT.value, signal.SIGTERM.value)
_main = threading.main_thread().ident  # signal handlers run there only


class deferred:  # lower case: it is used like a function, `with deferred():`
    """Run the body with the handlers of SIGINT and SIGTERM held back (see the module
    docstring).  A class, not a generator: it runs on every reload."""

    _depth = 0  # deferred() inside deferred(): only the outermost one swaps handlers

    def __enter__(self) -> None:
        self._saved: dict[int, Callable[[int, FrameType | None], Any]] = {}
        self._caught: list[tuple[int, FrameType | None]] = []
        if deferred._depth or threading.get_ident() != _main:
            deferred._depth += 1
            return
        deferred._depth += 1
        for signum in _HELD:
            handler = _signal.getsignal(signum)
            if callable(handler):
                self._saved[signum] = handler
                _signal.signal(signum, self._record)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self._caught.append((signum, frame))

    def __exit__(self, *exc_info: object) -> None:
        deferred._depth -= 1
        for signum, handler in self._saved.items():
            _signal.signal(signum, handler)
        for signum, frame in self._caught:
            self._saved[signum](signum, frame)


def _after_fork_in_child() -> None:
    global _main
    _main = threading.get_ident()  # the forking thread is the child's main thread
    deferred._depth = 0


os.register_at_fork(after_in_child=_after_fork_in_child)
