"""Functions built from C sources are typed from their prototypes: real compiler, real loader."""

from __future__ import annotations

import array
import ctypes
import logging
import os
import shutil
import signal
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import run_python

import hotr

pytestmark = pytest.mark.every_python  # ctypes conversions differ between CPython versions

TYPES = textwrap.dedent(
    """
    #include <stdbool.h>
    #include <stddef.h>
    #include <stdint.h>
    #include <string.h>
    #include <wchar.h>
    struct handle;
    typedef struct { double x, y; } point;
    double half(double x) { return x / 2; }
    float halff(float x) { return x / 2; }
    long double halfl(long double x) { return x / 2; }
    int8_t i8(int8_t x) { return x; }
    uint8_t u8(uint8_t x) { return x; }
    int16_t i16(int16_t x) { return x; }
    uint16_t u16(uint16_t x) { return x; }
    uint32_t u32(uint32_t x) { return x; }
    int64_t i64(int64_t x) { return x; }
    uint64_t u64(uint64_t x) { return x; }
    unsigned long long ull(unsigned long long x) { return x; }
    size_t size(size_t x) { return x; }
    bool negate(bool b) { return !b; }
    char letter(int i) { return (char)('a' + i); }
    size_t length(const char *s) { return strlen(s); }
    const char *greeting(void) { return "hello"; }
    char *upcase(char *s) { for (char *p = s; *p; p++) *p -= 32; return s; }
    void scale(double *out, const double *in, size_t n, double k) {
        for (size_t i = 0; i < n; i++) out[i] = in[i] * k;
    }
    int64_t total(const int64_t *v, size_t n) {
        int64_t t = 0; for (size_t i = 0; i < n; i++) t += v[i]; return t;
    }
    struct handle *same(struct handle *h) { return h; }
    double norm(const point *p) { return p->x * p->x + p->y * p->y; }
    size_t count(const void *data, size_t n) { return data ? n : 0; }
    void nothing(void) {}
    int apply(int (*fp)(int), int a) { return fp(a); }
    double sum3(const double v[3]) { return v[0] + v[1] + v[2]; }
    size_t chars(const char s[]) { return strlen(s); }
    size_t wlength(const wchar_t *s) { return wcslen(s); }
    wchar_t wfirst(const wchar_t *s) { return s[0]; }
    const wchar_t *wgreeting(void) { return L"h\u00e9llo"; }
    wchar_t *wupcase(wchar_t *s) { for (wchar_t *p = s; *p; p++) *p -= 32; return s; }
    """
)


@pytest.fixture
def lib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[hotr.Library]:
    monkeypatch.setenv("HOTR_PRIVATE_DIR", str(tmp_path / "private"))
    (tmp_path / "types.c").write_text(TYPES)
    reloader = hotr.HotReloader(tmp_path / "types.c")
    yield reloader.update()
    reloader.close()


def test_scalars_of_every_width(lib: hotr.Library) -> None:
    assert lib.half(3.0) == 1.5
    assert lib.halff(3.0) == 1.5
    assert lib.halfl(3.0) == 1.5
    assert lib.i8(-3) == -3
    assert lib.u8(255) == 255
    assert lib.i16(-30000) == -30000
    assert lib.u16(65535) == 65535
    assert lib.u32(2**32 - 1) == 2**32 - 1
    assert lib.i64(-(2**62)) == -(2**62)
    assert lib.u64(2**64 - 1) == 2**64 - 1
    assert lib.ull(2**63) == 2**63
    assert lib.size(2**40) == 2**40
    assert lib.negate(True) is False
    assert lib.letter(2) == b"c"
    assert lib.nothing() is None
    assert lib.u16.restype is ctypes.c_uint16
    assert lib.size.argtypes == (ctypes.c_size_t,)


def test_strings(lib: hotr.Library) -> None:
    assert lib.length(b"four") == 4
    assert lib.greeting() == b"hello"
    buffer = ctypes.create_string_buffer(b"abc")
    assert lib.upcase(buffer) == b"ABC"
    assert lib.upcase(bytearray(b"xy\0")) == b"XY"
    with pytest.raises(ctypes.ArgumentError, match=r"char \* parameter \(not const\)"):
        lib.upcase(b"read-only")  # C would write into an immutable bytes object
    with pytest.raises(ctypes.ArgumentError, match=r"not str: pass text.encode\(\)"):
        lib.length("text")


def test_wide_strings_are_typed_as_ctypes_types_them(lib: hotr.Library) -> None:
    assert lib.wlength.argtypes == (ctypes.c_wchar_p,)  # not int *: wchar_t is a typedef of int
    assert lib.wlength("h\u00e9llo") == 5
    assert lib.wfirst("\u00e9t\u00e9") == "\u00e9"
    assert lib.wfirst.restype is ctypes.c_wchar
    assert lib.wgreeting() == "h\u00e9llo"
    buffer = ctypes.create_unicode_buffer("abc")
    assert lib.wupcase(buffer) == "ABC" and buffer.value == "ABC"


def test_pointers_take_numpy_arrays_ctypes_arrays_and_buffers(lib: hotr.Library) -> None:
    source = np.arange(4, dtype=np.float64)
    out = np.zeros(4)
    lib.scale(out, source, 4, 2.0)
    assert out.tolist() == [0.0, 2.0, 4.0, 6.0]
    grid = np.zeros((2, 2))
    lib.scale(grid, (ctypes.c_double * 4)(1, 2, 3, 4), 4, 1.0)  # 2-D, C-contiguous
    assert grid.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    frozen = np.ones(4)
    frozen.flags.writeable = False
    lib.scale(out, frozen, 4, 3.0)  # read-only is fine for const double *
    assert out.tolist() == [3.0] * 4
    assert lib.total(array.array("q", [1, 2, 3]), 3) == 6
    assert lib.total(np.array([5, 6], dtype=np.int64), 2) == 11
    assert lib.count(b"abc", 3) == 3
    assert lib.count(None, 3) == 0
    assert lib.count(np.zeros(2), 2) == 2
    point = (ctypes.c_double * 2)(3, 4)
    assert lib.norm(point) == 25.0
    handle = ctypes.c_void_p(1234)
    assert lib.same(handle) == 1234
    assert lib.same(None) is None
    assert lib.same(5678) == 5678


def test_wrong_buffers_are_refused_with_the_reason(lib: hotr.Library) -> None:
    out = np.zeros(4)
    with pytest.raises(ctypes.ArgumentError, match=r"8-byte floats; this ndarray has format 'f'"):
        lib.scale(out, np.zeros(4, dtype=np.float32), 4, 1.0)
    with pytest.raises(ctypes.ArgumentError, match="C-contiguous"):
        lib.scale(np.zeros((4, 4))[:, 0], out, 4, 1.0)
    frozen = np.ones(4)
    frozen.flags.writeable = False
    with pytest.raises(ctypes.ArgumentError, match="read-only"):
        lib.scale(frozen, out, 4, 1.0)
    with pytest.raises(ctypes.ArgumentError, match="takes a ctypes array or pointer"):
        lib.scale([1.0, 2.0], out, 2, 1.0)
    assert out.tolist() == [0.0] * 4


def save(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text)
    os.rename(tmp, path)


def test_a_changed_prototype_retypes_and_user_settings_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOTR_PRIVATE_DIR", str(tmp_path / "private"))
    src = tmp_path / "k.c"
    src.write_text("int f(int x) { return x + 1; }\nint g(int x) { return x; }\n")
    with hotr.HotReloader(src) as r:
        lib = r.update()
        f, g = lib.f, lib.g
        g.restype = ctypes.c_long  # the user's choice
        assert f(1) == 2
        save(src, "double f(double x) { return x / 4; }\ndouble g(double x) { return x; }\n")
        r.update()
        assert r.version == 2
        assert f(1.0) == 0.25  # the reference taken before follows the new prototype
        assert f.argtypes == (ctypes.c_double,)
        assert g.restype is ctypes.c_long  # kept
        assert g.argtypes == (ctypes.c_double,)  # not set by the user: follows
        r.rollback()
        assert f(5) == 6 and f.restype is ctypes.c_int  # the old content, the old types


def test_prototypes_false_leaves_functions_untyped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOTR_PRIVATE_DIR", str(tmp_path / "private"))
    src = tmp_path / "k.c"
    src.write_text("double f(double x) { return x; }\n")
    with hotr.HotReloader(src, prototypes=False) as r:
        f = r.update().f
        assert f.argtypes is None and f.restype is ctypes.c_int


def test_a_compiler_wrapper_that_starts_a_server_holds_no_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server (its own session) holds the output pipe of each compiler run it was started
    # from: the preprocessing for prototypes waited for that pipe's end, 15 s, in every build.
    monkeypatch.setenv("HOTR_PRIVATE_DIR", str(tmp_path / "private"))
    pids = tmp_path / "servers"
    wrapper = tmp_path / "cc-with-server"
    wrapper.write_text(
        f"#!{sys.executable}\n"
        "import os, subprocess, sys\n"
        "server = subprocess.Popen(['sleep', '15'], start_new_session=True)\n"
        f"open({str(pids)!r}, 'a').write(f'{{server.pid}}\\n')\n"
        "os.execvp('cc', ['cc', *sys.argv[1:]])\n"
    )
    wrapper.chmod(0o755)
    src = tmp_path / "k.c"
    src.write_text("double half(double x) { return x / 2; }\n")
    try:
        started = time.monotonic()
        with hotr.HotReloader(src, cc=str(wrapper)) as r:
            assert r.update().half(3) == 1.5  # typed: the prototypes were read
        assert time.monotonic() - started < 10
    finally:
        for pid in pids.read_text().split() if pids.exists() else []:
            os.kill(int(pid), signal.SIGKILL)


def test_unparsable_declarations_stay_untyped_and_never_fail_a_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HOTR_PRIVATE_DIR", str(tmp_path / "private"))
    src = tmp_path / "k.c"
    src.write_text(
        textwrap.dedent(
            """
            #include <complex.h>
            typedef struct { int a; } pair;
            pair by_value(pair p) { return p; }
            double complex turn(double complex z) { return z * I; }
            __typeof__(1.0) odd(void) { return 2.0; }
            int k_and_r(a) int a; { return a; }
            int after(int x) { return x * 3; }
            """
        )
    )
    with caplog.at_level(logging.DEBUG, logger="hotr"), hotr.HotReloader(src) as r:
        lib = r.update()
        assert lib.by_value.argtypes is None and lib.turn.argtypes is None
        assert lib.odd.restype is ctypes.c_int
        assert lib.after(2) == 6 and lib.after.argtypes == (ctypes.c_int,)
    assert "by_value" in caplog.text


def test_custom_build_command_is_not_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTR_PRIVATE_DIR", str(tmp_path / "private"))
    src = tmp_path / "k.c"
    src.write_text("double f(double x) { return x; }\n")
    lib_path = tmp_path / "libk.so"
    command = ["cc", "-shared", "-fPIC", str(src), "-o", str(lib_path)]
    with hotr.HotReloader(lib_path, sources=[src], build=command) as r:
        assert r.update().f.restype is ctypes.c_int


def test_flags_reach_the_preprocessor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTR_PRIVATE_DIR", str(tmp_path / "private"))
    src = tmp_path / "k.c"
    src.write_text("REAL f(REAL x) { return x * 2; }\n")
    with hotr.HotReloader(src, flags=["-DREAL=double"]) as r:
        assert r.update().f(1.25) == 2.5


@pytest.mark.skipif(shutil.which("tcc") is None, reason="tcc is not installed")
def test_tcc_line_markers_are_read_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTR_PRIVATE_DIR", str(tmp_path / "private"))
    (tmp_path / "types.c").write_text(TYPES)
    with hotr.HotReloader(tmp_path / "types.c", cc="tcc") as r:
        lib = r.update()
        assert lib.half(3.0) == 1.5 and lib.u64(2**64 - 1) == 2**64 - 1
        assert lib.greeting() == b"hello" and lib.negate(False) is True
        out = np.zeros(2)
        lib.scale(out, np.ones(2), 2, 4.0)
        assert out.tolist() == [4.0, 4.0]


def test_body_edits_keep_types_and_a_changed_header_retypes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOTR_PRIVATE_DIR", str(tmp_path / "private"))
    header, src = tmp_path / "real.h", tmp_path / "k.c"
    header.write_text("typedef float real;\n")
    body = '#include "real.h"\n/* {{ */ real f(real x) {{ return x / {n}; }}\n'
    src.write_text(body.format(n=2))
    with hotr.HotReloader(src) as r:
        f = r.update().f
        restypes = [f.restype]
        assert f(3.0) == 1.5
        for n in (4, 8):  # only the body changes: the last build's prototypes hold
            save(src, body.format(n=n))
            r.update()
            assert f(2.0) == 2.0 / n
            restypes.append(f.restype)
        save(header, "typedef double real;\n")
        r.update()
        assert r.version == 4 and f(1.0) == 0.125
        restypes.append(f.restype)
        save(src, body.format(n=2).replace("real f(real x)", "int f(int x)"))
        r.update()
        assert f(5) == 2
        restypes.append(f.restype)
        assert restypes == [ctypes.c_float] * 3 + [ctypes.c_double, ctypes.c_int]


def test_several_sources_are_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTR_PRIVATE_DIR", str(tmp_path / "private"))
    a, b = tmp_path / "a.c", tmp_path / "b.c"
    a.write_text("double half(double x) { return x / 2; }\n")
    b.write_text("float third(float x) { return x / 3; }\n")
    with hotr.HotReloader([a, b], jobs=1) as r:
        lib = r.update()
        assert lib.half(3.0) == 1.5 and abs(lib.third(3.0) - 1.0) < 1e-6
        save(b, "double third(double x) { return x / 3; }\n")
        r.update()
        assert lib.third.restype is ctypes.c_double


def test_a_parameter_of_arrays_of_rows_is_typed(tmp_path: Path) -> None:
    # `double m[][2]` is a pointer to rows of doubles: it takes what a double * takes, and the
    # function (its double result included) is typed, not left returning ctypes' int.
    (tmp_path / "rows.c").write_text(
        "double last(const double m[][2], int n) { return m[n - 1][1]; }\n"
        "double first(double (*m)[3]) { return m[0][0]; }\n"
    )
    reloader = hotr.HotReloader(tmp_path / "rows.c")
    try:
        lib = reloader.update()
        frozen = np.array([[1.0, 2.0], [3.0, 4.0]])
        frozen.flags.writeable = False  # const rows take a read-only array
        assert (lib.last(frozen, 2), lib.first(np.ones((2, 3)))) == (4.0, 1.0)
        assert lib.last.restype is ctypes.c_double
        with pytest.raises(ctypes.ArgumentError, match="8-byte floats"):
            lib.last(np.zeros((2, 2), dtype=np.float32), 2)
    finally:
        reloader.close()


def test_callbacks_and_const_arrays(tmp_path: Path) -> None:
    # A wrong conversion of a callback passes C a pointer to data, which it calls: a crash, so
    # in a child.
    (tmp_path / "types.c").write_text(TYPES)
    run_python(
        f"""
        import ctypes
        import numpy as np
        import hotr
        lib = hotr.HotReloader({str(tmp_path / "types.c")!r}).update()
        callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x * 10)
        assert lib.apply(callback, 4) == 40  # the function's address, not its object's
        frozen = np.array([1.0, 2.0, 3.0])
        frozen.flags.writeable = False
        assert lib.sum3(frozen) == 6.0  # `const double v[3]` is a pointer to const
        assert lib.chars(b"abcd") == 4
        """,
        env={"HOTR_PRIVATE_DIR": str(tmp_path / "private")},
    )
