"""Compiling C and C++ sources into one shared library: incrementally, a bounded number of
compilers at once, through the per-user object cache (_cache.py).

Each source is a unit with the files it was last built from (itself and the headers its
dependency file named) and their stat stamps.  A build recompiles only the units whose stamps
changed (a unit whose content is in the cache is taken from there instead), then relinks.  One
source is compiled and linked by a single compiler run (its library is the cached product), as
fast as a by-hand build; several are compiled to objects and linked with the C++ compiler when
any source is C++.  A stamp is trusted only when it is known to be from before the compiler
read the file: a header first seen in a dependency file and modified within FRESH_NS of the
compile is built again next time, and the product of a compile whose inputs changed while it
ran is not cached.

A module build (hotr.load_module) compiles with Python's headers; a ``.pyx`` unit is run
through Cython first (the generated C is in the work directory; the ``.pyx`` and the ``.pxd``
and ``.pxi`` files Cython read are the unit's inputs), and a C++ unit, when pybind11 is
installed, gets its headers and a type registry of each build's own: every such unit is
compiled in every build (all objects of a module must agree on the registry) and never taken
from the cache.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import _toolchain
from ._cache import ObjectCache, digest, file_digest
from ._commands import Commands
from ._exceptions import BuildError
from ._inputs import FRESH_NS, Stamp, awaited_headers, headers_on_path, read_depfile, stamp
from ._source import absolute
from ._store import fitting

# hotr.h lives here; the default command puts it on the include path (`hotr --include` prints it).
INCLUDE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "include")
_UNKNOWN: Stamp = (-1, -1, -1, -1)  # no file has this stamp: the unit is compiled again


@dataclass
class _Unit:
    """One source and what it was last built into (`product`, in the work directory)."""

    source: str
    argv: list[str]  # the compiler run, without the source, output and dependency flags
    key: str  # digest of everything but the source's and headers' contents
    product: str
    dep_flag: str  # -MMD, or -MD for tcc
    tail: list[str]  # after the source: a single source's link flags
    generated: str | None = None  # a .pyx's C, written by Cython before each compile
    every_build: bool = False  # compiled in every build, never cached (a pybind11 registry)
    known: list[str] = field(default_factory=list)  # its inputs as of the last success
    stamps: dict[str, Stamp] = field(default_factory=dict)  # those inputs when `product` was
    # made; empty when there is no good product (never built, failed, being rebuilt)
    awaited: list[str] = field(default_factory=list)  # where a missing header it includes
    # would appear (its last compile failed): creating one builds it again
    printed: str = ""  # what its last compile printed (warnings)

    def inputs_now(self) -> dict[str, Stamp]:
        return {path: stamp(path) for path in self.known or (self.source,)}


class NativeBuild:
    """Builds the shared library `output` from C and C++ `sources`, compiling only what
    changed since the last run().

    Args:
        sources: absolute paths of ``.c`` and C++ (``.cc``, ``.cpp``, ``.cxx``) sources.
        output: the library to write.
        workdir: a private directory for objects and dependency files (this build's own).
        cc, cxx: the C and C++ compilers (default ``$CC`` else ``cc``, ``$CXX`` else ``c++``).
        compile_flags: flags for every compile step (after ``$CFLAGS``/``$CXXFLAGS``).
        link_flags: flags for the link step (after the objects; then ``$LDFLAGS``).
        jobs: most compilers at once (default: the number of CPUs).
        timeout: seconds each compiler run may take.
        cache: the object cache, or None to build without one.
        module: build a Python extension module (``.pyx`` sources too; see the module docstring).
    """

    def __init__(
        self,
        sources: Sequence[str],
        output: str,
        workdir: str,
        *,
        cc: str | None = None,
        cxx: str | None = None,
        compile_flags: Sequence[str] = (),
        link_flags: Sequence[str] = (),
        jobs: int | None = None,
        timeout: float = 60.0,
        cache: ObjectCache | None = None,
        module: bool = False,
    ) -> None:
        self.output = output
        self.jobs = jobs or os.cpu_count() or 1
        # Every compile runs here, where the reloader was made: relative flags (-Iinc) and
        # the names in dependency files mean the same after the program's chdir().
        self.cwd = os.getcwd()
        self.commands = Commands(output, timeout, self.cwd)
        self._cache = cache
        self._sources = list(sources)
        self._link_flags = [*link_flags, *shlex.split(os.environ.get("LDFLAGS", ""))]
        self._registry: list[str] = []  # this build's pybind11 registry define, if any
        self.printed = ""  # what the last run()'s compilers and linker printed (warnings)
        c = _toolchain.c_compiler(cc)
        cplusplus = any(_toolchain.is_cxx(s) for s in sources)
        cxx_argv = _toolchain.cxx_compiler(cxx) if cplusplus else []
        self._linker = cxx_argv or c
        single = len(self._sources) == 1
        objects = os.path.join(workdir, "objects")
        with contextlib.suppress(FileExistsError):
            os.mkdir(objects, 0o700)
        pybind11 = _toolchain.pybind11_include() if module and cplusplus else None
        self._units = []
        for i, source in enumerate(self._sources):
            cplusplus = _toolchain.is_cxx(source)
            compiler = cxx_argv if cplusplus else c
            flags = [*_toolchain.python_flags(), *compile_flags] if module else compile_flags
            if cplusplus and pybind11 is not None:
                flags = ["-isystem", pybind11, *flags]
            argv = _compile_argv(compiler, flags, cplusplus, single)
            name = fitting(f"{i}-{os.path.basename(source)}")
            tail = self._link_flags if single else []
            pyx = module and source.endswith(".pyx")
            translator = _toolchain.cython_identity() if pyx else ""
            self._units.append(
                _Unit(
                    source,
                    argv,
                    digest(
                        "hotr-unit-1",
                        _toolchain.identity(compiler),
                        *argv,
                        self.cwd,
                        source,
                        "\0",
                        *tail,
                        "\0",
                        translator,
                    ),
                    os.path.join(objects, f"{name}.{'so' if single else 'o'}"),
                    "-MD" if _toolchain.is_tcc(compiler) else "-MMD",
                    tail,
                    generated=os.path.join(objects, f"{name}.c") if pyx else None,
                    every_build=cplusplus and pybind11 is not None,
                )
            )

    def headers(self) -> set[str]:
        """The headers the last build used (from the compilers' dependency output)."""
        found = {path for unit in self._units for path in unit.known}
        return found - set(self._sources)

    def awaited(self) -> set[str]:
        """Where the headers that failed compiles include and that do not exist would appear."""
        return {path for unit in self._units for path in unit.awaited}

    def cancel(self) -> None:
        """Kill the compilers running now and start no more (the reloader is closing)."""
        self.commands.cancel()

    def run(self) -> None:
        """Bring the library up to date.  Raises BuildError: a source was removed, or some
        compiles failed (the diagnostics of each failed source, once), or the link failed."""
        for unit in self._units:
            if stamp(unit.source) is None:
                raise BuildError(
                    self.output,
                    "",
                    None,
                    f"{unit.source}: the source file was removed",
                    reason="a source file was removed; restore it, or start again without it",
                )
        if self._cache is not None:
            self._cache.flush(5.0)  # the last build's objects, so that this one finds them
        digests: dict[str, tuple[Stamp, str | None]] = {}
        todo: list[tuple[_Unit, dict[str, Stamp], str | None]] = []
        fresh: list[_Unit] = []  # compiled now or taken from the cache: their warnings show
        every = any(unit.every_build for unit in self._units)
        self._registry = [_toolchain.pybind11_registry()] if every else []
        for unit in self._units:
            now = unit.inputs_now()
            if unit.every_build:
                unit.stamps = {}
                todo.append((unit, now, None))
                fresh.append(unit)
                continue
            if unit.stamps and now == unit.stamps:  # its product is in the private directory
                continue
            key = self._from_cache(unit, now, digests)
            if not unit.stamps:
                todo.append((unit, now, key))
            fresh.append(unit)
        self._compile_all(todo)
        printed = "".join(unit.printed for unit in fresh)
        if len(self._units) == 1:
            _install(self._units[0].product, self.output, keep=True)
        else:
            printed += self.commands.run(
                [
                    *self._linker,
                    "-shared",
                    "-fPIC",
                    *(u.product for u in self._units),
                    "-o",
                    self.output,
                    *self._link_flags,
                ]
            )
        self.printed = printed

    def _from_cache(
        self, unit: _Unit, now: dict[str, Stamp], digests: dict[str, tuple[Stamp, str | None]]
    ) -> str | None:
        """Take the unit's product from the cache if it holds one for the sources as they are
        now (the unit's stamps are then set, and None returned); else return the unit key for
        storing what the compile makes (None without a cache, and stamps left empty)."""
        unit.stamps = {}
        if self._cache is None:
            return None
        content = file_digest(unit.source)
        if content is None:
            return None
        # The headers found on the include path are keyed by their content; which ones are
        # found, by the names in its directories (a header added in front shadows another).
        key = digest(unit.key, content, *headers_on_path(unit.source, unit.argv, self.cwd))

        def header_digest(path: str) -> str | None:
            if path not in digests:
                before = stamp(path)
                digests[path] = (before, file_digest(path) if before is not None else None)
            return digests[path][1]

        found = self._cache.lookup(key, header_digest)
        if found is None or not self._cache.fetch(found[1], unit.product, found[3]):
            return key
        unit.stamps = {unit.source: now[unit.source]}
        unit.stamps.update((path, digests[path][0]) for path in found[0])
        unit.printed = found[2]  # its warnings, as if compiled again (as ccache does)
        unit.known = list(unit.stamps)
        return None

    def _compile_all(self, todo: list[tuple[_Unit, dict[str, Stamp], str | None]]) -> None:
        """Compile the units, at most `jobs` at once; raise BuildError naming every source
        that failed, after all have run (the others' objects are kept)."""
        failures: list[tuple[int, BuildError]] = []
        if len(todo) <= 1 or self.jobs == 1:
            for unit, now, key in todo:
                try:
                    self._compile(unit, now, key)
                except BuildError as exc:
                    failures.append((self._units.index(unit), exc))
        else:
            self._compile_parallel(todo, failures)
        if failures:
            failures.sort(key=lambda f: f[0])
            first = failures[0][1]
            raise BuildError(
                self.output,
                first.command,
                first.returncode,
                "\n".join(exc.diagnostics.rstrip("\n") for _, exc in failures) + "\n",
                timeout=first.timeout,
                reason=first.reason if len(failures) == 1 else None,
            )

    def _compile_parallel(
        self,
        todo: list[tuple[_Unit, dict[str, Stamp], str | None]],
        failures: list[tuple[int, BuildError]],
    ) -> None:
        waiting: queue.SimpleQueue[tuple[_Unit, dict[str, Stamp], str | None]] = queue.SimpleQueue()
        for item in todo:
            waiting.put(item)
        stop = threading.Event()
        crashed: list[BaseException] = []

        def work() -> None:
            while not stop.is_set():
                try:
                    unit, now, key = waiting.get_nowait()
                except queue.Empty:
                    return
                try:
                    self._compile(unit, now, key)
                except BuildError as exc:
                    failures.append((self._units.index(unit), exc))
                except BaseException as exc:  # re-raised in the building thread
                    crashed.append(exc)
                    stop.set()

        workers = [
            threading.Thread(target=work, name="hotr-compile", daemon=True)
            for _ in range(min(self.jobs, len(todo)))
        ]
        for worker in workers:
            worker.start()
        try:
            for worker in workers:
                worker.join()
        except BaseException:  # Ctrl-C: stop the compilers, then let it through
            stop.set()
            self.commands.kill_running()
            for worker in workers:
                worker.join()
            raise
        if crashed:
            raise crashed[0]

    def _translate(self, unit: _Unit) -> str:
        """Run Cython on a ``.pyx`` unit; return the C file it wrote."""
        assert unit.generated is not None
        argv = _toolchain.cython_argv(unit.source, unit.generated)
        if argv is None:
            raise BuildError(
                self.output,
                "",
                None,
                f"{unit.source}: Cython is not installed in {sys.executable}",
                reason="a .pyx source needs Cython (pip install cython)",
            )
        unit.printed = self.commands.run(argv)
        return unit.generated

    def _compile(self, unit: _Unit, before: dict[str, Stamp], key: str | None) -> None:
        """Run the compiler for one unit and put its product in place (and in the cache)."""
        started = time.time_ns()
        cache = self._cache if key is not None else None
        out = f"{unit.product}.new"
        if cache is not None:
            try:
                out = cache.temp_path(".o")
            except OSError:
                cache = None  # the cache directory went away: build without it
        depfile = f"{unit.product}.d"
        try:
            unit.printed = ""
            compiled = self._translate(unit) if unit.generated else unit.source
            registry = self._registry if unit.every_build else []
            output = ["-o", out, unit.dep_flag, "-MF", depfile]
            try:
                unit.printed += self.commands.run(
                    [*unit.argv, *registry, compiled, *output, *unit.tail]
                )
            except BuildError as exc:
                if exc.returncode is not None:  # it ran, and failed: for want of a header?
                    # Asked only when it may be: the question is one more compiler run.
                    wanting = _toolchain.may_want_header(unit.argv, exc.diagnostics)
                    unit.awaited = self._missing(unit, compiled) if wanting else []
                raise
            unit.awaited = []
            named = read_depfile(depfile, one_per_line=unit.dep_flag == "-MD", base=self.cwd)
            if unit.generated:
                named |= _cython_inputs(f"{unit.generated}.dep", self.cwd)
            paths = [unit.source, *sorted(named - {unit.source, absolute(compiled, self.cwd)})]
            stamps: dict[str, Stamp] = {}
            stable = True
            for path in paths:
                after = stamp(path)
                if path in before:
                    stamps[path] = before[path]
                    stable = stable and before[path] == after
                elif after is not None and after[2] < started - FRESH_NS:
                    stamps[path] = after
                else:
                    stamps[path], stable = _UNKNOWN, False
            if cache is not None and key is not None and stable:
                _install(out, unit.product, keep=True)
                if _store(cache, key, stamps, out, unit.printed):
                    out = ""  # the cache's now
            else:
                _install(out, unit.product)
            unit.stamps, unit.known = stamps, paths
        finally:
            if out:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(out)

    def _missing(self, unit: _Unit, compiled: str) -> list[str]:
        """Where the headers `compiled` includes that exist nowhere would appear (none when
        the compiler cannot say)."""
        depfile = f"{unit.product}.missing.d"
        try:
            self.commands.run([*unit.argv, "-E", "-M", "-MG", "-MF", depfile, compiled])
        except BuildError:
            return []
        return awaited_headers(depfile, unit.source, unit.argv, self.cwd)


def _cython_inputs(depfile: str, cwd: str) -> set[str]:
    """The files Cython's dependency file names, but Cython's own ``.pxd`` files.  Cython
    names them relative to the directory it ran in, `cwd` (whose path has no symlinks:
    normpath is exact)."""
    own = _toolchain.cython_includes()
    found = {os.path.normpath(p) for p in read_depfile(depfile, one_per_line=False, base=cwd)}
    return {p for p in found if own is None or not p.startswith(own + os.sep)}


def _compile_argv(
    compiler: list[str], flags: Sequence[str], cplusplus: bool, single: bool
) -> list[str]:
    """The compiler run for one source, up to the source and output: ``-c`` for an object,
    ``-shared`` for a single source's library; ``-fno-gnu-unique`` for C++ with g++ (a
    unique symbol would keep every old version mapped and shared by the new one)."""
    env = shlex.split(os.environ.get("CXXFLAGS" if cplusplus else "CFLAGS", ""))
    unique = ["-fno-gnu-unique"] if cplusplus and _toolchain.is_gcc(compiler) else []
    step = ["-shared"] if single else ["-c"]
    return [*compiler, *step, "-fPIC", f"-I{INCLUDE_DIR}", *env, *unique, *flags]


def _store(
    cache: ObjectCache, key: str, stamps: dict[str, Stamp], produced: str, printed: str
) -> bool:
    """Give a compile's product to the cache with the digests of its headers (`stamps` but
    the first, the source) and what the compile printed, unless a header changed since it was
    stamped or cannot be read."""
    headers = list(stamps)[1:]
    contents = {path: file_digest(path) for path in headers}
    if any(stamp(path) != stamps[path] for path in headers):
        return False  # changed while it was read: the digest may not be what was compiled
    found = {path: sha for path, sha in contents.items() if sha is not None}
    if len(found) != len(contents):
        return False
    cache.store_later(key, found, produced, printed)
    return True


def _install(source: str, dest: str, *, keep: bool = False) -> None:
    """Put `source` at `dest`, whose old file only this build reads: moved (or, with `keep`,
    hard-linked; copied across file systems).  The old file is unlinked first: ext4 flushes
    a file renamed over another to disk (auto_da_alloc), milliseconds on every save."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(dest)
    try:
        if keep:
            os.link(source, dest)
        else:
            os.rename(source, dest)
        return
    except OSError:
        pass
    temp = f"{dest}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        shutil.copyfile(source, temp)
        os.rename(temp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
