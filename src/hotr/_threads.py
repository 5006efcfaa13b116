"""hotr's own threads, started without importing threading when the program has not.

`import threading` costs about 5 ms (it imports functools and collections), a third of what
`import hotr` may cost, and hotr.load must start a thread within its first 3 ms.  So a thread
is a threading.Thread when the program has imported threading (it is then listed by
threading.enumerate() under hotr's name), and otherwise one _thread starts, which only the
kernel knows by name (top, gdb, /proc/PID/task/*/comm), and, once the program imports
threading, threading too from the first record hotr logs there (see adopt()).  Both are daemon
threads.
"""

from __future__ import annotations

import _signal
import _thread
import os
import sys

from ._shim import name_thread

TYPE_CHECKING = False
if TYPE_CHECKING:
    import threading
    from collections.abc import Callable
    from typing import Protocol
else:
    Protocol = object  # the protocols are for the type checker (typing costs 3 ms)

__all__ = ["LONGEST_WAIT", "Handle", "adopt", "start"]

# The longest one poll() or select() of hotr blocks: poll() takes at most 2**31 - 1 ms (24.8
# days), select() a timeout that fits a _PyTime_t; a longer timeout, debounce or build_timeout
# (any finite one is accepted) is waited for in several.
LONGEST_WAIT = 86400.0

# Ctrl-C, and what `kill` and service managers send: what a thread started with
# hold_signals=True never takes.
_HELD: tuple[int, ...] = (_signal.SIGINT, _signal.SIGTERM)


class Handle(Protocol):
    """What hotr keeps of a thread it started."""

    @property
    def ident(self) -> int | None:
        """The thread's identifier, once it runs."""

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end, `timeout` seconds at most."""


class _Bare:
    """A thread started by _thread: join() waits on a lock the thread lets go as it ends.  In
    a forked child it is gone (only the forking thread lives on), and join() returns at once."""

    def __init__(self, target: Callable[[], object], name: str) -> None:
        self.ident: int | None = None
        self._target = target
        self._name = name
        self._running = _thread.allocate_lock()
        self._pid = os.getpid()

    def start(self) -> None:
        self._running.acquire()
        try:
            _thread.start_new_thread(self._run, ())
        except BaseException:
            self._running.release()
            raise

    def _run(self) -> None:
        self.ident = _thread.get_ident()
        _bare_names[self.ident] = self._name
        try:
            name_thread(self._name)
            self._target()
        finally:
            _bare_names.pop(self.ident, None)
            self._running.release()

    def join(self, timeout: float | None = None) -> None:
        if os.getpid() != self._pid:
            return
        if self._running.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
            self._running.release()


_bare_names: dict[int, str] = {}  # ident -> name of each _Bare thread running


def adopt() -> None:
    """In a thread _thread started for hotr, once threading is imported: give the stand-in
    threading makes for it (threading.current_thread(), "Dummy-1") the thread's name, so a log
    record's threadName says which library's thread wrote it."""
    name = _bare_names.get(_thread.get_ident())
    module = sys.modules.get("threading")
    if name is not None and module is not None:
        module.current_thread().name = name


def start(target: Callable[[], object], name: str, *, hold_signals: bool) -> Handle:
    """Start a daemon thread running `target`, named `name` (see the module docstring).

    With `hold_signals`, the thread never takes SIGINT or SIGTERM (blocked from its first
    instruction on).  The kernel gives a signal sent to the process to any thread that does
    not block it: given to hotr's thread, it would leave the main thread asleep in a poll() or
    read() that nothing interrupts, and the Ctrl-C unanswered.  Not for threads that start
    processes (builds): a process inherits the blocked signals of the thread that started it,
    and a compiler must stay killable by them.
    """
    module = sys.modules.get("threading")
    thread: threading.Thread | _Bare
    if module is not None:

        def named() -> object:
            name_thread(name)
            return target()

        thread = module.Thread(target=named, name=name, daemon=True)
    else:
        thread = _Bare(target, name)
    before = _signal.pthread_sigmask(_signal.SIG_BLOCK, _HELD) if hold_signals else None
    try:
        thread.start()
    finally:
        if before is not None:
            _signal.pthread_sigmask(_signal.SIG_SETMASK, before)
    return thread
