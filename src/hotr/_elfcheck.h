/* check_elf(buffer, host_class, host_data, host_machine, names): see _elfcheck.c. */
#ifndef HOTR_ELFCHECK_H
#define HOTR_ELFCHECK_H
#include <Python.h>
PyObject *hotr_check_elf(PyObject *module, PyObject *args);
#endif
