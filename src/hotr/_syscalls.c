/* The loader's calls and inotify's reads, for the reload path (_dl.py, _inotify.py), and the
 * swap of signal handlers that deferred() makes around its steps (_signals.py).
 *
 * Each reload makes about ten of these calls.  Through ctypes each cost several thousand
 * instructions (argument conversion, libffi), and the inotify read's ioctl and event parsing
 * as many again in Python; here each is one C call.  dlopen and dlclose release the GIL (they
 * run the library's constructors and destructors, which may take their time or call back into
 * Python from another thread); the others are quick lookups and keep it.  An error is OSError
 * with the loader's own message (dlerror() is per thread, so no other call can overwrite it).
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>

#include <dlfcn.h>
#include <errno.h>
#include <string.h>
#include <link.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "_syscalls.h"

static PyObject *
loader_error(const char *fallback)
{
    const char *message = dlerror();
    PyErr_SetString(PyExc_OSError, message != NULL ? message : fallback);
    return NULL;
}

static void *
handle_of(PyObject *number)
{
    void *handle = PyLong_AsVoidPtr(number);
    if (handle == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "a null library handle");
    return handle;
}

static PyObject *
dl_open(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    /* dl_open(path, flags): the handle, an int. */
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "dl_open(path, flags)");
        return NULL;
    }
    PyObject *path = NULL;
    if (!PyUnicode_FSConverter(args[0], &path))
        return NULL;
    int flags = (int)PyLong_AsLong(args[1]);
    if (flags == -1 && PyErr_Occurred()) {
        Py_DECREF(path);
        return NULL;
    }
    void *handle;
    Py_BEGIN_ALLOW_THREADS
    handle = dlopen(PyBytes_AS_STRING(path), flags);
    Py_END_ALLOW_THREADS
    Py_DECREF(path);
    if (handle == NULL) {
        /* RTLD_NOLOAD of a library not mapped fails with no message: name the file. */
        const char *message = dlerror();
        if (message != NULL)
            PyErr_SetString(PyExc_OSError, message);
        else
            PyErr_Format(PyExc_OSError, "dlopen(%R) failed: not loaded", args[0]);
        return NULL;
    }
    return PyLong_FromVoidPtr(handle);
}

static PyObject *
dl_sym(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    /* dl_sym(handle, name): the address, or None when the library has no such symbol. */
    if (nargs != 2 || !PyUnicode_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "dl_sym(handle, name: str)");
        return NULL;
    }
    void *handle = handle_of(args[0]);
    const char *name = PyUnicode_AsUTF8(args[1]);
    if (handle == NULL || name == NULL)
        return NULL;
    void *address = dlsym(handle, name);
    if (address == NULL)
        Py_RETURN_NONE;
    return PyLong_FromVoidPtr(address);
}

static PyObject *
dl_close(PyObject *module, PyObject *arg)
{
    /* dl_close(handle): drop the reference the handle holds. */
    void *handle = handle_of(arg);
    if (handle == NULL)
        return NULL;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = dlclose(handle);
    Py_END_ALLOW_THREADS
    if (status != 0)
        return loader_error("dlclose failed");
    Py_RETURN_NONE;
}

static PyObject *
dl_base(PyObject *module, PyObject *arg)
{
    /* dl_base(handle): the library's load base (its link map's l_addr). */
    void *handle = handle_of(arg);
    if (handle == NULL)
        return NULL;
    struct link_map *map = NULL;
    if (dlinfo(handle, RTLD_DI_LINKMAP, &map) != 0 || map == NULL)
        return loader_error("dlinfo failed");
    return PyLong_FromSize_t((size_t)map->l_addr);
}

static PyObject *
inotify_queued(PyObject *module, PyObject *arg)
{
    /* inotify_queued(fd): how many bytes of events the kernel holds (FIONREAD). */
    int fd = (int)PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    int queued = 0;
    if (ioctl(fd, FIONREAD, &queued) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(queued);
}

static PyObject *
inotify_read(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    /* inotify_read(fd, size): the events one read of up to `size` bytes returns, as
     * (wd, mask, name) tuples (the name decoded as os.fsdecode does, "" for none), and
     * whether the read emptied the queue (it returned less than `size`).  BlockingIOError when
     * none is queued. */
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "inotify_read(fd, size)");
        return NULL;
    }
    int fd = (int)PyLong_AsLong(args[0]);
    Py_ssize_t size = PyLong_AsSsize_t(args[1]);
    if (PyErr_Occurred())
        return NULL;
    if (size < (Py_ssize_t)(sizeof(struct inotify_event) + NAME_MAX + 1))
        size = sizeof(struct inotify_event) + NAME_MAX + 1; /* one event always fits */
    char *buffer = PyMem_Malloc((size_t)size);
    if (buffer == NULL)
        return PyErr_NoMemory();
    ssize_t got = read(fd, buffer, (size_t)size);
    if (got < 0) {
        PyMem_Free(buffer);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *events = PyList_New(0);
    const ssize_t header = (ssize_t)sizeof(struct inotify_event);
    for (ssize_t offset = 0; events != NULL && offset + header <= got;) {
        const struct inotify_event *event = (const struct inotify_event *)(buffer + offset);
        offset += header + (ssize_t)event->len;
        if (offset > got)
            break; /* the kernel never splits an event; a short read would end here */
        Py_ssize_t length = (Py_ssize_t)strnlen(event->name, event->len);
        PyObject *name = PyUnicode_DecodeFSDefaultAndSize(event->name, length);
        PyObject *item = name ? Py_BuildValue("(iIN)", event->wd, event->mask, name) : NULL;
        if (item == NULL || PyList_Append(events, item) < 0)
            Py_CLEAR(events);
        Py_XDECREF(item);
    }
    PyMem_Free(buffer);
    if (events == NULL)
        return NULL;
    return Py_BuildValue("(NO)", events, got < size ? Py_True : Py_False);
}

static PyObject *
set_handlers(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    /* set_handlers(setter, pairs): setter(signum, handler) for each (signum, handler) tuple of
     * the list `pairs`, all of them, then the first exception raised meanwhile.  signal.signal
     * first runs the handlers of signals already pending: once one real handler is back, its
     * KeyboardInterrupt would leave the next signal's handler unrestored.  Here no Python code
     * runs between two calls; a call that raised is made again (its pending signal is handled
     * now), a bounded number of times so that a setter that always fails cannot loop. */
    if (nargs != 2 || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "set_handlers(setter, pairs: list)");
        return NULL;
    }
    PyObject *type = NULL, *value = NULL, *traceback = NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(args[1]); i++) {
        PyObject *pair = PyList_GET_ITEM(args[1], i);
        if (!PyTuple_Check(pair)) {
            PyErr_SetString(PyExc_TypeError, "set_handlers: the pairs must be tuples");
            break;
        }
        PyObject *result = NULL;
        for (int tries = 0; result == NULL && tries < 100; tries++) {
            result = PyObject_Call(args[0], pair, NULL);
            if (result != NULL)
                break;
            if (type == NULL)
                PyErr_Fetch(&type, &value, &traceback);
            else
                PyErr_Clear();
        }
        if (result == NULL)
            break; /* the first exception is raised */
        Py_DECREF(result);
    }
    if (type != NULL) {
        PyErr_Clear();
        PyErr_Restore(type, value, traceback);
    }
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

PyMethodDef hotr_syscall_methods[] = {
    {"dl_open", (PyCFunction)(void (*)(void))dl_open, METH_FASTCALL,
     "dl_open(path, flags): dlopen; the handle, or OSError with the loader's message."},
    {"dl_sym", (PyCFunction)(void (*)(void))dl_sym, METH_FASTCALL,
     "dl_sym(handle, name): dlsym; the address, or None."},
    {"dl_close", dl_close, METH_O, "dl_close(handle): dlclose, or OSError."},
    {"dl_base", dl_base, METH_O, "dl_base(handle): the library's load base (dlinfo)."},
    {"inotify_queued", inotify_queued, METH_O,
     "inotify_queued(fd): the bytes of events queued on an inotify descriptor."},
    {"inotify_read", (PyCFunction)(void (*)(void))inotify_read, METH_FASTCALL,
     "inotify_read(fd, size): the (wd, mask, name) events of one read, and whether it "
     "emptied the queue."},
    {"set_handlers", (PyCFunction)(void (*)(void))set_handlers, METH_FASTCALL,
     "set_handlers(setter, pairs): setter(*pair) for every pair, then any exception raised."},
    {NULL}
};
