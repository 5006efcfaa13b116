"""The dynamic loader: dlopen, dlsym, dlclose and dlinfo from libc, dlerror() turned into OSError.

ctypes.CDLL never calls dlclose, and hotr must unmap old versions, so it calls the loader itself.

Every call holds `LOCK`, which a fork waits for (os.register_at_fork): glibc's loader locks
(``dl_load_write_lock`` among them) are not reset in a forked child, so a fork that lands while
another thread is inside dlopen leaves a child that hangs in its first dlopen.  With the lock, no
fork happens while hotr is inside the loader.
"""

from __future__ import annotations

import ctypes
import os
import threading

# dlopen and friends live in libc since glibc 2.34 and in libdl before; the interpreter has
# loaded whichever provides them, so the global scope (CDLL(None)) finds them either way.
# dlopen and dlclose run the library's constructors and destructors, so they release the GIL;
# dlsym, dlinfo and dlerror are quick lookups and keep it (PyDLL).
_libc = ctypes.CDLL(None)
_libc_with_gil = ctypes.PyDLL(None)
_dlopen = _libc.dlopen
_dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
_dlopen.restype = ctypes.c_void_p
_dlsym = _libc_with_gil.dlsym
_dlsym.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
_dlsym.restype = ctypes.c_void_p
_dlclose = _libc.dlclose
_dlclose.argtypes = [ctypes.c_void_p]
_dlclose.restype = ctypes.c_int
_dlerror = _libc_with_gil.dlerror
_dlerror.argtypes = []
_dlerror.restype = ctypes.c_char_p
_dlinfo = _libc_with_gil.dlinfo
_dlinfo.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
_dlinfo.restype = ctypes.c_int

RTLD_NOLOAD = 4  # <dlfcn.h>: only return a handle if the object is already loaded
_RTLD_DI_LINKMAP = 2

# Reentrant: a constructor run by dlopen may itself load a library through hotr.
LOCK = threading.RLock()


def _error(default: str) -> OSError:
    """The loader's message for the call that just failed (dlerror is per thread)."""
    message = _dlerror()
    return OSError(message.decode(errors="replace") if message else default)


def dlopen(path: str, *, noload: bool = False) -> int:
    """Map `path` with RTLD_NOW | RTLD_LOCAL and return its handle.

    RTLD_NOW makes an undefined symbol fail here, as an error, instead of at its first call,
    where it would abort the process; RTLD_LOCAL keeps each version's symbols to itself.  With
    `noload`, return the handle of `path` only if it is mapped already (raises otherwise).
    """
    flags = os.RTLD_NOW | os.RTLD_LOCAL | (RTLD_NOLOAD if noload else 0)
    with LOCK:
        handle = _dlopen(os.fsencode(path), flags)
        if not handle:
            raise _error(f"dlopen({path!r}) failed")
    return int(handle)


def dlsym(handle: int, name: str) -> int | None:
    """Return the address of `name` in the library `handle`, or None when it has none."""
    with LOCK:
        address = _dlsym(handle, name.encode())
    return int(address) if address else None


def dlclose(handle: int) -> None:
    """Drop the reference `handle` holds; glibc unmaps the file when it was the last one."""
    with LOCK:
        if _dlclose(handle) != 0:
            raise _error("dlclose failed")


class _LinkMap(ctypes.Structure):
    """The public head of glibc's struct link_map (<link.h>)."""

    _fields_ = [("l_addr", ctypes.c_size_t), ("l_name", ctypes.c_char_p)]


def base_address(handle: int) -> int:
    """The load base of library `handle`: add a symbol's ELF st_value to get its address."""
    link_map = ctypes.POINTER(_LinkMap)()
    with LOCK:
        if _dlinfo(handle, _RTLD_DI_LINKMAP, ctypes.byref(link_map)) != 0:
            raise _error("dlinfo failed")
    return int(link_map.contents.l_addr)


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
    LOCK = threading.RLock()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)
