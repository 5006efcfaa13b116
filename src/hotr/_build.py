"""Build a shared library from its sources: the default compilers or the user's own command.

The default build (NativeBuild, _compile.py) compiles C with ``$CC`` (else ``cc``) and C++ with
``$CXX`` (else ``c++``), ``-fPIC -I<hotr.h's directory>`` and ``$CFLAGS``/``$CXXFLAGS``, only
the sources that changed, through the per-user object cache, then links with ``$LDFLAGS``.
The user's one list of flags is split between the compile and link steps (_toolchain.py).
Headers found in the compilers' dependency files are watched too.  A custom command is an argv
list run as is: never through a shell.

For an extension module (hotr.load_module) the default build adds Python's headers, runs
Cython on ``.pyx`` sources first, and gives C++ sources pybind11's headers when it is installed
(see NativeBuild).
"""

from __future__ import annotations

import os
import time

from ._exceptions import BuildError
from ._log import logger
from ._signals import deferred
from ._store import fitting

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._catalog import PrototypeCatalog, Reading
    from ._commands import Commands
    from ._compile import NativeBuild
    from ._tracker import ChangeTracker

SOURCE_SUFFIXES = (".c", ".cc", ".cpp", ".cxx", ".C", ".c++")
MODULE_SUFFIXES = (*SOURCE_SUFFIXES, ".pyx")  # what a module build compiles (.pyx: Cython)


def is_source(path: str, *, module: bool = False) -> bool:
    """True if `path` names a C or C++ source file that the default command can compile (for
    a `module`, a Cython ``.pyx`` too)."""
    return path.endswith(MODULE_SUFFIXES if module else SOURCE_SUFFIXES)


def library_name(source: str) -> str:
    """The name of the library built from `source`: ``kernel.c`` -> ``libkernel.so``."""
    stem = os.path.splitext(os.path.basename(source))[0]
    return fitting(f"lib{stem}.so")


class Builder:
    """How to turn `sources` into the shared library at `output`: a custom argv run as is, or
    the default compilers (NativeBuild) with the user's flags split between the compile and
    link steps.

    Args:
        sources: files whose change triggers a build (absolute paths).
        output: the library the build writes.
        workdir: private directory for dependency files and objects.
        command: a custom argv, or None for the default compilers.
        cc: the C compiler for the default build (None: ``$CC``, else ``cc``).
        flags: extra flags for the default build, split by kind (_toolchain.py).
        timeout: seconds a build step may take before it is killed.
        compile_flags, link_flags: extra flags for only the compile or only the link step.
        jobs: most compilers at once (None: the number of CPUs).
        module: build a Python extension module (hotr.load_module).
    """

    def __init__(
        self,
        sources: list[str],
        output: str,
        workdir: str,
        command: list[str] | None = None,
        cc: str | None = None,
        flags: Sequence[str] = (),
        timeout: float = 60.0,
        *,
        compile_flags: Sequence[str] = (),
        link_flags: Sequence[str] = (),
        jobs: int | None = None,
        module: bool = False,
    ) -> None:
        self.sources = sources
        self.output = output
        self.command = command
        # Imported here: `import hotr` needs is_source(), not the compilers' machinery.
        import shlex

        from ._cache import open_cache
        from ._commands import Commands
        from ._compile import INCLUDE_DIR, NativeBuild
        from ._toolchain import c_compiler, split_flags

        self._native: NativeBuild | None = None
        self._commands: Commands
        self._preprocessor: list[str] | None = None
        if command is None:
            split_compile, split_link = split_flags(flags)
            self._preprocessor = [
                *c_compiler(cc),
                "-E",
                f"-I{INCLUDE_DIR}",
                *shlex.split(os.environ.get("CFLAGS", "")),
                *split_compile,
                *compile_flags,
            ]
            self._native = NativeBuild(
                sources,
                output,
                workdir,
                cc=cc,
                compile_flags=[*split_compile, *compile_flags],
                link_flags=[*split_link, *link_flags],
                jobs=jobs,
                timeout=timeout,
                cache=open_cache(),
                module=module,
            )
            self._commands = self._native.commands
        else:
            self._commands = Commands(output, timeout, os.getcwd())

    def inputs(self) -> set[str]:
        """Every file whose change calls for a new build: the sources and the headers they use."""
        if self._native is None:
            return set(self.sources)
        return set(self.sources) | self._native.headers() | self._native.awaited()

    def run(self) -> tuple[float, str]:
        """Build; return the seconds it took and what the build printed (its warnings).
        Raises BuildError with the diagnostics."""
        started = time.perf_counter()
        printed = ""
        if self._native is not None:
            self._native.run()
            printed = self._native.printed
        elif self.command is not None:
            printed = self._commands.run(self.command)
        return time.perf_counter() - started, printed

    def preprocessor(self) -> list[str] | None:
        """The C compiler and compile flags of the default build with ``-E``: how prototypes
        are read (None for a custom command, whose flags hotr does not know)."""
        return self._preprocessor

    def cwd(self) -> str:
        """The directory every build step runs in: the working directory when it was made."""
        return self._commands.cwd

    def jobs(self) -> int:
        """Most compilers the default build runs at once."""
        return self._native.jobs if self._native is not None else 1

    def headers(self) -> set[str]:
        """The headers the last build used."""
        return self._native.headers() if self._native is not None else set()

    def cancel(self) -> None:
        """Kill the build steps running now and start no more (the reloader is closing);
        the build fails with BuildError."""
        self._commands.cancel()


class BuildRunner:
    """Runs one reloader's builds: one at a time, each when its inputs changed since the last
    one started.  A build that fails waits for the next change; one interrupted (Ctrl-C) is
    run again by the next call."""

    def __init__(
        self,
        builder: Builder,
        tracker: ChangeTracker,
        label: str,
        catalog: PrototypeCatalog | None = None,
    ) -> None:
        self.builder = builder
        self.catalog = catalog
        self._label = label
        self.failure: BuildError | None = None  # the last build's error, until one succeeds
        self.printed = ""  # what the last build that succeeded printed (warnings)
        self._tracker = tracker
        import threading  # here: `import hotr` need not import it (see _threads.py)

        self._cond = threading.Condition()
        self._building = False
        self.started_from = 0  # the input generation the last build started from
        self._timed_out = False  # the last build was killed for its time: update() tries again

    def wanted(self, *, held: bool = False) -> bool:
        """True if the inputs changed since the last build started (with `held`, also if a
        change is still held back by the debounce, or the last build was killed for its time)."""
        if self._tracker.snapshot().inputs > self.started_from:
            return True
        return held and (self._timed_out or self._tracker.inputs_held())

    def run(self, *, wait: bool, held: bool = False) -> None:
        """Build if wanted.  With `wait`, a build running in another thread is waited for
        first (there is nothing loaded to keep using meanwhile); without, this returns at once.
        `held`: changes the debounce holds back count (update() was asked for).

        Raises BuildError (also kept in `failure`); the tracker hears of a new library.
        """
        with self._cond:
            while self._building:
                if not wait:
                    return
                self._cond.wait()
            if not self.wanted(held=held):
                return
            generation = self._tracker.take_inputs()
            previous, self.started_from = self.started_from, generation
            self._building, self._timed_out = True, False
        seconds: float | None = None
        printed = ""
        reading: Reading | None = None
        try:
            if self.catalog is not None:
                # Held back: a Ctrl-C between its preprocessor's start and `reading` would
                # leave the process unreaped (a zombie), since nothing could then finish() it.
                with deferred():
                    reading = self.catalog.start(self.builder.headers())  # beside the compile
            seconds, printed = self.builder.run()
        except BuildError as exc:
            self.failure = exc
            self._timed_out = exc.timeout is not None  # a slow machine, not the sources
            raise
        except BaseException:
            with self._cond:
                self.started_from = previous
            raise
        finally:
            try:
                if self.catalog is not None and reading is not None:
                    built = self.builder.output if seconds is not None else None
                    self.catalog.finish(reading, built, self.builder.headers())
            finally:
                with self._cond:
                    self._building = False
                    self._cond.notify_all()
                self._tracker.watch_inputs(self.builder.inputs())
                self._tracker.build_done(seconds, printed)
        self.failure = None
        self.printed = printed
        logger.info("built %s in %.1f ms", self._label, seconds * 1000)

    def cancel(self) -> None:
        """Kill a build in progress (the reloader is closing)."""
        self.builder.cancel()
