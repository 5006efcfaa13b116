"""What a change source is: the contract between hotr's reloaders and whatever sees file changes.

The real source is the process-wide reactor (_reactor.py: one thread, one inotify instance, the
polling scanner, timers); hotr.testing.ScriptedBackend is a source a test drives by hand.  A
source calls each watch's sink with an Event; it never runs user code.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Literal, Protocol

    # What a source reports about one watched path: "written" (complete new content is in
    # place), "gone" (the file was removed; it may come back), "lost" (the directory holding it
    # went away; the source watches for its return), "rescan" (events were dropped: the
    # kernel's queue overflowed; look again).
    Event = Literal["written", "gone", "lost", "rescan"]
    Sink = Callable[[Event], None]
else:
    Protocol = object  # the protocols below are for the type checker (typing costs 3 ms)


def absolute(path: str, base: str | None = None) -> str:
    """`path` made absolute against `base` (default: the working directory), its `..` left for
    the kernel to resolve (os.path.abspath would drop `dir/..` even when `dir` is a symlink
    elsewhere, and name another file than open() and dlopen() do)."""
    return path if os.path.isabs(path) else os.path.join(base or os.getcwd(), path)


class Watch(Protocol):
    """One watched path, as a source hands it out."""

    @property
    def backend(self) -> str:
        """``"inotify"`` or ``"poll"`` (a watch may move to polling if inotify gives out)."""

    def close(self) -> None:
        """Stop reporting; safe to call twice."""


class Timer(Protocol):
    """A callback scheduled with ChangeSource.call_at."""

    def cancel(self) -> None:
        """Do not call it (if it has not run yet)."""


class ChangeSource(Protocol):
    """Sees changes to files and keeps time for the reloaders watching through it."""

    name: str

    def clock(self) -> float:
        """Now, in seconds, on the clock call_at() uses."""

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        """Call `callback` (quickly, from the source's thread) once `clock()` reaches `when`."""

    def watch(self, path: str, sink: Sink, backend: str) -> Watch:
        """Report changes of the file `path` to `sink`; `backend` is auto, inotify or poll.

        Raises OSError when the path cannot be watched with the backend asked for.
        """

    def sync(self) -> None:
        """Deliver now what has already happened (events queued, timers due); never blocks."""

    def fileno(self) -> int | None:
        """A descriptor that turns readable when sync() has events to deliver, or None.

        A waiting thread may poll it beside its own wake-up and call sync() itself: the event
        then reaches it without a hand-over through the source's thread.
        """

    def need_reader(self) -> None:
        """Someone who does not call sync() waits for events: deliver them unasked."""

    def drop_reader(self) -> None:
        """That someone (need_reader) has gone."""
