/* The loader's calls, the copy of a new version into its private file (_pipeline.py) and
 * inotify's reads, for the reload path (_dl.py, _inotify.py).
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
#include <fcntl.h>
#include <string.h>
#include <link.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
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

/* The whole of the open regular file `fd`, which fstat said holds `size` bytes (it may still
 * grow: then read on), in a buffer the caller frees with PyMem_RawFree; NULL with errno set.
 * One read(2) for a file that no longer grows: a short read of a regular file is its end. */
static char *
read_all(int fd, size_t size, size_t *length)
{
    size_t capacity = size + 1, got = 0;
    char *buffer = PyMem_RawMalloc(capacity);
    if (buffer == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    for (;;) {
        ssize_t n = read(fd, buffer + got, capacity - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        got += (size_t)n;
        if (got < capacity) {
            *length = got;
            return buffer;
        }
        char *larger = PyMem_RawRealloc(buffer, capacity * 2);
        if (larger == NULL) {
            errno = ENOMEM;
            break;
        }
        buffer = larger;
        capacity *= 2;
    }
    int saved = errno;
    PyMem_RawFree(buffer);
    errno = saved;
    return NULL;
}

static int
write_all(int fd, const char *data, size_t length)
{
    while (length > 0) {
        ssize_t n = write(fd, data, length);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        data += n;
        length -= (size_t)n;
    }
    return 0;
}

/* The kernel copies `source` to `target` to its end: copy_file_range, else sendfile (across
 * file systems on older kernels, or where copy_file_range is not supported). */
static int
kernel_copy(int source, int target)
{
    ssize_t n;
    while ((n = copy_file_range(source, NULL, target, NULL, 1 << 30, 0)) != 0) {
        if (n > 0 || errno == EINTR)
            continue;
        if (errno != EXDEV && errno != ENOSYS && errno != EINVAL && errno != EOPNOTSUPP)
            return -1;
        if (lseek(source, 0, SEEK_SET) < 0 || lseek(target, 0, SEEK_SET) < 0
            || ftruncate(target, 0) < 0)
            return -1;
        off_t offset = 0;
        while ((n = sendfile(target, source, &offset, 1 << 30)) != 0)
            if (n < 0 && errno != EINTR)
                return -1;
        return 0;
    }
    return 0;
}

static PyObject *
copy_file(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    /* copy_file(path, out, small, live): copy the regular file `path` into the open file
     * `out`; (its bytes, False) below `small` bytes, read here and written out, or (b"", True)
     * without writing anything when they are the bytes `live` (a version's); (None, False)
     * from `small` up, copied by the kernel.  The file is opened
     * O_NONBLOCK (a FIFO put in its place cannot hang the reload) and must be a regular file;
     * OSError names what failed.  The GIL is released meanwhile, as os.read releases it. */
    if (nargs != 4 || !PyLong_Check(args[1]) || !PyLong_Check(args[2])
        || !(args[3] == Py_None || PyBytes_Check(args[3]))) {
        PyErr_SetString(PyExc_TypeError, "copy_file(path, out: int, small: int, live)");
        return NULL;
    }
    PyObject *path = NULL;
    if (!PyUnicode_FSConverter(args[0], &path))
        return NULL;
    int out = (int)PyLong_AsLong(args[1]);
    Py_ssize_t small = PyLong_AsSsize_t(args[2]);
    if (PyErr_Occurred()) {
        Py_DECREF(path);
        return NULL;
    }
    const char *live = args[3] == Py_None ? NULL : PyBytes_AS_STRING(args[3]);
    size_t live_length = args[3] == Py_None ? 0 : (size_t)PyBytes_GET_SIZE(args[3]);
    char *data = NULL;
    size_t length = 0;
    int failed = 0, regular = 1, same = 0, saved = 0;
    Py_BEGIN_ALLOW_THREADS
    int fd = open(PyBytes_AS_STRING(path), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    struct stat info;
    if (fd < 0 || fstat(fd, &info) < 0)
        failed = 1;
    else if (!S_ISREG(info.st_mode))
        regular = 0;
    else if (info.st_size < small) {
        data = read_all(fd, (size_t)info.st_size, &length);
        failed = data == NULL;
        same = !failed && live != NULL && length == live_length
               && memcmp(data, live, length) == 0;
        if (!failed && !same)
            failed = write_all(out, data, length) < 0;
    }
    else
        failed = kernel_copy(fd, out) < 0;
    saved = errno;
    if (fd >= 0)
        close(fd);
    Py_END_ALLOW_THREADS
    PyObject *result = NULL;
    if (failed) {
        errno = saved;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, args[0]);
    }
    else if (!regular) {
        PyObject *error = Py_BuildValue("(is)", EINVAL, "not a regular file");
        if (error != NULL)
            PyErr_SetObject(PyExc_OSError, error);
        Py_XDECREF(error);
    }
    else if (data == NULL)
        result = Py_BuildValue("(OO)", Py_None, Py_False);
    else
        result = Py_BuildValue("(y#O)", same ? "" : data, same ? (Py_ssize_t)0 : (Py_ssize_t)length,
                               same ? Py_True : Py_False);
    PyMem_RawFree(data);
    Py_DECREF(path);
    return result;
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
name_thread(PyObject *module, PyObject *arg)
{
    /* name_thread(name): the calling thread's name for the kernel (top, gdb, /proc), cut to
     * the 15 bytes it keeps. */
    PyObject *encoded = NULL;
    if (!PyUnicode_FSConverter(arg, &encoded))
        return NULL;
    char name[16];
    snprintf(name, sizeof name, "%s", PyBytes_AS_STRING(encoded));
    Py_DECREF(encoded);
    if (prctl(PR_SET_NAME, name, 0, 0, 0) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

PyMethodDef hotr_syscall_methods[] = {
    {"dl_open", (PyCFunction)(void (*)(void))dl_open, METH_FASTCALL,
     "dl_open(path, flags): dlopen; the handle, or OSError with the loader's message."},
    {"dl_sym", (PyCFunction)(void (*)(void))dl_sym, METH_FASTCALL,
     "dl_sym(handle, name): dlsym; the address, or None."},
    {"dl_close", dl_close, METH_O, "dl_close(handle): dlclose, or OSError."},
    {"dl_base", dl_base, METH_O, "dl_base(handle): the library's load base (dlinfo)."},
    {"copy_file", (PyCFunction)(void (*)(void))copy_file, METH_FASTCALL,
     "copy_file(path, out, small, live): copy a regular file into `out`; (its bytes when "
     "small, else None; whether they are `live`'s, so not written)."},
    {"name_thread", name_thread, METH_O,
     "name_thread(name): the calling thread's name for the kernel (15 bytes at most)."},
    {"inotify_queued", inotify_queued, METH_O,
     "inotify_queued(fd): the bytes of events queued on an inotify descriptor."},
    {"inotify_read", (PyCFunction)(void (*)(void))inotify_read, METH_FASTCALL,
     "inotify_read(fd, size): the (wd, mask, name) events of one read, and whether it "
     "emptied the queue."},
    {NULL}
};
