"""Private copies of each loaded version, in a directory only this user can open.

glibc's dlopen returns the handle it already has for a path it has loaded, and a mapped file must
not be rewritten under the loader, so every version is loaded from its own copy.  Copies live in
``$HOTR_PRIVATE_DIR`` (default ``<tmp>/hotr-<uid>``, mode 0700, owned by the user): one directory
per process, holding an flock on itself for as long as the process lives, with one subdirectory
per reloader.  A process directory whose lock can be taken belongs to a process that died, and
the next hotr process sweeps it.  Creating a process directory and taking its lock happen under
a shared lock on the root directory that sweeping takes exclusively, so a directory is never swept
between its creation and its lock, however young it is.
"""

from __future__ import annotations

import _thread
import errno
import fcntl
import itertools
import os
import stat

from . import _env
from ._exceptions import HotReloadError
from ._log import logger

_NAME_ROOM = 255 - 48  # bytes of a path component, less room for what hotr appends to a name


def fitting(name: str) -> str:
    """`name` for a file hotr derives from the user's file name, shortened when needed (its
    start kept, a digest of it added) so that hotr's suffixes (``.d``, ``.so.new``, a temporary
    file's pid and thread) still fit in one path component."""
    encoded = os.fsencode(name)
    if len(encoded) <= _NAME_ROOM:
        return name
    import hashlib  # only for names near the limit: not at import time

    tag = hashlib.sha256(encoded).hexdigest()[:16]
    return os.fsdecode(encoded[: _NAME_ROOM - len(tag) - 1]) + "~" + tag


def ensure_private_directory(path: str, what: str, variable: str) -> None:
    """Create `path` (mode 0700) unless it exists, then make sure it is a directory of this
    user's that no one else can open: nothing planted by another user is ever built or loaded.

    `what` names it in messages ("private directory"), `variable` the setting that moves it.
    Raises HotReloadError with the fix.
    """
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise HotReloadError(
            f"{what} {path!r} is not a directory (a symlink or a file); "
            f"set {variable} to a directory of your own"
        )
    if info.st_uid != os.getuid():
        raise HotReloadError(
            f"{what} {path!r} belongs to another user (uid {info.st_uid}); "
            f"set {variable} to a directory of your own"
        )
    if info.st_mode & 0o077:
        raise HotReloadError(
            f"{what} {path!r} is open to other users (mode {info.st_mode & 0o777:o}); "
            "run chmod 700 on it"
        )


def _sweep(root: str) -> None:
    """Remove the directories of processes that died without cleaning up (lock held)."""
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # its owner is alive
        else:
            _rmtree(entry.path)
            if os.path.lexists(entry.path):
                logger.warning(
                    "cannot remove %s, left by a process that died; the next hotr process "
                    "tries again",
                    entry.path,
                )
            else:
                logger.debug("swept private copies left by a dead process: %s", entry.path)
        finally:
            os.close(fd)


def _rmtree(path: str) -> None:
    """shutil.rmtree(path, ignore_errors=True), without importing shutil (and the compression
    modules it imports) into every program, at exit."""
    for parent, directories, files in os.walk(path, topdown=False):
        for name in files:
            try:
                os.unlink(os.path.join(parent, name))
            except OSError:
                pass
        for name in directories:
            entry = os.path.join(parent, name)
            try:
                if os.path.islink(entry):
                    os.unlink(entry)
                else:
                    os.rmdir(entry)
            except OSError:
                pass
    try:
        os.rmdir(path)
    except OSError:
        pass


def _new_directory(root: str, prefix: str) -> str:
    """A new directory of mode 0700 under `root`, under a name nobody else took."""
    for _ in range(100):
        path = os.path.join(root, prefix + os.urandom(6).hex())
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        return path
    raise OSError(errno.EEXIST, "no free name for a private directory", root)


class PrivateStore:
    """This process's directory of version copies under `root`; one subdirectory per reloader.
    It goes when its last reloader's subdirectory does (or at exit)."""

    def __init__(self, root: str) -> None:
        self.root = root
        try:
            ensure_private_directory(root, "private directory", "HOTR_PRIVATE_DIR")
            guard = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                fcntl.flock(guard, fcntl.LOCK_EX)
                _sweep(root)
                fcntl.flock(guard, fcntl.LOCK_SH)  # others may sweep once ours is locked
                self.path = _new_directory(root, f"{os.getpid()}-")
                self._lock_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(guard)
        except OSError as exc:
            raise HotReloadError(
                f"cannot use private directory {root!r}: {exc.strerror}; "
                "set HOTR_PRIVATE_DIR to a writable directory"
            ) from exc
        self._owner = os.getpid()
        self._serial = itertools.count(1)
        self._lock = _thread.allocate_lock()
        self._leftovers: set[str] = set()  # copies that could not be removed yet
        self._directories = 0

    def new_directory(self) -> str:
        """A new, empty subdirectory for one reloader (give it back with release())."""
        path = os.path.join(self.path, f"r{next(self._serial)}")
        try:
            os.mkdir(path, 0o700)
        except OSError as exc:
            raise HotReloadError(
                f"cannot use private directory {self.path!r}: {exc.strerror}; "
                "set HOTR_PRIVATE_DIR to a writable directory"
            ) from exc
        with self._lock:
            self._directories += 1
        return path

    def release(self, directory: str) -> None:
        """Remove a reloader's subdirectory and what is left in it; the whole process
        directory goes with the last one.  Never raises."""
        _rmtree(directory)
        if os.path.lexists(directory):
            logger.warning("cannot remove private directory %s; it is swept later", directory)
        with self._lock:
            self._directories -= 1
            last = self._directories == 0
        if last:
            _forget(self)

    def create(self, directory: str, name: str) -> tuple[str, int]:
        """Create a new file for a copy; returns its path and a descriptor open for writing.

        O_EXCL | O_NOFOLLOW: the copy is a file hotr created now, never something planted there;
        a name that is taken is skipped, not followed.
        """
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        for attempt in range(1, 100):
            path = os.path.join(directory, name if attempt == 1 else f"{attempt}.{name}")
            try:
                return path, os.open(path, flags, 0o500)
            except FileExistsError:
                continue
        raise OSError(errno.EEXIST, "no free name for a private copy", directory)

    def remove(self, path: str) -> None:
        """Delete a copy (a mapping of it stays valid).  A failure is logged and retried by
        the next housekeeping; it never raises."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            with self._lock:
                first = path not in self._leftovers
                self._leftovers.add(path)
            if first:
                logger.warning("cannot remove private copy %s (%s); will retry", path, exc.strerror)
            return
        with self._lock:
            self._leftovers.discard(path)

    @property
    def leftovers(self) -> bool:
        """True if some copies could not be removed yet (retry() tries again)."""
        return bool(self._leftovers)

    def retry(self) -> None:
        """Try again to remove the copies that could not be removed before."""
        with self._lock:
            leftovers = list(self._leftovers)
        for path in leftovers:
            self.remove(path)

    def remove_directory(self, directory: str) -> None:
        """Remove a directory of copies (a version's $ORIGIN layout); never raises."""
        _rmtree(directory)
        if os.path.lexists(directory):
            logger.warning("cannot remove private directory %s; it is swept later", directory)

    def close(self) -> None:
        """Remove the process directory (only in the process that made it)."""
        if self._lock_fd < 0:
            return
        if os.getpid() == self._owner:
            _rmtree(self.path)
        os.close(self._lock_fd)
        self._lock_fd = -1

    def abandon(self) -> None:
        """In a forked child: drop the inherited lock descriptor and leave the directory to
        the parent (its own descriptor keeps the lock held)."""
        try:
            os.close(self._lock_fd)
        except OSError:
            pass
        self._lock_fd = -1


_stores: dict[str, PrivateStore] = {}  # by root: $HOTR_PRIVATE_DIR may change in a process
_stores_lock = _thread.allocate_lock()


def store() -> PrivateStore:
    """This process's store under ``$HOTR_PRIVATE_DIR``, made on first use.

    Raises HotReloadError when the private directory cannot be used.
    """
    root = _env.private_root()
    with _stores_lock:
        found = _stores.get(root)
        if found is None:
            found = _stores[root] = PrivateStore(root)
        return found


def _forget(store: PrivateStore) -> None:
    with _stores_lock:
        if _stores.get(store.root) is store:
            del _stores[store.root]
    store.close()


def close_stores() -> None:
    """At exit: remove this process's directories."""
    with _stores_lock:
        stores = list(_stores.values())
        _stores.clear()
    for each in stores:
        each.close()


def _after_fork_in_child() -> None:
    global _stores_lock
    _stores_lock = _thread.allocate_lock()
    for each in _stores.values():
        each.abandon()
    _stores.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
