/* Guarded calls: a SIGSEGV, SIGBUS, SIGFPE or SIGILL raised by a loaded version's own code,
 * during a call through a guarded live function, ends that call instead of the process.
 *
 * How a guarded call runs.  live_call (_shim.c) pushes a record on this thread (the target,
 * the version's code ranges, the caller's thread state and Python frame) and calls the ctypes
 * or cffi object as usual; that object points at the trampoline below, not at the target.
 * ctypes converts the arguments, releases the GIL and calls the trampoline through libffi.  The
 * trampoline takes its own return address off the stack (so the stack arguments sit exactly
 * where the target expects them), saves the caller's callee-saved registers and floating-point
 * control words in the record, and calls the target.  When the target returns, the trampoline
 * puts the return address back and returns: libffi, ctypes and the interpreter see an ordinary
 * call.
 *
 * When a fault is attributable -- the record is running, the signal came from the processor
 * (not kill()), the faulting instruction lies in the record's version, and the thread's Python
 * frame is still the one the call began in (no Python callback is running between) -- the
 * handler does not jump anywhere itself: it rewrites the interrupted context so that returning
 * from the handler resumes in the trampoline as if the target had returned 0, with the stack
 * pointer and callee-saved registers of the moment it was called.  The kernel's sigreturn
 * restores the signal mask and leaves the alternate stack.  ctypes then takes the GIL back,
 * converts the (discarded) result and returns to live_call, which sees the record marked
 * crashed, drops the in-flight count like any call's, and raises CrashError.  No interpreter
 * frame, thread state or recursion counter is skipped: only the version's own C frames (and
 * anything they called that called back into the version) are abandoned.
 *
 * Anything else is chained: the handler puts back the disposition it replaced and lets the
 * fault happen again (a processor fault re-executes the instruction; a sent signal is sent
 * again with the same siginfo), so the previous handler -- faulthandler, pytest's, the default
 * core dump -- sees exactly what it would have seen without hotr.  Handlers installed after
 * hotr are found by hotr_guard_install(), which puts hotr's back on top and chains to them; it
 * runs when a guarded reloader is made, at each reload and on each thread's first guarded call.
 */
#include "_guard.h"

#if HOTR_GUARD_SUPPORTED

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

__thread hotr_guard_record *hotr_guard_top __attribute__((tls_model("initial-exec")));
__thread int hotr_guard_thread_ready __attribute__((tls_model("initial-exec")));

_Static_assert(offsetof(hotr_guard_record, target) == 0, "trampoline offsets");
_Static_assert(offsetof(hotr_guard_record, ret) == 8, "trampoline offsets");
_Static_assert(offsetof(hotr_guard_record, rsp) == 16, "trampoline offsets");
_Static_assert(offsetof(hotr_guard_record, rbx) == 24, "trampoline offsets");
_Static_assert(offsetof(hotr_guard_record, r15) == 64, "trampoline offsets");
_Static_assert(offsetof(hotr_guard_record, mxcsr) == 72, "trampoline offsets");
_Static_assert(offsetof(hotr_guard_record, fpucw) == 76, "trampoline offsets");
_Static_assert(offsetof(hotr_guard_record, state) == 78, "trampoline offsets");
_Static_assert(HOTR_GUARD_PENDING == 1 && HOTR_GUARD_RUNNING == 2 && HOTR_GUARD_DONE == 3,
               "trampoline states");

/* Called by the trampoline when no live function pushed a record for it (the ctypes object
 * behind a guarded function was called directly): there is no target to call. */
__attribute__((noreturn, used, visibility("hidden"))) void
hotr_guard_misuse(void)
{
    static const char message[] =
        "hotr: a guarded function's ctypes/cffi object was called directly, not through its "
        "hotr.Function; aborting\n";
    (void)!write(2, message, sizeof message - 1);
    abort();
}

/* r11 is the one register free at the entry of a function (no argument, not callee-saved);
 * from then on rbx holds the record (the target preserves it, the handler sets it).  The CFI
 * says where the caller's return address and rbx are (in the record, at rbx+8 and rbx+24), so
 * debuggers, profilers and unwinders walk through the trampoline like through any frame. */
__asm__(
    ".text\n"
    ".p2align 4\n"
    ".globl hotr_guard_trampoline\n"
    ".hidden hotr_guard_trampoline\n"
    ".type hotr_guard_trampoline,@function\n"
    "hotr_guard_trampoline:\n"
    "    .cfi_startproc\n"
    "    movq hotr_guard_top@gottpoff(%rip), %r11\n"
    "    movq %fs:(%r11), %r11\n"
    "    testq %r11, %r11\n"
    "    jz hotr_guard_misuse\n"
    "    cmpw $1, 78(%r11)\n"
    "    jne hotr_guard_misuse\n"
    "    movq %rbx, 24(%r11)\n"
    "    movq %r11, %rbx\n"
    "    .cfi_escape 0x10, 0x03, 0x02, 0x73, 0x18\n" /* rbx is at [rbx + 24] */
    "    popq 8(%rbx)\n"
    "    .cfi_def_cfa_offset 0\n"
    "    .cfi_escape 0x10, 0x10, 0x02, 0x73, 0x08\n" /* the return address is at [rbx + 8] */
    "    movq %rsp, 16(%rbx)\n"
    "    movq %rbp, 32(%rbx)\n"
    "    movq %r12, 40(%rbx)\n"
    "    movq %r13, 48(%rbx)\n"
    "    movq %r14, 56(%rbx)\n"
    "    movq %r15, 64(%rbx)\n"
    "    stmxcsr 72(%rbx)\n"
    "    fnstcw 76(%rbx)\n"
    "    movw $2, 78(%rbx)\n"
    "    callq *(%rbx)\n"
    ".globl hotr_guard_resume\n"
    ".hidden hotr_guard_resume\n"
    "hotr_guard_resume:\n"
    "    movw $3, 78(%rbx)\n"
    "    pushq 8(%rbx)\n"
    "    .cfi_def_cfa_offset 8\n"
    "    .cfi_offset 16, -8\n"
    "    movq 24(%rbx), %rbx\n"
    "    .cfi_restore 3\n"
    "    ret\n"
    "    .cfi_endproc\n"
    ".size hotr_guard_trampoline, .-hotr_guard_trampoline\n");

extern char hotr_guard_trampoline[], hotr_guard_resume[];

void *
hotr_guard_trampoline_address(void)
{
    return (void *)hotr_guard_trampoline;
}

static const int guarded_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL};
#define NSIGNALS 4

static struct sigaction original[NSIGNALS];  /* what was there when hotr first installed */
static struct sigaction previous[NSIGNALS];  /* what a fault hotr does not claim goes to */
static volatile sig_atomic_t handed_off[NSIGNALS];
static int installed;

static int
signal_index(int signo)
{
    for (int i = 0; i < NSIGNALS; i++)
        if (guarded_signals[i] == signo)
            return i;
    return -1;
}

/* Raised by the processor for the interrupted instruction (so executing it again raises it
 * again), not sent by kill() or raise(), nor a machine-check report about some other page. */
static int
from_instruction(int signo, const siginfo_t *info)
{
    return info->si_code > 0 && !(signo == SIGBUS && info->si_code == BUS_MCEERR_AO);
}

static int
attributable(int signo, const hotr_guard_record *r, const siginfo_t *info, uintptr_t pc)
{
    if (r == NULL || r->state != HOTR_GUARD_RUNNING || !from_instruction(signo, info) ||
        (signo == SIGBUS && info->si_code == BUS_MCEERR_AR))  /* failing memory, not a bug */
        return 0;
    int inside = 0;
    for (Py_ssize_t i = 0; i < r->nranges; i++)
        if (r->ranges[i].start <= pc && pc < r->ranges[i].end)
            inside = 1;
    return inside && hotr_guard_frame(r->tstate) == r->frame;
}

/* Resume in the trampoline as if the target had returned 0. */
static void
resume(hotr_guard_record *r, ucontext_t *uc)
{
    greg_t *g = uc->uc_mcontext.gregs;
    g[REG_RIP] = (greg_t)hotr_guard_resume;
    g[REG_RSP] = (greg_t)r->rsp;
    g[REG_RBX] = (greg_t)r;  /* the trampoline restores the caller's from the record */
    g[REG_RBP] = (greg_t)r->rbp;
    g[REG_R12] = (greg_t)r->r12;
    g[REG_R13] = (greg_t)r->r13;
    g[REG_R14] = (greg_t)r->r14;
    g[REG_R15] = (greg_t)r->r15;
    g[REG_RAX] = 0;
    g[REG_RDX] = 0;
    g[REG_EFL] &= ~(greg_t)0x400;  /* the direction flag is clear at every call and return */
    struct _libc_fpstate *fp = uc->uc_mcontext.fpregs;
    if (fp != NULL) {
        fp->mxcsr = r->mxcsr;
        fp->cwd = r->fpucw;
        fp->swd = 0;
        fp->ftw = 0;  /* an empty x87 stack, as at any return that is not a long double's */
        memset(&fp->_xmm[0], 0, 2 * sizeof fp->_xmm[0]);
    }
}

/* Let the fault reach the handler hotr replaced, as if hotr were not there. */
static void
chain(int signo, siginfo_t *info)
{
    int i = signal_index(signo);
    /* Back in here after handing off: the handler hotr chained to put hotr's back (it was
     * installed after hotr and saved hotr's as its own previous).  Go to the one before. */
    const struct sigaction *next = handed_off[i] ? &original[i] : &previous[i];
    handed_off[i] = 1;
    sigaction(signo, next, NULL);
    if (from_instruction(signo, info))
        return;  /* the processor raises it again on the same instruction */
    if (syscall(SYS_rt_tgsigqueueinfo, getpid(), (pid_t)syscall(SYS_gettid), signo, info) != 0)
        raise(signo);
}

static void
handler(int signo, siginfo_t *info, void *context)
{
    int saved_errno = errno;
    ucontext_t *uc = context;
    hotr_guard_record *r = hotr_guard_top;
    uintptr_t pc = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
    if (attributable(signo, r, info, pc)) {
        r->signo = signo;
        r->pc = (void *)pc;
        r->accessed = info->si_addr;
        r->crashed = 1;
        resume(r, uc);
    }
    else {
        chain(signo, info);
    }
    errno = saved_errno;
}

int
hotr_guard_install(void)
{
    struct sigaction ours;
    memset(&ours, 0, sizeof ours);
    ours.sa_sigaction = handler;
    ours.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&ours.sa_mask);
    for (int i = 0; i < NSIGNALS; i++) {
        struct sigaction current;
        if (sigaction(guarded_signals[i], NULL, &current) != 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        if ((current.sa_flags & SA_SIGINFO) && current.sa_sigaction == handler)
            continue;
        if (!installed)
            original[i] = current;
        previous[i] = current;
        handed_off[i] = 0;
        if (sigaction(guarded_signals[i], &ours, NULL) != 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
    }
    installed = 1;
    return 0;
}

/* The alternate stacks hotr made: one per thread, freed when the thread exits. */
#define ALTSTACK_SIZE (64 * 1024)

static pthread_key_t altstack_key;
static pthread_once_t altstack_once = PTHREAD_ONCE_INIT;
static int altstack_key_error;

static void
free_altstack(void *base)
{
    stack_t current;
    if (sigaltstack(NULL, &current) == 0 && current.ss_sp == (char *)base + getpagesize()) {
        stack_t off = {.ss_flags = SS_DISABLE};
        sigaltstack(&off, NULL);
    }
    munmap(base, ALTSTACK_SIZE + getpagesize());
}

static void
make_key(void)
{
    altstack_key_error = pthread_key_create(&altstack_key, free_altstack);
}

int
hotr_guard_prepare_thread(void)
{
    stack_t current;
    if (sigaltstack(NULL, &current) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (current.ss_flags & SS_DISABLE) {
        pthread_once(&altstack_once, make_key);
        if (altstack_key_error != 0) {
            errno = altstack_key_error;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        size_t page = (size_t)getpagesize();
        /* A guard page below: an overflow of the handler itself faults, it writes nothing. */
        char *base = mmap(NULL, ALTSTACK_SIZE + page, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (base == MAP_FAILED) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        stack_t stack = {.ss_sp = base + page, .ss_size = ALTSTACK_SIZE, .ss_flags = 0};
        int error = mprotect(base, page, PROT_NONE) != 0 ? errno
                                                          : pthread_setspecific(altstack_key, base);
        if (error == 0 && sigaltstack(&stack, NULL) != 0) {
            error = errno;
            pthread_setspecific(altstack_key, NULL);
        }
        if (error != 0) {
            munmap(base, ALTSTACK_SIZE + page);
            errno = error;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
    }
    if (hotr_guard_install() < 0)
        return -1;
    hotr_guard_thread_ready = 1;
    return 0;
}

#else /* !HOTR_GUARD_SUPPORTED */

__thread hotr_guard_record *hotr_guard_top;
__thread int hotr_guard_thread_ready;

void *
hotr_guard_trampoline_address(void)
{
    return NULL;
}

int
hotr_guard_install(void)
{
    PyErr_SetString(PyExc_NotImplementedError, "guarded calls need Linux on x86-64");
    return -1;
}

int
hotr_guard_prepare_thread(void)
{
    return hotr_guard_install();
}

#endif
