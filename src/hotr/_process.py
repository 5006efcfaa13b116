"""The process's side of every reloader's life: close them all at exit, let go of them in a
forked child.

At exit each open reloader is closed (cleanup hooks, final hotr_unload) and then the private
directory removed.  After fork() the child keeps the code that is loaded and callable, and keeps
its hands off what the parent owns: no reloads, no hooks, no files removed.
"""

from __future__ import annotations

import atexit
import os
from _weakrefset import WeakSet  # what weakref.WeakSet is, without weakref's own import

from . import _store
from ._log import logger

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol
else:
    Protocol = object  # the protocols are for the type checker (typing costs 3 ms)


class Closable(Protocol):
    """What the process registry needs of a reloader."""

    def close(self) -> None:
        """Unload and release everything (idempotent)."""

    def abandon(self) -> None:
        """In a forked child: stop, touching nothing the parent owns."""


_open: WeakSet[Closable] = WeakSet()


def register(reloader: Closable) -> None:
    """Close `reloader` at exit, abandon it in a forked child (until forget())."""
    _open.add(reloader)


def forget(reloader: Closable) -> None:
    """`reloader` is closed: nothing more to do for it."""
    _open.discard(reloader)


def _close_all() -> None:
    for reloader in list(_open):
        try:
            reloader.close()
        except Exception:
            logger.exception("closing %r at exit failed", reloader)
    _store.close_stores()


def _after_fork_in_child() -> None:
    for reloader in list(_open):
        reloader.abandon()
    _open.clear()


atexit.register(_close_all)
os.register_at_fork(after_in_child=_after_fork_in_child)
