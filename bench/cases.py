"""The measurements.  Each returns rows of samples; baselines are measured in the same run."""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import io
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import timeit
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import hotr

CC = os.environ.get("CC", "cc")
LIB_SOURCE = (
    "int value(void) {{ return {n}; }}\nint add3(int a, int b, int c) {{ return a + b + c; }}\n"
)


@dataclass
class Row:
    """One line of the result table: samples in seconds, compared with the row named `baseline`."""

    section: str
    name: str
    samples: list[float]
    baseline: str | None = None
    unit: str = "ms"
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)


def compile_lib(work: Path, n: int, cc: str = CC) -> bytes:
    src = work / f"v{n}.c"
    out = work / f"v{n}.so"
    if not out.exists():
        src.write_text(LIB_SOURCE.format(n=n))
        subprocess.run([cc, "-shared", "-fPIC", str(src), "-o", str(out)], check=True)
    return out.read_bytes()


def place(lib: Path, data: bytes) -> None:
    """A new library lands by rename, as install(1) and editors do."""
    tmp = lib.with_name(lib.name + ".tmp")
    tmp.write_bytes(data)
    os.rename(tmp, lib)


def link(lib: Path, work: Path, n: int) -> None:
    """A new library lands by the linker writing it (GNU ld unlinks and re-creates)."""
    src = work / f"link{n % 2}.c"
    src.write_text(LIB_SOURCE.format(n=n % 2 + 1))
    subprocess.run([CC, "-shared", "-fPIC", str(src), "-o", str(lib)], check=True)


# -- 1. the alternatives to hotr -----------------------------------------------------------------


def alternatives(work: Path, trials: int) -> list[Row]:
    """What people do without hotr: a file watcher that reloads (watchfiles), or a restart of
    the whole process.  Compared with hotr at 16 KiB (the reload rows)."""
    variants = [compile_lib(work, n) for n in (1, 2)]
    lib = work / "alternatives" / "libhot.so"
    lib.parent.mkdir()

    def land(n: int) -> float:
        place(lib, variants[n % 2])
        return time.perf_counter()  # from the moment the rename returned

    others: dict[str, Callable[[], list[float]]] = {
        "watchfiles.watch() defaults + load": lambda: _watchfiles(lib, variants, trials, land),
        "process restart, minimal (inotify + spawn python + load)": lambda: _restart(
            lib, variants, trials, land, via_watchfiles=False
        ),
        "process restart via `watchfiles 'python host.py'`": lambda: _restart(
            lib, variants, trials, land, via_watchfiles=True
        ),
    }
    return [Row("reload", name, run(), baseline="hotr, 16 KiB") for name, run in others.items()]


def _watchfiles(
    lib: Path, variants: list[bytes], trials: int, land: Callable[[int], float]
) -> list[float]:
    import watchfiles

    place(lib, variants[0])
    stop = threading.Event()
    answered = threading.Event()
    ready = threading.Event()
    expected = [0]

    def watcher() -> None:
        copies = lib.parent / "wf-copies"
        copies.mkdir(exist_ok=True)
        ready.set()
        for i, changes in enumerate(watchfiles.watch(lib.parent, stop_event=stop)):
            if not any(path.endswith(lib.name) for _, path in changes):
                continue
            copy = copies / f"{i}.so"
            shutil.copyfile(lib, copy)
            if ctypes.CDLL(str(copy)).value() == expected[0]:
                answered.set()

    thread = threading.Thread(target=watcher, daemon=True)
    thread.start()
    ready.wait()
    time.sleep(0.5)  # let the watcher start
    samples = []
    for n in range(1, trials + 1):
        expected[0] = n % 2 + 1
        answered.clear()
        started = land(n)
        assert answered.wait(10), "watchfiles did not report the change"
        samples.append(time.perf_counter() - started)
        time.sleep(0.2)
    stop.set()
    thread.join(5)
    return samples


HOST = """
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
print(lib.value(), flush=True)
sys.stdin.read()
"""


def _restart(
    lib: Path,
    variants: list[bytes],
    trials: int,
    land: Callable[[int], float],
    *,
    via_watchfiles: bool,
) -> list[float]:
    place(lib, variants[0])
    host = lib.parent / "host.py"
    host.write_text(HOST)
    samples = []
    if via_watchfiles:
        cmd = [
            sys.executable,
            "-m",
            "watchfiles",
            "--filter",
            "all",
            "--ignore-paths",
            str(lib.parent / "wf-copies"),
            shlex.join([sys.executable, str(host), str(lib)]),
            str(lib.parent),
        ]
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert proc.stdout is not None
        proc.stdout.readline()
        for n in range(1, trials + 1):
            started = land(n)
            while proc.stdout.readline().strip() != str(n % 2 + 1):
                pass
            samples.append(time.perf_counter() - started)
            time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
        proc.stdout.close()
        assert proc.stdin is not None
        proc.stdin.close()
        return samples
    from inotify_simple import INotify
    from inotify_simple import flags as F

    inotify = INotify()
    inotify.add_watch(str(lib.parent), F.CLOSE_WRITE | F.MOVED_TO)
    proc = _spawn_host(host, lib)
    for n in range(1, trials + 1):
        started = land(n)
        while not any(e.name == lib.name for e in inotify.read()):
            pass
        proc.kill()
        proc.wait()
        _close(proc)
        proc = _spawn_host(host, lib)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == str(n % 2 + 1)
        samples.append(time.perf_counter() - started)
    proc.kill()
    proc.wait()
    _close(proc)
    inotify.close()
    return samples


def _spawn_host(host: Path, lib: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(host), str(lib)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _close(proc: subprocess.Popen[str]) -> None:
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


# -- 2. call overhead ----------------------------------------------------------------------------


def call_overhead(work: Path, repeat: int) -> list[Row]:
    """A live function, unguarded and guarded, against a plain ctypes function of the same
    library, same run, trials interleaved; and what a caught crash costs."""
    data = compile_lib(work, 1)
    lib_path = work / "libcalls.so"
    lib_path.write_bytes(data)
    plain = ctypes.CDLL(str(lib_path))
    rows = []
    with hotr.HotReloader(lib_path) as r, hotr.HotReloader(lib_path, guard=True) as g:
        live, guarded = r.update(), g.update()
        for label, call, fns in (
            ("int f(void)", "f()", (plain.value, live.value, guarded.value)),
            ("int f(int, int, int)", "f(1, 2, 3)", (plain.add3, live.add3, guarded.add3)),
        ):
            number = 20000
            samples: tuple[list[float], ...] = ([], [], [])
            for _ in range(repeat):  # interleaved, so drift hits all alike
                for fn, out in zip(fns, samples, strict=True):
                    best = min(timeit.repeat(call, globals={"f": fn}, number=number, repeat=3))
                    out.append(best / number)
            base = f"ctypes {label}"
            rows.append(Row("calls", base, samples[0], unit="ns"))
            rows.append(Row("calls", f"hotr live {label}", samples[1], baseline=base, unit="ns"))
            rows.append(Row("calls", f"hotr guarded {label}", samples[2], baseline=base, unit="ns"))
    rows.extend(_caught_crash(work, repeat))
    return rows


CRASH_SOURCE = "int crash(int x) { if (x) *(volatile int *)0 = x; return x; }\n"
# The floor under any caught crash: a C program's NULL load, its SIGSEGV handler stepping over
# the 2-byte instruction, and sigreturn; prints the seconds per fault.
BARE_FAULT = r"""
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>
static void skip(int s, siginfo_t *i, void *c) {
    ((ucontext_t *)c)->uc_mcontext.gregs[REG_RIP] += 2;
}
int main(int argc, char **argv) {
    int n = atoi(argv[1]);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = skip;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, NULL);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int k = 0; k < n; k++)
        __asm__ volatile("movl (%0), %%eax" : : "r"(0L) : "eax", "memory");
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.9f\n", ((b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9) / n);
    return 0;
}
"""


def _caught_crash(work: Path, repeat: int) -> list[Row]:
    """A guarded call that dereferences NULL, caught as CrashError (no earlier version, so no
    rollback: the fault, the handler, the return through ctypes and the exception), against a
    bare fault and signal-handler return in C, trials interleaved."""
    src, lib_path = work / "crash.c", work / "libcrash.so"
    src.write_text(CRASH_SOURCE)
    subprocess.run([CC, "-shared", "-fPIC", str(src), "-o", str(lib_path)], check=True)
    bare_src, bare = work / "bare_fault.c", work / "bare_fault"
    bare_src.write_text(BARE_FAULT)
    subprocess.run([CC, "-O1", str(bare_src), "-o", str(bare)], check=True)
    crash_error = hotr.CrashError
    samples: list[float] = []
    floor: list[float] = []
    with hotr.HotReloader(lib_path, guard=True) as r:
        crash = r.update().crash
        number, caught = 2000, 0
        for _ in range(repeat):
            out = subprocess.run([str(bare), str(number)], capture_output=True, check=True)
            floor.append(float(out.stdout))
            started = time.perf_counter()
            for _ in range(number):
                try:
                    crash(1)
                except crash_error:
                    caught += 1
            samples.append((time.perf_counter() - started) / number)
        assert caught == number * repeat
    base = "a bare fault and handler return, in C"
    return [
        Row("calls", base, floor, unit="us"),
        Row("calls", "hotr guarded call that crashes (caught)", samples, baseline=base, unit="us"),
    ]


# -- 3. idle cost --------------------------------------------------------------------------------

IDLE = """
import os, sys, threading, time
kind, count, seconds, work = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
paths = [os.path.join(work, f"idle{i}.so") for i in range(count)]
if kind == "hotr":
    import hotr
    libs = [hotr.load(p) for p in paths]
else:
    import watchfiles
    stop = threading.Event()
    dirs = sorted({os.path.dirname(p) for p in paths})
    def run():
        for _ in watchfiles.watch(*dirs, stop_event=stop, force_polling=True):
            pass
    threading.Thread(target=run, daemon=True).start()
time.sleep(0.5)
start = time.process_time()
time.sleep(seconds)
print(time.process_time() - start)
"""


def idle_cost(work: Path, seconds: float) -> list[Row]:
    """CPU seconds a process spends watching libraries that do not change."""
    data = compile_lib(work, 1)
    rows = []
    for count in (1, 100):
        for i in range(count):
            (work / f"idle{i}.so").write_bytes(data)
        for kind in ("hotr", "polling"):
            proc = subprocess.run(
                [sys.executable, "-c", IDLE, kind, str(count), str(seconds), str(work)],
                capture_output=True,
                text=True,
                check=True,
            )
            cpu = float(proc.stdout.split()[-1]) * 10 / seconds  # per 10 s
            who = "hotr" if kind == "hotr" else "watchfiles force_polling (300 ms)"
            name = f"{who}, {count} librar{'y' if count == 1 else 'ies'}"
            rows.append(Row("idle", name, [cpu], unit="ms CPU/10 s"))
    return rows


# -- 4. scale ------------------------------------------------------------------------------------


def scale(work: Path, trials: int) -> list[Row]:
    """Latency of one change among 1 or 100 watched libraries.

    The setups live side by side and take turns, trial by trial, so machine noise hits them
    alike: one reloader; 100 reloaders (one inotify instance each, in 100 directories) behind
    one selector; 100 libraries, 10 per directory, in one hotr.Watcher (one instance, one
    thread; timed until its thread has reloaded).  More than about 128 reloaders of their own
    would exceed the per-user inotify instances (hotr then falls back to polling).
    """
    variants = [compile_lib(work, n) for n in (1, 2)]
    setups: list[_ScaleSetup | _WatcherSetup] = [
        _ScaleSetup(work, variants, 1),
        _ScaleSetup(work, variants, 100),
        _WatcherSetup(work, variants, 1, per_dir=1),
        _WatcherSetup(work, variants, 100, per_dir=10),
    ]
    baselines = [None, setups[0].name, None, setups[2].name]
    samples: list[list[float]] = [[] for _ in setups]
    try:
        for n in range(1, trials + 1):
            for setup, out in zip(setups, samples, strict=True):
                out.append(setup.trial(n))
    finally:
        for setup in setups:
            setup.close()
    return [
        Row("scale", setup.name, out, baseline=baseline)
        for setup, out, baseline in zip(setups, samples, baselines, strict=True)
    ]


def _scale_libs(
    work: Path, variants: list[bytes], name: str, count: int, per_dir: int
) -> list[Path]:
    libs = []
    for i in range(count):
        d = work / f"{name}-{i // per_dir}"
        d.mkdir(exist_ok=True)
        libs.append(d / f"lib{i}.so")
        libs[-1].write_bytes(variants[0])
    return libs


class _ScaleSetup:
    def __init__(self, work: Path, variants: list[bytes], count: int) -> None:
        where = "" if count == 1 else ", a reloader each, one directory each"
        self.name = f"reload latency, {count} librar{'y' if count == 1 else 'ies'} watched{where}"
        self.variants = variants
        self.libs = _scale_libs(work, variants, f"scale{count}", count, 1)
        self.reloaders = [hotr.HotReloader(p, debounce=0) for p in self.libs]
        self.selector = selectors.DefaultSelector()
        for r in self.reloaders:
            r.update()
            self.selector.register(r, selectors.EVENT_READ, data=r)
        self.target = self.reloaders[count // 2]
        self.value = self.target.library.value

    def trial(self, n: int) -> float:
        started = time.perf_counter()
        place(self.libs[len(self.libs) // 2], self.variants[n % 2])
        done = False
        while not done:
            for key, _ in self.selector.select():
                r = key.data
                if r.poll():
                    r.update()
                    done = r is self.target
        assert self.value() == n % 2 + 1
        elapsed = time.perf_counter() - started
        self.target.poll()
        return elapsed

    def close(self) -> None:
        self.selector.close()
        for r in self.reloaders:
            r.close()


class _WatcherSetup:
    def __init__(self, work: Path, variants: list[bytes], count: int, per_dir: int) -> None:
        where = "" if count == 1 else f", {per_dir} per directory"
        plural = "y" if count == 1 else "ies"
        self.name = f"reload latency, {count} librar{plural} in one hotr.Watcher{where}"
        self.variants = variants
        self.libs = _scale_libs(work, variants, f"watcher{count}", count, per_dir)
        self.watcher = hotr.Watcher()
        libraries = [self.watcher.add(p, debounce=0) for p in self.libs]
        self.value = libraries[count // 2].value
        self.reloaded = threading.Event()
        hotr.reloader_of(libraries[count // 2]).on_reload(lambda old, new: self.reloaded.set())

    def trial(self, n: int) -> float:
        self.reloaded.clear()
        started = time.perf_counter()
        place(self.libs[len(self.libs) // 2], self.variants[n % 2])
        assert self.reloaded.wait(10), "the watcher did not reload"
        assert self.value() == n % 2 + 1
        elapsed = time.perf_counter() - started
        time.sleep(0.002)  # let its thread finish the housekeeping before the next change
        return elapsed

    def close(self) -> None:
        self.watcher.close()


# -- 5. endurance --------------------------------------------------------------------------------


def endurance(work: Path, reloads: int) -> list[Row]:
    """Resources before and after many reloads in one process."""
    variants = [compile_lib(work, n) for n in (1, 2)]
    lib = work / "libendure.so"
    place(lib, variants[0])
    private = Path(os.environ["HOTR_PRIVATE_DIR"])

    def measure(r: hotr.HotReloader) -> dict[str, float]:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        with open("/proc/self/maps") as f:
            mapped = {line.split()[-1] for line in f if str(private) in line}
        copies = sum(1 for p in private.rglob("*") if p.is_file())  # the live copy, the next
        return {
            "RSS MiB": rss,
            "open fds": len(os.listdir("/proc/self/fd")),
            "mapped versions": len(mapped),
            "private files": copies,
        }

    rows = []
    with hotr.HotReloader(lib, debounce=0) as r:
        value = r.update().value
        for n in range(1, 11):
            place(lib, variants[n % 2])
            r.watch_for_changes(5)
            r.update()
        r.poll()
        before = measure(r)
        for n in range(11, reloads + 11):
            place(lib, variants[n % 2])
            r.watch_for_changes(5)
            r.update()
        assert value() == n % 2 + 1
        r.poll()  # the housekeeping an idle program does: unload the replaced version
        after = measure(r)
    for key in before:
        rows.append(
            Row(
                "endurance",
                f"{key} after 10 / after {reloads + 10} reloads",
                [after[key]],
                unit="",
                extra={"before": before[key]},
            )
        )
    return rows


# -- 6. edit to answer ---------------------------------------------------------------------------


def _save_until_answered(
    r: hotr.HotReloader, src: Path, text: str, call: Callable[[], object], expected: int
) -> float:
    """Save `text` over `src` as editors do (a temporary file renamed over it); the seconds from
    the rename until the new code is loaded and `call()` answers `expected`."""
    tmp = src.with_name(src.name + ".swp")
    tmp.write_text(text)
    started = time.perf_counter()
    os.rename(tmp, src)
    while r.watch_for_changes() != 1:
        pass
    r.update()
    assert call() == expected
    return time.perf_counter() - started


def _compile_as_hotr(argv: list[str]) -> float:
    """Run a compiler as hotr's builder starts it (its own session, output to a pipe); the
    seconds from start to exit."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    proc.communicate()
    assert proc.returncode == 0, argv
    return time.perf_counter() - started


def edit_to_answer(work: Path, trials: int, cc: str) -> list[Row]:
    """Save of a C source -> new code answering, against the compiler run alone."""
    src = work / f"edit-{os.path.basename(cc)}.c"
    src.write_text(LIB_SOURCE.format(n=0))
    out = work / f"edit-{os.path.basename(cc)}.so"
    # The very command hotr runs (its include directory and dependency output included),
    # started as hotr starts it (a session of its own, output on a pipe): the rest is hotr's
    # overhead.  Compiler runs and saves take turns, so machine noise hits both alike.
    include = os.path.join(os.path.dirname(hotr.__file__), "include")
    deps = ["-MD" if os.path.basename(cc).startswith("tcc") else "-MMD", "-MF", str(out) + ".d"]
    argv = [cc, "-shared", "-fPIC", f"-I{include}", str(src), "-o", str(out), *deps]
    compile_alone, answer = [], []
    with hotr.HotReloader(src, cc=cc, debounce=0) as r:
        value = r.update().value
        for n in range(1, trials + 1):
            compile_alone.append(_compile_as_hotr(argv))
            answer.append(_save_until_answered(r, src, LIB_SOURCE.format(n=n), value, n))
            r.poll()
    name = os.path.basename(cc)
    return [
        Row("edit", f"{name}: compile alone", compile_alone),
        Row(
            "edit",
            f"{name}: save -> new code answering (hotr)",
            answer,
            baseline=f"{name}: compile alone",
        ),
    ]


# -- 7. incremental builds -----------------------------------------------------------------------


def save_one_of(work: Path, trials: int, cc: str, files: int) -> list[Row]:
    """Save one source of a `files`-source library -> new code answering, against compiling
    that one file and relinking by hand (the objects of the others already built)."""
    name = os.path.basename(cc)
    root = work / f"project-{name}-{files}"
    by_hand = root / "by-hand"
    by_hand.mkdir(parents=True)
    sources = []
    for i in range(files):
        path = root / f"s{i}.c"
        body = "".join(
            f"int f{i}_{j}(int x) {{ int s = 0; for (int k = 0; k < x; k++) s += k * {j}; "
            "return s; }\n"
            for j in range(20)
        )
        path.write_text(body + (LIB_SOURCE.format(n=0) if i == 0 else ""))
        sources.append(path)
    deps = "-MD" if name.startswith("tcc") else "-MMD"

    def compile_one(source: Path) -> None:
        obj = by_hand / f"{source.stem}.o"
        argv = [cc, "-c", "-fPIC", str(source), "-o", str(obj), deps, "-MF", f"{obj}.d"]
        subprocess.run(argv, check=True)

    for source in sources:
        compile_one(source)
    objects = [str(by_hand / f"{s.stem}.o") for s in sources]
    by_hand_times, answer = [], []
    with hotr.HotReloader(sources, cc=cc, debounce=0) as r:
        value = r.update().value
        for n in range(1, trials + 1):
            started = time.perf_counter()
            compile_one(sources[0])
            subprocess.run(
                [cc, "-shared", "-fPIC", *objects, "-o", str(by_hand / "l.so")], check=True
            )
            by_hand_times.append(time.perf_counter() - started)
            tmp = sources[0].with_name("s0.c.swp")
            tmp.write_text(sources[0].read_text().replace(f"return {n - 1}; }}", f"return {n}; }}"))
            started = time.perf_counter()
            os.rename(tmp, sources[0])
            while r.watch_for_changes() != 1:
                pass
            r.update()
            assert value() == n
            answer.append(time.perf_counter() - started)
            r.poll()
    baseline = f"{name}, {files} files: compile one + link by hand"
    return [
        Row("incremental", baseline, by_hand_times),
        Row(
            "incremental",
            f"{name}, {files} files: save one -> new code (hotr)",
            answer,
            baseline=baseline,
        ),
    ]


# -- 8. a notebook cell --------------------------------------------------------------------------

CELL_SOURCE = (
    "#include <stddef.h>\ndouble scale(const double *v, size_t n) {{ return v[0] * {n}; }}\n"
)


def cell_round_trip(work: Path, trials: int) -> list[Row]:
    """An edited %%hotr cell run -> its functions answer the new way, against the compiler run
    alone: an edit of the body (the usual one: the last prototypes hold), an edit of the
    signature (the preprocessor runs beside the compiler), and a save through a HotReloader
    with prototypes=False (what the notebook and the types cost together)."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "hotr")

    def run_cell(name: str, text: str) -> bool:
        with contextlib.redirect_stdout(io.StringIO()):  # the cell's one-line summary
            ran = shell.run_cell(f"%%hotr {name}\n{text}")  # type: ignore[no-untyped-call]
        return bool(ran.success)

    def signature(n: int) -> str:  # a new parameter name: a new outline, so cc -E runs
        return CELL_SOURCE.format(n=n).replace("*v", f"*v{n}").replace("v[0]", f"v{n}[0]")

    src = work / "cell-untyped.c"
    src.write_text(CELL_SOURCE.format(n=0))
    out = work / "cell-alone.so"
    alone = [CC, "-shared", "-fPIC", str(src), "-o", str(out), "-MMD", "-MF", f"{out}.d"]
    compile_alone: list[float] = []
    body: list[float] = []
    signed: list[float] = []
    untyped: list[float] = []
    probe = (ctypes.c_double * 1)(1.0)
    with hotr.HotReloader(src, prototypes=False, debounce=0) as r:
        scale = r.update().scale
        scale.restype = ctypes.c_double
        assert run_cell("body", CELL_SOURCE.format(n=0))
        by_body = shell.user_ns["scale"]
        assert run_cell("signature", signature(0))
        by_signature = shell.user_ns["scale"]
        for n in range(1, trials + 1):
            started = time.perf_counter()
            subprocess.run(alone, check=True)
            compile_alone.append(time.perf_counter() - started)

            for name, text, fn, samples in (
                ("body", CELL_SOURCE.format(n=n), by_body, body),
                ("signature", signature(n), by_signature, signed),
            ):
                started = time.perf_counter()
                assert run_cell(name, text)
                assert fn(probe, 1) == n
                samples.append(time.perf_counter() - started)

            text = CELL_SOURCE.format(n=n)
            untyped.append(_save_until_answered(r, src, text, lambda: scale(probe, 1), n))
            r.poll()
    shell.run_line_magic("unload_ext", "hotr")
    alone_name = "gcc: compile alone"
    return [
        Row("cell", alone_name, compile_alone),
        Row("cell", "edited %%hotr cell (body) -> answering", body, baseline=alone_name),
        Row("cell", "edited %%hotr cell (signature) -> answering", signed, baseline=alone_name),
        Row("cell", "save -> answering, prototypes=False", untyped, baseline=alone_name),
    ]


TYPED_SOURCE = "#include <stddef.h>\ndouble first(const double *v, size_t n) { return v[0]; }\n"


def typed_calls(work: Path, repeat: int) -> list[Row]:
    """A numpy array passed to a typed pointer parameter, against plain ctypes given the array's
    address (``a.ctypes.data``, the usual idiom) with ``argtypes`` set by hand."""
    import numpy as np

    src = work / "typed.c"
    src.write_text(TYPED_SOURCE)
    plain_path = work / "libtyped-plain.so"
    subprocess.run([CC, "-shared", "-fPIC", str(src), "-o", str(plain_path)], check=True)
    plain = ctypes.CDLL(str(plain_path))
    plain.first.restype = ctypes.c_double
    plain.first.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    array = np.ones(1000)
    base: list[float] = []
    mine: list[float] = []
    number = 20000
    with hotr.HotReloader(src) as r:
        typed = r.update().first
        for _ in range(repeat):  # interleaved, so drift hits both alike
            for call, fn, out in (
                ("f(a.ctypes.data, 1000)", plain.first, base),
                ("f(a, 1000)", typed, mine),
            ):
                env = {"f": fn, "a": array}
                out.append(min(timeit.repeat(call, globals=env, number=number, repeat=3)) / number)
    return [
        Row("calls", "ctypes f(a.ctypes.data, n), argtypes by hand", base, unit="ns"),
        Row(
            "calls",
            "hotr typed f(a, n): numpy array by pointer",
            mine,
            baseline="ctypes f(a.ctypes.data, n), argtypes by hand",
            unit="ns",
        ),
    ]


# -- 9. extension modules ------------------------------------------------------------------------

MODULE_SOURCE = """
#include <Python.h>
static PyObject *value(PyObject *self, PyObject *unused) {{ return PyLong_FromLong({n}); }}
static PyObject *twice(PyObject *self, PyObject *x) {{ return PyNumber_Add(x, x); }}
static PyObject *add3(PyObject *self, PyObject *const *args, Py_ssize_t n) {{
    long a = PyLong_AsLong(args[0]), b = PyLong_AsLong(args[1]), c = PyLong_AsLong(args[2]);
    return PyLong_FromLong(a + b + c);
}}
static PyMethodDef methods[] = {{
    {{"value", value, METH_NOARGS, NULL}},
    {{"twice", twice, METH_O, NULL}},
    {{"add3", (PyCFunction)(void (*)(void))add3, METH_FASTCALL, NULL}},
    {{NULL}}}};
static struct PyModuleDef def = {{PyModuleDef_HEAD_INIT, "{name}", NULL, -1, methods}};
PyMODINIT_FUNC PyInit_{name}(void) {{ return PyModule_Create(&def); }}
"""
# The same functions in a multi-phase module with no types: a version hotr may unload, so
# its calls are counted (a single-phase one stays mapped for good: its calls need no count).
MULTI_PHASE = (
    MODULE_SOURCE.replace(
        'PyModuleDef_HEAD_INIT, "{name}", NULL, -1, methods}};',
        'PyModuleDef_HEAD_INIT, "{name}", NULL, 0, methods, slots}};',
    )
    .replace(
        "PyMODINIT_FUNC PyInit_{name}(void) {{ return PyModule_Create(&def); }}",
        "PyMODINIT_FUNC PyInit_{name}(void) {{ return PyModuleDef_Init(&def); }}",
    )
    .replace(
        "static struct PyModuleDef def",
        "static int exec(PyObject *m) {{ return 0; }}\n"
        "static PyModuleDef_Slot slots[] = {{{{Py_mod_exec, exec}}, {{0, NULL}}}};\n"
        "static struct PyModuleDef def",
    )
)


def _module_command(src: Path, out: Path, cc: str) -> list[str]:
    """The command hotr runs for a module source (dependency output included)."""
    hotr_include = os.path.join(os.path.dirname(hotr.__file__), "include")
    python_include = sysconfig.get_paths()["include"]
    deps = ["-MMD", "-MF", f"{out}.d"]
    return [
        *[cc, "-shared", "-fPIC", f"-I{hotr_include}", "-isystem", python_include],
        *[str(src), "-o", str(out), *deps],
    ]


def module_calls(work: Path, repeat: int) -> list[Row]:
    """A module's function through hotr.load_module, unguarded and guarded, against the same
    builtin called directly (the module imported by importlib, no hotr), same run, interleaved:
    of a single-phase module (its versions stay mapped: the live function is a copy of the
    module's own) and of a multi-phase one (hotr may unload a version: calls are counted)."""
    rows = []
    built = {}
    for name, source in (
        ("bench_direct", MODULE_SOURCE),
        ("bench_hot", MODULE_SOURCE),
        ("bench_guarded", MODULE_SOURCE),
        ("bench_multi_direct", MULTI_PHASE),
        ("bench_multi_hot", MULTI_PHASE),
    ):
        src, out = work / f"{name}.c", work / f"{name}.so"
        src.write_text(source.format(n=1, name=name))
        subprocess.run(_module_command(src, out, CC), check=True)
        built[name] = out
    direct, multi_direct = (
        _import(name, built[name]) for name in ("bench_direct", "bench_multi_direct")
    )
    hot = hotr.load_module(built["bench_hot"], guard=False)
    guarded = hotr.load_module(built["bench_guarded"], guard=True)
    multi_hot = hotr.load_module(built["bench_multi_hot"], guard=False)
    try:
        for label, call, name in (
            ("f() METH_NOARGS", "f()", "value"),
            ("f(x) METH_O", "f(1)", "twice"),
            ("f(a, b, c) METH_FASTCALL", "f(1, 2, 3)", "add3"),
        ):
            number = 100000
            contenders = {
                f"builtin {label}": getattr(direct, name),
                f"hotr module {label}": getattr(hot, name),
                f"hotr guarded module {label}": getattr(guarded, name),
                f"builtin {label}, multi-phase": getattr(multi_direct, name),
                f"hotr module {label}, multi-phase (calls counted)": getattr(multi_hot, name),
            }
            samples: dict[str, list[float]] = {key: [] for key in contenders}
            for _ in range(repeat):  # interleaved, so drift hits all alike
                for key, fn in contenders.items():
                    best = min(timeit.repeat(call, globals={"f": fn}, number=number, repeat=3))
                    samples[key].append(best / number)
            for key in contenders:
                baseline = None
                if not key.startswith("builtin"):
                    multi = key.endswith("(calls counted)")
                    baseline = f"builtin {label}" + (", multi-phase" if multi else "")
                rows.append(Row("modules", key, samples[key], baseline=baseline, unit="ns"))
    finally:
        for module in (hot, guarded, multi_hot):
            hotr.reloader_of(module).close()
            sys.modules.pop(module.__name__, None)
    return rows


def _import(name: str, path: Path) -> types.ModuleType:
    """Import the extension module at `path` as Python does, without hotr."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def module_edit(work: Path, trials: int) -> list[Row]:
    """Save of a module's C source -> its new code answering, against the compiler run alone."""
    src = work / "bench_edit.c"
    src.write_text(MODULE_SOURCE.format(n=0, name="bench_edit"))
    out = work / "bench_edit-alone.so"
    reloaded = threading.Event()
    module = hotr.load_module(src, debounce=0, on_reload=lambda old, new: reloaded.set())
    compile_alone, answer = [], []
    try:
        value = module.value
        for n in range(1, trials + 1):
            compile_alone.append(_compile_as_hotr(_module_command(src, out, CC)))
            tmp = src.with_name(src.name + ".swp")
            tmp.write_text(MODULE_SOURCE.format(n=n, name="bench_edit"))
            reloaded.clear()
            started = time.perf_counter()
            os.rename(tmp, src)
            assert reloaded.wait(60)
            assert value() == n
            answer.append(time.perf_counter() - started)
    finally:
        hotr.reloader_of(module).close()
        sys.modules.pop("bench_edit", None)
    beyond = [a - c for a, c in zip(answer, compile_alone, strict=True)]
    return [
        Row("modules", "module: compile alone", compile_alone),
        Row(
            "modules",
            "module: save -> new code answering (hotr)",
            answer,
            baseline="module: compile alone",
        ),
        Row("modules", "module: hotr's time beyond the compile (same trial)", beyond),
    ]
