/* Guarded calls (see _guard.c): a fault in a loaded version's own code, during a call through a
 * live function, ends that call instead of the process. */
#ifndef HOTR_GUARD_H
#define HOTR_GUARD_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <signal.h>
#include <stdint.h>

#define HOTR_HIDDEN __attribute__((visibility("hidden")))  /* the extension's own, not exported */

#if defined(__x86_64__) && defined(__linux__)
#define HOTR_GUARD_SUPPORTED 1
#else
#define HOTR_GUARD_SUPPORTED 0
#endif

typedef struct {
    uintptr_t start, end;  /* [start, end): one executable segment of a version */
} hotr_range;

/* One guarded call in progress on this thread.  The first fields are read and written by the
 * trampoline (assembly in _guard.c): their offsets are checked there. */
typedef struct hotr_guard_record {
    void *target;    /*   0: the version's function */
    void *ret;       /*   8: where the trampoline returns to (in libffi) */
    void *rsp;       /*  16: the stack pointer the target was called with, less its return slot */
    void *rbx, *rbp, *r12, *r13, *r14, *r15; /* 24..64: the caller's callee-saved registers */
    uint32_t mxcsr;  /*  72 */
    uint16_t fpucw;  /*  76 */
    uint16_t state;  /*  78: HOTR_GUARD_PENDING, _RUNNING, _DONE */
    struct hotr_guard_record *prev; /* the guarded call this one runs inside of, if any */
    const hotr_range *ranges;       /* the version's code */
    Py_ssize_t nranges;
    PyThreadState *tstate;          /* the caller's */
    void *frame;                    /* its Python frame when the call began */
    volatile sig_atomic_t crashed;  /* set by the signal handler */
    int signo;
    void *pc;                       /* the faulting instruction */
    void *accessed;                 /* si_addr: the address it accessed (SIGSEGV, SIGBUS) */
} hotr_guard_record;

enum { HOTR_GUARD_PENDING = 1, HOTR_GUARD_RUNNING = 2, HOTR_GUARD_DONE = 3 };

/* The innermost guarded call of this thread (initial-exec TLS: the trampoline reads it). */
extern __thread hotr_guard_record *hotr_guard_top HOTR_HIDDEN
    __attribute__((tls_model("initial-exec")));
extern __thread int hotr_guard_thread_ready HOTR_HIDDEN __attribute__((tls_model("initial-exec")));

/* The address every guarded function's ctypes/cffi object points at. */
HOTR_HIDDEN void *hotr_guard_trampoline_address(void);
/* Install the process-wide handler, or put it back on top of handlers installed since
 * (saving them to chain to).  Returns 0, or -1 with a Python exception set. */
HOTR_HIDDEN int hotr_guard_install(void);
/* Give this thread an alternate signal stack (unless it has one) and check the handler.
 * Returns 0, or -1 with a Python exception set. */
HOTR_HIDDEN int hotr_guard_prepare_thread(void);

static inline void *
hotr_guard_frame(PyThreadState *tstate)
{
#if PY_VERSION_HEX >= 0x030D0000
    return tstate->current_frame;
#elif PY_VERSION_HEX >= 0x030B0000
    return tstate->cframe != NULL ? (void *)tstate->cframe->current_frame : NULL;
#else
    return tstate->frame;
#endif
}

#endif
