"""The polling side of the reactor: stat every watched path at its interval.

For file systems whose changes inotify does not see (NFS, SMB, 9p and FUSE mounts, some
container bind mounts) and for when inotify cannot be had.  A file counts as written when its
stat signature (device, inode, size, mtime, ctime; through symlinks) changed and then held still
for one interval, so a writer still at work is not reported, and its content hash differs from
the last one reported: a touch is not a change.  A change shows within one to two intervals.
"""

from __future__ import annotations

import _thread
import os

from ._signals import deferred

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._source import Event, Sink

_Signature = tuple[int, int, int, int, int]


def signature(path: str) -> _Signature | None:
    """What tells one version of the file at `path` from another without reading it."""
    try:
        s = os.stat(path)
    except OSError:
        return None
    return s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns


def _digest(path: str) -> bytes | None:
    import hashlib  # the poll backend only

    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).digest()
    except OSError:
        return None


class PollWatch:
    """One polled path and what its last scans saw."""

    backend = "poll"

    def __init__(
        self,
        owner: PollWatches,
        path: str,
        sink: Sink,
        interval: float,
        due: float,
        stable: _Signature | None,  # the signature last reported (or found when watching began)
        digest: bytes | None,  # the content hash at that signature
        latest: _Signature | None,  # the signature at the last scan
    ) -> None:
        self.owner, self.path, self.sink, self.interval, self.due = owner, path, sink, interval, due
        self.stable, self.digest, self.latest = stable, digest, latest

    def close(self) -> None:
        """Stop polling the path; safe to call twice."""
        self.owner.unwatch(self)


class PollWatches:
    """Every polled path of the process; scan() looks at those whose interval has passed."""

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._watches: list[PollWatch] = []

    def watch(self, path: str, sink: Sink, interval: float, now: float) -> PollWatch:
        """Poll `path` every `interval` seconds, comparing with what it holds now."""
        sig = signature(path)
        watch = PollWatch(self, path, sink, interval, now + interval, sig, None, sig)
        if sig is not None:
            watch.digest = _digest(path)
        with self._lock:
            self._watches.append(watch)
        return watch

    def unwatch(self, watch: PollWatch) -> None:
        """Stop polling `watch`."""
        with self._lock:
            if watch in self._watches:
                self._watches.remove(watch)

    @property
    def active(self) -> bool:
        """True if any path is polled."""
        return bool(self._watches)

    def next_due(self) -> float | None:
        """When the next scan is due (clock seconds), or None with nothing to poll."""
        with self._lock:
            return min((w.due for w in self._watches), default=None)

    def scan(self, now: float) -> None:
        """Look at every path whose interval has passed; report what changed."""
        with self._lock:
            due = [w for w in self._watches if w.due <= now]
            if not due:
                return
            with deferred():  # a change seen is a change reported: a Ctrl-C waits for it
                for watch in due:
                    watch.due = now + watch.interval
                    event = _look(watch)
                    if event is not None:
                        watch.sink(event)


def _look(watch: PollWatch) -> Event | None:
    sig = signature(watch.path)
    if sig != watch.latest:  # still moving: look again next time
        watch.latest = sig
        return None
    if sig == watch.stable:
        return None
    watch.stable = sig
    if sig is None:
        watch.digest = None
        return "gone" if os.path.isdir(os.path.dirname(watch.path)) else "lost"
    digest = _digest(watch.path)
    if digest == watch.digest:
        return None
    watch.digest = digest
    return "written"
