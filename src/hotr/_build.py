"""Build a shared library from its sources: the default C compiler command or the user's own.

The default command is ``$CC`` (else ``cc``) ``-shared -fPIC -I<hotr.h's directory> $CFLAGS
<sources> -o <output>``
with the compiler's dependency output (``-MMD -MF``; ``-MD`` for tcc, which lists only user
headers with it), then the user's flags and ``$LDFLAGS``, so libraries (``-lm``) come after the
sources.  Headers found in the dependency files are watched too.  Several sources are compiled
one object each (in parallel), because one compiler run writes a single dependency file.
A custom command is an argv list run as is: never through a shell.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._exceptions import BuildError
from ._source import absolute

logger = logging.getLogger("hotr")

if TYPE_CHECKING:
    from ._tracker import ChangeTracker

SOURCE_SUFFIXES = (".c", ".cc", ".cpp", ".cxx", ".C")
# hotr.h lives here; the default command puts it on the include path (`hotr --include` prints it).
INCLUDE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "include")


def is_source(path: str) -> bool:
    """True if `path` names a C or C++ source file that the default command can compile."""
    return path.endswith(SOURCE_SUFFIXES)


def library_name(source: str) -> str:
    """The name of the library built from `source`: ``kernel.c`` -> ``libkernel.so``."""
    stem = os.path.splitext(os.path.basename(source))[0]
    return f"lib{stem}.so"


@dataclass
class Builder:
    """How to turn `sources` into the shared library at `output`.

    Attributes:
        sources: files whose change triggers a build (absolute paths).
        output: the library the build writes.
        command: a custom argv, or None for the default compiler command.
        cc: the compiler for the default command (None: ``$CC``, else ``cc``).
        flags: extra compiler flags for the default command.
        timeout: seconds a build may take before it is killed.
        workdir: private directory for dependency files and objects.
    """

    sources: list[str]
    output: str
    workdir: str
    command: list[str] | None = None
    cc: str | None = None
    flags: Sequence[str] = ()
    timeout: float = 60.0
    headers: set[str] = field(default_factory=set)
    _running: set[subprocess.Popen[str]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def inputs(self) -> set[str]:
        """Every file whose change calls for a new build: the sources and the headers they use."""
        return set(self.sources) | self.headers

    def run(self) -> float:
        """Build; return the seconds it took.  Raises BuildError with the diagnostics."""
        started = time.perf_counter()
        if self.command is not None:
            self._run(self.command)
        elif len(self.sources) == 1:
            depfile = os.path.join(self.workdir, "deps.d")
            self._run(
                [
                    *self._compile_prefix(),
                    self.sources[0],
                    "-o",
                    self.output,
                    *self._dep_flags(depfile),
                    *self._link_flags(),
                ]
            )
            self.headers = _read_depfiles([depfile], self.sources)
        else:
            self._run_many()
        return time.perf_counter() - started

    def _compiler(self) -> list[str]:
        return shlex.split(self.cc or os.environ.get("CC") or "cc")

    def _compile_prefix(self) -> list[str]:
        colour = ["-fdiagnostics-color=always"] if _colour_wanted(self._compiler()) else []
        cflags = shlex.split(os.environ.get("CFLAGS", ""))
        return [*self._compiler(), "-shared", "-fPIC", *colour, f"-I{INCLUDE_DIR}", *cflags]

    def _link_flags(self) -> list[str]:
        return [*self.flags, *shlex.split(os.environ.get("LDFLAGS", ""))]

    def _dep_flags(self, depfile: str) -> list[str]:
        tcc = os.path.basename(self._compiler()[0]).startswith("tcc")
        return ["-MD" if tcc else "-MMD", "-MF", depfile]

    def _run_many(self) -> None:
        objects, depfiles, running = [], [], []
        for i, source in enumerate(self.sources):
            obj = os.path.join(self.workdir, f"{i}-{os.path.basename(source)}.o")
            objects.append(obj)
            depfiles.append(obj[:-2] + ".d")
            argv = [
                *self._compile_prefix(),
                *self.flags,
                "-c",
                source,
                "-o",
                obj,
                *self._dep_flags(depfiles[-1]),
            ]
            running.append((argv, self._start(argv)))
        try:
            for argv, proc in running:  # all compilers run at once; report the first failure
                self._finish(argv, proc)
        except BaseException:
            for _, proc in running:  # the others are of no use now
                _kill(proc)
                proc.wait()
                with self._lock:
                    self._running.discard(proc)
            raise
        self._run([*self._compile_prefix(), *objects, "-o", self.output, *self._link_flags()])
        self.headers = _read_depfiles(depfiles, self.sources)

    def _run(self, argv: list[str]) -> None:
        self._finish(argv, self._start(argv))

    def cancel(self) -> None:
        """Kill the builds running now (their process groups); they fail with BuildError."""
        with self._lock:
            running = list(self._running)
        for proc in running:
            _kill(proc)

    def _start(self, argv: list[str]) -> subprocess.Popen[str]:
        try:
            # A session of its own, so a timeout can kill the whole build (make, cargo...).
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                start_new_session=True,
            )
        except OSError as exc:
            raise BuildError(
                self.output, shlex.join(argv), None, f"cannot run {argv[0]!r}: {exc.strerror}"
            ) from exc
        with self._lock:
            self._running.add(proc)
        return proc

    def _finish(self, argv: list[str], proc: subprocess.Popen[str]) -> None:
        try:
            output, _ = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            output, _ = proc.communicate()
            raise BuildError(
                self.output, shlex.join(argv), None, output, timeout=self.timeout
            ) from None
        except BaseException:  # Ctrl-C: the build is in its own session, so stop it here
            _kill(proc)
            proc.wait()
            raise
        finally:
            with self._lock:
                self._running.discard(proc)
        if proc.returncode != 0:
            raise BuildError(self.output, shlex.join(argv), proc.returncode, output)


def _kill(proc: subprocess.Popen[str]) -> None:
    """Kill the build's whole process group; it may have ended already."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


class BuildRunner:
    """Runs one reloader's builds: one at a time, each when its inputs changed since the last
    one started.  A build that fails waits for the next change; one interrupted (Ctrl-C) is
    run again by the next call."""

    def __init__(self, builder: Builder, tracker: ChangeTracker, label: str) -> None:
        self.builder = builder
        self._label = label
        self.failure: BuildError | None = None  # the last build's error, until one succeeds
        self._tracker = tracker
        self._cond = threading.Condition()
        self._building = False
        self.started_from = 0  # the input generation the last build started from

    def wanted(self) -> bool:
        """True if the inputs changed since the last build started."""
        return self._tracker.snapshot().inputs > self.started_from

    def run(self, *, wait: bool) -> None:
        """Build if wanted.  With `wait`, a build running in another thread is waited for
        first (there is nothing loaded to keep using meanwhile); without, this returns at once.

        Raises BuildError (also kept in `failure`); the tracker hears of a new library.
        """
        with self._cond:
            while self._building:
                if not wait:
                    return
                self._cond.wait()
            if not self.wanted():
                return
            generation = self._tracker.take_inputs()
            previous, self.started_from = self.started_from, generation
            self._building = True
        seconds: float | None = None
        try:
            seconds = self.builder.run()
        except BuildError as exc:
            self.failure = exc
            raise
        except BaseException:
            with self._cond:
                self.started_from = previous
            raise
        finally:
            with self._cond:
                self._building = False
                self._cond.notify_all()
            self._tracker.watch_inputs(self.builder.inputs())
            self._tracker.build_done(seconds)
        self.failure = None
        logger.info("built %s in %.1f ms", self._label, seconds * 1000)

    def cancel(self) -> None:
        """Kill a build in progress (the reloader is closing)."""
        self.builder.cancel()


def _colour_wanted(compiler: list[str]) -> bool:
    """The compiler's own colours when hotr's stderr is a terminal (gcc and clang know the flag)."""
    name = os.path.basename(compiler[0])
    return sys.stderr.isatty() and not name.startswith("tcc") and "NO_COLOR" not in os.environ


def _read_depfiles(paths: list[str], sources: list[str]) -> set[str]:
    """Headers named in make-style dependency files, minus the sources themselves."""
    headers: set[str] = set()
    for path in paths:
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        for rule in text.replace("\\\n", " ").splitlines():
            _, _, deps = rule.partition(": ")
            words = deps.replace("\\ ", "\0").split()
            headers.update(absolute(w.replace("\0", " ")) for w in words)
    return headers - set(sources)
