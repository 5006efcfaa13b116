"""Hold signals back while hotr changes state that must never be left half-done.

Python runs signal handlers in the main thread between two bytecodes, so a Ctrl-C
(KeyboardInterrupt) can land anywhere: between dlopen and recording its handle, between one
version's hotr_unload and the next one's hotr_load, between a cleanup() hook and dlclose.  In
`with deferred():` the Python handlers of SIGINT and SIGTERM are replaced by one that only notes
the signal; on the way out the real handlers go back and run for what was noted, so a
KeyboardInterrupt is raised after the step, not in the middle of it.  Other threads need
nothing: signal handlers never run there.  It is in C (_deferred.c): it runs several times a
reload, and in Python each deferral cost ten calls.
"""

from __future__ import annotations

import _signal
import os
import threading
from collections.abc import Callable

from ._shim import deferred, deferred_after_fork_in_child

__all__ = ["deferred", "handles_signals", "start_thread"]

# Ctrl-C, and what `kill` and service managers send: what deferred() holds back.
_HELD: tuple[int, ...] = (_signal.SIGINT, _signal.SIGTERM)
_main = threading.main_thread().ident  # signal handlers run there only


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
    """The forking thread is the child's main thread; a deferral another thread of the parent
    had open is closed."""
    global _main
    _main = threading.get_ident()
    deferred_after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
