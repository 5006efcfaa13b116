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

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

# Ctrl-C, and what `kill` and service managers send.
_HELD: tuple[int, ...] = (signal.SIGINT.value, signal.SIGTERM.value)
_depth = 0


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Run the body with the handlers of SIGINT, SIGTERM and the like held back (see above)."""
    global _depth
    if _depth or threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[tuple[int, FrameType | None]] = []
    saved: dict[int, Callable[[int, FrameType | None], Any]] = {}

    def record(signum: int, frame: FrameType | None) -> None:
        caught.append((signum, frame))

    for signum in _HELD:
        handler = signal.getsignal(signum)
        if callable(handler):
            saved[signum] = handler
            signal.signal(signum, record)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        for signum, frame in caught:
            saved[signum](signum, frame)
