"""The libc calls hotr makes that the os module lacks: inotify(7) and statfs(2).

libc is loaded once with ``use_errno=True``; every call goes through `_call`, which retries
EINTR and turns -1 into ``OSError(errno, strerror)`` the way the os module does.
"""

from __future__ import annotations

import ctypes
import errno
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

_libc = ctypes.CDLL(None, use_errno=True)
_inotify_init1 = _libc.inotify_init1
_inotify_init1.argtypes = [ctypes.c_int]
_inotify_add_watch = _libc.inotify_add_watch
_inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_inotify_rm_watch = _libc.inotify_rm_watch
_inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
_statfs = _libc.statfs
_statfs.argtypes = [ctypes.c_char_p, ctypes.c_char_p]


def _call(function: Callable[..., int], *args: object, path: str | None = None) -> int:
    while True:
        result = function(*args)
        if result != -1:
            return result
        code = ctypes.get_errno()
        if code != errno.EINTR:
            if path is None:
                raise OSError(code, os.strerror(code))
            raise OSError(code, os.strerror(code), path)


def inotify_init1(flags: int) -> int:
    """inotify_init1(2): a new inotify instance; returns its descriptor."""
    return _call(_inotify_init1, flags)


def inotify_add_watch(fd: int, path: str, mask: int) -> int:
    """inotify_add_watch(2): watch `path`; returns the watch descriptor (the same one again
    for a path already watched)."""
    return _call(_inotify_add_watch, fd, os.fsencode(path), mask, path=path)


def inotify_rm_watch(fd: int, wd: int) -> None:
    """inotify_rm_watch(2): stop watching `wd`."""
    _call(_inotify_rm_watch, fd, wd)


def statfs_type(path: str) -> int:
    """statfs(2) ``f_type`` of the file system holding `path`."""
    buffer = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux
    _call(_statfs, os.fsencode(path), buffer, path=path)
    return ctypes.c_long.from_buffer(buffer).value & 0xFFFFFFFF
