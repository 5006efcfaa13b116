/* deferred() (_deferred.c), added to the _shim module. */
#ifndef HOTR_DEFERRED_H
#define HOTR_DEFERRED_H

#include <Python.h>

int hotr_deferred_init(PyObject *module);

#endif
