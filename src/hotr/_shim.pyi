"""Type stub for the C extension that makes live functions (see _shim.c)."""

from collections.abc import Callable, Sequence
from typing import Any

class Pin:
    """In-flight call counter of one loaded version."""

    on_idle: Callable[[], object] | None
    def __init__(self, number: int = 0) -> None: ...
    @property
    def inflight(self) -> int: ...
    @property
    def number(self) -> int: ...
    def set_code(self, ranges: Sequence[tuple[int, int]]) -> None: ...

class LiveFunction:
    """A callable that follows reloads and counts calls in flight."""

    _cfunc: Any
    def __init__(
        self, cfunc: Any, slot: int, owner: object = None, guard: bool = False
    ) -> None: ...
    def __call__(self, *args: Any) -> Any: ...

TRAMPOLINE: int  # what a guarded function's ctypes/cffi object points at (0: unsupported)

def install_guard() -> None: ...

class LiveCallable(LiveFunction):
    """What a live function of an extension module calls: follows reloads, counts calls."""

    def __init__(self, function: Any, owner: object = None, guard: bool = False) -> None: ...

def live_builtin(live: LiveCallable, name: str, doc: str | None, module_name: str) -> Any: ...
def check_elf(
    data: bytes | Any, host_class: int, host_data: int, host_machine: int, names: tuple[bytes, ...]
) -> tuple[
    list[tuple[int, int]],
    tuple[int, int] | None,
    list[bytes],
    list[bytes],
    list[bytes],
    list[bytes],
]: ...
def check_elf_file(
    path: str,
    host_class: int,
    host_data: int,
    host_machine: int,
    names: tuple[bytes, ...],
    start: int,
) -> tuple[
    tuple[
        list[tuple[int, int]],
        tuple[int, int] | None,
        list[bytes],
        list[bytes],
        list[bytes],
        list[bytes],
    ],
    bytes,
    int,
]: ...
def same_bytes(a: bytes | memoryview | Any, b: bytes | memoryview | Any) -> bool: ...
def retarget(
    functions: Sequence[LiveFunction],
    addresses: Sequence[object],
    pin: Pin,
    missing: Sequence[BaseException | None],
    live: list[Pin | None] | None = None,
    direct: bool = False,
) -> None: ...
def dl_open(path: str, flags: int) -> int: ...
def dl_sym(handle: int, name: str) -> int | None: ...
def dl_close(handle: int) -> None: ...
def dl_base(handle: int) -> int: ...
def inotify_queued(fd: int) -> int: ...
def name_thread(name: str) -> None: ...
def copy_file(path: str, out: int, small: int, live: bytes | None) -> tuple[bytes | None, bool]: ...
def inotify_read(fd: int, size: int) -> tuple[list[tuple[int, int, str]], bool]: ...

class Deferred:
    def __enter__(self) -> Deferred: ...
    def __exit__(self, *exc_info: object) -> None: ...

def deferred() -> Deferred: ...
def deferred_after_fork_in_child() -> None: ...
def is_main_thread() -> bool: ...
