"""The dynamic loader: dlopen, dlsym, dlclose and dlinfo, errors as OSError with the loader's
message.

ctypes.CDLL never calls dlclose, and hotr must unmap old versions, so it calls the loader itself
(through _shim's C functions: on every reload, ctypes' own conversions cost more than the calls).

Every call holds `LOCK`, which a fork waits for (os.register_at_fork): glibc's loader locks
(``dl_load_write_lock`` among them) are not reset in a forked child, so a fork that lands while
another thread is inside dlopen leaves a child that hangs in its first dlopen.  With the lock, no
fork happens while hotr is inside the loader.
"""

from __future__ import annotations

import _thread
import ctypes
import os

from ._shim import dl_base, dl_close, dl_open, dl_sym

# dladdr, rarely needed, through ctypes: the global scope (CDLL(None)) finds it in libc (glibc
# 2.34 and later) or libdl, whichever the interpreter has loaded.
_libc_with_gil = ctypes.PyDLL(None)

RTLD_NOLOAD = 4  # <dlfcn.h>: only return a handle if the object is already loaded

# Reentrant: a constructor run by dlopen may itself load a library through hotr.
LOCK = _thread.RLock()


def dlopen(path: str, *, noload: bool = False) -> int:
    """Map `path` with RTLD_NOW | RTLD_LOCAL and return its handle.

    RTLD_NOW makes an undefined symbol fail here, as an error, instead of at its first call,
    where it would abort the process; RTLD_LOCAL keeps each version's symbols to itself.  With
    `noload`, return the handle of `path` only if it is mapped already (raises otherwise).
    """
    flags = os.RTLD_NOW | os.RTLD_LOCAL | (RTLD_NOLOAD if noload else 0)
    with LOCK:
        return dl_open(path, flags)


def dlsym(handle: int, name: str) -> int | None:
    """Return the address of `name` in the library `handle`, or None when it has none."""
    with LOCK:
        return dl_sym(handle, name)


def dlclose(handle: int) -> None:
    """Drop the reference `handle` holds; glibc unmaps the file when it was the last one."""
    with LOCK:
        dl_close(handle)


def base_address(handle: int) -> int:
    """The load base of library `handle`: add a symbol's ELF st_value to get its address."""
    with LOCK:
        return dl_base(handle)


class _DlInfo(ctypes.Structure):
    """Dl_info (<dlfcn.h>)."""

    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


_dladdr = _libc_with_gil.dladdr
_dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
_dladdr.restype = ctypes.c_int


def owner(address: int) -> str | None:
    """The path of the loaded object that holds `address` (dladdr), or None."""
    info = _DlInfo()
    with LOCK:
        if not _dladdr(address, ctypes.byref(info)) or not info.dli_fname:
            return None
    return os.fsdecode(info.dli_fname)


def executable(address: int) -> bool:
    """True if `address` is in an executable mapping of this process (/proc/self/maps)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, perms = line.split(None, 2)[:2]
            low, high = (int(x, 16) for x in span.split("-"))
            if low <= address < high:
                return "x" in perms
    return False


def _before_fork() -> None:
    LOCK.acquire()


def _after_fork_in_parent() -> None:
    LOCK.release()


def _after_fork_in_child() -> None:
    global LOCK
    LOCK = _thread.RLock()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)
