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

import os

from ._shim import deferred, deferred_after_fork_in_child

__all__ = ["deferred"]


def _after_fork_in_child() -> None:
    """A deferral another thread of the parent had open is closed."""
    deferred_after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
