/* An extension module that hotr.load_module() builds and reloads: edit SCALE or norm() and
 * save while examples/modules.py runs.  Multi-phase (PEP 489), with a heap type, so an old
 * version is unloaded once nothing made by it is left. */
#include <Python.h>
#include <math.h>

#define SCALE 1.0

typedef struct {
    PyObject_HEAD
    double x, y;
} Point;

static PyObject *
point_norm(PyObject *self, PyObject *unused)
{
    Point *p = (Point *)self;
    return PyFloat_FromDouble(SCALE * sqrt(p->x * p->x + p->y * p->y));
}

static int
point_init(PyObject *self, PyObject *args, PyObject *kwds)
{
    Point *p = (Point *)self;
    return PyArg_ParseTuple(args, "dd", &p->x, &p->y) ? 0 : -1;
}

static void
point_dealloc(PyObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    type->tp_free(self);
    Py_DECREF(type);
}

static PyMethodDef point_methods[] = {
    {"norm", point_norm, METH_NOARGS, "Length of the point seen as a vector."},
    {NULL},
};

static PyType_Slot point_slots[] = {
    {Py_tp_init, point_init},
    {Py_tp_dealloc, point_dealloc},
    {Py_tp_methods, point_methods},
    {0, NULL},
};

static PyType_Spec point_spec = {"fastmath.Point", sizeof(Point), 0, Py_TPFLAGS_DEFAULT, point_slots};

/* norm(x, y): called through a live function, it always runs the newest build. */
static PyObject *
norm(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "norm(x, y) takes two numbers");
        return NULL;
    }
    double x = PyFloat_AsDouble(args[0]), y = PyFloat_AsDouble(args[1]);
    if (PyErr_Occurred())
        return NULL;
    return PyFloat_FromDouble(SCALE * sqrt(x * x + y * y));
}

/* Called with the previous version's module before this one goes live: carry `calls` over. */
static PyObject *
hotr_reload(PyObject *module, PyObject *old)
{
    PyObject *calls = PyObject_GetAttrString(old, "calls");
    if (calls == NULL)
        return NULL;
    int status = PyObject_SetAttrString(module, "calls", calls);
    Py_DECREF(calls);
    if (status < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"norm", (PyCFunction)(void (*)(void))norm, METH_FASTCALL, "norm(x, y): sqrt(x*x + y*y)."},
    {"__hotr_reload__", hotr_reload, METH_O, NULL},
    {NULL},
};

static int
exec_module(PyObject *module)
{
    PyObject *type = PyType_FromModuleAndSpec(module, &point_spec, NULL);
    if (type == NULL || PyModule_AddObject(module, "Point", type) < 0) {
        Py_XDECREF(type);
        return -1;
    }
    return PyModule_AddIntConstant(module, "calls", 0);
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef def = {
    PyModuleDef_HEAD_INIT, "fastmath", "hotr.load_module example", 0, methods, slots,
};

PyMODINIT_FUNC
PyInit_fastmath(void)
{
    return PyModuleDef_Init(&def);
}
