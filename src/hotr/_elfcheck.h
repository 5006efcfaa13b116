/* check_elf(buffer, ...) and check_elf_file(path, ...): see _elfcheck.c. */
#ifndef HOTR_ELFCHECK_H
#define HOTR_ELFCHECK_H
#include <Python.h>
PyObject *hotr_check_elf(PyObject *module, PyObject *args);
PyObject *hotr_check_elf_file(PyObject *module, PyObject *args);
#endif
