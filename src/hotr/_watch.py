"""How hotr learns that a file changed: the backend interface, and the choice of backend.

Two backends report the same Change events: inotify (_inotify.py; instant, no CPU while idle)
and polling (_polling.py; for file systems where inotify does not see changes, such as network
file systems, and for when inotify cannot be used at all).  open_watcher() picks one: the
explicit argument, else ``$HOTR_BACKEND``, else inotify unless a watched directory is on a
network file system or inotify is out of instances or watches.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import errno
import logging
import os
from collections.abc import Hashable, Iterable
from typing import NamedTuple, Protocol

logger = logging.getLogger("hotr")

BACKENDS = ("auto", "inotify", "poll")
DEFAULT_POLL_INTERVAL = 0.5  # seconds; $HOTR_POLL_INTERVAL changes it


class ChangeKind(enum.Enum):
    """What happened to a watched file."""

    WRITTEN = "written"  # complete new content is in place
    DELETED = "deleted"  # the name is gone (it may come back)
    LOST = "lost"  # its directory was removed, renamed or unmounted: no more events


class Change(NamedTuple):
    """One change to a watched file, reported under the key it was added with."""

    key: Hashable
    kind: ChangeKind


class FileWatcher(Protocol):
    """What a backend does.  Methods may be called from several threads."""

    name: str

    def fileno(self) -> int:
        """A descriptor that turns readable when read() has something (OSError if none)."""

    def add(self, path: str, key: Hashable = None) -> None:
        """Report changes of the file `path` under `key` (default: the path)."""

    def remove(self, path: str, key: Hashable = None) -> None:
        """Stop reporting `path` under `key`."""

    def read(self) -> list[Change]:
        """The changes waiting now; never blocks."""

    def wait(self, timeout: float | None) -> bool:
        """Block until read() may have something, wake() is called, or `timeout` passes."""

    def wake(self) -> None:
        """Make a wait() in another thread return now."""

    def close(self) -> None:
        """Release the backend's descriptors; safe to call twice."""


class WakePipe:
    """A self-pipe: wake() makes the read end readable, so a thread blocked in poll() returns.

    Closing a descriptor another thread is polling is not a safe way to wake it (the number may
    be reused at once), so every backend waits on one of these beside its own descriptor.
    """

    def __init__(self) -> None:
        self.fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def wake(self) -> None:
        """Make the read end readable (a full pipe is readable already)."""
        with contextlib.suppress(OSError):
            os.write(self._write_fd, b"!")

    def drain(self) -> None:
        """Read the wake-ups that arrived, so the next wait blocks again."""
        with contextlib.suppress(OSError):
            os.read(self.fd, 512)

    def close(self) -> None:
        """Close both ends; safe to call twice."""
        if self.fd >= 0:
            os.close(self.fd)
            os.close(self._write_fd)
            self.fd = self._write_fd = -1


# statfs(2) f_type of file systems whose changes may come from elsewhere, unseen by inotify.
_REMOTE_FILE_SYSTEMS = {
    0x6969: "NFS",
    0x517B: "SMB",
    0xFF534D42: "CIFS",
    0xFE534D42: "SMB2",
    0x01021997: "9p",
    0x65735546: "FUSE",
    0x00C36400: "Ceph",
    0x5346414F: "AFS",
}
_libc = ctypes.CDLL(None, use_errno=True)


def file_system_type(path: str) -> int:
    """statfs(2) f_type of the file system holding `path`."""
    buffer = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux
    if _libc.statfs(os.fsencode(path), buffer) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return ctypes.c_long.from_buffer(buffer).value & 0xFFFFFFFF


def remote_file_system(path: str) -> str | None:
    """The name of the network file system holding `path`, or None (also when unknown)."""
    try:
        return _REMOTE_FILE_SYSTEMS.get(file_system_type(path))
    except OSError:
        return None


def open_watcher(backend: str, directories: Iterable[str]) -> FileWatcher:
    """Make the backend for watching files in `directories` (see the module docstring)."""
    from ._inotify import InotifyWatcher
    from ._polling import PollingWatcher

    chosen = backend if backend != "auto" else os.environ.get("HOTR_BACKEND", "auto")
    if chosen not in BACKENDS:
        raise ValueError(f"unknown backend {chosen!r}: use one of {', '.join(BACKENDS)}")
    interval = float(os.environ.get("HOTR_POLL_INTERVAL", DEFAULT_POLL_INTERVAL))
    if chosen == "poll":
        return PollingWatcher(interval)
    if chosen == "auto":
        for directory in directories:
            remote = remote_file_system(directory)
            if remote:
                logger.info(
                    "%s is on %s, which inotify cannot watch: polling every %g s",
                    directory,
                    remote,
                    interval,
                )
                return PollingWatcher(interval)
    try:
        return InotifyWatcher()
    except OSError as exc:
        if chosen == "inotify" or exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOSYS):
            raise
        logger.warning("inotify is not available (%s): polling every %g s", exc, interval)
        return PollingWatcher(interval)
