/* deferred(): SIGINT and SIGTERM held back while hotr changes state that must never be left
 * half-done (see _signals.py).
 *
 * Python runs a signal's handler in the main thread between two bytecodes, so a Ctrl-C could
 * land between dlopen and recording its handle.  Inside `with deferred():` the C handler of
 * each of these signals (the interpreter's, for a Python handler) is replaced by one that only
 * notes the signal; on the way out the real one goes back, every signal noted is raised again
 * in this thread, and the Python handlers run before the `with` ends: an exception of theirs
 * (KeyboardInterrupt) is raised from its end, and each handler runs, the first one's exception
 * no reason to skip the second's.
 *
 * Only the main thread holds signals back (Python runs handlers nowhere else), and only its
 * outermost deferred() swaps handlers.  A signal left at SIG_DFL or SIG_IGN is not held: that
 * is the program's choice.  All of it is a few system calls: it runs several times a reload.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>

#include "_deferred.h"

static const int held[] = {SIGINT, SIGTERM};
#define NHELD ((int)(sizeof(held) / sizeof(held[0])))

static struct sigaction saved[NHELD]; /* the real handlers, while held */
static int holding[NHELD];           /* this signal's recorder is installed */
static volatile sig_atomic_t noted[NHELD];
static int depth;                    /* nesting of deferred() in the main thread */
static unsigned long main_thread;    /* PyThread_get_thread_ident() of the main thread */

static void
note(int signum)
{
    for (int i = 0; i < NHELD; i++)
        if (held[i] == signum)
            noted[i] = 1;
}

static PyObject *
deferred_enter(PyObject *self, PyObject *unused)
{
    if (PyThread_get_thread_ident() != main_thread || depth++ > 0)
        return Py_NewRef(self);
    struct sigaction recorder;
    memset(&recorder, 0, sizeof recorder);
    recorder.sa_handler = note;
    recorder.sa_flags = SA_RESTART;
    sigemptyset(&recorder.sa_mask);
    for (int i = 0; i < NHELD; i++) {
        noted[i] = 0;
        holding[i] = sigaction(held[i], &recorder, &saved[i]) == 0;
        if (holding[i] && !(saved[i].sa_flags & SA_SIGINFO)
            && (saved[i].sa_handler == SIG_DFL || saved[i].sa_handler == SIG_IGN)) {
            sigaction(held[i], &saved[i], NULL); /* not held: a signal noted meanwhile is */
            holding[i] = 0;                      /* raised again on the way out */
        }
    }
    return Py_NewRef(self);
}

/* Put the real handlers back (a handler the program set meanwhile stays); which were noted. */
static int
release(int *raised)
{
    int any = 0;
    for (int i = 0; i < NHELD; i++) {
        if (holding[i]) {
            struct sigaction now;
            if (sigaction(held[i], NULL, &now) == 0 && !(now.sa_flags & SA_SIGINFO)
                && now.sa_handler == note)
                sigaction(held[i], &saved[i], NULL);
            holding[i] = 0;
        }
        raised[i] = noted[i];
        noted[i] = 0;
        any |= raised[i];
    }
    return any;
}

static PyObject *
deferred_exit(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (PyThread_get_thread_ident() != main_thread || depth == 0 || --depth > 0)
        Py_RETURN_NONE;
    int raised[NHELD];
    if (!release(raised))
        Py_RETURN_NONE;
    for (int i = 0; i < NHELD; i++)
        if (raised[i])
            raise(held[i]); /* as if it came now: the interpreter notes it for its handler */
    /* Run the handlers now.  One that raises leaves the others for the next check: check
     * again until none is left, keeping the first exception. */
    PyObject *type = NULL, *value = NULL, *traceback = NULL;
    for (int tries = 0; tries <= NHELD && PyErr_CheckSignals() < 0; tries++) {
        if (type == NULL)
            PyErr_Fetch(&type, &value, &traceback);
        else
            PyErr_Clear();
    }
    if (type != NULL) {
        PyErr_Restore(type, value, traceback);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* In a forked child the forking thread is the main thread, and a deferral another thread of
 * the parent had open never closes: its handlers go back.  One the forking thread has open
 * closes as usual. */
static int child_inherits_own;

static void
before_fork(void)
{
    child_inherits_own = depth > 0 && PyThread_get_thread_ident() == main_thread;
}

static void
after_fork_in_child(void)
{
    main_thread = PyThread_get_thread_ident();
    if (depth > 0 && !child_inherits_own) {
        int raised[NHELD];
        release(raised); /* what was noted was meant for the parent's main thread */
        depth = 0;
    }
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

static PyMethodDef module_methods[] = {
    {"deferred", deferred, METH_NOARGS,
     "deferred(): a context manager that holds SIGINT and SIGTERM back (main thread only)."},
    {NULL}
};

int
hotr_deferred_init(PyObject *module, unsigned long main)
{
    main_thread = main;
    if (PyType_Ready(&DeferredType) < 0)
        return -1;
    the_deferred = PyObject_New(PyObject, &DeferredType);
    if (the_deferred == NULL)
        return -1;
    if (pthread_atfork(before_fork, NULL, after_fork_in_child) != 0) {
        PyErr_SetString(PyExc_OSError, "pthread_atfork failed");
        return -1;
    }
    return PyModule_AddFunctions(module, module_methods);
}
