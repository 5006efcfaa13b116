"""The inotify backend: watch files through inotify on their directories (inotify(7)).

Watching the file's inode would miss most rebuilds: GNU ld unlinks its output and creates a new
file, editors and install(1) save by renaming a temporary file over the old one.  The directory sees
all of these.  A change is reported only once the writer is done with the file: IN_CLOSE_WRITE for a
write in place or a new file, IN_MOVED_TO for a rename, IN_CREATE only for a symlink (it has no
writer).  Deletions are reported too, and so is the loss of a watched directory.
"""

from __future__ import annotations

import contextlib
import os
import select
import struct
import threading
from collections.abc import Hashable, Iterator

from inotify_simple import INotify
from inotify_simple import flags as F

from ._watch import Change, ChangeKind, WakePipe

_DIR_MASK = (
    F.CLOSE_WRITE
    | F.MOVED_TO
    | F.CREATE
    | F.DELETE
    | F.MOVED_FROM
    | F.DELETE_SELF
    | F.MOVE_SELF
    | F.ONLYDIR
)
_LOST = F.DELETE_SELF | F.MOVE_SELF | F.IGNORED | F.UNMOUNT
_EVENT = struct.Struct("iIII")  # struct inotify_event without its name: wd, mask, cookie, len
_READ_SIZE = 64 * 1024  # many events a read; the kernel never splits one


class InotifyWatcher:
    """One inotify instance watching the directories of any number of files.

    It is a file-like object: fileno() is the inotify descriptor, for select/poll/selectors.
    Its methods may be called from several threads.
    """

    name = "inotify"

    def __init__(self) -> None:
        self._inotify = INotify(nonblocking=True)
        self._wake = WakePipe()
        self._poller = select.poll()
        self._fd: int = self._inotify.fileno()  # kept: the number stays valid for poll() results
        self._poller.register(self._fd, select.POLLIN)
        self._poller.register(self._wake.fd, select.POLLIN)
        self._lock = threading.Lock()
        self._dirs: dict[int, str] = {}  # watch descriptor -> directory
        self._names: dict[str, dict[str, set[Hashable]]] = {}  # directory -> file name -> keys

    def fileno(self) -> int:
        """The inotify descriptor: readable when events are waiting."""
        return self._fd

    def add(self, path: str, key: Hashable = None) -> None:
        """Watch the file `path` (through its directory); report its changes under `key`.

        Raises OSError (ENOENT, ENOTDIR...) when the directory cannot be watched.
        """
        directory, name = os.path.split(os.path.abspath(path))
        with self._lock:
            if directory not in self._names:
                wd = self._inotify.add_watch(directory, _DIR_MASK)
                self._dirs[wd] = directory
                self._names[directory] = {}
            self._names[directory].setdefault(name, set()).add(path if key is None else key)

    def remove(self, path: str, key: Hashable = None) -> None:
        """Stop reporting `path` under `key`; drop the directory watch when nothing is left."""
        directory, name = os.path.split(os.path.abspath(path))
        with self._lock:
            names = self._names.get(directory)
            if names is None or name not in names:
                return
            names[name].discard(path if key is None else key)
            if not names[name]:
                del names[name]
            if not names:
                self._forget(directory, rm_watch=True)

    def _forget(self, directory: str, *, rm_watch: bool) -> None:
        del self._names[directory]
        for wd, watched in list(self._dirs.items()):
            if watched == directory:
                del self._dirs[wd]
                if rm_watch:
                    with contextlib.suppress(OSError):
                        self._inotify.rm_watch(wd)

    def _events(self) -> Iterator[tuple[int, int, str]]:
        """(wd, mask, name) of each event waiting now: one read(2), parsed as in inotify(7)."""
        try:
            data = os.read(self._fd, _READ_SIZE)
        except BlockingIOError:
            return
        offset = 0
        while offset < len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            offset += _EVENT.size
            name = data[offset : offset + length].rstrip(b"\0")
            offset += length
            yield wd, mask, os.fsdecode(name)

    def read(self) -> list[Change]:
        """Return the changes waiting now, without blocking."""
        with self._lock:
            return self._read()

    def _read(self) -> list[Change]:
        changes: list[Change] = []
        for wd, mask, name in self._events():
            if wd == -1:  # IN_Q_OVERFLOW: events were dropped, assume everything changed
                changes.extend(
                    Change(key, ChangeKind.WRITTEN)
                    for names in self._names.values()
                    for keys in names.values()
                    for key in keys
                )
                continue
            directory = self._dirs.get(wd)
            if directory is None:
                continue
            if mask & _LOST:
                keys = [k for ks in self._names.get(directory, {}).values() for k in ks]
                changes.extend(Change(key, ChangeKind.LOST) for key in keys)
                self._forget(directory, rm_watch=not mask & F.IGNORED)
                continue
            keys_for_name = self._names[directory].get(name)
            if not keys_for_name:
                continue
            kind = _kind(mask, os.path.join(directory, name))
            if kind is not None:
                changes.extend(Change(key, kind) for key in keys_for_name)
        return changes

    def wait(self, timeout: float | None) -> bool:
        """Block until events are waiting, wake() is called, or `timeout` seconds pass.

        Returns True when inotify events are waiting.  Not under the lock: read() and add()
        from other threads go on meanwhile.
        """
        ready = self._poller.poll(None if timeout is None else max(0, int(timeout * 1000 + 0.999)))
        for fd, _ in ready:
            if fd == self._wake.fd:
                self._wake.drain()
        return any(fd == self._fd for fd, _ in ready)

    def wake(self) -> None:
        """Make a wait() in another thread return now."""
        self._wake.wake()

    def close(self) -> None:
        """Release the inotify instance and the wake-up pipe; safe to call twice."""
        if self._wake.fd < 0:
            return
        self._wake.wake()
        self._inotify.close()
        self._wake.close()


def _kind(mask: int, path: str) -> ChangeKind | None:
    if mask & (F.CLOSE_WRITE | F.MOVED_TO):
        return ChangeKind.WRITTEN
    if mask & (F.DELETE | F.MOVED_FROM):
        return ChangeKind.DELETED
    if mask & F.CREATE and os.path.islink(path):
        return ChangeKind.WRITTEN  # a symlink is complete when created; no close will follow
    return None
