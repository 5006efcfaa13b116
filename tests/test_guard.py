"""Guarded calls: a crash in a version's own code is a CrashError and a rollback; anything else
behaves exactly as without hotr.  Every test runs its crashes in a child interpreter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import Builder, Lines, run_python

import hotr

pytestmark = pytest.mark.every_python

FAULTS = r"""
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <stdlib.h>
#include <pthread.h>
#include <sys/mman.h>
int value(void) { return VALUE; }
int add(int a, int b) { return a + b; }
double half(double x) { return x / 2; }
int null_deref(int x) { volatile int *p = NULL; return *p + x; }
int guard_page(int n) {
    char *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    mprotect(p + 4096, 4096, PROT_NONE);
    for (int i = 0; i < 4096 + n; i++) ((volatile char *)p)[i] = 1;
    return 0;
}
int bus_error(int x) {  /* a mapping past the end of its file */
    FILE *f = tmpfile(); int fd = fileno(f);
    ftruncate(fd, 4096);
    volatile char *p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
    ftruncate(fd, 0);
    int v = p[x];
    fclose(f);
    return v;
}
int divide(int x) { volatile int zero = 0; return x / zero; }
int trap(int x) { if (x) __builtin_trap(); return x; }
static int deeper(volatile int n) {
    volatile char pad[512]; pad[0] = (char)n; return deeper(n + 1) + pad[0];
}
int overflow(int x) { return deeper(x); }
int crash_if(int x) { if (x) *(volatile int *)NULL = x; return x; }
int libc_fault(int n) { return (int)(long)memcpy(NULL, &n, (size_t)n * 4096); }
int aborts(int x) { abort(); }
int sends(int x) { raise(SIGSEGV); return x; }
static void *crash_in_thread(void *arg) { *(volatile int *)NULL = 1; return arg; }
int own_thread(int x) {
    pthread_t t; pthread_create(&t, NULL, crash_in_thread, NULL); pthread_join(t, NULL);
    return x;
}
typedef int (*callback)(int);
int call_then_crash(callback f, int crash) {
    int r = f(1); if (crash) *(volatile int *)NULL = r; return r + 1;
}
"""

KINDS = {  # function: the signal it raises
    "null_deref": signal.SIGSEGV,
    "guard_page": signal.SIGSEGV,
    "bus_error": signal.SIGBUS,
    "divide": signal.SIGFPE,
    "trap": signal.SIGILL,
    "overflow": signal.SIGSEGV,
}

SIGNALS = {name: int(signo) for name, signo in KINDS.items()}

CDEF = (
    "int value(void); int add(int, int); double half(double); int null_deref(int);"
    "int guard_page(int); int bus_error(int); int divide(int); int trap(int);"
    "int overflow(int); int crash_if(int);"
)


def faults(value: int = 1) -> str:
    return f"#define VALUE {value}\n" + FAULTS


def library(builder: Builder, value: int = 1) -> str:
    return builder.compile_to_file(faults(value), "-O0", "-pthread")


@pytest.mark.parametrize("via", ["ctypes", "cffi"])
def test_every_fault_is_a_crash_error_on_every_thread(builder: Builder, via: str) -> None:
    if via == "cffi":
        pytest.importorskip("cffi")
    path = library(builder)
    proc = run_python(
        f"""
        import gc, sys, threading, faulthandler, hotr
        faulthandler.enable()
        ffi = None
        if {via!r} == "cffi":
            import cffi
            ffi = cffi.FFI()
            ffi.cdef({CDEF!r})
        r = hotr.HotReloader({path!r}, guard=True, ffi=ffi)
        lib = r.update()
        if ffi is None:
            import ctypes
            lib.half.argtypes, lib.half.restype = [ctypes.c_double], ctypes.c_double
        kinds = {SIGNALS!r}

        def depth(n=0):
            try:
                return depth(n + 1)
            except RecursionError:
                return n

        before = depth()
        seen = []

        def crash_all(where):
            for name, signo in kinds.items():
                try:
                    lib[name](4)
                except hotr.CrashError as exc:
                    assert exc.signal == signo and exc.function == name and exc.version == 1, exc
                    assert exc.path == {path!r} and name in str(exc)
                    assert isinstance(exc, hotr.HotReloadError)
                    seen.append((where, name))
                else:
                    raise AssertionError(f"{{name}} returned")
                assert lib.add(2, 3) == 5 and lib.half(3.0) == 1.5

        crash_all("main")
        threads = [threading.Thread(target=crash_all, args=(f"t{{i}}",)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(seen) == 4 * len(kinds), seen
        assert depth() == before  # the recursion counters are intact
        gc.collect()
        results = []
        workers = [threading.Thread(target=lambda: results.append(lib.add(1, 1))) for _ in range(4)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        assert results == [2] * 4 and lib.value() == 1 and r.version == 1
        r.close()
        print("ok")
        """
    )
    assert proc.stdout.strip() == "ok"


def test_crash_in_the_live_version_rolls_back(builder: Builder) -> None:
    good, bad = library(builder, 1), library(builder, 2)
    proc = run_python(
        f"""
        import shutil, hotr
        shutil.copy({good!r}, {str(builder.lib)!r})
        r = hotr.HotReloader({str(builder.lib)!r}, guard=True)
        errors, reloads = [], []
        r.on_error(errors.append)
        r.on_reload(lambda a, b: reloads.append((a, b)))
        lib = r.update()
        crash_if = lib.crash_if
        assert lib.value() == 1 and crash_if(0) == 0
        shutil.copy({bad!r}, {str(builder.lib)!r} + ".tmp")
        import os
        os.rename({str(builder.lib)!r} + ".tmp", {str(builder.lib)!r})
        assert r.watch_for_changes(timeout=10) == 1
        r.update()
        assert lib.value() == 2 and r.version == 2
        try:
            crash_if(1)
        except hotr.CrashError as exc:
            error = exc
        else:
            raise AssertionError("no crash")
        # The very next call runs the previous good code, as a new version.
        assert lib.value() == 1 and r.version == 3
        assert error.version == 2 and "rolled back" in str(error), error
        assert r.history[-1].rollback and r.history[-1].sha256 == r.history[0].sha256
        assert errors == [error] and reloads[-1] == (2, 3)
        r.poll()  # housekeeping: the crashed version had no call left, so it is unloaded
        maps = open("/proc/self/maps").read()
        assert "v2" not in " ".join(l.split()[-1].rsplit("/", 1)[-1] for l in maps.splitlines())
        # A crash in version 3 (the content of version 1) has no earlier good version left.
        try:
            crash_if(1)
        except hotr.CrashError as exc:
            assert exc.version == 3 and "no earlier version" in str(exc), exc
        assert r.version == 3 and lib.value() == 1
        r.close()
        print("ok")
        """,
        env={"HOTR_PRIVATE_DIR": str(builder.dir / "private")},
    )
    assert proc.stdout.strip() == "ok"
    assert not list((builder.dir / "private").rglob("v*"))


def test_without_a_previous_version_every_crash_raises(builder: Builder) -> None:
    path = library(builder)
    proc = run_python(
        f"""
        import hotr
        r = hotr.HotReloader({path!r}, guard=True)
        lib = r.update()
        for i in range(1000):
            try:
                lib.crash_if(i + 1)
            except hotr.CrashError as exc:
                assert "no earlier version" in str(exc)
            else:
                raise AssertionError("no crash")
        assert r.version == 1 and len(r.history) == 1
        assert sum(lib.add(i, 1) for i in range(10000)) == sum(range(1, 10001))
        r.close()
        print("ok")
        """
    )
    assert proc.stdout.strip() == "ok"


def test_callbacks_and_nested_guarded_calls(builder: Builder) -> None:
    path = library(builder)
    proc = run_python(
        f"""
        import ctypes, hotr
        r = hotr.HotReloader({path!r}, guard=True)
        lib = r.update()
        CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)
        lib.call_then_crash.argtypes = [CB, ctypes.c_int]
        # A Python callback ran and returned, then the version crashed: that is caught.
        calls = []
        cb = CB(lambda x: calls.append(x) or 41)
        try:
            lib.call_then_crash(cb, 1)
        except hotr.CrashError:
            pass
        else:
            raise AssertionError("no crash")
        assert lib.call_then_crash(cb, 0) == 42 and calls == [1, 1]

        # A guarded call inside the callback crashes: its own caller gets the CrashError.
        def inner(x):
            try:
                lib.crash_if(1)
            except hotr.CrashError:
                return 9
            return 0
        inner_cb = CB(inner)
        assert lib.call_then_crash(inner_cb, 0) == 10
        r.close()
        print("ok")
        """
    )
    assert proc.stdout.strip() == "ok"


UNATTRIBUTABLE = {
    # name: (code after `lib = r.update()`, the signal the child dies by)
    "libc": ("lib.libc_fault(1)", signal.SIGSEGV),
    "abort": ("lib.aborts(1)", signal.SIGABRT),
    "sent": ("lib.sends(1)", signal.SIGSEGV),
    "own_thread": ("lib.own_thread(1)", signal.SIGSEGV),
    "python_between": (
        "import ctypes\n"
        "CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)\n"
        "where = ctypes.addressof(ctypes.c_char.in_dll(lib, 'crash_if'))\n"
        "crash = ctypes.cast(ctypes.c_void_p(where), CB)\n"
        "lib.call_then_crash.argtypes = [CB, ctypes.c_int]\n"
        "lib.call_then_crash(CB(lambda x: crash(x)), 0)",
        signal.SIGSEGV,
    ),
}


def _crash_child(
    path: str, code: str, guard: bool, faulthandler: bool
) -> subprocess.CompletedProcess[str]:
    script = (
        textwrap.dedent(
            f"""
            import faulthandler, hotr
            if {faulthandler}:
                faulthandler.enable()
            r = hotr.HotReloader({path!r}, guard={guard})
            lib = r.update()
            lib.add(1, 2)
            """
        )
        + code
        + "\nprint('survived')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )


def _report(stderr: str) -> list[str]:
    """faulthandler's report: the error and the crashing thread's traceback (the other
    threads are wherever they happen to be)."""
    lines = stderr.splitlines()
    fatal = [line for line in lines if line.startswith("Fatal Python error")]
    current = next((i for i, line in enumerate(lines) if line.startswith("Current thread")), None)
    if current is None:
        return fatal
    end = lines.index("", current) if "" in lines[current:] else len(lines)
    return fatal + [line.split(" 0x")[0] for line in lines[current:end]]


@pytest.mark.parametrize("faulthandler", [True, False], ids=["faulthandler", "default"])
@pytest.mark.parametrize("case", list(UNATTRIBUTABLE))
def test_faults_hotr_cannot_attribute_behave_as_without_it(
    builder: Builder, case: str, faulthandler: bool
) -> None:
    path = library(builder)
    code, signo = UNATTRIBUTABLE[case]
    guarded = _crash_child(path, code, True, faulthandler)
    plain = _crash_child(path, code, False, faulthandler)
    assert plain.returncode == -signo, plain.stderr
    assert guarded.returncode == plain.returncode, guarded.stderr
    assert "survived" not in guarded.stdout
    assert _report(guarded.stderr) == _report(plain.stderr), guarded.stderr
    if faulthandler:
        assert guarded.stderr.count("Fatal Python error") == 1, guarded.stderr


def test_handlers_installed_after_hotr_are_chained(builder: Builder) -> None:
    path = library(builder)
    script = textwrap.dedent(
        f"""
        import faulthandler, threading, hotr
        r = hotr.HotReloader({path!r}, guard=True)
        lib = r.update()
        lib.add(1, 2)
        faulthandler.enable()  # after hotr: hotr goes back on top at its next check
        caught = []
        def crash():
            try:
                lib.crash_if(1)
            except hotr.CrashError:
                caught.append(1)
        t = threading.Thread(target=crash)  # a thread's first guarded call checks
        t.start()
        t.join()
        crash()
        assert caught == [1, 1], caught
        print("caught", flush=True)
        lib.libc_fault(1)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.stdout == "caught\n", proc.stderr
    assert proc.returncode == -signal.SIGSEGV
    assert proc.stderr.count("Fatal Python error: Segmentation fault") == 1, proc.stderr


def test_calling_the_inner_object_directly_aborts_with_a_message(builder: Builder) -> None:
    path = library(builder)
    script = f"import hotr\nlib = hotr.HotReloader({path!r}, guard=True).update()\n"
    proc = subprocess.run(
        [sys.executable, "-c", script + "lib.add._cfunc(1, 2)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGABRT
    assert "called directly, not through its hotr.Function" in proc.stderr


def test_guard_everywhere_from_the_environment_and_the_entry_points(builder: Builder) -> None:
    path = library(builder)
    proc = run_python(
        f"""
        import asyncio, hotr
        def crashes(lib):
            try:
                lib.crash_if(1)
            except hotr.CrashError:
                return True
            return False
        r = hotr.HotReloader({path!r})  # HOTR_GUARD=1
        assert crashes(r.update())
        lib = hotr.load({path!r}, guard=True)
        assert crashes(lib)
        hotr.reloader_of(lib).close()
        with hotr.Watcher() as w:
            assert crashes(w.add({path!r}, guard=True))
        async def main():
            lib = await hotr.aload({path!r}, guard=True)
            assert crashes(lib)
            hotr.reloader_of(lib).close()
        asyncio.run(main())
        print("ok")
        """,
        env={"HOTR_GUARD": "1"},
    )
    assert proc.stdout.strip() == "ok"


def test_guard_argument_and_variable_errors(
    builder: Builder, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(TypeError, match="guard"):
        hotr.HotReloader(builder.lib, guard="yes")  # type: ignore[arg-type]
    monkeypatch.setenv("HOTR_GUARD", "on")
    with pytest.raises(ValueError, match="HOTR_GUARD='on'"):
        hotr.HotReloader(builder.lib)
    with hotr.HotReloader(builder.lib, guard=False) as r:  # an explicit False wins
        assert r.update().value() == 1


def test_hotr_run_guards_by_default(builder: Builder) -> None:
    source = builder.dir / "crashy.c"
    source.write_text("void crash(void) { *(volatile int *)0 = 1; }\n")
    env = {**os.environ, "HOTR_PRIVATE_DIR": str(builder.dir / "private")}
    command = [sys.executable, "-m", "hotr", "run", str(source), "--call", "crash"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    ) as proc:
        try:
            Lines(proc).wait_for("crash() crashed in version 1", timeout=60)
            assert proc.poll() is None  # still running, watching for the next save
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
    unguarded = subprocess.run(
        [*command, "--no-guard"], capture_output=True, text=True, env=env, timeout=60
    )
    assert unguarded.returncode == -signal.SIGSEGV, unguarded.stderr


ABI = r"""
#include <stdarg.h>
typedef struct { long a, b, c; } big;
typedef struct { double x, y; } pt;
long many(long a, long b, long c, long d, long e, long f, long g, long h, long i, long j) {
    return a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f + 7 * g + 8 * h + 9 * i + 10 * j;
}
double mixed(int a, double b, long c, float d, double e, double f, double g, double h,
             double i, double j, double k, double l, int m) {
    return a + b + c + d + e + f + g + h + i + j + k + l + m;
}
long sum_big(big s, long k) { return s.a + s.b * 10 + s.c * 100 + k; }
big make_big(long v) { big s = {v, v + 1, v + 2}; return s; }
pt make_pt(double v) { pt p = {v, -v}; return p; }
double vsum(int n, ...) {
    va_list ap; va_start(ap, n); double t = 0;
    for (int i = 0; i < n; i++) t += va_arg(ap, double);
    va_end(ap); return t;
}
static int inner(double x) { if (x > 0) *(volatile int *)0 = 1; return 0; }
double dcrash(double x) { return inner(x) + x; }
"""


def test_arguments_and_results_pass_through_unchanged(builder: Builder) -> None:
    path = builder.compile_to_file(ABI, "-O0")
    proc = run_python(
        f"""
        import ctypes as C, hotr
        class Big(C.Structure):
            _fields_ = [("a", C.c_long), ("b", C.c_long), ("c", C.c_long)]
        class Pt(C.Structure):
            _fields_ = [("x", C.c_double), ("y", C.c_double)]
        def declare(lib):
            lib.many.restype, lib.many.argtypes = C.c_long, [C.c_long] * 10
            lib.mixed.restype = C.c_double
            lib.mixed.argtypes = [C.c_int, C.c_double, C.c_long, C.c_float] + [C.c_double] * 8
            lib.mixed.argtypes += [C.c_int]
            lib.sum_big.restype, lib.sum_big.argtypes = C.c_long, [Big, C.c_long]
            lib.make_big.restype, lib.make_big.argtypes = Big, [C.c_long]
            lib.make_pt.restype, lib.make_pt.argtypes = Pt, [C.c_double]
            lib.vsum.restype = C.c_double
            lib.dcrash.restype, lib.dcrash.argtypes = C.c_double, [C.c_double]
        def results(lib):
            big, pt = lib.make_big(5), lib.make_pt(2.5)
            return (
                lib.many(*range(1, 11)),  # four arguments on the stack
                lib.mixed(1, 2.5, 3, 4.5, 5, 6, 7, 8, 9, 10, 11, 12, 13),
                lib.sum_big(Big(1, 2, 3), 4),  # a struct passed in memory
                (big.a, big.b, big.c),  # returned in memory
                (pt.x, pt.y),  # returned in two SSE registers
                lib.vsum(3, C.c_double(1.5), C.c_double(2.5), C.c_double(3.0)),  # variadic
            )
        plain = C.CDLL({path!r})
        declare(plain)
        lib = hotr.HotReloader({path!r}, guard=True).update()
        declare(lib)
        expected = results(plain)
        assert expected == (385, 92.0, 325, (5, 6, 7), (2.5, -2.5), 7.0), expected
        assert results(lib) == expected
        try:
            lib.dcrash(1.0)
        except hotr.CrashError as exc:
            assert exc.where.startswith("lib") and ".so+0x" in exc.where, exc.where
        assert lib.dcrash(-2.0) == -2.0 and results(lib) == expected
        lib.dcrash.errcheck = lambda result, func, args: 1 / 0
        try:
            lib.dcrash(1.0)
        except hotr.CrashError:
            pass  # what errcheck raised about the crashed call is replaced
        print("ok")
        """
    )
    assert proc.stdout.strip() == "ok"


def test_crash_in_a_retired_version_and_in_a_forked_child(builder: Builder) -> None:
    waiting = (
        "volatile int go;\n"
        "int wait_then_crash(void) { while (!go) {} return *(volatile int *)0; }\n"
    )
    first = builder.compile_to_file(faults(1) + waiting, "-O0", "-pthread")
    second = library(builder, 2)
    private = builder.dir / "private"
    proc = run_python(
        f"""
        import ctypes, os, shutil, threading, hotr
        lib_path = {str(builder.lib)!r}
        shutil.copy({first!r}, lib_path)
        r = hotr.HotReloader(lib_path, guard=True)
        lib = r.update()
        go = ctypes.c_int.in_dll(lib, "go")  # in version 1's memory
        outcome = []
        def call():
            try:
                lib.wait_then_crash()
            except hotr.CrashError as exc:
                outcome.append((exc.version, exc.outcome))
        t = threading.Thread(target=call)
        t.start()
        shutil.copy({second!r}, lib_path + ".tmp")
        os.rename(lib_path + ".tmp", lib_path)
        assert r.watch_for_changes(timeout=10) == 1
        r.update()
        assert lib.value() == 2
        go.value = 1  # version 1, retired with a call in flight, crashes in that call
        t.join()
        assert outcome == [(1, "version 1 is no longer live; nothing was rolled back")], outcome
        assert r.version == 2 and lib.value() == 2
        r.poll()  # its last call returned: version 1 is unloaded
        names = [line.split()[-1] for line in open("/proc/self/maps") if {str(private)!r} in line]
        assert len(set(names)) == 1, names

        pid = os.fork()
        if pid == 0:
            try:
                lib.crash_if(1)
            except hotr.CrashError as exc:
                os._exit(0 if "forked child" in exc.outcome else 1)
            os._exit(2)
        assert os.waitpid(pid, 0)[1] == 0
        r.close()
        print("ok")
        """,
        env={"HOTR_PRIVATE_DIR": str(private)},
    )
    assert proc.stdout.strip() == "ok"
