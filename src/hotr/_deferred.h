/* deferred() (_deferred.c), added to the _shim module. */
#ifndef HOTR_DEFERRED_H
#define HOTR_DEFERRED_H

#include <Python.h>

/* `main` is the main thread's PyThread_get_thread_ident(). */
int hotr_deferred_init(PyObject *module, unsigned long main);

#endif
