"""Guarded calls into extension modules (hotr.load_module(..., guard=True)): a crash in a
module function's own code is a CrashError and a rollback, on any thread, with or without the
GIL; anything else behaves as without hotr.  Every crash happens in a child interpreter."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import run_python

pytestmark = pytest.mark.every_python

# %(v)d: the version; crash(n) faults when n > %(ok)d.
SOURCE = r"""
#include <Python.h>
#include <unistd.h>
static PyObject *value(PyObject *self, PyObject *unused) { return PyLong_FromLong(%(v)d); }
static PyObject *crash(PyObject *self, PyObject *arg) {
    long n = PyLong_AsLong(arg);
    PyObject *made = PyList_New(0);  /* half-made work the crash abandons */
    if (n > %(ok)d) *(volatile long *)NULL = n;
    Py_DECREF(made);
    return PyLong_FromLong(n + %(v)d);
}
static PyObject *crash_nogil(PyObject *self, PyObject *arg) {
    long n = PyLong_AsLong(arg);
    Py_BEGIN_ALLOW_THREADS
    usleep(200);
    if (n > %(ok)d) *(volatile long *)NULL = n;
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(n);
}
static PyObject *divide(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    volatile long zero = 0;
    return PyLong_FromLong(PyLong_AsLong(args[0]) / zero);
}
static PyObject *trap(PyObject *self, PyObject *unused) { __builtin_trap(); }
static PyObject *kwcrash(PyObject *self, PyObject *args, PyObject *kw) {
    long n;
    if (!PyArg_ParseTuple(args, "l", &n)) return NULL;
    if (n > %(ok)d) *(volatile long *)NULL = n;
    return PyLong_FromLong(n);
}
static PyObject *then_crash(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *r = PyObject_CallNoArgs(args[0]);
    if (r == NULL) return NULL;
    if (PyObject_IsTrue(args[1])) *(volatile long *)NULL = 1;
    return r;
}
static PyObject *interpreter_fault(PyObject *self, PyObject *unused) {
    return PyObject_Repr((PyObject *)16);  /* the fault is in libpython, not here */
}
static PyMethodDef methods[] = {
    {"value", value, METH_NOARGS, NULL},
    {"crash", crash, METH_O, NULL},
    {"crash_nogil", crash_nogil, METH_O, NULL},
    {"divide", (PyCFunction)(void (*)(void))divide, METH_FASTCALL, NULL},
    {"trap", trap, METH_NOARGS, NULL},
    {"kwcrash", (PyCFunction)(void (*)(void))kwcrash, METH_VARARGS | METH_KEYWORDS, NULL},
    {"then_crash", (PyCFunction)(void (*)(void))then_crash, METH_FASTCALL, NULL},
    {"interpreter_fault", interpreter_fault, METH_NOARGS, NULL},
    {NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "crashy", NULL, -1, methods};
PyMODINIT_FUNC PyInit_crashy(void) { return PyModule_Create(&def); }
"""

# In the child: write(v, ok) saves a version (by rename, as editors do); reload_to(m, n).
HELPERS = f"""
import os, signal, sys, threading, time
import hotr
SOURCE = {SOURCE!r}
def write(path, v, ok=1 << 40):
    with open(path + ".tmp", "w") as f:
        f.write(SOURCE % {{"v": v, "ok": ok}})
    os.replace(path + ".tmp", path)
def reload_to(module, n):
    r = hotr.reloader_of(module)
    deadline = time.monotonic() + 120
    while r.version < n:
        assert time.monotonic() < deadline, r.history
        r.watch_for_changes(0.5)
        r.update()
def depth(n=0):
    try:
        return depth(n + 1)
    except RecursionError:
        return n
def c_depth():  # how deep the interpreter's C recursion can go (repr of nested lists)
    low, high = 1, 1 << 16
    while low < high:
        mid = (low + high + 1) // 2
        nested = []
        for _ in range(mid):
            nested = [nested]
        try:
            repr(nested)
            low = mid
        except RecursionError:
            high = mid - 1
    return low
"""


def child(tmp_path: Path, body: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    src = tmp_path / "crashy.c"
    code = HELPERS + f"SRC = {str(src)!r}\nwrite(SRC, 1)\n" + textwrap.dedent(body)
    return run_python(code, **kwargs)  # type: ignore[arg-type]


def test_every_fault_is_a_crash_error_on_every_thread_with_or_without_the_gil(
    tmp_path: Path,
) -> None:
    proc = child(
        tmp_path,
        """
        m = hotr.load_module(SRC, guard=True, manual=True, flags=["-O0"])
        calls = {  # how each is called: METH_O, METH_FASTCALL, METH_NOARGS, METH_VARARGS...
            "crash": (lambda: m.crash(1 << 41), signal.SIGSEGV),
            "crash_nogil": (lambda: m.crash_nogil(1 << 41), signal.SIGSEGV),
            "divide": (lambda: m.divide(7), signal.SIGFPE),
            "trap": (lambda: m.trap(), signal.SIGILL),
            "kwcrash": (lambda: m.kwcrash(1 << 41, key=1), signal.SIGSEGV),
        }
        before = depth(), c_depth()
        errors = []
        counted = []
        stop = threading.Event()

        def crash_all(rounds):
            try:
                for _ in range(rounds):
                    for name, (call, signo) in calls.items():
                        try:
                            call()
                        except hotr.CrashError as exc:
                            assert (exc.signal, exc.function, exc.version) == (signo, name, 1)
                            assert "no earlier version" in exc.outcome, exc
                        else:
                            raise AssertionError(f"{name} returned")
                        assert m.crash(5) == 6
            except BaseException as exc:
                errors.append(exc)

        def keep_calling():  # Python runs here while crash_nogil's fault is handled
            n = 0
            while not stop.is_set():
                assert m.value() == 1 and m.crash(0) == 1
                n += 1
            counted.append(n)

        busy = threading.Thread(target=keep_calling)
        busy.start()
        crash_all(30)
        threads = [threading.Thread(target=crash_all, args=(30,)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        busy.join()
        assert not errors, errors
        assert counted and counted[0] > 0
        assert (depth(), c_depth()) == before, before  # no recursion level lost per crash
        r = hotr.reloader_of(m)
        assert r.version == 1 and [v.status for v in r.history] == ["live"], r.history
        print("ok")
        """,
    )
    assert proc.stdout.strip() == "ok"


def test_a_crash_rolls_back_threads_carry_on_and_the_next_save_loads(tmp_path: Path) -> None:
    proc = child(
        tmp_path,
        """
        errors, reloads = [], []
        m = hotr.load_module(
            SRC, guard=True, manual=True, on_error=errors.append,
            on_reload=lambda old, new: reloads.append((old, new)),
        )
        from crashy import crash, value  # taken from version 1
        write(SRC, 2, ok=0)  # version 2: crash(n) faults for n > 0
        reload_to(m, 2)
        stop = threading.Event()
        failures, seen = [], set()

        def keep_calling():
            try:
                while not stop.is_set():
                    seen.add(value())
                    assert crash(0) in (1, 2, 4)
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=keep_calling) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            crash(1)
        except hotr.CrashError as exc:
            assert exc.version == 2 and exc.function == "crash", exc
            assert "rolled back" in exc.outcome and "now version 3" in exc.outcome, exc
            assert errors == [exc], errors
        else:
            raise AssertionError("version 2's crash(1) returned")
        r = hotr.reloader_of(m)
        assert r.version == 3 and r.history[-1].rollback, r.history
        assert value() == 1 and crash(1) == 2 and m.crash(1) == 2  # version 1's code again
        assert reloads[-1] == (2, 3), reloads
        write(SRC, 4)  # the fix: the next save loads as usual
        reload_to(m, 4)
        assert value() == 4 and crash(1) == 5
        stop.set()
        for t in threads:
            t.join()
        assert not failures, failures
        assert seen <= {1, 2, 4}, seen
        print("ok")
        """,
    )
    assert proc.stdout.strip() == "ok"


def test_crashes_around_python_callbacks(tmp_path: Path) -> None:
    proc = child(
        tmp_path,
        """
        m = hotr.load_module(SRC, guard=True, manual=True)
        try:  # a guarded call inside the callback crashes: its own caller gets the error
            m.then_crash(lambda: m.crash(1 << 41), False)
        except hotr.CrashError as exc:
            assert exc.function == "crash", exc
        else:
            raise AssertionError("returned")
        try:  # the callback returned, then then_crash faults
            m.then_crash(lambda: 5, True)
        except hotr.CrashError as exc:
            assert exc.function == "then_crash", exc
        else:
            raise AssertionError("returned")
        assert m.then_crash(lambda: 5, False) == 5
        print("ok")
        """,
    )
    assert proc.stdout.strip() == "ok"


def _dies(tmp_path: Path, code: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    src = tmp_path / "crashy.c"
    script = (
        HELPERS
        + f"SRC = {str(src)!r}\nwrite(SRC, 1)\nimport faulthandler\nfaulthandler.enable()\n"
        + textwrap.dedent(code)
        + "\nprint('survived')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, **(env or {})},
    )
    assert "survived" not in proc.stdout, proc.stdout
    fatal = [line for line in proc.stderr.splitlines() if line.startswith("Fatal Python error")]
    return proc.returncode, "\n".join(fatal)


@pytest.mark.parametrize(
    "case",
    [
        "m = hotr.load_module(SRC, guard=True)\nm.interpreter_fault()",  # libpython's fault
        "m = hotr.load_module(SRC)\nm.crash(1 << 41)",  # not guarded: as without hotr
        "m = hotr.load_module(SRC, guard=False)\nm.crash(1 << 41)",  # False wins over $HOTR_GUARD
    ],
    ids=["interpreter", "unguarded", "guard-false"],
)
def test_what_guard_does_not_catch_ends_the_process_as_without_hotr(
    tmp_path: Path, case: str
) -> None:
    env = {"HOTR_GUARD": "1"} if "guard=False" in case else {"HOTR_GUARD": "0"}
    code, fatal = _dies(tmp_path, case, env)
    assert code == -signal.SIGSEGV and fatal == "Fatal Python error: Segmentation fault", fatal


def test_hotr_guard_guards_modules(tmp_path: Path) -> None:
    proc = child(
        tmp_path,
        """
        m = hotr.load_module(SRC)  # HOTR_GUARD=1
        try:
            m.crash(1 << 41)
        except hotr.CrashError as exc:
            print(exc.function)
        """,
        env={"HOTR_GUARD": "1"},
    )
    assert proc.stdout.strip() == "crash"


GENERATED = {  # a crash in code a binding generator made
    "pyx": "def crash(int n):\n    cdef int *p = NULL\n    p[0] = n\n    return n\n",
    "cpp": (
        "#include <pybind11/pybind11.h>\n"
        "PYBIND11_MODULE(gen, m) {\n"
        '    m.def("crash", [](int n) { *(volatile int *)nullptr = n; return n; });\n'
        "}\n"
    ),
}


@pytest.mark.parametrize(
    "suffix",
    [
        pytest.param(
            "pyx",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("Cython") is None, reason="Cython not installed"
            ),
        ),
        pytest.param(
            "cpp",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("pybind11") is None, reason="pybind11 not installed"
            ),
        ),
    ],
)
def test_cython_and_pybind11_functions_are_guarded(tmp_path: Path, suffix: str) -> None:
    src = tmp_path / f"gen.{suffix}"
    src.write_text(GENERATED[suffix])
    proc = run_python(
        f"""
        import hotr
        m = hotr.load_module({str(src)!r}, guard=True, manual=True)
        for _ in range(3):
            try:
                m.crash(7)
            except hotr.CrashError as exc:
                assert exc.function == "crash" and exc.version == 1, exc
            else:
                raise AssertionError("returned")
        print("ok")
        """,
        timeout=300,
    )
    assert proc.stdout.strip() == "ok"
