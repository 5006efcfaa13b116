"""Reload latency at every library size, back to back, through hotr.load, and at cold start.

Every hotr row has a baseline measured in the same run, trial by trial in turn with it: the
floor, a bare loop doing only what any reloader must (inotify wait, kernel copy into a private
file, dlopen, dlsym, call).  Clocks start when the change is complete: when rename(2) or the
linker has returned, in the process that made the change (Writer).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import hotr

from .cases import CC, Row

_libdl = ctypes.CDLL(None, use_errno=True)
_libdl.dlopen.restype = ctypes.c_void_p
_libdl.dlopen.argtypes = (ctypes.c_char_p, ctypes.c_int)
_libdl.dlsym.restype = ctypes.c_void_p
_libdl.dlsym.argtypes = (ctypes.c_void_p, ctypes.c_char_p)
_libdl.dlclose.argtypes = (ctypes.c_void_p,)
_VALUE = ctypes.CFUNCTYPE(ctypes.c_int)

SIZES = {"16 KiB": 16 << 10, "1 MiB": 1 << 20, "10 MiB": 10 << 20, "50 MiB": 50 << 20}
RELOCATIONS = 1_000_000

# A library of about `size` bytes (a constant table), with `relocations` R_X86_64_RELATIVE
# entries in .data.rel.ro (what large C++ libraries have: vtables, tables of pointers).
_SOURCE = """
int value(void) {{ return {n}; }}
__attribute__((used)) static const char pad[{pad}] = {{ {n} }};
__asm__(".section .data.rel.ro,\\"aw\\"\\n.balign 8\\nhotr_table:\\n"
        ".rept {relocations}\\n.quad hotr_table\\n.endr\\n.previous");
"""


def build(work: Path, n: int, size: int, relocations: int = 0) -> Path:
    """Version `n` (value() returns n) of a library of about `size` bytes."""
    out = work / f"lib-{size}-{relocations}-{n}.so"
    if not out.exists():
        src = out.with_suffix(".c")
        pad = max(1, size - (16 << 10) - relocations * 8)
        src.write_text(_SOURCE.format(n=n, pad=pad, relocations=relocations))
        subprocess.run([CC, "-shared", "-fPIC", str(src), "-o", str(out)], check=True)
    return out


def rename_into(lib: Path, data: bytes) -> None:
    """Put `data` in place the way install(1) and editors do, from this process (the first
    version, and the back-to-back loop, which times whole reloads: the Writer times the rest)."""
    tmp = lib.with_name(lib.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, lib)


def link_into(lib: Path, source: Path) -> float:
    """The linker writes the library (GNU ld unlinks and re-creates); the clock starts when it
    has exited (time.monotonic).  Only for contenders that start reading then, in this thread:
    the linker's own exit comes about a millisecond after it closed the file."""
    subprocess.run([CC, "-shared", "-fPIC", str(source), "-o", str(lib)], check=True)
    return time.monotonic()


# The writer: a process of its own, as an editor or install(1) is.  It renames the file into
# place and says when rename(2) returned (CLOCK_MONOTONIC, the same clock in every process).
# Timed here, in the benchmark's process, the start would come late whenever a reloading thread
# held the GIL while the rename returned.  The writer has a CPU of its own: on the reader's,
# the reader woken inside rename(2) would run before the writer could read the clock.  And it
# holds the file being replaced open across the rename: on ext4 a rename over a file frees the
# old file's blocks on its way out, after the event (50 us for 16 KiB, milliseconds for 10
# MiB), which would make the rename "return" after the new code answered.
_WRITER = """
import os, sys, time
old = None
for line in sys.stdin:
    if old is not None:
        os.close(old)  # the file the last rename replaced goes now, while no reload is timed
    source, lib = line.rstrip("\\n").split("\\0")
    with open(source, "rb") as f:
        data = f.read()
    with open(lib + ".tmp", "wb") as f:
        f.write(data)
    try:
        old = os.open(lib, os.O_RDONLY)
    except FileNotFoundError:
        old = None
    os.rename(lib + ".tmp", lib)
    print(time.monotonic(), flush=True)
"""


class Writer:
    """The process that makes each change (see _WRITER)."""

    def __init__(self) -> None:
        cpus = sorted(os.sched_getaffinity(0))
        mine, others = set(cpus[:1]), set(cpus[1:]) or set(cpus)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: os.sched_setaffinity(0, mine),
        )
        _pin_this_process(others)  # threads started from now on inherit it
        self.cpus = set(cpus)

    def start(self, source: Path, lib: Path) -> None:
        """Ask for the bytes of `source` to be renamed into place as `lib`."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{source}\0{lib}\n")
        self.proc.stdin.flush()

    def done_at(self) -> float:
        """When the change asked for last was complete (time.monotonic)."""
        assert self.proc.stdout is not None
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()
        _pin_this_process(self.cpus)


def _pin_this_process(cpus: set[int]) -> None:
    """Run every thread of this process on `cpus` (a thread that just ended is skipped)."""
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), cpus)


class Floor:
    """The least a reloader can do: inotify wait, kernel copy, dlopen, dlsym, call.  The file
    it copies into is made ahead, by the last housekeeping (as hotr makes it): creating a file
    costs more than copying 16 KiB, and need not wait for the change."""

    def __init__(self, lib: Path, first: bytes) -> None:
        from inotify_simple import INotify
        from inotify_simple import flags as F

        rename_into(lib, first)
        self.lib = lib
        self.inotify = INotify()
        self.inotify.add_watch(str(lib.parent), F.CLOSE_WRITE | F.MOVED_TO)
        self.copies = lib.parent / "floor-copies"
        self.copies.mkdir()
        self.handles: list[int] = []
        self.serial = 0
        self.target: tuple[bytes, int] | None = self._create()

    def reload(self) -> int:
        """Wait for the change, load it, return what the new value() says."""
        self.wait()
        return self.load()

    def wait(self) -> None:
        name = self.lib.name
        while not any(e.name == name for e in self.inotify.read()):
            pass

    def _create(self) -> tuple[bytes, int]:
        copy = str(self.copies / f"{self.serial + 1}.so")
        return copy.encode(), os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o500)

    def load(self) -> int:
        copy, target = self.target if self.target is not None else self._create()
        self.target = None
        self.serial += 1
        source = os.open(self.lib, os.O_RDONLY)
        while os.copy_file_range(source, target, 1 << 30):
            pass
        os.close(source)
        os.close(target)
        handle = _libdl.dlopen(copy, os.RTLD_NOW | os.RTLD_LOCAL)
        self.handles.append(handle)
        return int(_VALUE(_libdl.dlsym(handle, b"value"))())

    def housekeep(self) -> None:
        """What a reloader does once the new code runs: unload the old version, drop its copy."""
        while len(self.handles) > 1:
            _libdl.dlclose(self.handles.pop(0))
        for copy in self.copies.iterdir():
            if copy.name not in (f"{self.serial}.so", f"{self.serial + 1}.so"):
                copy.unlink()
        if self.target is None:
            self.target = self._create()

    def close(self) -> None:
        self.housekeep()
        if self.target is not None:
            os.close(self.target[1])
        self.inotify.close()


class ThreadFloor:
    """The floor in a thread of its own that tells the program, as hotr.load's does."""

    def __init__(self, lib: Path, first: bytes) -> None:
        self.floor = Floor(lib, first)
        self.lib = lib
        self.loaded = threading.Event()
        self.value = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            self.floor.wait()
            self.value = self.floor.load()
            self.loaded.set()

    def reload(self) -> int:
        if not self.loaded.wait(10):
            raise RuntimeError("the floor's thread did not reload within 10 s")
        self.loaded.clear()
        return self.value

    def housekeep(self) -> None:
        self.floor.housekeep()

    def close(self) -> None:
        """The daemon thread stays blocked in its read; the process ends it."""


class Manual:
    """hotr driven from one thread: watch_for_changes(), update(), a function taken before."""

    def __init__(self, lib: Path, first: bytes) -> None:
        rename_into(lib, first)
        self.reloader = hotr.HotReloader(lib, debounce=0)
        self.value = self.reloader.update().value

    def reload(self) -> int:
        while self.reloader.watch_for_changes() != 1:
            pass
        self.reloader.update()
        return int(self.value())

    def housekeep(self) -> None:
        self.reloader.poll()  # what a program does while idle: the old version is unloaded

    def close(self) -> None:
        self.reloader.close()


class Background:
    """hotr.load: its thread reloads; the program learns of it from on_reload."""

    def __init__(self, lib: Path, first: bytes) -> None:
        rename_into(lib, first)
        self.reloaded = threading.Event()
        self.lib = hotr.load(lib, debounce=0, on_reload=lambda old, new: self.reloaded.set())
        self.value = self.lib.value

    def reload(self) -> int:
        if not self.reloaded.wait(10):
            raise RuntimeError("hotr.load did not reload within 10 s")
        self.reloaded.clear()
        return int(self.value())

    def housekeep(self) -> None:
        """Its thread does it as well; done here so it cannot run into the next trial."""
        hotr.reloader_of(self.lib).poll()

    def close(self) -> None:
        hotr.reloader_of(self.lib).close()


Contender = Floor | ThreadFloor | Manual | Background


def _turns(
    contenders: list[Contender],
    way: str,
    sources: list[Path],
    trials: int,
) -> list[list[float]]:
    """Each contender reloads once per trial, in turn (who goes first rotates); samples in
    seconds from the change being complete to the new code answering.  `sources[n % 2]` is
    what the writer puts in place in trial n."""
    samples: list[list[float]] = [[] for _ in contenders]
    k = len(contenders)
    writer = Writer()
    try:
        for n in range(1, trials + 1):
            for i in [(n + j) % k for j in range(k)]:
                c = contenders[i]
                if way == "rename":
                    writer.start(sources[n % 2], _lib_of(c))
                else:
                    started = link_into(_lib_of(c), sources[n % 2])
                got = c.reload()
                answered = time.monotonic()
                samples[i].append(answered - (writer.done_at() if way == "rename" else started))
                assert got == n % 2 + 1, (type(c).__name__, got, n)
                c.housekeep()
    finally:
        writer.close()
    return samples


def _setup(work: Path, tag: str, kinds: list[type[Contender]], first: Path) -> list[Contender]:
    made: list[Contender] = []
    for kind in kinds:
        directory = work / f"{tag}-{kind.__name__.lower()}"
        directory.mkdir()
        made.append(kind(directory / "libhot.so", first.read_bytes()))
    return made


def _close(contenders: list[Contender]) -> None:
    for c in contenders:
        c.close()


def sizes(work: Path, trials: int) -> list[Row]:
    """Reload latency at 16 KiB to 50 MiB (rename), with a million relocations, and after the
    linker at 16 KiB; hotr from one thread and through hotr.load's thread."""
    rows: list[Row] = []
    cases = [(label, size, 0) for label, size in SIZES.items()]
    cases.append(
        (f"{RELOCATIONS // 1000}k relocations", (RELOCATIONS * 8) + (64 << 10), RELOCATIONS)
    )
    for label, size, relocations in cases:
        big = size >= 10 << 20 or relocations
        n_trials = max(5, trials // 6) if big else trials
        variants = [build(work, n, size, relocations) for n in (1, 2)]
        tag = label.replace(" ", "")
        kinds: list[type[Contender]] = [Floor, Manual, ThreadFloor, Background]
        contenders = _setup(work, tag, kinds, variants[0])
        try:
            floor, manual, thread_floor, background = _turns(
                contenders, "rename", variants, n_trials
            )
        finally:
            _close(contenders)
        floor_name, thread_name = f"floor, {label}", f"floor in a thread, {label}"
        rows += [
            Row("reload", floor_name, floor),
            Row("reload", f"hotr, {label}", manual, baseline=floor_name),
            Row("reload", thread_name, thread_floor),
            Row("reload", f"hotr.load (its thread), {label}", background, baseline=thread_name),
        ]
    contenders = _setup(work, "link", [Floor, Manual], build(work, 1, SIZES["16 KiB"]))
    sources = []
    for n in (1, 2):
        sources.append(work / f"link{n}.c")
        sources[-1].write_text(f"int value(void) {{ return {n}; }}\n")
    try:
        floor, manual = _turns(contenders, "link", sources, max(4, trials // 3))
    finally:
        _close(contenders)
    rows += [
        Row("reload", "floor, after the linker", floor),
        Row("reload", "hotr, after the linker", manual, baseline="floor, after the linker"),
    ]
    return rows


def _lib_of(c: Contender) -> Path:
    if isinstance(c, (Floor, ThreadFloor)):
        return c.lib
    reloader = c.reloader if isinstance(c, Manual) else hotr.reloader_of(c.lib)
    return Path(reloader.path)


def back_to_back(work: Path, reloads: int) -> list[Row]:
    """`reloads` reloads in a row, housekeeping included: total time per reload, in blocks that
    take turns with the floor's."""
    variants = [build(work, n, SIZES["16 KiB"]) for n in (1, 2)]
    contenders = _setup(work, "row", [Floor, Manual], variants[0])
    blocks = 10
    per_block: list[list[float]] = [[], []]
    data = [v.read_bytes() for v in variants]
    try:
        for block in range(blocks):
            for i, c in enumerate(contenders):
                lib = _lib_of(c)
                started = time.perf_counter()
                for n in range(block * reloads // blocks + 1, (block + 1) * reloads // blocks + 1):
                    rename_into(lib, data[n % 2])
                    assert c.reload() == n % 2 + 1
                    c.housekeep()
                per_block[i].append((time.perf_counter() - started) / (reloads // blocks))
    finally:
        _close(contenders)
    name = f"floor, {reloads} back to back (per reload)"
    return [
        Row("reload", name, per_block[0]),
        Row(
            "reload",
            f"hotr, {reloads} back to back (per reload)",
            per_block[1],
            baseline=name,
        ),
    ]


def memory(work: Path, reloads: int) -> list[Row]:
    """Growth of the process over `reloads` reloads of a 50 MiB library (in a child process)."""
    variants = [build(work, n, SIZES["50 MiB"]) for n in (1, 2)]
    size = variants[0].stat().st_size
    lib = work / "mem" / "libhot.so"
    lib.parent.mkdir()
    code = f"""
        import os, sys, hotr
        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        variants = [open(p, "rb").read() for p in sys.argv[1:3]]
        lib = {str(lib)!r}
        def put(data):
            with open(lib + ".tmp", "wb") as f:
                f.write(data)
            os.rename(lib + ".tmp", lib)
        put(variants[0])
        r = hotr.HotReloader(lib, debounce=0)
        r.update()
        r.poll()
        before = rss()
        for n in range(1, {reloads} + 1):
            put(variants[n % 2])
            r.watch_for_changes(10)
            r.update()
            r.poll()
        print(before, rss())
    """
    paths = [str(v) for v in variants]
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *paths],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ,
    ).stdout.split()
    before, after = int(out[0]), int(out[1])
    return [
        Row("memory", "library size (50 MiB)", [size / 2**20], unit="MiB"),
        Row(
            "memory",
            f"RSS growth over {reloads} reloads of it",
            [(after - before) / 2**20],
            baseline="library size (50 MiB)",
            unit="MiB",
        ),
    ]


_IMPORTS = "import ctypes, sys, time\n"
_LOADS = {
    "ctypes": "ctypes.CDLL(sys.argv[1]).value()",
    "hotr": "hotr.load(sys.argv[1]).value()",
}


def cold_start(work: Path, trials: int) -> list[Row]:
    """Three rows, each against the same child without the part measured, in turn: the
    interpreter start with and without `import hotr`; the first hotr.load answering against
    ctypes.CDLL; the exit with hotr.load's thread watching against one with hotr imported and
    the library loaded by ctypes (the exit of the modules themselves is the import's share)."""
    import compileall

    # As pip install leaves it: byte-compiled (PYTHONDONTWRITEBYTECODE would otherwise make
    # every child compile hotr's sources again, which no installed copy does).
    compileall.compile_dir(os.path.dirname(hotr.__file__), quiet=1)
    lib = work / "cold" / "libhot.so"
    lib.parent.mkdir()
    lib.write_bytes(build(work, 1, SIZES["16 KiB"]).read_bytes())
    start: dict[str, list[float]] = {"bare": [], "hotr": []}
    load: dict[str, list[float]] = {"ctypes": [], "hotr": []}
    leave: dict[str, list[float]] = {"ctypes": [], "hotr": []}
    for _ in range(trials):
        for kind, code in (("bare", _IMPORTS), ("hotr", _IMPORTS + "import hotr\n")):
            started = time.monotonic()
            subprocess.run([sys.executable, "-c", code], check=True)
            start[kind].append(time.monotonic() - started)
        for kind, call in _LOADS.items():
            code = (
                f"{_IMPORTS}import hotr\nt = time.perf_counter()\n{call}\n"
                "print(time.perf_counter() - t, time.monotonic(), flush=True)\n"
            )
            proc = subprocess.Popen(
                [sys.executable, "-c", code, str(lib)], stdout=subprocess.PIPE, text=True
            )
            assert proc.stdout is not None
            took, printed = proc.stdout.readline().split()
            proc.wait()
            ended = time.monotonic()
            proc.stdout.close()
            load[kind].append(float(took))
            leave[kind].append(ended - float(printed))
    return [
        Row("start", "interpreter start", start["bare"]),
        Row("start", "interpreter start + import hotr", start["hotr"], "interpreter start"),
        Row("start", "first call, ctypes.CDLL", load["ctypes"]),
        Row("start", "first call, hotr.load", load["hotr"], "first call, ctypes.CDLL"),
        Row("start", "exit, library loaded by ctypes", leave["ctypes"]),
        Row(
            "start",
            "exit, hotr.load's thread watching",
            leave["hotr"],
            "exit, library loaded by ctypes",
        ),
    ]
