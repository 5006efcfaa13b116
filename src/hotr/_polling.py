"""The polling backend: stat every watched file every `interval` seconds.

For file systems whose changes inotify does not see (NFS, SMB, 9p and FUSE mounts, some
container bind mounts) and machines where inotify is unavailable.  A file counts as written when
its stat signature (inode, size, mtime, ctime) changed and then held still for one interval (so a
writer still at work is not reported), and its content hash differs from the last one reported:
a touch is not a change.  A change shows within one to two intervals.
"""

from __future__ import annotations

import hashlib
import os
import select
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass

from ._watch import Change, ChangeKind, WakePipe

_Signature = tuple[int, int, int, int, int]


@dataclass
class _Seen:
    stable: _Signature | None  # the signature last reported (or found at add())
    digest: bytes | None  # content hash at that signature
    latest: _Signature | None  # the signature at the last scan


def _signature(path: str) -> _Signature | None:
    try:
        s = os.stat(path)
    except OSError:
        return None
    return s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns


def _digest(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).digest()
    except OSError:
        return None


class PollingWatcher:
    """Scan the watched files every `interval` seconds (default 0.5); same events as inotify."""

    name = "poll"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._keys: dict[str, set[Hashable]] = {}
        self._seen: dict[str, _Seen] = {}
        self._next_scan = time.monotonic() + interval
        self._wake = WakePipe()
        self._poller = select.poll()
        self._poller.register(self._wake.fd, select.POLLIN)

    def fileno(self) -> int:
        """There is none: nothing tells the kernel to wake anyone, hotr looks by itself."""
        raise OSError("the polling backend has no file descriptor to select on")

    def add(self, path: str, key: Hashable = None) -> None:
        """Report changes of `path` under `key`, compared with its state now."""
        path = os.path.abspath(path)
        with self._lock:
            self._keys.setdefault(path, set()).add(path if key is None else key)
            if path not in self._seen:
                sig = _signature(path)
                self._seen[path] = _Seen(sig, _digest(path) if sig else None, sig)

    def remove(self, path: str, key: Hashable = None) -> None:
        """Stop reporting `path` under `key`."""
        path = os.path.abspath(path)
        with self._lock:
            keys = self._keys.get(path)
            if keys is None:
                return
            keys.discard(path if key is None else key)
            if not keys:
                del self._keys[path]
                del self._seen[path]

    def read(self) -> list[Change]:
        """Scan if an interval has passed since the last scan; return what changed."""
        with self._lock:
            now = time.monotonic()
            if now < self._next_scan:
                return []
            self._next_scan = now + self.interval
            changes: list[Change] = []
            for path, seen in self._seen.items():
                kind = self._scan(path, seen)
                if kind is not None:
                    changes.extend(Change(key, kind) for key in self._keys[path])
            return changes

    @staticmethod
    def _scan(path: str, seen: _Seen) -> ChangeKind | None:
        sig = _signature(path)
        if sig != seen.latest:  # still moving: look again next time
            seen.latest = sig
            return None
        if sig == seen.stable:
            return None
        seen.stable = sig
        if sig is None:
            seen.digest = None
            return ChangeKind.DELETED
        digest = _digest(path)
        if digest == seen.digest:
            return None
        seen.digest = digest
        return ChangeKind.WRITTEN

    def wait(self, timeout: float | None) -> bool:
        """Sleep until the next scan is due, wake() is called, or `timeout` passes."""
        due = max(0.0, self._next_scan - time.monotonic())
        limit = due if timeout is None else min(due, timeout)
        if self._poller.poll(int(limit * 1000 + 0.999)):
            self._wake.drain()
        return time.monotonic() >= self._next_scan

    def wake(self) -> None:
        """Make a wait() in another thread return now."""
        self._wake.wake()

    def close(self) -> None:
        """Release the wake-up pipe; safe to call twice."""
        self._wake.wake()
        self._wake.close()
