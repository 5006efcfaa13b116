"""cffi: live cdata functions with the same reload guarantees as the ctypes path."""

from __future__ import annotations

import pytest
from conftest import Builder, reload_next, run_python, source

import hotr

cffi = pytest.importorskip("cffi")

KERNEL = (
    "double scale(double x) { return x * FACTOR; }\n#include <unistd.h>\n"
    "int entered;\nint slow(int us) { entered = 1; usleep(us); return FACTOR; }\n"
)


def kernel(factor: int) -> str:
    return source(factor, f"#define FACTOR {factor}\n" + KERNEL)


def declared() -> object:
    ffi = cffi.FFI()
    ffi.cdef("int value(void); double scale(double); int slow(int);")
    return ffi


def test_cffi_functions_follow_reloads(builder: Builder) -> None:
    builder.write_bytes(builder.compile(kernel(2)))
    with hotr.HotReloader(builder.lib, ffi=declared()) as r:
        lib = r.update()
        scale = lib.scale
        assert scale(1.5) == 3.0
        builder.rename(kernel(10))
        reload_next(r)
        assert scale(1.5) == 15.0
        assert lib.value() == 10
        with pytest.raises(hotr.SymbolNotFoundError):
            lib.nothing_here  # noqa: B018


def test_cffi_undeclared_function(builder: Builder) -> None:
    builder.write_bytes(builder.compile(kernel(2)))
    ffi = cffi.FFI()
    ffi.cdef("int value(void);")
    with hotr.HotReloader(builder.lib, ffi=ffi) as r:
        lib = r.update()
        with pytest.raises(hotr.HotReloadError, match="declared in the ffi's cdef"):
            lib.scale  # noqa: B018


def test_cffi_long_call_survives_reloads(builder: Builder) -> None:
    variants = [builder.compile_to_file(kernel(n)) for n in (1, 2, 3)]
    run_python(
        f"""
        import ctypes, os, threading, cffi, hotr
        ffi = cffi.FFI()
        ffi.cdef("int value(void); int slow(int);")
        lib_path = {str(builder.lib)!r}
        variants = [open(p, "rb").read() for p in {variants!r}]
        open(lib_path, "wb").write(variants[0])
        r = hotr.HotReloader(lib_path, ffi=ffi, debounce=0)
        lib = r.update()
        result = []
        t = threading.Thread(target=lambda: result.append(lib.slow(300_000)))
        t.start()
        while ctypes.c_int.in_dll(r.library, "entered").value == 0:
            pass
        for data in variants[1:]:
            tmp = lib_path + ".tmp"
            open(tmp, "wb").write(data)
            os.rename(tmp, lib_path)
            assert r.watch_for_changes(timeout=5) == 1
            r.update()
        r.poll()
        assert "v1-libhot.so" in open("/proc/self/maps").read()
        t.join()
        assert result == [1] and lib.value() == 3
        r.poll()
        assert "v1-libhot.so" not in open("/proc/self/maps").read()
        r.close()
        """,
        env={"HOTR_PRIVATE_DIR": str(builder.dir / "private")},
    )
