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
import threading
from collections.abc import Callable
from types import FrameType

from ._shim import set_handlers

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


# Ctrl-C, and what `kill` and service managers send.
_HELD: tuple[int, ...] = (_signal.SIGINT, _signal.SIGTERM)
_main = threading.main_thread().ident  # signal handlers run there only


class deferred:  # lower case: it is used like a function, `with deferred():`
    """Run the body with the handlers of SIGINT and SIGTERM held back (see the module
    docstring).  A class, not a generator: it runs several times a reload.  Only the main
    thread swaps handlers, and only its outermost deferred() does."""

    __slots__ = ("_main", "_saved")
    _depth = 0  # nesting in the main thread
    _outer: deferred | None = None  # the one that swapped the handlers

    def __enter__(self) -> None:
        self._main = threading.get_ident() == _main
        if not self._main:
            return
        if deferred._depth:
            deferred._depth += 1
            return
        self._saved: list[tuple[int, Callable[[int, FrameType | None], Any]]] = [
            (signum, handler) for signum in _HELD if callable(handler := _signal.getsignal(signum))
        ]
        try:
            # All at once, in C: a real handler left in place while another is swapped could
            # raise in between, and leave _record installed for good.
            set_handlers(_signal.signal, [(signum, _record) for signum, _ in self._saved])
        except BaseException as exc:  # a signal that came first: its handler ran
            self._end(exc)  # nothing is deferred: the handlers go back, the exception is raised
        deferred._outer = self
        deferred._depth = 1

    def __exit__(self, *exc_info: object) -> None:
        if not self._main:
            return
        if deferred._depth > 1:
            deferred._depth -= 1
            return
        deferred._depth = 0
        deferred._outer = None
        self._end(None)

    def _end(self, error: BaseException | None) -> None:
        """Put the real handlers back, run them for the signals recorded, raise the first
        exception of those or `error`."""
        try:
            self._restore()
        except BaseException as exc:  # a signal that came once its real handler was back
            error = error or exc
        caught = _caught[:]
        _caught.clear()
        if caught:
            handlers = dict(self._saved)
            for signum, frame in caught:
                # Each runs, as it would have: a KeyboardInterrupt from the first does not
                # swallow a SIGTERM behind it.
                try:
                    handlers[signum](signum, frame)
                except BaseException as exc:
                    error = error or exc
        if error is not None:
            raise error

    def _restore(self) -> None:
        set_handlers(_signal.signal, self._saved)


# The signals _record noted while deferred, for the outermost deferred() to run on its way out.
_caught: list[tuple[int, FrameType | None]] = []


def _record(signum: int, frame: FrameType | None) -> None:
    """The handler while deferred: note the signal for the outermost deferred() to run."""
    _caught.append((signum, frame))


def handles_signals() -> bool:
    """True in the thread where Python runs signal handlers (the main thread)."""
    return threading.get_ident() == _main


def start_thread(target: Callable[[], object], name: str) -> threading.Thread:
    """Start a daemon thread of hotr's, which never takes SIGINT or SIGTERM (blocked from its
    first instruction on).  The kernel gives a signal sent to the process to any thread that
    does not block it: given to hotr's thread, it would leave the main thread asleep in a
    poll() or read() that nothing interrupts, and the Ctrl-C unanswered.

    Only for threads that start no processes: a process inherits the blocked signals of the
    thread that started it, and a compiler must stay killable by them.
    """
    thread = threading.Thread(target=target, name=name, daemon=True)
    before = _signal.pthread_sigmask(_signal.SIG_BLOCK, _HELD)  # the new thread inherits it
    try:
        thread.start()
    finally:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, before)
    return thread


def _after_fork_in_child() -> None:
    """The forking thread is the child's main thread, and a deferral the parent's main thread
    had open never closes here: put the real handlers back."""
    global _main
    _main = threading.get_ident()
    outer, deferred._depth, deferred._outer = deferred._outer, 0, None
    if outer is not None:
        outer._restore()
    _caught.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
