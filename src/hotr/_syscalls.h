/* The loader's calls and inotify's reads (_syscalls.c), added to the _shim module. */
#ifndef HOTR_SYSCALLS_H
#define HOTR_SYSCALLS_H

#include <Python.h>

extern PyMethodDef hotr_syscall_methods[];

#endif
