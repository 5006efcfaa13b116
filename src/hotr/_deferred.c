/* deferred(): SIGINT and SIGTERM held back while hotr changes state that must never be left
 * half-done (see _signals.py).
 *
 * Python runs a signal's handler in the main thread between two bytecodes, so a Ctrl-C could
 * land between dlopen and recording its handle.  Inside `with deferred():` the Python handler
 * of each of these signals is replaced (through signal.signal) by a recorder that only notes
 * the signal and its frame; on the way out the real handlers go back and run for what was
 * noted, in order: the first exception (KeyboardInterrupt) is raised from the end of the
 * `with`, and it is no reason to skip the next handler.  The C-level handler stays the
 * interpreter's throughout, so C code that runs meanwhile (a constructor, a module's init, a
 * cleanup() hook that installs or chains to a handler) sees only what it would see anyway, and
 * a handler it installs stays; so does one that Python code run meanwhile (a module's init)
 * set with signal.signal.
 *
 * Only the main thread holds signals back (Python runs handlers nowhere else), and only its
 * outermost deferred() swaps handlers.  A signal at SIG_DFL or SIG_IGN (or with a handler set
 * outside Python) is not held: that is the program's choice.  It is C, not Python, because it
 * runs several times a reload: the Python version cost each deferral ten calls.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <signal.h>

#include "_deferred.h"

static const int held[] = {SIGINT, SIGTERM};
#define NHELD ((int)(sizeof(held) / sizeof(held[0])))

static PyObject *getsignal, *setsignal; /* _signal.getsignal, _signal.signal */
static PyObject *recorder;              /* the stand-in handler (note) */
static PyObject *saved[NHELD];          /* the real handlers while held (NULL: not held) */
static struct sigaction ours[NHELD];    /* the C handler signal.signal put in (the interpreter's) */
static PyObject *noted;                 /* list of (signum, frame) the recorder noted */
static int depth;                       /* nesting of deferred() in the main thread */
static unsigned long opener;            /* PyThread_get_thread_ident() of who opened it */

#if PY_VERSION_HEX >= 0x030D0000
/* 3.13 moved the interpreter's own answer out of the public headers; 3.12 added the ident of
 * the thread it calls main (_thread._get_main_thread_ident), kept here and after a fork.  As
 * _PyOS_IsMainThread, only the main interpreter's: a subinterpreter running in the main thread
 * cannot set signal handlers (signal.signal raises ValueError there). */
static unsigned long main_ident;
static int
in_main_thread(void)
{
    return PyThread_get_thread_ident() == main_ident
           && PyInterpreterState_Get() == PyInterpreterState_Main();
}
#else
#define in_main_thread() _PyOS_IsMainThread()
#endif

static PyObject *
note(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "note(signum, frame)");
        return NULL;
    }
    PyObject *item = PyTuple_Pack(2, args[0], args[1]);
    if (item == NULL || PyList_Append(noted, item) < 0) {
        Py_XDECREF(item);
        return NULL;
    }
    Py_DECREF(item);
    Py_RETURN_NONE;
}

static int
same_handler(const struct sigaction *a, const struct sigaction *b)
{
    if ((a->sa_flags & SA_SIGINFO) != (b->sa_flags & SA_SIGINFO))
        return 0;
    return a->sa_flags & SA_SIGINFO ? a->sa_sigaction == b->sa_sigaction
                                    : a->sa_handler == b->sa_handler;
}

/* signal.signal(signum, handler), again if it raised: it first runs the handlers of signals
 * already pending, and one that raises must not leave this signal's handler unset.  The first
 * exception is kept in *type (the others are dropped); -1 if it could not be set at all. */
static int
set_handler(int signum, PyObject *handler, PyObject **type, PyObject **value, PyObject **tb)
{
    for (int tries = 0; tries < 100; tries++) {
        PyObject *result = PyObject_CallFunction(setsignal, "iO", signum, handler);
        if (result != NULL) {
            Py_DECREF(result);
            return 0;
        }
        if (*type == NULL)
            PyErr_Fetch(type, value, tb);
        else
            PyErr_Clear();
    }
    return -1;
}

/* Put the real handlers back and run them for what was noted; the first exception is left
 * set (on top of any kept in *type, which goes first). */
static int
release(PyObject *type, PyObject *value, PyObject *tb)
{
    PyObject *handlers[NHELD];
    for (int i = 0; i < NHELD; i++) {
        handlers[i] = saved[i];
        saved[i] = NULL;
        if (handlers[i] == NULL)
            continue;
        /* Python code that ran meanwhile (a module's init, a callback) set a handler of its
         * own with signal.signal: that is the program's choice, and it stays. */
        PyObject *current = PyObject_CallFunction(getsignal, "i", held[i]);
        if (current == NULL)
            PyErr_Clear();
        else {
            Py_DECREF(current);
            if (current != recorder)
                continue;
        }
        /* C code that ran meanwhile (a constructor, a hook) may have put a handler of its own
         * in, chaining to the interpreter's: signal.signal would replace it, so it goes back. */
        struct sigaction now;
        int theirs = sigaction(held[i], NULL, &now) == 0 && !same_handler(&now, &ours[i]);
        set_handler(held[i], handlers[i], &type, &value, &tb);
        if (theirs)
            sigaction(held[i], &now, NULL);
    }
    PyObject *caught = PyList_GetSlice(noted, 0, PyList_GET_SIZE(noted));
    PyList_SetSlice(noted, 0, PyList_GET_SIZE(noted), NULL);
    for (Py_ssize_t k = 0; caught != NULL && k < PyList_GET_SIZE(caught); k++) {
        PyObject *item = PyList_GET_ITEM(caught, k);
        int signum = (int)PyLong_AsLong(PyTuple_GET_ITEM(item, 0));
        for (int i = 0; i < NHELD; i++) {
            if (held[i] != signum || handlers[i] == NULL)
                continue;
            PyObject *result = PyObject_Call(handlers[i], item, NULL);
            if (result != NULL)
                Py_DECREF(result);
            else if (type == NULL)
                PyErr_Fetch(&type, &value, &tb);
            else
                PyErr_Clear();
        }
    }
    if (caught == NULL && type == NULL)
        PyErr_Fetch(&type, &value, &tb);
    Py_XDECREF(caught);
    for (int i = 0; i < NHELD; i++)
        Py_XDECREF(handlers[i]);
    if (type == NULL)
        return 0;
    PyErr_Restore(type, value, tb);
    return -1;
}

static PyObject *
deferred_enter(PyObject *self, PyObject *unused)
{
    if (!in_main_thread() || depth++ > 0)
        return Py_NewRef(self);
    opener = PyThread_get_thread_ident();
    PyObject *type = NULL, *value = NULL, *tb = NULL;
    for (int i = 0; i < NHELD; i++) {
        PyObject *handler = PyObject_CallFunction(getsignal, "i", held[i]);
        if (handler == NULL) {
            PyErr_Clear();
            continue;
        }
        if (PyCallable_Check(handler) && handler != recorder)
            saved[i] = handler;
        else
            Py_DECREF(handler);
    }
    for (int i = 0; i < NHELD; i++)
        if (saved[i] != NULL && set_handler(held[i], recorder, &type, &value, &tb) == 0)
            sigaction(held[i], NULL, &ours[i]);
    if (type != NULL) { /* a signal that came first: its handler ran; nothing is held */
        depth = 0;
        release(type, value, tb);
        return NULL;
    }
    return Py_NewRef(self);
}

static PyObject *
deferred_exit(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!in_main_thread() || depth == 0 || --depth > 0)
        Py_RETURN_NONE;
    if (release(NULL, NULL, NULL) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
after_fork_in_child(PyObject *module, PyObject *unused)
{
    /* after_fork_in_child(): in a forked child the forking thread is the main thread.  A
     * deferral the parent's main thread had open never closes here, unless that thread is the
     * one that forked (its ident is the same in the child): the handlers go back. */
    unsigned long forker = PyThread_get_thread_ident();
#if PY_VERSION_HEX >= 0x030D0000
    main_ident = forker;
#endif
    if (depth > 0 && forker != opener) {
        depth = 0;
        PyList_SetSlice(noted, 0, PyList_GET_SIZE(noted), NULL); /* meant for the parent */
        if (release(NULL, NULL, NULL) < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef deferred_methods[] = {
    {"__enter__", deferred_enter, METH_NOARGS, "Hold SIGINT and SIGTERM back."},
    {"__exit__", (PyCFunction)(void (*)(void))deferred_exit, METH_FASTCALL,
     "Put the handlers back and run them for what came meanwhile."},
    {NULL}
};

static PyTypeObject DeferredType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hotr._shim.Deferred",
    .tp_basicsize = sizeof(PyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "What deferred() returns: a context manager holding signals back.",
    .tp_methods = deferred_methods,
};

static PyObject *the_deferred; /* one object serves every deferral: the state is global */

static PyObject *
deferred(PyObject *module, PyObject *unused)
{
    return Py_NewRef(the_deferred);
}

static PyMethodDef note_def = {
    "note", (PyCFunction)(void (*)(void))note, METH_FASTCALL,
    "hotr's stand-in handler while signals are held back: notes the signal."};

static PyObject *
is_main_thread(PyObject *module, PyObject *unused)
{
    return PyBool_FromLong(in_main_thread());
}

static PyMethodDef module_methods[] = {
    {"is_main_thread", is_main_thread, METH_NOARGS,
     "is_main_thread(): True in the thread Python runs signal handlers in."},
    {"deferred", deferred, METH_NOARGS,
     "deferred(): a context manager that holds SIGINT and SIGTERM back (main thread only)."},
    {"deferred_after_fork_in_child", after_fork_in_child, METH_NOARGS,
     "Close a deferral another thread of the parent had open (os.register_at_fork)."},
    {NULL}
};

int
hotr_deferred_init(PyObject *module)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *thread_module = PyImport_ImportModule("_thread");
    if (thread_module == NULL)
        return -1;
    PyObject *ident = PyObject_CallMethod(thread_module, "_get_main_thread_ident", NULL);
    Py_DECREF(thread_module);
    if (ident == NULL)
        return -1;
    main_ident = PyLong_AsUnsignedLong(ident);
    Py_DECREF(ident);
    if (PyErr_Occurred())
        return -1;
#endif
    PyObject *signal_module = PyImport_ImportModule("_signal");
    if (signal_module == NULL)
        return -1;
    getsignal = PyObject_GetAttrString(signal_module, "getsignal");
    setsignal = PyObject_GetAttrString(signal_module, "signal");
    Py_DECREF(signal_module);
    noted = PyList_New(0);
    recorder = PyCFunction_New(&note_def, NULL);
    if (getsignal == NULL || setsignal == NULL || noted == NULL || recorder == NULL
        || PyType_Ready(&DeferredType) < 0)
        return -1;
    the_deferred = PyObject_New(PyObject, &DeferredType);
    if (the_deferred == NULL)
        return -1;
    return PyModule_AddFunctions(module, module_methods);
}
