/* Live functions that count the calls in flight per loaded version.
 *
 * A LiveFunction wraps one ctypes function object.  Calling it bumps the
 * in-flight count of the version it currently points at (a Pin), calls the
 * ctypes object, and drops the count when the call returns.  Both the count
 * and the retargeting happen while the caller holds the GIL, and ctypes reads
 * the code address as the first step of its call (PyCFuncPtr_call in
 * Modules/_ctypes/_ctypes.c), so "count is zero" means no thread can be
 * running that version's code through a live function.  The reloader may then
 * unmap it.  The cost per call is one indirect C call, two increments and two
 * reference counts.
 *
 * A call holds its own reference to the pin it counted on: whatever the
 * program drops while the call runs (the reloader, the library, the function
 * retargeted to a newer version), the count it decrements on return is alive.
 * When a count drops to zero and the pin has an `on_idle` callable, that is
 * called (the reloader sets it on versions waiting to be unloaded).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

#include "_elfcheck.h"
#include "_guard.h"
#include "_deferred.h"
#include "_syscalls.h"

#include <dlfcn.h>

#ifdef Py_GIL_DISABLED
#error "hotr's in-flight counts rely on the GIL; free-threaded builds are not supported"
#endif

typedef struct {
    PyObject_HEAD
    Py_ssize_t inflight;
    Py_ssize_t number;
    PyObject *on_idle;  /* called when inflight drops to 0; NULL: nothing */
    hotr_range *code;   /* the version's executable segments (guarded calls); NULL: none */
    Py_ssize_t ncode;
} Pin;

static int
pin_init(Pin *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"number", NULL};
    self->number = 0;
    return PyArg_ParseTupleAndKeywords(args, kwds, "|n", kwlist, &self->number) ? 0 : -1;
}

static int
pin_traverse(Pin *self, visitproc visit, void *arg)
{
    Py_VISIT(self->on_idle);
    return 0;
}

static int
pin_clear(Pin *self)
{
    Py_CLEAR(self->on_idle);
    return 0;
}

static void
pin_dealloc(Pin *self)
{
    PyObject_GC_UnTrack(self);
    pin_clear(self);
    PyMem_Free(self->code);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
pin_set_code(Pin *self, PyObject *ranges)
{
    /* set_code([(start, end), ...]): the version's code, where a guarded call's fault must
     * be to be caught.  Set once, before any function points at the version. */
    if (self->code != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "set_code: the code ranges are already set");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(ranges, "set_code takes a list of (start, end)");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    hotr_range *code = PyMem_Calloc(n ? (size_t)n : 1, sizeof *code);
    if (code == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned long long start, end;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "KK", &start, &end)) {
            PyMem_Free(code);
            Py_DECREF(seq);
            return NULL;
        }
        code[i].start = (uintptr_t)start;
        code[i].end = (uintptr_t)end;
    }
    Py_DECREF(seq);
    self->code = code;
    self->ncode = n;
    Py_RETURN_NONE;
}

static PyMethodDef pin_methods[] = {
    {"set_code", (PyCFunction)pin_set_code, METH_O,
     "set_code(ranges): the version's executable segments, as (start, end) addresses."},
    {NULL}
};

static PyObject *
pin_get_inflight(Pin *self, void *closure)
{
    return PyLong_FromSsize_t(self->inflight);
}

static PyObject *
pin_get_number(Pin *self, void *closure)
{
    return PyLong_FromSsize_t(self->number);
}

static PyObject *
pin_get_on_idle(Pin *self, void *closure)
{
    PyObject *value = self->on_idle ? self->on_idle : Py_None;
    Py_INCREF(value);
    return value;
}

static int
pin_set_on_idle(Pin *self, PyObject *value, void *closure)
{
    if (value == Py_None)
        value = NULL;
    if (value != NULL && !PyCallable_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "on_idle must be callable or None");
        return -1;
    }
    Py_XINCREF(value);
    Py_XSETREF(self->on_idle, value);
    return 0;
}

static PyGetSetDef pin_getset[] = {
    {"inflight", (getter)pin_get_inflight, NULL,
     "Number of calls currently running in this version.", NULL},
    {"number", (getter)pin_get_number, NULL, "The version's number.", NULL},
    {"on_idle", (getter)pin_get_on_idle, (setter)pin_set_on_idle,
     "Called with no arguments when the count drops to zero (None: nothing).", NULL},
    {NULL}
};

static PyTypeObject PinType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hotr._shim.Pin",
    .tp_doc = "In-flight call counter of one loaded version.",
    .tp_basicsize = sizeof(Pin),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)pin_init,
    .tp_dealloc = (destructor)pin_dealloc,
    .tp_traverse = (traverseproc)pin_traverse,
    .tp_clear = (inquiry)pin_clear,
    .tp_getset = pin_getset,
    .tp_methods = pin_methods,
};

/* Call pin->on_idle without disturbing the result or exception of the call
 * that just returned; an error in the callback is reported as unraisable. */
static void
notify_idle(Pin *pin)
{
    PyObject *callback = pin->on_idle;
    PyObject *type, *value, *traceback;
    Py_INCREF(callback);
    PyErr_Fetch(&type, &value, &traceback);
    PyObject *result = PyObject_CallObject(callback, NULL);
    if (result == NULL)
        PyErr_WriteUnraisable(callback);
    else
        Py_DECREF(result);
    PyErr_Restore(type, value, traceback);
    Py_DECREF(callback);
}

typedef struct {
    PyObject_HEAD
    PyObject *cfunc;    /* the ctypes function object the user configures */
    void **slot;        /* its code address, inside cfunc's buffer */
    Pin *pin;           /* version the address belongs to; NULL when missing */
    PyObject *missing;  /* exception instance raised while pin is NULL */
    PyObject *owner;    /* kept alive as long as the function is (its reloader) */
    PyObject *dict;
    void *address;      /* guarded: the target; cfunc points at the trampoline (_guard.c) */
    int guard;
} LiveFunction;

static int
live_traverse(LiveFunction *self, visitproc visit, void *arg)
{
    Py_VISIT(self->cfunc);
    Py_VISIT(self->pin);
    Py_VISIT(self->missing);
    Py_VISIT(self->owner);
    Py_VISIT(self->dict);
    return 0;
}

static int
live_clear(LiveFunction *self)
{
    Py_CLEAR(self->cfunc);
    Py_CLEAR(self->pin);
    Py_CLEAR(self->missing);
    Py_CLEAR(self->owner);
    Py_CLEAR(self->dict);
    return 0;
}

static void
live_dealloc(LiveFunction *self)
{
    PyObject_GC_UnTrack(self);
    live_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
live_init(LiveFunction *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"cfunc", "slot", "owner", "guard", NULL};
    PyObject *cfunc, *owner = Py_None;
    Py_ssize_t slot;
    int guard = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "On|Op", kwlist, &cfunc, &slot, &owner, &guard))
        return -1;
    if (guard && hotr_guard_install() < 0)
        return -1;
    self->guard = guard;
    if (guard && slot != 0)
        *(void **)slot = hotr_guard_trampoline_address();
    Py_INCREF(cfunc);
    Py_XSETREF(self->cfunc, cfunc);
    Py_INCREF(owner);
    Py_XSETREF(self->owner, owner);
    self->slot = (void **)slot;  /* 0: retarget() replaces cfunc instead (cffi) */
    return 0;
}

/* The CrashError for a caught fault, from the function's _crashed(signal, version, pc,
 * accessed, where) method (which also rolls back); NULL with that exception set. */
static __attribute__((noinline, cold)) PyObject *
raise_crash(LiveFunction *self, Pin *pin, hotr_guard_record *record)
{
    char where[256];
    Dl_info info;
    if (dladdr(record->pc, &info) == 0)
        where[0] = '\0';
    else if (info.dli_sname != NULL)
        snprintf(where, sizeof where, "%s+0x%lx", info.dli_sname,
                 (unsigned long)((char *)record->pc - (char *)info.dli_saddr));
    else  /* a static function: its address in the file, for addr2line */
        snprintf(where, sizeof where, "+0x%lx",
                 (unsigned long)((char *)record->pc - (char *)info.dli_fbase));
    PyObject *error = PyObject_CallMethod(
        (PyObject *)self, "_crashed", "inKKs", record->signo, pin->number,
        (unsigned long long)(uintptr_t)record->pc,
        (unsigned long long)(uintptr_t)record->accessed, where);
    if (error == NULL)
        return NULL;
    PyErr_SetObject((PyObject *)Py_TYPE(error), error);
    Py_DECREF(error);
    return NULL;
}

/* Push a record for the trampoline and the signal handler (_guard.c): a guarded call of
 * `target` in the version of `pin` begins.  0, or -1 with an exception set (no record). */
static inline int
guard_push(hotr_guard_record *record, void *target, Pin *pin)
{
    record->crashed = 0;
    if (!hotr_guard_thread_ready && hotr_guard_prepare_thread() < 0)
        return -1;
    record->target = target;
    record->state = HOTR_GUARD_PENDING;
    record->ranges = pin->code;
    record->nranges = pin->ncode;
    record->tstate = PyThreadState_Get();
    record->frame = hotr_guard_frame(record->tstate);
    record->prev = hotr_guard_top;
    hotr_guard_top = record;
    return 0;
}

/* The end of a guarded call, as call_end() for others: after a caught fault, CrashError
 * (raised once the call no longer counts in flight). */
static PyObject *
guarded_end(LiveFunction *self, Pin *pin, PyObject *callable, PyObject *result,
            hotr_guard_record *record)
{
    if (--pin->inflight == 0 && pin->on_idle != NULL)
        notify_idle(pin);
    if (record->crashed)
        result = raise_crash(self, pin, record);
    Py_DECREF(callable);
    Py_DECREF(pin);
    return result;
}

/* live_call for a guarded function: the same, with a record pushed for the trampoline and
 * the signal handler (_guard.c).  After a caught fault the call's result, or the exception
 * an errcheck raised about it, is dropped and CrashError raised instead. */
static PyObject *
guarded_call(LiveFunction *self, Pin *pin, PyObject *callable, ternaryfunc call,
             PyObject *args, PyObject *kwds)
{
    PyObject *result = NULL;
    hotr_guard_record record;
    if (guard_push(&record, self->address, pin) == 0) {
        result = call != NULL ? call(callable, args, kwds) : PyObject_Call(callable, args, kwds);
        hotr_guard_top = record.prev;
        if (record.crashed) {
            Py_CLEAR(result);
            PyErr_Clear();
        }
    }
    return guarded_end(self, pin, callable, result, &record);
}

/* A call of a function whose pin is NULL: its `missing` exception (or a RuntimeError). */
static __attribute__((noinline, cold)) PyObject *
no_target(LiveFunction *self)
{
    if (self->missing != NULL)
        PyErr_SetObject((PyObject *)Py_TYPE(self->missing), self->missing);
    else
        PyErr_SetString(PyExc_RuntimeError, "live function has no target");
    return NULL;
}

static PyObject *
live_call(LiveFunction *self, PyObject *args, PyObject *kwds)
{
    Pin *pin = self->pin;
    PyObject *result;
    if (pin == NULL)
        return no_target(self);
    /* Own references to the pin and the callable: a reload (or the program
     * dropping everything) may release the function's own while this call
     * runs, and the count must still be there to decrement. */
    PyObject *callable = self->cfunc;
    Py_INCREF(pin);
    Py_INCREF(callable);
    pin->inflight++;
    /* tp_call directly: ctypes and cffi functions have no vectorcall, and
     * PyObject_Call would only add a second recursion check per call. */
    ternaryfunc call = Py_TYPE(callable)->tp_call;
    if (self->guard)
        return guarded_call(self, pin, callable, call, args, kwds);
    result = call != NULL ? call(callable, args, kwds) : PyObject_Call(callable, args, kwds);
    if (--pin->inflight == 0 && pin->on_idle != NULL)
        notify_idle(pin);
    Py_DECREF(callable);
    Py_DECREF(pin);
    return result;
}

static PyMemberDef live_members[] = {
    {"_cfunc", T_OBJECT, offsetof(LiveFunction, cfunc), READONLY,
     "The ctypes function object that carries argtypes, restype, errcheck."},
    {NULL}
};

static PyGetSetDef live_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL}
};

static PyTypeObject LiveFunctionType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hotr._shim.LiveFunction",
    .tp_doc = "A callable that follows reloads and counts calls in flight.",
    .tp_basicsize = sizeof(LiveFunction),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)live_init,
    .tp_dealloc = (destructor)live_dealloc,
    .tp_traverse = (traverseproc)live_traverse,
    .tp_clear = (inquiry)live_clear,
    .tp_call = (ternaryfunc)live_call,
    .tp_members = live_members,
    .tp_getset = live_getset,
    .tp_dictoffset = offsetof(LiveFunction, dict),
};

/* A LiveCallable is a LiveFunction around a Python callable: a function of a
 * hot-reloaded extension module.  The program never calls it directly: it
 * holds the builtin function live_builtin() makes of it, a real
 * builtin_function_or_method whose self is the LiveCallable, which the
 * interpreter calls as fast as any builtin.  That builtin's C function counts
 * the call on the pin and passes the arguments on as they came, to the callable
 * the LiveCallable points at now.
 *
 * The builtin's kind follows its target's calling convention: a METH_O,
 * METH_NOARGS or METH_FASTCALL target makes it METH_FASTCALL with a C function
 * of that kind, which calls the target's C function with the arguments as they
 * came (the wrong number of them: the target's own call, and so its own error);
 * anything else makes it METH_FASTCALL | METH_KEYWORDS.  The interpreter's
 * specialised call of a METH_FASTCALL builtin (CALL_BUILTIN_FAST, 3.11+) costs
 * no more than CALL_BUILTIN_O's (on 3.11 less: it has no recursion check, as
 * CPython checks none for METH_FASTCALL functions), and METH_NOARGS builtins have
 * no specialised call at all.  When a reload changes the kind,
 * retarget() rewrites the PyMethodDef it owns (ml_flags, ml_meth) and the
 * builtin's vectorcall in the same step, so references taken earlier accept the
 * new version's arguments.  Nothing in CPython 3.10 to 3.13 keeps a builtin's
 * flags or C function beyond one call: the specialised instructions check the
 * flags at every call, and the generic call goes through the object's
 * vectorcall.  Each C function still checks that the target is of its kind (a
 * load and a compare) and otherwise calls it the generic way, so no call can
 * pass a target arguments of another convention. */
enum { KIND_ANY, KIND_O, KIND_NOARGS, KIND_FAST, KIND_GUARDED, NKINDS, KIND_DIRECT = NKINDS };

typedef struct {
    LiveFunction base;
    PyMethodDef def;     /* the builtin's; it holds a reference to this object */
    PyObject *strings;   /* the bytes the def's name and doc point into */
    PyObject *builtin;   /* that builtin (a cycle through its self, which the GC breaks) */
    int kind;            /* KIND_*: the convention of the target, and so of the builtin */
    PyCFunction meth;    /* the target's C function and self (KIND_O, _NOARGS, _FAST) */
    PyObject *meth_self;
    int direct;          /* retarget(direct=True): the version stays mapped for good */
} LiveCallable;

/* Call `callable` with a vectorcall's arguments.  A builtin function of the
 * common kinds (METH_O, METH_NOARGS, METH_FASTCALL with or without keywords) is
 * called through its C function at once, as the interpreter's own specialised
 * call of a builtin does; anything else through PyObject_Vectorcall. */
static inline PyObject *
forward(PyObject *callable, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (PyCFunction_CheckExact(callable)) {
        PyCFunction meth = PyCFunction_GET_FUNCTION(callable);
        PyObject *self = PyCFunction_GET_SELF(callable);
        int flags = PyCFunction_GET_FLAGS(callable) & ~(METH_CLASS | METH_STATIC | METH_COEXIST);
        if (flags == (METH_FASTCALL | METH_KEYWORDS))
            return ((_PyCFunctionFastWithKeywords)(void (*)(void))meth)(self, args, nargs,
                                                                        kwnames);
        if (kwnames == NULL) {
            switch (flags) {
            case METH_O:
                if (nargs == 1)
                    return meth(self, args[0]);
                break;
            case METH_NOARGS:
                if (nargs == 0)
                    return meth(self, NULL);
                break;
            case METH_FASTCALL:
                return ((_PyCFunctionFast)(void (*)(void))meth)(self, args, nargs);
            default:
                break;
            }
        }
    }
    return PyObject_Vectorcall(callable, args, (size_t)nargs, kwnames);
}

/* The count of a call around it: what every builtin's C function does first and last.  The
 * call holds its own references to the pin and the callable, as in live_call. */
#define CALL_BEGIN(self, pin, callable)        \
    Pin *pin = (self)->pin;                    \
    if (pin == NULL)                           \
        return no_target(self);                \
    PyObject *callable = (self)->cfunc;        \
    Py_INCREF(pin);                            \
    Py_INCREF(callable);                       \
    pin->inflight++

static inline PyObject *
call_end(Pin *pin, PyObject *callable, PyObject *result)
{
    if (--pin->inflight == 0 && pin->on_idle != NULL)
        notify_idle(pin);
    Py_DECREF(callable);
    Py_DECREF(pin);
    return result;
}

/* The C functions of the builtin live_builtin() makes, one per kind: `op` is the
 * LiveCallable. */
static PyObject *
callable_any(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    CALL_BEGIN((LiveFunction *)op, pin, callable);
    return call_end(pin, callable, forward(callable, args, nargs, kwnames));
}

static PyObject *
callable_o(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    LiveCallable *self = (LiveCallable *)op;
    CALL_BEGIN(&self->base, pin, callable);
    /* Not one argument: the target says what is wrong. */
    PyObject *result = self->kind == KIND_O && nargs == 1
                           ? self->meth(self->meth_self, args[0])
                           : PyObject_Vectorcall(callable, args, (size_t)nargs, NULL);
    return call_end(pin, callable, result);
}

static PyObject *
callable_noargs(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    LiveCallable *self = (LiveCallable *)op;
    CALL_BEGIN(&self->base, pin, callable);
    /* Arguments to a METH_NOARGS target: the target says what is wrong. */
    PyObject *result = self->kind == KIND_NOARGS && nargs == 0
                           ? self->meth(self->meth_self, NULL)
                           : PyObject_Vectorcall(callable, args, (size_t)nargs, NULL);
    return call_end(pin, callable, result);
}

static PyObject *
callable_fast(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    LiveCallable *self = (LiveCallable *)op;
    CALL_BEGIN(&self->base, pin, callable);
    PyObject *result =
        self->kind == KIND_FAST
            ? ((_PyCFunctionFast)(void (*)(void))self->meth)(self->meth_self, args, nargs)
            : PyObject_Vectorcall(callable, args, (size_t)nargs, NULL);
    return call_end(pin, callable, result);
}

/* What a guarded call's trampoline calls (it needs an address): forward(). */
static __attribute__((noinline)) PyObject *
forward_call(PyObject *callable, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return forward(callable, args, nargs, kwnames);
}

/* The interpreter's recursion counters of a thread.  A caught fault abandons the C frames
 * between the guarded call and the fault, the interpreter's among them when the module's code
 * was called through it (a vectorcall, a slot): what they entered, they never leave. */
typedef struct {
    int py, c;
} depth;

static inline depth
depth_of(PyThreadState *tstate)
{
#if PY_VERSION_HEX >= 0x030C0000
    return (depth){tstate->py_recursion_remaining, tstate->c_recursion_remaining};
#elif PY_VERSION_HEX >= 0x030B0000
    return (depth){tstate->recursion_remaining, 0};
#else
    return (depth){tstate->recursion_depth, 0};
#endif
}

static inline void
set_depth(PyThreadState *tstate, depth d)
{
#if PY_VERSION_HEX >= 0x030C0000
    tstate->py_recursion_remaining = d.py;
    tstate->c_recursion_remaining = d.c;
#elif PY_VERSION_HEX >= 0x030B0000
    tstate->recursion_remaining = d.py;
#else
    tstate->recursion_depth = d.py;
#endif
}

static inline PyThreadState *
attached_thread_state(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyThreadState_GetUnchecked();
#else
    return _PyThreadState_UncheckedGet();
#endif
}

/* The C function of a guarded live builtin: the call goes through the trampoline
 * (_guard.c), as a guarded library call does.  After a caught fault: the GIL is taken back
 * if the module's code had released it (Py_BEGIN_ALLOW_THREADS), the recursion counters are
 * those of the call's start, any exception the code set is dropped, and CrashError raised. */
static PyObject *
callable_guarded(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    LiveFunction *self = (LiveFunction *)op;
    CALL_BEGIN(self, pin, callable);
    PyObject *result = NULL;
    hotr_guard_record record;
    if (guard_push(&record, (void *)forward_call, pin) == 0) {
        depth before = depth_of(record.tstate);
        vectorcallfunc trampoline = (vectorcallfunc)hotr_guard_trampoline_address();
        result = trampoline(callable, args, (size_t)nargs, kwnames);
        hotr_guard_top = record.prev;
        if (record.crashed) {
            if (attached_thread_state() != record.tstate)
                PyEval_RestoreThread(record.tstate);
            set_depth(record.tstate, before);
            result = NULL;
            PyErr_Clear();
        }
    }
    return guarded_end(self, pin, callable, result, &record);
}

/* Each kind's flags and C function, and the vectorcall CPython gives a builtin of those
 * flags (read off a builtin made at import: CPython's own are not exported). */
static struct {
    int flags;
    PyCFunction meth;
    vectorcallfunc vectorcall;
} kinds[NKINDS] = {
    [KIND_ANY] = {METH_FASTCALL | METH_KEYWORDS, (PyCFunction)(void (*)(void))callable_any},
    [KIND_O] = {METH_FASTCALL, (PyCFunction)(void (*)(void))callable_o},
    [KIND_NOARGS] = {METH_FASTCALL, (PyCFunction)(void (*)(void))callable_noargs},
    [KIND_FAST] = {METH_FASTCALL, (PyCFunction)(void (*)(void))callable_fast},
    [KIND_GUARDED] = {METH_FASTCALL | METH_KEYWORDS,
                      (PyCFunction)(void (*)(void))callable_guarded},
};

static int
init_kinds(void)
{
    for (int i = 0; i < NKINDS; i++) {
        static PyMethodDef sample[NKINDS];
        sample[i] = (PyMethodDef){"sample", kinds[i].meth, kinds[i].flags, NULL};
        PyObject *builtin = PyCFunction_New(&sample[i], NULL);
        if (builtin == NULL)
            return -1;
        kinds[i].vectorcall = ((PyCFunctionObject *)builtin)->vectorcall;
        Py_DECREF(builtin);
    }
    return 0;
}

/* A builtin's self: the LiveCallable, or in KIND_DIRECT its target's.  A target's self that
 * the builtin lets go of is kept for good, as its version's code is: a direct call is not
 * counted, and one in flight (its C function released the GIL) was passed that self borrowed,
 * as the interpreter passes every builtin's (its module, whose state the call may still read:
 * freeing it at the next collection would pull it from under the call). */
static void
set_builtin_self(LiveCallable *self, PyObject *owner)
{
    PyCFunctionObject *builtin = (PyCFunctionObject *)self->builtin;
    PyObject *old = builtin->m_self;
    if (old == owner)
        return;
    Py_XINCREF(owner);
    builtin->m_self = owner;
    if (old == (PyObject *)self)
        Py_DECREF(old);
}

/* Give the live builtin the kind of the LiveCallable's target now (KIND_ANY while the
 * function is missing: every call then reaches callable_any, which raises).
 *
 * KIND_DIRECT: the target's version stays mapped for good (a single-phase module, one with
 * static types: retarget(direct=True)), so its calls need no count.  The builtin then is a
 * copy of the target, its C function, flags, self and vectorcall: the interpreter calls the
 * module's own function, at the cost of a direct call.  It follows reloads as before (a later
 * retarget() rewrites all four).  The builtin's method definition lives in the LiveCallable,
 * which the builtin no longer holds meanwhile: callable_clear() gives a builtin that outlives
 * it a definition of its own. */
static void
set_kind(LiveCallable *self)
{
    PyObject *target = self->base.cfunc;
    int kind = KIND_ANY;
    int flags = 0;
    if (self->base.pin != NULL && target != NULL && PyCFunction_CheckExact(target))
        flags = PyCFunction_GET_FLAGS(target) & ~(METH_CLASS | METH_STATIC | METH_COEXIST);
    if (self->base.guard)
        kind = KIND_GUARDED;
    else if (self->base.pin != NULL && target != NULL && PyCFunction_CheckExact(target)) {
        switch (flags) {
        case METH_O:
            kind = KIND_O;
            break;
        case METH_NOARGS:
            kind = KIND_NOARGS;
            break;
        case METH_FASTCALL:
            kind = KIND_FAST;
            break;
        default:
            break;
        }
        if (self->direct && self->builtin != NULL && !(flags & METH_METHOD))
            kind = KIND_DIRECT;
    }
    self->kind = kind;
    if (kind == KIND_DIRECT) {
        PyCFunctionObject *from = (PyCFunctionObject *)target;
        self->meth = NULL;
        self->meth_self = NULL;
        self->def.ml_flags = flags;
        self->def.ml_meth = from->m_ml->ml_meth;
        ((PyCFunctionObject *)self->builtin)->vectorcall = from->vectorcall;
        set_builtin_self(self, from->m_self);
        return;
    }
    self->meth = kind == KIND_ANY || kind == KIND_GUARDED ? NULL : PyCFunction_GET_FUNCTION(target);
    self->meth_self = self->meth != NULL ? PyCFunction_GET_SELF(target) : NULL;
    self->def.ml_flags = kinds[kind].flags;
    self->def.ml_meth = kinds[kind].meth;
    if (self->builtin != NULL) {
        ((PyCFunctionObject *)self->builtin)->vectorcall = kinds[kind].vectorcall;
        set_builtin_self(self, (PyObject *)self);
    }
}

static int
callable_init(LiveCallable *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"function", "owner", "guard", NULL};
    PyObject *function, *owner = Py_None;
    int guard = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|Op", kwlist, &function, &owner, &guard))
        return -1;
    if (!PyCallable_Check(function)) {
        PyErr_SetString(PyExc_TypeError, "LiveCallable needs a callable");
        return -1;
    }
    if (guard && hotr_guard_install() < 0)
        return -1;
    self->base.guard = guard;
    Py_INCREF(function);
    Py_XSETREF(self->base.cfunc, function);
    Py_INCREF(owner);
    Py_XSETREF(self->base.owner, owner);
    self->base.slot = NULL;  /* retarget() replaces the callable */
    set_kind(self);
    return 0;
}

static int
callable_traverse(LiveCallable *self, visitproc visit, void *arg)
{
    Py_VISIT(self->builtin);
    return live_traverse(&self->base, visit, arg);
}

/* A builtin in KIND_DIRECT that outlives its LiveCallable (held by the program after the
 * reloader was dropped unclosed): it keeps calling the last version, which stays mapped, and
 * gets a method definition of its own, never freed (one per such builtin). */
static int
orphan(LiveCallable *self)
{
    PyCFunctionObject *builtin = (PyCFunctionObject *)self->builtin;
    const char *name = self->def.ml_name, *doc = self->def.ml_doc;
    size_t name_size = strlen(name) + 1, doc_size = doc != NULL ? strlen(doc) + 1 : 0;
    char *block = PyMem_RawMalloc(sizeof(PyMethodDef) + name_size + doc_size);
    if (block == NULL)
        return -1;
    PyMethodDef *def = (PyMethodDef *)block;
    *def = self->def;
    def->ml_name = memcpy(block + sizeof(PyMethodDef), name, name_size);
    def->ml_doc = doc != NULL ? memcpy(block + sizeof(PyMethodDef) + name_size, doc, doc_size)
                              : NULL;
    builtin->m_ml = def;
    return 0;
}

static int
callable_clear(LiveCallable *self)
{
    if (self->builtin != NULL && self->kind == KIND_DIRECT && Py_REFCNT(self->builtin) > 1 &&
        orphan(self) < 0) {
        /* No memory for its own definition: it calls through this one, kept (leaked). */
        Py_INCREF(self);
        PyErr_Clear();
    }
    Py_CLEAR(self->builtin);
    return live_clear(&self->base);
}

static void
callable_dealloc(LiveCallable *self)
{
    PyObject_GC_UnTrack(self);
    callable_clear(self);
    Py_CLEAR(self->strings);  /* only now: the builtin using `def` has let go of self */
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject LiveCallableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hotr._shim.LiveCallable",
    .tp_doc = "What a live function of an extension module calls: follows reloads, counts calls.",
    .tp_basicsize = sizeof(LiveCallable),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .tp_base = &LiveFunctionType,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)callable_init,
    .tp_dealloc = (destructor)callable_dealloc,
    .tp_traverse = (traverseproc)callable_traverse,
    .tp_clear = (inquiry)callable_clear,
};

/* A function retarget() points at a callable (cffi's cdata, a module's function), not at an
 * address. */
static inline int
takes_callable(LiveFunction *f)
{
    return PyObject_TypeCheck(f, &LiveCallableType) || (f->slot == NULL && !f->guard);
}

static PyObject *
retarget(PyObject *module, PyObject *args)
{
    /* retarget(functions, addresses, pin, missing, live=None, direct=False): point
     * every function at its new address in one step, so no Python thread can observe
     * a mix of versions (`direct`: the version stays mapped for good, see set_kind).  An address of 0 marks the function missing: calls
     * raise the matching entry of `missing` until a later version provides it
     * (entries for present functions are ignored, usually None).  `live`, a
     * one-item list, gets `pin` in the same step: the reloader reads the live
     * version from it, so it never disagrees with what the functions call. */
    PyObject *funcs, *addrs, *pin, *missing, *live = Py_None;
    int direct = 0;
    if (!PyArg_ParseTuple(args, "O!O!OO!|Op", &PyList_Type, &funcs, &PyList_Type,
                          &addrs, &pin, &PyList_Type, &missing, &live, &direct))
        return NULL;
    if (live != Py_None && (!PyList_Check(live) || PyList_GET_SIZE(live) != 1)) {
        PyErr_SetString(PyExc_TypeError, "retarget: live must be a one-item list");
        return NULL;
    }

    Py_ssize_t n = PyList_GET_SIZE(funcs);
    if (PyList_GET_SIZE(addrs) != n || PyList_GET_SIZE(missing) != n) {
        PyErr_SetString(PyExc_ValueError, "retarget: list lengths differ");
        return NULL;
    }
    if (!PyObject_TypeCheck(pin, &PinType)) {
        PyErr_SetString(PyExc_TypeError, "retarget: pin must be a Pin");
        return NULL;
    }
    /* Validate everything first: the swap below must not stop half-way.  A
     * function with a slot (ctypes) takes an address; one without (cffi), and a
     * LiveCallable, takes the new callable, or 0 when missing; a guarded cffi
     * function takes an address. */
    void **values = PyMem_Malloc(sizeof(void *) * (n ? n : 1));
    if (values == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *f = PyList_GET_ITEM(funcs, i);
        PyObject *target = PyList_GET_ITEM(addrs, i);
        if (!PyObject_TypeCheck(f, &LiveFunctionType)) {
            PyMem_Free(values);
            PyErr_SetString(PyExc_TypeError, "retarget: not a LiveFunction");
            return NULL;
        }
        if (takes_callable((LiveFunction *)f) && !PyLong_Check(target))
            values[i] = target;
        else
            values[i] = PyLong_AsVoidPtr(target);
        if (values[i] == NULL && PyErr_Occurred()) {
            PyMem_Free(values);
            return NULL;
        }
        if (values[i] == NULL && !PyExceptionInstance_Check(PyList_GET_ITEM(missing, i))) {
            PyMem_Free(values);
            PyErr_SetString(PyExc_TypeError, "retarget: a missing function needs an exception");
            return NULL;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        LiveFunction *f = (LiveFunction *)PyList_GET_ITEM(funcs, i);
        PyObject *err = PyList_GET_ITEM(missing, i);
        if (values[i] == NULL) {
            Py_XSETREF(f->pin, NULL);
            Py_INCREF(err);
            Py_XSETREF(f->missing, err);
            if (takes_callable(f))
                Py_CLEAR(f->cfunc);  /* an old version's function would keep it mapped */
        }
        else {
            if (takes_callable(f)) {
                Py_INCREF((PyObject *)values[i]);
                Py_XSETREF(f->cfunc, (PyObject *)values[i]);
            }
            else if (f->guard) {
                f->address = values[i];
            }
            else {
                *f->slot = values[i];
            }
            Py_INCREF(pin);
            Py_XSETREF(f->pin, (Pin *)pin);
            Py_CLEAR(f->missing);
        }
        if (PyObject_TypeCheck(f, &LiveCallableType)) {
            ((LiveCallable *)f)->direct = direct;
            set_kind((LiveCallable *)f);  /* in the same step: see LiveCallable */
        }
    }
    PyMem_Free(values);
    if (live != Py_None) {
        PyObject *old = PyList_GET_ITEM(live, 0);
        Py_INCREF(pin);
        PyList_SET_ITEM(live, 0, pin);
        Py_XDECREF(old);
    }
    Py_RETURN_NONE;
}

static PyObject *
live_builtin(PyObject *module, PyObject *args)
{
    /* live_builtin(live, name, doc, module_name): a builtin function (a real
     * builtin_function_or_method, which the interpreter calls as fast as any)
     * whose C function calls through `live`. */
    PyObject *live, *name, *doc, *module_name;
    if (!PyArg_ParseTuple(args, "OUOU", &live, &name, &doc, &module_name))
        return NULL;
    if (!PyObject_TypeCheck(live, &LiveCallableType)) {
        PyErr_SetString(PyExc_TypeError, "live_builtin: not a LiveCallable");
        return NULL;
    }
    LiveCallable *self = (LiveCallable *)live;
    if (self->strings != NULL) {
        PyErr_SetString(PyExc_ValueError, "live_builtin: this live function has its builtin");
        return NULL;
    }
    if (doc != Py_None && !PyUnicode_Check(doc)) {
        PyErr_SetString(PyExc_TypeError, "live_builtin: doc must be a str or None");
        return NULL;
    }
    PyObject *strings = Py_BuildValue("(NN)", PyUnicode_AsUTF8String(name),
                                      doc == Py_None ? Py_NewRef(Py_None)
                                                     : PyUnicode_AsUTF8String(doc));
    if (strings == NULL)
        return NULL;
    self->strings = strings;
    self->def.ml_name = PyBytes_AS_STRING(PyTuple_GET_ITEM(strings, 0));
    self->def.ml_doc = doc == Py_None ? NULL : PyBytes_AS_STRING(PyTuple_GET_ITEM(strings, 1));
    set_kind(self);
    PyObject *builtin = PyCFunction_NewEx(&self->def, live, module_name);
    if (builtin == NULL)
        return NULL;
    self->builtin = Py_NewRef(builtin);
    set_kind(self);  /* its vectorcall */
    return builtin;
}

static PyObject *
same_bytes(PyObject *module, PyObject *args)
{
    /* same_bytes(a, b): True if the two buffers hold the same bytes (memcmp, no copies: the
     * reloader compares a new copy with the live one, which may be tens of megabytes). */
    Py_buffer a, b;
    if (!PyArg_ParseTuple(args, "y*y*", &a, &b))
        return NULL;
    int same;
    Py_BEGIN_ALLOW_THREADS
    same = a.len == b.len && memcmp(a.buf, b.buf, (size_t)a.len) == 0;
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    return PyBool_FromLong(same);
}

static PyObject *
install_guard(PyObject *module, PyObject *unused)
{
    /* install_guard(): put the guard's signal handler on top again if another was installed
     * since (that one is chained to). */
    if (hotr_guard_install() < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef shim_methods[] = {
    {"install_guard", install_guard, METH_NOARGS,
     "install_guard(): install the guard's signal handler, or put it back on top."},
    {"retarget", retarget, METH_VARARGS,
     "retarget(functions, addresses, pin, missing, live=None, direct=False): switch "
     "functions to a new version in one step."},
    {"live_builtin", live_builtin, METH_VARARGS,
     "live_builtin(live, name, doc, module_name): a builtin function that calls through live."},
    {"same_bytes", same_bytes, METH_VARARGS,
     "same_bytes(a, b): True if the two buffers hold the same bytes."},
    {"check_elf_file", hotr_check_elf_file, METH_VARARGS,
     "check_elf_file(path, host_class, host_data, host_machine, names, start): check_elf's "
     "result for the file at `path` (mapped for the check), its first `start` bytes, its size."},
    {"check_elf", hotr_check_elf, METH_VARARGS,
     "check_elf(data, host_class, host_data, host_machine, names): (code, relro, needed, "
     "rpath, runpath, defined) of a loadable shared object, or ValueError saying why it is "
     "not one."},
    {NULL}
};

static struct PyModuleDef shim_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "hotr._shim",
    .m_doc = "Live functions with per-version in-flight call counts.",
    .m_size = -1,
    .m_methods = shim_methods,
};

PyMODINIT_FUNC
PyInit__shim(void)
{
    if (PyType_Ready(&PinType) < 0 || PyType_Ready(&LiveFunctionType) < 0 ||
        PyType_Ready(&LiveCallableType) < 0 || init_kinds() < 0)
        return NULL;
    PyObject *m = PyModule_Create(&shim_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&PinType);
    Py_INCREF(&LiveFunctionType);
    Py_INCREF(&LiveCallableType);
    if (PyModule_AddIntConstant(m, "TRAMPOLINE",
                                (long)(intptr_t)hotr_guard_trampoline_address()) < 0 ||
        PyModule_AddObject(m, "Pin", (PyObject *)&PinType) < 0 ||
        PyModule_AddObject(m, "LiveFunction", (PyObject *)&LiveFunctionType) < 0 ||
        PyModule_AddObject(m, "LiveCallable", (PyObject *)&LiveCallableType) < 0 ||
        PyModule_AddFunctions(m, hotr_syscall_methods) < 0 || hotr_deferred_init(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
