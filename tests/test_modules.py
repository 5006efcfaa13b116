"""hotr.load_module: extension modules (C API single- and multi-phase, Cython, pybind11) built
with the real compiler, reloaded in a running interpreter."""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import inspect
import itertools
import logging
import os
import pickle
import subprocess
import sys
import sysconfig
import textwrap
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import CC, run_python

import hotr

pytestmark = pytest.mark.every_python

_names = itertools.count()

# A single-phase module: value() says the version, norm() scales by it, `extra` comes and goes.
SINGLE = """
#include <Python.h>
#include <math.h>
static PyObject *value(PyObject *self, PyObject *unused) { return PyLong_FromLong(%(v)d); }
static PyObject *norm(PyObject *self, PyObject *const *args, Py_ssize_t n) {
    if (n != 2) { PyErr_SetString(PyExc_TypeError, "norm(x, y)"); return NULL; }
    double x = PyFloat_AsDouble(args[0]), y = PyFloat_AsDouble(args[1]);
    return PyFloat_FromDouble(%(v)d * sqrt(x * x + y * y));
}
static PyObject *extra(PyObject *self, PyObject *unused) { return PyLong_FromLong(-%(v)d); }
static PyMethodDef methods[] = {
    {"value", value, METH_NOARGS, "value() -> the version"},
    {"norm", (PyCFunction)(void (*)(void))norm, METH_FASTCALL, "norm($module, x, y, /)\\n--\\n\\n"},
    %(extra)s
    {NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "%(name)s", NULL, -1, methods};
PyMODINIT_FUNC PyInit_%(name)s(void) {
    if (%(fail)d) { PyErr_SetString(PyExc_ValueError, "version %(v)d refuses"); return NULL; }
    PyObject *m = PyModule_Create(&def);
    if (m != NULL && PyModule_AddIntConstant(m, "VERSION", %(v)d) < 0) Py_CLEAR(m);
    return m;
}
"""

# A multi-phase module with a heap type Box and a __hotr_reload__ that carries `count` over.
MULTI = """
#include <Python.h>
#include <unistd.h>
typedef struct { PyObject_HEAD long n; } Box;
static PyObject *box_get(PyObject *self, PyObject *unused) {
    return PyLong_FromLong(((Box *)self)->n + %(v)d * 1000);
}
static PyMethodDef box_methods[] = {{"get", box_get, METH_NOARGS, NULL}, {NULL}};
static int box_init(PyObject *self, PyObject *args, PyObject *kw) {
    return PyArg_ParseTuple(args, "l", &((Box *)self)->n) ? 0 : -1;
}
static void box_dealloc(PyObject *self) {
    PyTypeObject *t = Py_TYPE(self); t->tp_free(self); Py_DECREF(t);
}
static PyType_Slot box_slots[] = {{Py_tp_methods, box_methods}, {Py_tp_init, box_init},
                                  {Py_tp_dealloc, box_dealloc}, {0, 0}};
static PyType_Spec box_spec = {"%(name)s.Box", sizeof(Box), 0, Py_TPFLAGS_DEFAULT, box_slots};
static PyObject *value(PyObject *self, PyObject *unused) { return PyLong_FromLong(%(v)d); }
static PyObject *hook(PyObject *self, PyObject *old) {
    PyObject *count = PyObject_GetAttrString(old, "count");
    if (count == NULL) return NULL;
    PyObject *more = PyNumber_Add(count, PyLong_FromLong(1));
    Py_DECREF(count);
    if (more == NULL || PyObject_SetAttrString(self, "count", more) < 0) return NULL;
    Py_DECREF(more);
    Py_RETURN_NONE;
}
static PyObject *block(PyObject *self, PyObject *seconds) {
    double s = PyFloat_AsDouble(seconds);
    Py_BEGIN_ALLOW_THREADS
    usleep((useconds_t)(s * 1e6));
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(%(v)d);
}
static PyMethodDef methods[] = {{"value", value, METH_NOARGS, NULL},
                                {"block", block, METH_O, NULL},
                                {"__hotr_reload__", hook, METH_O, NULL}, {NULL}};
static int exec(PyObject *m) {
    if (%(fail)d) { PyErr_SetString(PyExc_ValueError, "version %(v)d refuses"); return -1; }
    PyObject *t = PyType_FromModuleAndSpec(m, &box_spec, NULL);
    if (t == NULL || PyModule_AddObject(m, "Box", t) < 0) { Py_XDECREF(t); return -1; }
    return PyModule_AddIntConstant(m, "count", 0);
}
static PyModuleDef_Slot slots[] = {{Py_mod_exec, exec}, {0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "%(name)s", NULL, 0, methods, slots};
PyMODINIT_FUNC PyInit_%(name)s(void) { return PyModuleDef_Init(&def); }
"""


# A multi-phase module with a static type Thing: its own tp_dealloc, or object's (inherited).
STATIC = """
#include <Python.h>
static PyObject *thing_get(PyObject *self, PyObject *unused) { return PyLong_FromLong(%(v)d); }
static void thing_dealloc(PyObject *self) { Py_TYPE(self)->tp_free(self); }
static PyMethodDef thing_methods[] = {{"get", thing_get, METH_NOARGS, NULL}, {NULL}};
static PyTypeObject Thing = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "%(name)s.Thing", .tp_basicsize = sizeof(PyObject), .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew, .tp_methods = thing_methods, %(extra)s
};
static int exec(PyObject *m) {
    if (PyType_Ready(&Thing) < 0) return -1;
    Py_INCREF(&Thing);
    return PyModule_AddObject(m, "Thing", (PyObject *)&Thing);
}
static PyModuleDef_Slot slots[] = {{Py_mod_exec, exec}, {0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "%(name)s", NULL, 0, NULL, slots};
PyMODINIT_FUNC PyInit_%(name)s(void) { return PyModuleDef_Init(&def); }
"""


def c_source(template: str, name: str, v: int, *, fail: bool = False, extra: bool = True) -> str:
    if template is STATIC:
        line = ".tp_dealloc = thing_dealloc," if extra else ""
    else:
        line = '{"extra", extra, METH_NOARGS, NULL},' if extra else ""
    return template % {"name": name, "v": v, "fail": int(fail), "extra": line}


def new_name() -> str:
    return f"hotmod{next(_names)}_{id(new_name) % 1000}"


def reload_to(module: ModuleType, number: int, timeout: float = 120) -> None:
    """Drive a manual=True module's reloader until version `number` is live."""
    r = hotr.reloader_of(module)
    deadline = time.monotonic() + timeout
    while r.version < number:
        assert time.monotonic() < deadline, f"version {number} never came ({r.history})"
        r.watch_for_changes(0.5)
        r.update()


def run_child(code: str) -> None:
    """Run `code` in a child interpreter (it may crash) with gc, sys, threading, time, hotr
    and this module's helpers imported."""
    here = str(Path(__file__).parent)
    run_python(
        "import gc, sys, threading, time\n"
        f"sys.path.insert(0, {here!r})\n"
        "import hotr\n"
        "from test_modules import CONVENTIONS, MULTI, c_source, convention_source, reload_to\n"
        + textwrap.dedent(code)
    )


def build_so(tmp_path: Path, code: str, filename: str) -> Path:
    src = tmp_path / "build" / (filename.split(".")[0] + ".c")
    src.parent.mkdir(exist_ok=True)
    src.write_text(code)
    out = tmp_path / "build" / filename
    include = sysconfig.get_paths()["include"]
    subprocess.run(
        [CC, "-shared", "-fPIC", "-isystem", include, str(src), "-o", str(out)], check=True
    )
    return out


def test_a_module_already_in_sys_modules_is_replaced_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    name = new_name()
    src = tmp_path / f"{name}.c"
    src.write_text(c_source(MULTI, name, 1))
    before = ModuleType(name)
    sys.modules[name] = before
    try:
        with caplog.at_level(logging.WARNING, logger="hotr"):
            module = hotr.load_module(src, manual=True)
        assert sys.modules[name] is module and module is not before
        assert any(
            r.levelno == logging.WARNING and f"sys.modules[{name!r}] was" in r.getMessage()
            for r in caplog.records
        ), caplog.records
        hotr.reloader_of(module).close()
    finally:
        sys.modules.pop(name, None)


def test_single_phase_from_sources(tmp_path: Path) -> None:
    name = new_name()
    src = tmp_path / f"{name}.c"
    src.write_text(c_source(SINGLE, name, 1))
    module = hotr.load_module(src, manual=True)
    try:
        assert sys.modules[name] is module
        imported = __import__(name)
        assert imported is module
        norm = module.norm
        kept = [module.value]
        assert (norm(3.0, 4.0), kept[0](), module.VERSION) == (5.0, 1, 1)
        assert module.value.__doc__ == "value() -> the version" and module.value.__name__ == "value"
        src.write_text(c_source(SINGLE, name, 2))
        reload_to(module, 2)
        assert (norm(3.0, 4.0), kept[0](), module.VERSION, module.value()) == (10.0, 2, 2, 2)
        assert norm is module.norm  # the same live function, pointed at the new code
        reason = "kept mapped: a single-phase module (CPython keeps its functions)"
        assert hotr.reloader_of(module).history[0].status == reason  # at once, not "retired"
        assert str(inspect.signature(norm)) == "(x, y, /)"
        with pytest.raises(TypeError, match="norm"):
            norm(1.0)
        hotr.reloader_of(module).update()  # housekeeping retires version 1 for good
        statuses = [v.status for v in hotr.reloader_of(module).history]
        assert statuses == [
            "kept mapped: a single-phase module (CPython keeps its functions)",
            "live",
        ]
    finally:
        hotr.reloader_of(module).close()
        sys.modules.pop(name, None)


def test_a_function_is_the_modules_own_while_its_version_stays_and_counted_otherwise(
    tmp_path: Path,
) -> None:
    # A version that stays mapped for good (single-phase) needs no count of calls: the live
    # function then is a copy of the module's own, self and all; one that may be unloaded
    # (multi-phase, heap types only) is called through hotr's count.  One reference follows.
    name = new_name()
    src = tmp_path / f"{name}.c"

    def source(template: str, number: int) -> str:  # MULTI's __hotr_reload__ reads `count`
        return c_source(template, name, number).replace('"VERSION"', '"count"')

    src.write_text(source(SINGLE, 1))
    module = hotr.load_module(src, manual=True)
    try:
        value = module.value
        assert value() == 1 and isinstance(value.__self__, ModuleType)
        assert repr(value) == "<built-in function value>"
        for number, template in ((2, MULTI), (3, SINGLE), (4, MULTI)):
            src.write_text(source(template, number))
            reload_to(module, number)
            assert value() == number and value is module.value
            assert isinstance(value.__self__, ModuleType) == (template is SINGLE)
            assert pickle.loads(pickle.dumps(value)) is value
    finally:
        hotr.reloader_of(module).close()
        sys.modules.pop(name, None)


def test_the_modules_own_functions_outlive_a_closed_and_dropped_reloader(
    tmp_path: Path,
) -> None:
    # Copies of a module's functions (see above) use a method definition of hotr's: it must
    # outlive hotr's objects (PYTHONMALLOC=debug fills freed memory, so a stale read shows).
    name = new_name()
    src = tmp_path / f"{name}.c"
    src.write_text(c_source(SINGLE, name, 7))
    run_python(
        f"""
        import gc, sys, hotr
        module = hotr.load_module({str(src)!r})
        value, norm = module.value, module.norm
        hotr.reloader_of(module).close()
        del module
        sys.modules.pop({name!r})
        gc.collect()
        assert (value(), norm(3.0, 4.0)) == (7, 35.0), (value(), norm(3.0, 4.0))
        assert value.__name__ == "value" and value.__doc__ == "value() -> the version"
        assert norm.__text_signature__ == "($module, x, y, /)", norm.__text_signature__
        """,
        env={"PYTHONMALLOC": "debug"},
    )


# A multi-phase module that stays mapped (a static type) with state: wait(entered, fd) calls
# entered(), reads a byte from fd without the GIL, then returns its module's state and VERSION.
STAYING_WITH_STATE = """
#include <Python.h>
#include <unistd.h>
static PyTypeObject Thing = {PyVarObject_HEAD_INIT(NULL, 0) .tp_name = "%(name)s.Thing",
    .tp_basicsize = sizeof(PyObject), .tp_flags = Py_TPFLAGS_DEFAULT};
static PyObject *wait(PyObject *self, PyObject *args) {
    PyObject *entered; int fd, got; char byte;
    if (!PyArg_ParseTuple(args, "Oi", &entered, &fd)) return NULL;
    PyObject *none = PyObject_CallObject(entered, NULL);
    if (none == NULL) return NULL;
    Py_DECREF(none);
    Py_BEGIN_ALLOW_THREADS
    got = (int)read(fd, &byte, 1);
    Py_END_ALLOW_THREADS
    if (got != 1) return PyErr_SetFromErrno(PyExc_OSError);
    return Py_BuildValue("(lO)", *(long *)PyModule_GetState(self),
                         PyDict_GetItemString(PyModule_GetDict(self), "VERSION"));
}
static PyMethodDef methods[] = {{"wait", wait, METH_VARARGS, NULL}, {NULL}};
static int exec(PyObject *m) {
    *(long *)PyModule_GetState(m) = %(v)d;
    if (PyType_Ready(&Thing) < 0) return -1;
    Py_INCREF(&Thing);
    if (PyModule_AddObject(m, "Thing", (PyObject *)&Thing) < 0) return -1;
    return PyModule_AddIntConstant(m, "VERSION", %(v)d);
}
static PyModuleDef_Slot slots[] = {{Py_mod_exec, exec}, {0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "%(name)s", NULL, sizeof(long), methods,
                                 slots};
PyMODINIT_FUNC PyInit_%(name)s(void) { return PyModuleDef_Init(&def); }
"""


def test_a_direct_call_in_flight_keeps_its_module_through_reloads(tmp_path: Path) -> None:
    # A call of a version that stays is not counted: its module (the self the interpreter
    # passed it, borrowed) must outlive the reloads and collections that land meanwhile.
    name = new_name()
    src = tmp_path / f"{name}.c"
    src.write_text(STAYING_WITH_STATE % {"name": name, "v": 1})
    run_python(
        f"""
        import gc, os, sys, threading, time, hotr
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_modules import STAYING_WITH_STATE, MULTI, c_source, reload_to
        module = hotr.load_module({str(src)!r}, manual=True)
        wait = module.wait
        entered, (read_end, write_end), result = threading.Event(), os.pipe(), []
        thread = threading.Thread(target=lambda: result.append(wait(entered.set, read_end)))
        thread.start()
        assert entered.wait(60)
        for number, text in ((2, STAYING_WITH_STATE % {{"name": {name!r}, "v": 2}}),
                             (3, c_source(MULTI, {name!r}, 3).replace('"count"', '"VERSION"'))):
            open({str(src)!r}, "w").write(text)
            reload_to(module, number)
        gc.collect()
        junk = [bytearray(48) for _ in range(20000)]  # reuses what was freed
        os.write(write_end, b"x")
        thread.join(60)
        assert result == [(1, 1)], result
        hotr.reloader_of(module).close()
        """,
        env={"PYTHONMALLOC": "debug"},
    )


def test_functions_that_come_and_go(tmp_path: Path) -> None:
    name = new_name()
    src = tmp_path / f"{name}.c"
    src.write_text(c_source(SINGLE, name, 1))
    module = hotr.load_module(src, manual=True)
    try:
        extra = module.extra
        src.write_text(c_source(SINGLE, name, 2, extra=False))
        reload_to(module, 2)
        assert not hasattr(module, "extra")
        with pytest.raises(hotr.SymbolNotFoundError, match="extra"):
            extra()
        src.write_text(c_source(SINGLE, name, 3))
        reload_to(module, 3)
        assert extra() == -3 and module.extra is extra
    finally:
        hotr.reloader_of(module).close()
        sys.modules.pop(name, None)


# Multi-phase, no types: version 1 has gone(), which later versions drop.
DROPS = """
#include <Python.h>
static PyObject *value(PyObject *self, PyObject *unused) { return PyLong_FromLong(%(v)d); }
static PyMethodDef methods[] = {{"value", value, METH_NOARGS, NULL}, %(extra)s {NULL}};
static int exec(PyObject *m) { return 0; }
static PyModuleDef_Slot slots[] = {{Py_mod_exec, exec}, {0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "%(name)s", NULL, 0, methods, slots};
PyMODINIT_FUNC PyInit_%(name)s(void) { return PyModuleDef_Init(&def); }
"""


def test_a_version_whose_function_the_next_one_drops_is_still_unloaded(tmp_path: Path) -> None:
    # The live function of a dropped name held the old version's own function, and so its
    # module: that version stayed "retired" for good, mapped, though nothing of it was used.
    src = tmp_path / "drops.c"
    extra = '{"gone", value, METH_NOARGS, NULL},'
    src.write_text(DROPS % {"name": "drops", "v": 1, "extra": extra})
    run_child(
        f"""
        src = {str(src)!r}
        drops = hotr.load_module(src, manual=True)
        gone = drops.gone
        assert gone() == 1
        with open(src, "w") as f:
            f.write({DROPS!r} % {{"name": "drops", "v": 2, "extra": ""}})
        reload_to(drops, 2)
        r = hotr.reloader_of(drops)
        deadline = time.monotonic() + 30
        while r.history[0].status != "unloaded":
            assert time.monotonic() < deadline, r.history
            gc.collect()
            r.poll()
            time.sleep(0.01)
        assert not any("v1-libdrops" in line for line in open("/proc/self/maps"))
        try:
            gone()
        except hotr.SymbolNotFoundError:
            pass
        else:
            raise AssertionError("a dropped function was called")
        assert drops.value() == 2
        """
    )


# Each version gives f() another calling convention (version 5 has none).
CONVENTIONS = {
    1: ("METH_O", "static PyObject *f(PyObject *s, PyObject *x) { return Py_NewRef(x); }"),
    2: (
        "METH_VARARGS | METH_KEYWORDS",
        """static PyObject *f(PyObject *s, PyObject *args, PyObject *kw) {
            static char *names[] = {"a", "b", "key", NULL};
            long a, b, key = 100;
            if (!PyArg_ParseTupleAndKeywords(args, kw, "ll|l", names, &a, &b, &key)) return NULL;
            return PyLong_FromLong(a + b + key);
        }""",
    ),
    3: (
        "METH_NOARGS",
        "static PyObject *f(PyObject *s, PyObject *u) { return PyLong_FromLong(3); }",
    ),
    4: (
        "METH_FASTCALL",
        "static PyObject *f(PyObject *s, PyObject *const *a, Py_ssize_t n) "
        "{ return PyLong_FromSsize_t(n); }",
    ),
    6: (
        "METH_FASTCALL | METH_KEYWORDS",
        "static PyObject *f(PyObject *s, PyObject *const *a, Py_ssize_t n, PyObject *kw) "
        "{ return PyLong_FromSsize_t(n * 10 + (kw ? PyTuple_GET_SIZE(kw) : 0)); }",
    ),
    7: ("METH_O", "static PyObject *f(PyObject *s, PyObject *x) { return PyNumber_Add(x, x); }"),
}


def convention_source(name: str, v: int, *, multi: bool = False) -> str:
    """Version `v` of module `name`: single-phase (it stays mapped, its calls are direct), or
    `multi`-phase without static types (it may be unloaded, its calls are counted)."""
    flags, code = CONVENTIONS.get(v, ("", ""))
    entry = f'{{"f", (PyCFunction)(void (*)(void))f, {flags}, NULL}},' if flags else ""
    size, slots, make = (
        ("0", "slots", "PyModuleDef_Init") if multi else ("-1", "NULL", "PyModule_Create")
    )
    init = f"""static PyModuleDef_Slot slots[] = {{{{0, NULL}}}};
static struct PyModuleDef def = {{PyModuleDef_HEAD_INIT, "{name}", NULL, {size}, methods, {slots}}};
PyMODINIT_FUNC PyInit_{name}(void) {{ return {make}(&def); }}"""
    return f"""
#include <Python.h>
{code}
static PyObject *g(PyObject *s, PyObject *u) {{ return PyLong_FromLong({v}); }}
static PyMethodDef methods[] = {{{entry} {{"g", g, METH_NOARGS, NULL}}, {{NULL}}}};
{init}
"""


@pytest.mark.parametrize("alternate", [False, True], ids=["direct", "direct-and-counted"])
def test_a_function_that_changes_its_calling_convention(tmp_path: Path, alternate: bool) -> None:
    """A reference taken earlier, and call sites the interpreter has specialised for the
    old convention, take the new version's arguments (and its errors); `alternate`: even
    versions are multi-phase, so the function switches between direct and counted calls."""
    src = tmp_path / "conv.c"
    src.write_text(convention_source("conv", 1))
    run_child(
        f"""
        conv = hotr.load_module({str(src)!r}, manual=True)
        from conv import f

        def none(): return f()
        def one(x): return f(x)
        def two(a, b): return f(a, b)
        def keyed(a, b): return f(a, b, key=1)

        def raises(error, call, *args, match=""):
            try:
                call(*args)
            except error as exc:
                assert match in str(exc), (match, exc)
            else:
                raise AssertionError(f"{{call.__name__}}{{args}} returned")

        def to(n):
            multi = {alternate} and n % 2 == 0
            open({str(src)!r}, "w").write(convention_source("conv", n, multi=multi))
            reload_to(conv, n)
            assert conv.g() == n
            direct = not multi and n in CONVENTIONS  # a missing f raises through hotr
            assert isinstance(f.__self__, type(sys)) == direct, (n, f.__self__)

        for _ in range(300):  # specialised for a METH_O builtin now (3.11+)
            assert one(7) == 7
        raises(TypeError, none, match="takes exactly one argument (0 given)")
        raises(TypeError, keyed, 1, 2, match="keyword")
        to(2)
        raises(TypeError, one, 1, match="(pos 2)")
        assert two(1, 2) == 103 and keyed(1, 2) == 4 and f(a=1, b=2) == 103
        for _ in range(300):
            assert two(1, 2) == 103
        to(3)
        assert none() == 3
        raises(TypeError, one, 1, match="takes no arguments (1 given)")
        raises(TypeError, keyed, 1, 2, match="keyword")
        to(4)
        assert (none(), one(1), two(1, 2)) == (0, 1, 2)
        raises(TypeError, keyed, 1, 2, match="keyword")
        to(5)
        for call, args in ((none, ()), (one, (1,)), (two, (1, 2)), (keyed, (1, 2))):
            raises(hotr.SymbolNotFoundError, call, *args, match="'f'")
        to(6)
        assert (none(), one(1), two(1, 2), keyed(1, 2), f(x=1, y=2)) == (0, 10, 20, 21, 2)
        to(7)
        for _ in range(300):
            assert one(4) == 8
        assert f(2.5) == 5.0 and f is conv.f
        print("ok")
        """
    )


def test_init_raising_is_a_load_error_and_the_version_stays(tmp_path: Path) -> None:
    name = new_name()
    src = tmp_path / f"{name}.c"
    src.write_text(c_source(MULTI, name, 1, fail=True))
    with pytest.raises(hotr.LoadError, match="its module init raised ValueError") as caught:
        hotr.load_module(src)
    assert isinstance(caught.value.__cause__, ValueError)
    assert name not in sys.modules
    src.write_text(c_source(MULTI, name, 1))
    errors: list[hotr.HotReloadError] = []
    module = hotr.load_module(src, manual=True, on_error=errors.append)
    try:
        value = module.value
        src.write_text(c_source(MULTI, name, 2, fail=True))
        r = hotr.reloader_of(module)
        deadline = time.monotonic() + 120
        while not errors:
            assert time.monotonic() < deadline
            r.watch_for_changes(0.5)
            try:
                r.update()
            except hotr.LoadError as exc:
                assert "version 2 refuses" in str(exc.__cause__)
        assert (value(), r.version, module.Box(1).get()) == (1, 1, 1001)
        assert sys.modules[name] is module
        # The fixed save loads: a version whose init failed stays mapped, and the next one
        # must come from a path of its own, not be handed the failed one again.
        vars(module)["mine"] = "kept"  # set by the program: no version defines it
        src.write_text(c_source(MULTI, name, 3))
        deadline = time.monotonic() + 120
        while r.version < 2:
            assert time.monotonic() < deadline, errors
            r.watch_for_changes(0.5)
            with contextlib.suppress(hotr.LoadError):
                r.update()
        assert (value(), module.Box(1).get()) == (3, 3001)
        assert vars(module)["mine"] == "kept"
    finally:
        hotr.reloader_of(module).close()
        sys.modules.pop(name, None)


def _classes_state_hook(tmp_path: Path, *, unloaded: bool) -> None:
    """Old objects keep their old type and code; new ones come from the new version; the hook
    carries `count`; with `unloaded`, version 1 is unmapped once nothing of it is left (a
    child: it unmaps)."""
    name = "boxes"
    src = tmp_path / f"{name}.c"
    src.write_text(c_source(MULTI, name, 1))
    run_child(
        f"""
        src = {str(src)!r}

        def mapped(n):
            return any(f"v{{n}}-lib{name}.so" in line for line in open("/proc/self/maps"))

        boxes = hotr.load_module(src, manual=True)
        import boxes as again
        assert again is boxes
        old = boxes.Box(5)
        OldBox = boxes.Box
        assert old.get() == 1005
        open(src, "w").write(c_source(MULTI, {name!r}, 2))
        reload_to(boxes, 2)
        r = hotr.reloader_of(boxes)
        assert boxes.Box(5).get() == 2005 and old.get() == 1005
        assert not isinstance(old, boxes.Box) and type(old) is OldBox
        assert boxes.count == 1  # __hotr_reload__ ran with the old module
        assert mapped(1) and r.history[0].status == "retired"
        if not {unloaded!r}:
            sys.exit(0)
        import weakref
        left = weakref.ref(OldBox)
        del old, OldBox
        gc.collect()
        deadline = time.monotonic() + 30
        while mapped(1):  # a type may take more than one collection to go (docs/modules.md)
            if time.monotonic() > deadline:  # say what is left: hotr's view, and the type's
                held = [repr(h)[:200] for h in gc.get_referrers(left())] if left() else []
                raise AssertionError(f"{{r.history}}\\nBox alive: {{left()}}, held by {{held}}")
            r.poll()
            time.sleep(0.01)
            gc.collect()
        assert r.history[0].status == "unloaded", r.history
        assert boxes.value() == 2 and boxes.Box(1).get() == 2001
        """
    )


def test_classes_state_and_hook(tmp_path: Path) -> None:
    _classes_state_hook(tmp_path, unloaded=False)


def test_what_the_program_sets_on_the_module_reaches_the_hook(tmp_path: Path) -> None:
    # examples/modules.py: `fastmath.calls += 1`, carried by __hotr_reload__, which reads the
    # old version's own module: the program's set has to reach that module, not only hotr's.
    name = new_name()
    src = tmp_path / f"{name}.c"
    src.write_text(c_source(MULTI, name, 1))
    module: Any = hotr.load_module(src, manual=True)
    try:
        module.count += 41
        module.note = "kept"
        src.write_text(c_source(MULTI, name, 2))
        reload_to(module, 2)
        assert (module.count, module.note, module.value()) == (42, "kept", 2)
        module.count = 7
        src.write_text(c_source(MULTI, name, 3))
        reload_to(module, 3)  # the note, which no version defines, stays
        assert (module.count, module.note) == (8, "kept")
        del module.note
        assert not hasattr(module, "note")
    finally:
        hotr.reloader_of(module).close()
        sys.modules.pop(name, None)


def test_an_old_version_is_unloaded_once_nothing_of_it_is_left(tmp_path: Path) -> None:
    _classes_state_hook(tmp_path, unloaded=True)


@pytest.mark.parametrize("own_dealloc", [True, False], ids=["own-dealloc", "inherited-dealloc"])
def test_a_static_type_keeps_its_version_mapped_and_history_says_so(
    tmp_path: Path, own_dealloc: bool
) -> None:
    name = new_name()
    src = tmp_path / f"{name}.c"
    src.write_text(c_source(STATIC, name, 1, extra=own_dealloc))
    module = hotr.load_module(src, manual=True)
    try:
        r = hotr.reloader_of(module)
        old = module.Thing()
        src.write_text(c_source(STATIC, name, 2, extra=own_dealloc))
        reload_to(module, 2)
        assert (old.get(), module.Thing().get()) == (1, 2)
        kept = "kept mapped: Thing is a static type"
        assert r.history[0].status == kept  # at once: no collection can make it go
        del old
        gc.collect()
        r.update()
        assert [v.status for v in r.history] == [kept, "live"]
    finally:
        hotr.reloader_of(module).close()
        sys.modules.pop(name, None)


# A module with a C API in a capsule, and a module that takes a pointer from it at its init.
CAPSULE = """
#include <Python.h>
static long api_value(void) { return %(v)d; }
static void *api[] = {(void *)api_value};
static PyObject *value(PyObject *m, PyObject *u) { return PyLong_FromLong(%(v)d); }
static PyMethodDef methods[] = {{"value", value, METH_NOARGS, NULL}, {NULL}};
static int exec(PyObject *m) {
    return PyModule_AddObject(m, "_C_API", PyCapsule_New(api, "%(name)s._C_API", NULL));
}
static PyModuleDef_Slot slots[] = {{Py_mod_exec, exec}, {0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "%(name)s", NULL, 0, methods, slots};
PyMODINIT_FUNC PyInit_%(name)s(void) { return PyModuleDef_Init(&def); }
"""
CAPSULE_USER = """
#include <Python.h>
static long (*api_value)(void);
static PyObject *through(PyObject *m, PyObject *u) { return PyLong_FromLong(api_value()); }
static PyMethodDef methods[] = {{"through", through, METH_NOARGS, NULL}, {NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "%(name)s", NULL, -1, methods};
PyMODINIT_FUNC PyInit_%(name)s(void) {
    void **api = PyCapsule_Import("%(api)s._C_API", 0);
    if (api == NULL) return NULL;
    api_value = (long (*)(void))api[0];
    return PyModule_Create(&def);
}
"""


def test_a_version_that_exports_a_capsule_stays_mapped(tmp_path: Path) -> None:
    # Another module's pointer from PyCapsule_Import called an unloaded version: SIGSEGV.
    api, user = new_name(), new_name()
    (tmp_path / f"{user}.c").write_text(CAPSULE_USER % {"name": user, "api": api})
    run_child(
        f"""
import os
from test_modules import CAPSULE
src = {str(tmp_path / f"{api}.c")!r}
open(src, "w").write(CAPSULE % {{"name": {api!r}, "v": 1}})
module = hotr.load_module(src, manual=True)
user = hotr.load_module({str(tmp_path / f"{user}.c")!r}, manual=True)
assert user.through() == 1
open(src + ".tmp", "w").write(CAPSULE % {{"name": {api!r}, "v": 2}})
os.replace(src + ".tmp", src)
reload_to(module, 2)
gc.collect()
r = hotr.reloader_of(module)
deadline = time.monotonic() + 10
while time.monotonic() < deadline and r.history[0].status == "retired":
    r.poll()
    time.sleep(0.01)
kept = "kept mapped: _C_API is a capsule (other modules may hold pointers into it)"
assert [v.status for v in r.history] == [kept, "live"], r.history
assert (module.value(), user.through()) == (2, 1)  # its version's code, still there
print("done")
"""
    )


@pytest.mark.skipif(importlib.util.find_spec("Cython") is None, reason="Cython not installed")
def test_a_cython_module_with_cdef_functions_to_cimport_stays_mapped(tmp_path: Path) -> None:
    name = new_name()
    (tmp_path / f"{name}.pxd").write_text("cdef int f()\n")
    src = tmp_path / f"{name}.pyx"
    src.write_text("cdef int f():\n    return 1\n")
    module = hotr.load_module(src, manual=True)
    try:
        src.write_text("cdef int f():\n    return 2\n")
        reload_to(module, 2)
        gc.collect()
        r = hotr.reloader_of(module)
        r.update()
        kept = "kept mapped: __pyx_capi__ holds capsules (other modules may hold pointers into it)"
        assert [v.status for v in r.history] == [kept, "live"]
    finally:
        hotr.reloader_of(module).close()
        sys.modules.pop(name, None)


def test_an_unload_put_off_by_a_load_in_another_thread_still_happens(tmp_path: Path) -> None:
    """The last object of version 1 goes while another thread holds the reloader for a load:
    the unload that wake-up asked for is put off, never lost, with nothing else happening."""
    name = "putoff"
    src = tmp_path / f"{name}.c"
    src.write_text(c_source(MULTI, name, 1))
    slow = c_source(MULTI, name, 3).replace(
        "static int exec(PyObject *m) {",
        "static int exec(PyObject *m) {\n"
        "    Py_BEGIN_ALLOW_THREADS usleep(500000); Py_END_ALLOW_THREADS",
    )
    run_child(
        f"""
        m = hotr.load_module({str(src)!r}, manual=True)
        r = hotr.reloader_of(m)
        held = [m.Box(1)]
        open({str(src)!r}, "w").write(c_source(MULTI, "putoff", 2))
        reload_to(m, 2)
        gc.collect()
        assert r.history[0].status == "retired", r.history
        def drop():
            time.sleep(0.2)  # version 3's init is running in the main thread by now
            held.clear()
            gc.collect()
        thread = threading.Thread(target=drop)
        open({str(src)!r}, "w").write({slow!r})
        thread.start()
        reload_to(m, 3)
        thread.join()
        deadline = time.monotonic() + 10  # only history is read from now on
        while r.history[0].status != "unloaded":
            assert time.monotonic() < deadline, r.history
            time.sleep(0.01)
        """
    )


def test_no_version_is_unloaded_under_a_running_call(tmp_path: Path) -> None:
    name = "blocking"
    src = tmp_path / f"{name}.c"
    src.write_text(c_source(MULTI, name, 1))
    run_child(
        f"""
        blocking = hotr.load_module({str(src)!r}, manual=True)
        from blocking import block
        result = []
        thread = threading.Thread(target=lambda: result.append(block(1.5)))
        thread.start()
        time.sleep(0.2)  # the call runs version 1's code, without the GIL
        open({str(src)!r}, "w").write(c_source(MULTI, "blocking", 2))
        reload_to(blocking, 2)
        r = hotr.reloader_of(blocking)
        gc.collect()
        r.poll()
        assert thread.is_alive() and r.history[0].status == "retired", r.history
        thread.join()
        assert result == [1] and block(0.0) == 2
        gc.collect()
        deadline = time.monotonic() + 30
        while r.history[0].status != "unloaded":
            assert time.monotonic() < deadline, r.history
            r.poll()
            time.sleep(0.01)
        """
    )


def test_threads_call_while_reloads_land(tmp_path: Path) -> None:
    name = "busy"
    src = tmp_path / f"{name}.c"
    src.write_text(c_source(MULTI, name, 1))
    run_child(
        f"""
        busy = hotr.load_module({str(src)!r}, manual=True)
        from busy import value
        stop = threading.Event()
        seen = []
        def call():
            last = 0
            while not stop.is_set() or last < 6:  # until it has called the last version
                v, b = value(), busy.Box(1).get()
                assert v >= last and b % 1000 == 1, (v, last, b)
                last = v
            seen.append(last)
        threads = [threading.Thread(target=call) for _ in range(3)]
        for t in threads:
            t.start()
        for n in range(2, 7):
            open({str(src)!r}, "w").write(c_source(MULTI, "busy", n))
            reload_to(busy, n)
            gc.collect()
        stop.set()
        for t in threads:
            t.join()
        assert seen == [6, 6, 6], seen
        r = hotr.reloader_of(busy)
        r.update()
        assert "unloaded" in [v.status for v in r.history], r.history
        """
    )


def test_aload_module_reloads_in_a_task_on_the_loop(tmp_path: Path) -> None:
    import asyncio

    name = new_name()
    src = tmp_path / f"{name}.c"
    src.write_text(c_source(MULTI, name, 1, fail=True))

    async def main() -> None:
        with pytest.raises(hotr.LoadError, match="its module init raised ValueError"):
            await hotr.aload_module(src)
        assert name not in sys.modules
        src.write_text(c_source(MULTI, name, 1))
        reloads: list[tuple[int, int]] = []
        module = await hotr.aload_module(src, on_reload=lambda old, new: reloads.append((old, new)))
        assert sys.modules[name] is module and module.value() == 1
        value = module.value
        src.write_text(c_source(MULTI, name, 2))
        deadline = time.monotonic() + 120
        while value() != 2:  # the task loads it on this loop, between other tasks
            assert time.monotonic() < deadline, hotr.reloader_of(module).history
            await asyncio.sleep(0.01)
        assert (module.Box(1).get(), module.count, reloads) == (2001, 1, [(1, 2)])
        (task,) = [t for t in asyncio.all_tasks() if t.get_name().startswith("hotr:")]
        hotr.reloader_of(module).close()
        await asyncio.wait_for(task, 10)  # close() ends the task
        assert value() == 2  # the live version stays

    try:
        asyncio.run(main())
    finally:
        sys.modules.pop(name, None)


def test_probe_runs_the_init_so_one_that_crashes_is_refused(tmp_path: Path) -> None:
    # In a child: without the probe running PyInit, version 2's segfault ends the process.
    run_child(
        f"""
        from pathlib import Path
        from test_modules import SINGLE
        src = Path({str(tmp_path)!r}) / "probed.c"
        src.write_text(c_source(SINGLE, "probed", 1))
        module = hotr.load_module(src, manual=True, probe=True)
        r = hotr.reloader_of(module)
        crash = c_source(SINGLE, "probed", 2).replace(
            "PyObject *m = PyModule_Create", "*(volatile int *)0 = 1; PyObject *m = PyModule_Create"
        )
        for code, expected in ((crash, "crashed a probe process (SIGSEGV)"),
                               (c_source(SINGLE, "probed", 3, fail=True), "version 3 refuses")):
            src.write_text(code)
            assert r.watch_for_changes(60)
            try:
                r.update()
            except hotr.LoadError as exc:  # an exception in the init: the real one's
                assert expected in str(exc), exc
            else:
                raise AssertionError("loaded")
            assert (module.value(), r.version) == (1, 1)
        src.write_text(c_source(SINGLE, "probed", 4))
        reload_to(module, 2)
        assert module.value() == 4
        r.close()
        """
    )


def test_rollback_runs_the_init_again(tmp_path: Path) -> None:
    name = new_name()
    src = tmp_path / f"{name}.c"
    src.write_text(c_source(MULTI, name, 1))
    module = hotr.load_module(src, manual=True)
    try:
        src.write_text(c_source(MULTI, name, 2))
        reload_to(module, 2)
        value = module.value
        hotr.reloader_of(module).rollback()
        assert (value(), module.Box(1).get(), module.count, hotr.reloader_of(module).version) == (
            1,
            1001,
            2,
            3,
        )
    finally:
        hotr.reloader_of(module).close()
        sys.modules.pop(name, None)


def test_built_module_bad_files_and_pickling(tmp_path: Path) -> None:
    name = new_name()
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    target = tmp_path / f"{name}{suffix}"
    target.write_bytes(build_so(tmp_path, c_source(SINGLE, name, 1), f"a{suffix}").read_bytes())
    module = hotr.load_module(target, manual=True)
    try:
        assert module.__name__ == name and sys.modules[name] is module
        assert pickle.loads(pickle.dumps(module.norm)) is module.norm
        value = module.value
        r = hotr.reloader_of(module)
        for bad, reason in [(b"not an ELF file", "ELF"), (b"", "empty")]:
            target.write_bytes(bad)
            deadline = time.monotonic() + 30
            while True:
                assert time.monotonic() < deadline
                r.watch_for_changes(0.5)
                try:
                    r.update()
                except hotr.LoadError as exc:
                    assert reason in str(exc)
                    break
            assert value() == 1
        other = build_so(tmp_path, c_source(SINGLE, "othername", 2), f"b{suffix}")
        target.write_bytes(other.read_bytes())
        with pytest.raises(hotr.LoadError, match=r"no PyInit_.*name='othername'"):
            while True:
                r.watch_for_changes(0.5)
                r.update()
        assert value() == 1 and r.version == 1
    finally:
        hotr.reloader_of(module).close()
        sys.modules.pop(name, None)


def test_a_save_runs_the_compiler_only_once(tmp_path: Path) -> None:
    """No prototypes are read for a module (its functions are typed by the module itself):
    the compiler's preprocessor does not run beside each compile."""
    log = tmp_path / "cc.log"
    cc = tmp_path / "cc"
    cc.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {CC} "$@"\n')
    cc.chmod(0o755)
    name = new_name()
    src = tmp_path / f"{name}.c"
    fresh = f"/* {os.urandom(8).hex()} */\n"  # no object of it is in the cache
    src.write_text(fresh + c_source(SINGLE, name, 1))
    module = hotr.load_module(src, manual=True, cc=str(cc))
    try:
        src.write_text(fresh + c_source(SINGLE, name, 2, extra=False))
        reload_to(module, 2)
        runs = log.read_text().splitlines()
        assert len(runs) == 2 and not [r for r in runs if " -E " in f" {r} "], runs
    finally:
        hotr.reloader_of(module).close()
        sys.modules.pop(name, None)


def test_a_module_of_a_package_is_named_in_full(tmp_path: Path) -> None:
    # name="pkg.mod": its init is PyInit_mod, it is sys.modules["pkg.mod"] and, as an import
    # makes it, the attribute mod of the package imported already.
    package, name = new_name(), new_name()
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    src = tmp_path / f"{name}.c"
    code = """
#include <Python.h>
static PyObject *value(PyObject *self, PyObject *unused) { return PyLong_FromLong(%(v)d); }
static PyMethodDef methods[] = {{"value", value, METH_NOARGS, NULL}, {NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "%(full)s", NULL, -1, methods};
PyMODINIT_FUNC PyInit_%(name)s(void) { return PyModule_Create(&def); }
"""
    full = f"{package}.{name}"
    src.write_text(code % {"v": 1, "full": full, "name": name})
    sys.path.insert(0, str(tmp_path))
    try:
        parent = importlib.import_module(package)
        module = hotr.load_module(src, name=full, manual=True)
        try:
            assert sys.modules[full] is module and getattr(parent, name) is module
            assert importlib.import_module(full) is module
            assert (module.__name__, module.value()) == (full, 1)
            src.write_text(code % {"v": 2, "full": full, "name": name})
            reload_to(module, 2)
            assert getattr(parent, name).value() == 2
        finally:
            hotr.reloader_of(module).close()
            sys.modules.pop(full, None)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(package, None)


def test_a_module_of_a_package_not_imported_yet_is_imported_as_usual(tmp_path: Path) -> None:
    # `import pkg.sub.mod` after load_module gave a pkg without sub (the import found the module
    # in sys.modules, so it imported no parent): the packages are imported, and hold it.
    package, name = new_name(), new_name()
    (tmp_path / package / "sub").mkdir(parents=True)
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "sub" / "__init__.py").write_text(f"from .{name} import value\n")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "__init__.py").write_text("raise RuntimeError('broken package')\n")
    src = tmp_path / f"{name}.c"
    code = """
#include <Python.h>
static PyObject *value(PyObject *self, PyObject *unused) { return PyLong_FromLong(%(v)d); }
static PyMethodDef methods[] = {{"value", value, METH_NOARGS, NULL}, {NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "%(full)s", NULL, -1, methods};
PyMODINIT_FUNC PyInit_%(name)s(void) { return PyModule_Create(&def); }
"""
    full = f"{package}.sub.{name}"
    run_python(
        f"""
import importlib, sys, time
sys.path.insert(0, {str(tmp_path)!r})
import hotr
src, code, full = {str(src)!r}, {code!r}, {full!r}
open(src, "w").write(code % {{"v": 1, "full": full, "name": {name!r}}})
module = hotr.load_module(src, name=full, manual=True)
import {full}
assert {full} is module and {full}.value() == 1 and {package}.sub.value() == 1
open(src, "w").write(code % {{"v": 2, "full": full, "name": {name!r}}})
reloader = hotr.reloader_of(module)
deadline = time.monotonic() + 60
while reloader.version < 2:
    assert time.monotonic() < deadline, reloader.history
    reloader.watch_for_changes(0.5)
    reloader.update()
assert {full}.value() == 2 and {package}.sub.value() == 2

# A package that does not exist is left alone; one whose __init__ raises raises, as an import.
code_of = lambda full: code % {{"v": 1, "full": full, "name": {name!r}}}
open(src, "w").write(code_of("nosuchpackage." + {name!r}))
other = hotr.load_module(src, name="nosuchpackage." + {name!r}, manual=True)
assert other.value() == 1 and "nosuchpackage" not in sys.modules
hotr.reloader_of(other).close()
open(src, "w").write(code_of("broken." + {name!r}))
try:
    hotr.load_module(src, name="broken." + {name!r}, manual=True)
except RuntimeError as exc:
    assert str(exc) == "broken package", exc
else:
    raise AssertionError("the broken package's error was not raised")
assert "broken." + {name!r} not in sys.modules
print("done")
"""
    )


def test_not_a_module_name() -> None:
    with pytest.raises(ValueError, match="not a module name"):
        hotr.load_module("x.c", name="no-dash")
    with pytest.raises(ValueError, match="not a module name"):
        hotr.load_module("x.c", name="pkg..x")
    with pytest.raises(TypeError, match="load_module"):
        hotr.reloader_of(sys)


@pytest.mark.skipif(importlib.util.find_spec("Cython") is None, reason="Cython not installed")
def test_cython(tmp_path: Path) -> None:
    name = new_name()
    src = tmp_path / f"{name}.pyx"
    code = textwrap.dedent(
        """
        VERSION = %d
        cdef class Acc:
            cdef public double total
            def add(self, double x):
                self.total += x * VERSION
                return self.total
        def scale(double x, y=1.0, *, z=None):
            return x * VERSION * y
        class Thing:
            pass
        def odd(k=Thing()):
            return k
        """
    )
    src.write_text(code % 1)
    module = hotr.load_module(src, manual=True)
    try:
        scale = module.scale
        old = module.Acc()
        assert (scale(2.0), old.add(1.0)) == (2.0, 1.0)
        # Cython's functions have a real signature, which a live function keeps as its text
        # signature; one with a default that no text signature can spell has none.
        assert str(inspect.signature(scale)) == "(x, y=1.0, *, z=None)"
        with pytest.raises(ValueError, match="no signature found"):
            inspect.signature(module.odd)
        src.write_text(code % 2)
        reload_to(module, 2)
        assert (scale(2.0), module.Acc().add(1.0), old.add(1.0)) == (4.0, 2.0, 2.0)
        assert sys.modules[name] is module and type(old) is not module.Acc
    finally:
        hotr.reloader_of(module).close()
        sys.modules.pop(name, None)


@pytest.mark.skipif(importlib.util.find_spec("Cython") is None, reason="Cython not installed")
def test_a_cython_module_of_a_package_leaves_no_stale_module_under_its_full_name(
    tmp_path: Path,
) -> None:
    # Cython put each version's own module in sys.modules["pkg.mod"] (the full name it is
    # compiled with) when hotr loaded it as "mod": `import pkg.mod` then gave version 1 forever.
    package, name = new_name(), new_name()
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    src = tmp_path / package / f"{name}.pyx"
    src.write_text("VERSION = 1\n")
    module = hotr.load_module(src, manual=True)
    try:
        src.write_text("VERSION = 2\n")
        reload_to(module, 2)
        assert module.VERSION == 2
        assert f"{package}.{name}" not in sys.modules
    finally:
        hotr.reloader_of(module).close()
        sys.modules.pop(name, None)
        sys.modules.pop(f"{package}.{name}", None)


@pytest.mark.skipif(importlib.util.find_spec("Cython") is None, reason="Cython not installed")
def test_cython_cdef_class_instances_of_the_live_version_pickle(tmp_path: Path) -> None:
    """Cython pickles a cdef class through a module function of its own (__pyx_unpickle_Acc),
    which pickle finds by name: the namespace has to hold that very function."""
    name = new_name()
    src = tmp_path / f"{name}.pyx"
    code = "VERSION = %d\ncdef class Acc:\n    cdef public double total\n"
    src.write_text(code % 1)
    module = hotr.load_module(src, manual=True)
    try:
        old = module.Acc()
        src.write_text(code % 2)
        reload_to(module, 2)
        acc = module.Acc()
        acc.total = 3.0
        copy = pickle.loads(pickle.dumps(acc))
        assert (type(copy), copy.total) == (module.Acc, 3.0)
        with pytest.raises(pickle.PicklingError):
            pickle.dumps(old)
    finally:
        hotr.reloader_of(module).close()
        sys.modules.pop(name, None)


@pytest.mark.skipif(importlib.util.find_spec("pybind11") is None, reason="pybind11 not installed")
def test_pybind11(tmp_path: Path) -> None:
    """pybind11 >= 3 caches the module object, and registers a C++ class once per registry."""
    name = new_name()
    src = tmp_path / f"{name}.cpp"
    code = textwrap.dedent(
        """
        #include <pybind11/pybind11.h>
        namespace py = pybind11;
        struct Vec { double x; double norm() const { return x * %(v)d; } };
        PYBIND11_MODULE(%(name)s, m) {
            py::class_<Vec>(m, "Vec").def(py::init<double>()).def("norm", &Vec::norm);
            m.def("version", []() { return %(v)d; });
        }
        """
    )
    src.write_text(code % {"name": name, "v": 1})
    module = hotr.load_module(src, manual=True, build_timeout=300)
    try:
        version = module.version
        old = module.Vec(3.0)
        src.write_text(code % {"name": name, "v": 2})
        reload_to(module, 2, timeout=300)
        assert (version(), module.Vec(3.0).norm(), old.norm()) == (2, 6.0, 3.0)
    finally:
        hotr.reloader_of(module).close()
        sys.modules.pop(name, None)


@pytest.mark.skipif(importlib.util.find_spec("pybind11") is None, reason="pybind11 not installed")
def test_a_pybind11_module_with_a_class_rolls_back(tmp_path: Path) -> None:
    """A rollback loads an earlier build again, whose registry has its class already: the
    earlier version's registry is set aside (its objects keep it) and the init gets a new one."""
    name = new_name()
    src = tmp_path / f"{name}.cpp"
    code = textwrap.dedent(
        """
        #include <pybind11/pybind11.h>
        namespace py = pybind11;
        struct Vec { double x; double norm() const { return x * %(v)d; } };
        PYBIND11_MODULE(%(name)s, m) {
            py::class_<Vec>(m, "Vec").def(py::init<double>()).def("norm", &Vec::norm);
        }
        """
    )
    src.write_text(code % {"name": name, "v": 1})
    module = hotr.load_module(src, manual=True, build_timeout=300)
    try:
        r = hotr.reloader_of(module)
        first = module.Vec(3.0)
        src.write_text(code % {"name": name, "v": 2})
        reload_to(module, 2, timeout=300)
        second = module.Vec(3.0)
        r.rollback()
        again = module.Vec(3.0)
        assert (r.version, again.norm(), first.norm(), second.norm()) == (3, 3.0, 3.0, 6.0)
        assert type(again) is module.Vec and type(again) is not type(first)
    finally:
        hotr.reloader_of(module).close()
        sys.modules.pop(name, None)


@pytest.mark.skipif(importlib.util.find_spec("Cython") is None, reason="Cython not installed")
def test_cython_rebuilds_when_a_pxd_it_cimports_changes(tmp_path: Path) -> None:
    """The .pxd and .pxi files Cython reads are watched; the generated C is not a source."""
    name = new_name()
    (tmp_path / "helper.pxd").write_text("cdef inline int factor():\n    return 1\n")
    (tmp_path / "offset.pxi").write_text("OFFSET = 10\n")
    src = tmp_path / f"{name}.pyx"
    src.write_text('from helper cimport factor\ninclude "offset.pxi"\ndef value():\n')
    src.write_text(src.read_text() + "    return factor() + OFFSET\n")
    module = hotr.load_module(src, manual=True)
    try:
        r = hotr.reloader_of(module)
        assert module.value() == 11
        (tmp_path / "helper.pxd").write_text("cdef inline int factor():\n    return 2\n")
        reload_to(module, 2)
        assert module.value() == 12
        (tmp_path / "offset.pxi").write_text("OFFSET = 20\n")
        reload_to(module, 3)
        assert module.value() == 22
        assert r.history[-1].changed == (str(tmp_path / "offset.pxi"),)
    finally:
        hotr.reloader_of(module).close()
        sys.modules.pop(name, None)


@pytest.mark.skipif(importlib.util.find_spec("pybind11") is None, reason="pybind11 not installed")
def test_pybind11_module_of_two_sources_shares_one_registry(tmp_path: Path) -> None:
    """A class bound in one source and returned by a function of the other: both objects have
    to be built with the same registry in every build, the unchanged one too."""
    name = new_name()
    (tmp_path / "vec.hpp").write_text(
        "#include <pybind11/pybind11.h>\n"
        "struct Vec { double x; double norm() const; };\n"
        "void bind_vec(pybind11::module_ &m);\n"
    )
    (tmp_path / "vec.cpp").write_text(
        '#include "vec.hpp"\n'
        "double Vec::norm() const { return x; }\n"
        "void bind_vec(pybind11::module_ &m) {\n"
        '    pybind11::class_<Vec>(m, "Vec").def(pybind11::init<double>())'
        '.def("norm", &Vec::norm);\n'
        "}\n"
    )
    main = tmp_path / f"{name}.cpp"
    code = textwrap.dedent(
        """
        #include "vec.hpp"
        PYBIND11_MODULE(%(name)s, m) {
            bind_vec(m);
            m.def("make", []() { return Vec{%(v)d.0}; });
        }
        """
    )
    main.write_text(code % {"name": name, "v": 1})
    sources = [tmp_path / "vec.cpp", main]  # linked first: its copy of pybind11's inline code
    module = hotr.load_module(sources, name=name, manual=True, build_timeout=300)
    try:
        assert module.make().norm() == 1.0
        main.write_text(code % {"name": name, "v": 2})
        reload_to(module, 2, timeout=300)
        made = module.make()  # a Vec the new registry knows, from the source that changed
        assert (type(made) is module.Vec, made.norm()) == (True, 2.0)
    finally:
        hotr.reloader_of(module).close()
        sys.modules.pop(name, None)


def test_pyx_without_cython_is_a_build_error_that_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "Cython", None)  # what an import of it does then: fail
    src = tmp_path / f"{new_name()}.pyx"
    src.write_text("def f():\n    return 1\n")
    with pytest.raises(hotr.BuildError, match=r"needs Cython \(pip install cython\)") as caught:
        hotr.load_module(src)
    assert f"{src}: Cython is not installed" in caught.value.diagnostics


SETS_SIGINT = """
#include <Python.h>
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "%(name)s", NULL, -1, NULL};
PyMODINIT_FUNC PyInit_%(name)s(void) {
    PyObject *m = PyModule_Create(&def), *signal = PyImport_ImportModule("signal");
    PyObject *r = m && signal ? PyObject_CallMethod(signal, "signal", "ii", 2, %(handler)d) : NULL;
    Py_XDECREF(signal);
    if (r == NULL) { Py_XDECREF(m); return NULL; }
    Py_DECREF(r);
    return m;
}
"""


def test_a_handler_a_modules_init_sets_with_signal_signal_stays(tmp_path: Path) -> None:
    # The init runs with Ctrl-C held back (deferred() swaps the Python handlers): what the
    # init set with signal.signal must be what is there once the load is done, not the old.
    run_child(
        f"""
        import signal
        from pathlib import Path
        from test_modules import SETS_SIGINT
        for handler in ("SIG_IGN", "SIG_DFL"):
            name = "setsint_" + handler.lower()
            src = Path({str(tmp_path)!r}) / (name + ".c")
            # signal.signal(SIGINT, SIG_IGN or SIG_DFL), both given by value
            src.write_text(SETS_SIGINT % {{"name": name, "handler": int(getattr(signal, handler))}})
            signal.signal(signal.SIGINT, signal.default_int_handler)
            hotr.load_module(str(src), manual=True)
            assert signal.getsignal(signal.SIGINT) == getattr(signal, handler), handler
        """
    )
