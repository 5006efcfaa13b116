"""Private copies of each loaded version, in a directory only this user can open.

glibc's dlopen returns the handle it already has for a path it has loaded, and a mapped file must
not be rewritten under the loader, so every version is loaded from its own copy.  Copies live in
``$HOTR_PRIVATE_DIR`` (default: ``<tempdir>/hotr-<uid>``), one subdirectory per process holding an
flock on itself: a directory whose lock can be taken belongs to a process that died, and is swept.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import shutil
import stat
import tempfile
import time

from ._exceptions import HotReloadError

logger = logging.getLogger("hotr")

# A directory this young may be between mkdtemp() and flock() in another process: leave it be.
_SWEEP_MIN_AGE = 10.0


def private_root() -> str:
    """Return the per-user directory that holds every process's private copies."""
    configured = os.environ.get("HOTR_PRIVATE_DIR")
    return configured or os.path.join(tempfile.gettempdir(), f"hotr-{os.getuid()}")


def _ensure_root(root: str) -> None:
    with contextlib.suppress(FileExistsError):
        os.mkdir(root, 0o700)
    info = os.lstat(root)
    if not stat.S_ISDIR(info.st_mode):
        raise HotReloadError(f"private directory {root!r} is not a directory (a symlink or file)")
    if info.st_uid != os.getuid():
        raise HotReloadError(
            f"private directory {root!r} belongs to another user (uid {info.st_uid})"
        )
    if info.st_mode & 0o077:
        raise HotReloadError(
            f"private directory {root!r} is open to other users (mode {info.st_mode & 0o777:o}); "
            "run chmod 700 on it"
        )


def sweep(root: str) -> None:
    """Remove the private directories of processes that died without cleaning up."""
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    now = time.time()
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
            os.close(fd)  # its owner is alive
            continue
        try:
            if now - os.fstat(fd).st_mtime >= _SWEEP_MIN_AGE:
                shutil.rmtree(entry.path, ignore_errors=True)
                logger.debug("swept private copies left by a dead process: %s", entry.path)
        finally:
            os.close(fd)


class PrivateStore:
    """This process's directory of version copies (mode 0700), removed by close()."""

    def __init__(self) -> None:
        root = private_root()
        try:
            _ensure_root(root)
            sweep(root)
            self.path = tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root)
            self._lock_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise HotReloadError(
                f"cannot use private directory {root!r}: {exc.strerror}; "
                "set HOTR_PRIVATE_DIR to a writable directory"
            ) from exc
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._owner = os.getpid()
        self._serial = itertools.count(1)

    def write(self, name: str, data: bytes) -> str:
        """Write `data` to a new file named after `name`; return its path.

        O_EXCL | O_NOFOLLOW: the copy is a new file hotr created, never something planted there.
        """
        path = os.path.join(self.path, f"v{next(self._serial)}-{name}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o500)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        return path

    def remove(self, path: str) -> None:
        """Delete one copy; a mapping of it stays valid until it is unmapped."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def close(self) -> None:
        """Remove the directory and every copy in it (only in the process that made it)."""
        if self._lock_fd < 0:
            return
        if os.getpid() == self._owner:
            shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._lock_fd)
        self._lock_fd = -1
