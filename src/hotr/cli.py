"""The ``hotr`` command: build, load, call and hot-reload a library with no Python written.

Exit codes: 0 after Ctrl-C or SIGTERM (a clean stop, whenever it comes), 1 for a user error (a
file, compiler or directory named that cannot be used: one line on stderr), 2 for a usage error
(the command line itself is wrong: an unknown option, a bad value, options that contradict).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import math
import os
import re
import shlex
import shutil
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from importlib.resources import as_file, files
from types import FrameType

from . import __version__, _env
from ._build import SOURCE_SUFFIXES, is_source
from ._compile import INCLUDE_DIR
from ._exceptions import BuildError, CrashError, HotReloadError, LoadError, SymbolNotFoundError
from ._library import GUARD_SUPPORTED
from ._reloader import HotReloader
from ._store import ensure_private_directory

DEFAULT_CALL = "hello_world_func"  # the seed example's function
_libc = ctypes.CDLL(None)
_STOPS = (signal.SIGINT, signal.SIGTERM)
# What compilers start a message with, and its colour on a terminal (as gcc colours them).
_MARKS = re.compile(r"\b(fatal error|error|warning|note):")
_MARK_COLOURS = {"fatal error": "1;31", "error": "1;31", "warning": "1;35", "note": "1;36"}

USAGE = """hotr run [TARGET ...] [--call SYMBOL] [--build CMD --output PATH] [--cc CC]
                [-j N | --jobs N] [--timeout SECONDS] [--debounce SECONDS] [--poll-interval SECONDS]
                [--backend {auto,inotify,poll}] [--keep-globals] [--probe] [--no-guard]
                [--quiet | --verbose] [-- FLAGS ...]"""


class UserError(Exception):
    """Something named on the command line cannot be used; the message says what and the fix."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default: sys.argv[1:]); return the exit code.

    Ctrl-C and SIGTERM stop it with status 0 at any point, after the cleanup hooks ran.  Called
    with an `argv` (from Python), it puts the previous signal handlers back when it returns.
    """
    previous = {signum: signal.signal(signum, _stop) for signum in _STOPS}
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:  # before anything was loaded: nothing to report or close
        return 0
    finally:
        if argv is not None:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        # A KeyboardInterrupt that left string code (a dataclass or namedtuple being made, as
        # modules imported on first use do) sets CPython's "unhandled KeyboardInterrupt" flag,
        # even though it was caught here: `python -m hotr` would then kill itself with SIGINT
        # after its exit(0).  Each run of string code clears that flag as it starts.
        exec("")


def _stop(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C or SIGTERM: stop, and let nothing interrupt the cleanup that follows."""
    for each in _STOPS:
        signal.signal(each, signal.SIG_IGN)
    raise KeyboardInterrupt


def _main(args: list[str]) -> int:
    compiler_flags: list[str] = []
    if "--" in args:  # everything after -- goes to the compiler untouched
        cut = args.index("--")
        args, compiler_flags = args[:cut], args[cut + 1 :]
    parser, run = _parser()
    options, unknown = parser.parse_known_args(args)
    if unknown:  # said by the parser of the command, with its usage line
        (run if options.command == "run" else parser).error(
            f"unrecognized arguments: {' '.join(unknown)}"
        )
    if options.include:
        print(INCLUDE_DIR)
        return 0
    if options.command is None:
        parser.print_help(sys.stderr)
        return 2
    _check_usage(run, options, compiler_flags)
    out = Output(quiet=options.quiet, colour=_colour_wanted())
    level = logging.INFO if options.verbose else logging.WARNING
    logging.basicConfig(format="hotr: %(message)s", level=level)
    try:
        with _poll_interval(options.poll_interval):
            return _run(options, compiler_flags, out)
    except UserError as exc:
        out.error(str(exc))
        return 1


def _seconds(minimum: float, *, inclusive: bool) -> Callable[[str], float]:
    """An argparse type: a finite number of seconds above (or at) `minimum`."""
    relation = ">=" if inclusive else ">"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if math.isinf(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number of seconds")
        if math.isnan(value) or value < minimum or (value == minimum and not inclusive):
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a number of seconds {relation} {minimum:g}"
            )
        return value

    return parse


def _symbol(text: str) -> str:
    """An argparse type: a symbol's name, not empty."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not a function's name")
    return text


def _count(text: str) -> int:
    """An argparse type: a whole number, at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(
        prog="hotr",
        description="Hot-reload native shared libraries inside a running process.",
        epilog="Exit codes: 0 stopped by Ctrl-C or SIGTERM, 1 user error, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"hotr {__version__}")
    parser.add_argument(
        "--include",
        action="store_true",
        help="print the directory of hotr.h (for cc -I) and exit",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="build, load and call a library, then reload it on every change",
        description=(
            "Build TARGET if it is C source, load it, call the --call functions, then watch: "
            "on every save (of a source, a header it includes, or the .so) rebuild, reload "
            "and call them again.  With no TARGET, run the bundled example from a copy you "
            "can edit.  Arguments after -- go to the compiler.  Ctrl-C or SIGTERM stops it."
        ),
        usage=USAGE,
        epilog="Exit codes: 0 stopped by Ctrl-C or SIGTERM, 1 user error, 2 usage error.",
    )
    run.add_argument(
        "targets", nargs="*", metavar="TARGET", help="C source file(s), or one .so library"
    )
    run.add_argument(
        "--call",
        action="append",
        type=_symbol,
        metavar="SYMBOL",
        help="a function taking no arguments to call after each load, as void SYMBOL(void) "
        f"(repeatable; its return value is ignored; default {DEFAULT_CALL} when the library "
        "has it)",
    )
    run.add_argument(
        "--build",
        metavar="CMD",
        help='your own build command, e.g. "make" or "cargo build" (split like a shell, never '
        "run by one), run when a TARGET changes; needs --output",
    )
    run.add_argument("--output", metavar="PATH", help="the library --build writes")
    run.add_argument("--cc", metavar="CC", help="compiler for C sources (default $CC, else cc)")
    run.add_argument(
        "-j",
        "--jobs",
        type=_count,
        metavar="N",
        help="most compilers at once (default: one per CPU)",
    )
    run.add_argument(
        "--timeout",
        type=_seconds(0, inclusive=False),
        default=60.0,
        metavar="SECONDS",
        help="kill a build that runs longer (default 60)",
    )
    run.add_argument(
        "--debounce",
        type=_seconds(0, inclusive=True),
        default=0.02,
        metavar="SECONDS",
        help="fold changes closer together than this into one reload (default 0.02)",
    )
    run.add_argument(
        "--poll-interval",
        type=_seconds(0, inclusive=False),
        metavar="SECONDS",
        help="seconds between two scans when polling (default $HOTR_POLL_INTERVAL, else 0.5)",
    )
    run.add_argument(
        "--backend",
        choices=list(_env.BACKENDS),
        default="auto",
        help="how changes are seen (default auto: inotify, polling on network file systems)",
    )
    run.add_argument(
        "--keep-globals",
        action="store_true",
        help="carry global variables (same name and size) into each new version",
    )
    run.add_argument(
        "--probe",
        action="store_true",
        help="load each new version in a child process first (survives crashing constructors)",
    )
    run.add_argument(
        "--no-guard",
        action="store_true",
        help="let a crash in the library kill the process (default: it is reported, and the "
        "previous good version is rolled back to; see docs/guard.md)",
    )
    talk = run.add_mutually_exclusive_group()
    talk.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    talk.add_argument(
        "-v", "--verbose", action="store_true", help="also print what hotr logs (INFO)"
    )
    return parser, run


def _check_usage(
    run: argparse.ArgumentParser, options: argparse.Namespace, flags: list[str]
) -> None:
    """Refuse option combinations that would be ignored or mean something else (exit 2)."""
    targets: list[str] = options.targets
    seen: dict[object, str] = {}
    for target in targets:  # one file twice: compiled twice, every link would fail
        first = seen.get(key := _file_key(target))
        if first == target:
            run.error(f"{target} is given twice: give each TARGET once")
        if first is not None:
            run.error(f"{first} and {target} are the same file: give each TARGET once")
        seen[key] = target
    if options.build is not None:
        try:
            command = shlex.split(options.build)
        except ValueError as exc:
            run.error(f"--build {options.build!r} cannot be split like a shell would: {exc}")
        if not command:
            run.error("--build is empty: give the command that builds the library")
    if options.output and not options.build:
        run.error("--output names the library --build writes: give --build CMD as well")
    if options.build and not options.output:
        run.error("--build needs --output PATH, the library the command writes")
    if options.build and not targets:
        run.error("--build needs TARGETs: the files whose change runs the build")
    misplaced = [flag for flag in flags if is_source(flag)]
    if misplaced:
        run.error(f"{misplaced[0]} comes after --, where compiler flags go: put sources before --")
    if options.build:
        if options.cc or flags:
            run.error(
                "--cc and flags after -- are for hotr's own compiler command: with --build, "
                "put them in your build"
            )
        return
    others = [t for t in targets if not is_source(t)]
    if len(targets) > 1 and others:  # a header, say: it is watched through its sources
        run.error(
            f"{others[0]} is not a C source: give one .so library, or C sources, as TARGET "
            "(the headers they include are watched)"
        )
    if len(targets) == 1 and not is_source(targets[0]) and (options.cc or flags):
        run.error(f"--cc and compiler flags are for C sources, and {targets[0]} is a library")


def _file_key(path: str) -> object:
    """What is the same for two spellings of one file (``v.c``, ``./v.c``, a symlink to it):
    its device and inode, or for a path that names nothing (yet), the absolute path."""
    try:
        info = os.stat(path)
    except OSError:
        return os.path.abspath(path)
    return (info.st_dev, info.st_ino)


def _run(options: argparse.Namespace, compiler_flags: list[str], out: Output) -> int:
    targets: list[str] = options.targets or [_demo_source()]
    _check_targets(targets, options)
    if not options.targets:
        out.status(f"demo: edit {targets[0]} and save it to reload; Ctrl-C to stop")
    if options.output:
        path: str | list[str] = options.output
        sources = targets
    elif len(targets) == 1 and not is_source(targets[0]):
        path, sources = targets[0], []
    else:
        path, sources = targets, []
    try:
        reloader = HotReloader(
            path,
            sources=sources,
            build=shlex.split(options.build) if options.build else None,
            cc=options.cc,
            flags=compiler_flags,
            jobs=options.jobs,
            build_timeout=options.timeout,
            keep_globals=options.keep_globals,
            probe=options.probe,
            guard=GUARD_SUPPORTED and not options.no_guard,
            backend=options.backend,
            debounce=options.debounce,
        )
    except OSError as exc:
        raise UserError(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)) from exc
    except (ValueError, TypeError, HotReloadError) as exc:
        raise UserError(str(exc)) from exc
    session = Session(reloader, options, targets, out)
    stopped = False
    try:
        session.start()
        while True:
            if reloader.watch_for_changes() > 0:
                session.step()
    except KeyboardInterrupt:
        stopped = True
    finally:
        for signum in _STOPS:  # the cleanup hooks run to the end, whatever arrives now
            signal.signal(signum, signal.SIG_IGN)
        if stopped:
            out.status("stopped")
        reloader.close()
    return 0


def _check_targets(targets: list[str], options: argparse.Namespace) -> None:
    """Each TARGET exists, is a file that can be read, and is C source or a shared library;
    the compiler or build command can be found."""
    for target in targets:
        if os.path.isdir(target):
            raise UserError(f"{target} is a directory: TARGET is a .so library or C sources")
        if not os.path.exists(target):
            raise UserError(f"{target}: no such file: check the path")
        if not os.access(target, os.R_OK):
            raise UserError(f"{target} cannot be read (permission denied): check its mode")
    if options.build:
        _find_program(shlex.split(options.build)[:1], "build command", "(--build)", "check it")
        return
    if len(targets) == 1 and not is_source(targets[0]):
        with open(targets[0], "rb") as f:
            magic = f.read(4)
        if magic != b"\x7fELF":
            raise UserError(
                f"{targets[0]} is neither a shared library (not an ELF file) nor C source "
                f"({', '.join(SOURCE_SUFFIXES)}): give a .so library or C sources"
            )
        return
    origin = "--cc" if options.cc else "$CC" if os.environ.get("CC") else "the default"
    compiler = shlex.split(options.cc or os.environ.get("CC") or "cc")
    _find_program(compiler[:1], "compiler", f"(from {origin})", "install it, or name one with --cc")


def _find_program(argv: list[str], what: str, origin: str, fix: str) -> None:
    if not argv:
        raise UserError(f"the {what} {origin} is empty: {fix}")
    if shutil.which(argv[0]) is None:
        raise UserError(f"{what} {argv[0]!r} {origin} not found: {fix}")


class Session:
    """One `hotr run`: loads, status lines, calls; each problem reported once."""

    def __init__(
        self,
        reloader: HotReloader,
        options: argparse.Namespace,
        targets: list[str],
        out: Output,
    ) -> None:
        self._reloader = reloader
        self._calls: list[str] | None = options.call
        self._keep_globals: bool = options.keep_globals
        self._builds = options.build is not None or any(is_source(t) for t in targets)
        names = [os.path.basename(t) for t in targets]
        self._name = (
            ", ".join(names) if len(names) <= 3 else f"{names[0]} and {len(names) - 1} more"
        )
        self._out = out
        self._missing: set[str] = set()  # --call functions reported missing
        self._hinted = False
        self._failed = False  # the last change was reported as failing

    def start(self) -> None:
        """The first load.  A library that cannot be loaded is a user error; sources that fail
        to build are reported, and the next save tries again."""
        try:
            self._reloader.update()
        except BuildError as exc:
            if exc.returncode is None and exc.timeout is None:  # the command could not start
                raise UserError(f"{exc.diagnostics.strip()}: check the build command") from exc
            self._build_failed(exc)
            return
        except LoadError as exc:
            if not self._builds:
                raise UserError(str(exc)) from exc
            self._load_failed(exc)
            return
        self._loaded()

    def step(self) -> None:
        """After a change: apply it, print one status line, call the functions if it loaded."""
        before = self._reloader.version
        try:
            self._reloader.update()
        except BuildError as exc:
            self._build_failed(exc)
            return
        except LoadError as exc:
            self._load_failed(exc)
            return
        if self._reloader.version != before:
            self._loaded()
        elif self._failed and before:
            self._failed = False  # fixed, back to the live version's very bytes
            self._out.status(f"{self._name}: fixed: the same as version {before}, which stays live")

    def _stays(self) -> str:
        version = self._reloader.version
        return f"version {version} stays live" if version else "nothing is loaded yet"

    def _build_failed(self, exc: BuildError) -> None:
        self._failed = True
        self._out.error(f"{self._name}: {exc.reason}; {self._stays()}")
        self._out.diagnostics(f"$ {exc.command}\n{exc.diagnostics}")

    def _load_failed(self, exc: LoadError) -> None:
        self._failed = True
        self._out.error(f"{exc}; {self._stays()}")

    def _loaded(self) -> None:
        self._failed = False
        info = self._reloader.history[-1]
        what = ", ".join(os.path.basename(p) for p in info.changed) or self._name
        built = "" if info.build_ms is None else f"built in {info.build_ms:.1f} ms, "
        line = f"{what}: {built}loaded version {info.number} in {info.load_ms:.2f} ms"
        if self._keep_globals and info.number > 1:
            line += f"; carried: {', '.join(info.carried) or 'nothing'}"
            if info.not_carried:
                line += "; not carried: " + ", ".join(f"{n} ({why})" for n, why in info.not_carried)
        self._out.status(line)
        if info.build_output and not self._out.quiet:
            self._out.diagnostics(info.build_output)  # the compiler's warnings
        self._call()

    def _call(self) -> None:
        library = self._reloader.library
        names = self._calls
        if names is None:
            if hasattr(library, DEFAULT_CALL):
                names = [DEFAULT_CALL]
            else:
                if not self._hinted:
                    self._hinted = True
                    self._out.status(
                        f"{self._name} has no {DEFAULT_CALL}() to call: name the functions "
                        "to call after each load with --call NAME"
                    )
                names = []
        for name in names:
            try:
                function = library[name]
            except AttributeError:
                self._no_function(name)
                continue
            except HotReloadError as exc:  # a variable, not a function
                if name not in self._missing:
                    self._missing.add(name)
                    self._out.error(f"{exc}: check --call {name}")
                continue
            function.restype = None
            try:
                function()
            except CrashError as exc:
                self._out.error(str(exc))
            except SymbolNotFoundError:  # an earlier version had it, this one does not
                self._no_function(name)
                continue
            except (TypeError, ctypes.ArgumentError) as exc:  # its prototype takes arguments
                if name not in self._missing:
                    self._missing.add(name)
                    self._out.error(
                        f"{self._name}: --call {name} calls it with no arguments, but {exc}; "
                        "call functions that take arguments from Python (hotr.load)"
                    )
                continue
            self._missing.discard(name)  # it ran: a version without it is reported again
        _libc.fflush(None)  # C stdio buffers a pipe: show what the functions printed now

    def _no_function(self, name: str) -> None:
        if name not in self._missing:  # once, until a version has it again
            self._missing.add(name)
            self._out.error(
                f"{self._name} (version {self._reloader.version}) has no function "
                f"{name!r}: check --call {name}"
            )


class Output:
    """hotr's lines on stderr: status, errors, build output; colours only on a terminal."""

    def __init__(self, *, quiet: bool, colour: bool) -> None:
        self.quiet = quiet
        self.colour = colour

    def status(self, message: str) -> None:
        """A line of news (not printed with --quiet)."""
        if not self.quiet:
            self._write(self._paint("hotr:", "32") + f" {message}\n")

    def error(self, message: str) -> None:
        """A line saying what went wrong (always printed)."""
        self._write(self._paint(f"hotr: {message}", "1;31") + "\n")

    def diagnostics(self, text: str) -> None:
        """A build's command and output, as it printed them."""
        text = text if text.endswith("\n") else text + "\n"
        self._write(_MARKS.sub(lambda m: self._paint(m[0], _MARK_COLOURS[m[1]]), text))

    def _write(self, text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()

    def _paint(self, text: str, colour: str) -> str:
        return f"\x1b[{colour}m{text}\x1b[0m" if self.colour else text


def _colour_wanted() -> bool:
    """Colours when stderr is a terminal that shows them, unless NO_COLOR is set."""
    return (
        sys.stderr.isatty()
        and "NO_COLOR" not in os.environ
        and os.environ.get("TERM", "") not in ("", "dumb")
    )


@contextlib.contextmanager
def _poll_interval(seconds: float | None) -> Iterator[None]:
    """--poll-interval: the library reads it from $HOTR_POLL_INTERVAL when a watch starts."""
    if seconds is None:
        yield
        return
    before = os.environ.get("HOTR_POLL_INTERVAL")
    os.environ["HOTR_POLL_INTERVAL"] = repr(seconds)
    try:
        yield
    finally:
        if before is None:
            del os.environ["HOTR_POLL_INTERVAL"]
        else:
            os.environ["HOTR_POLL_INTERVAL"] = before


def _demo_source() -> str:
    """Copy the bundled example to a directory of the user's own (kept across runs), which
    must be theirs alone: whatever is in it is compiled and run."""
    directory = _env.demo_dir()
    try:
        ensure_private_directory(directory, "demo directory", "HOTR_DEMO_DIR")
    except OSError as exc:
        raise UserError(
            f"cannot use demo directory {directory!r}: {exc.strerror}; set HOTR_DEMO_DIR to a "
            "directory of your own"
        ) from exc
    except HotReloadError as exc:
        raise UserError(str(exc)) from exc
    target = os.path.join(directory, "example.c")
    if not os.path.lexists(target):
        with as_file(files("hotr") / "data" / "example.c") as bundled:
            shutil.copyfile(bundled, target)
    return target
