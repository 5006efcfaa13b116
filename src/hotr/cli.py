"""The ``hotr`` command: build, load, call and hot-reload a library with no Python written.

Exit codes: 0 after Ctrl-C or SIGTERM (a clean stop), 1 for a user error (missing file, bad
arguments for the target), 2 for a usage error (unknown option).
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from importlib.resources import as_file, files
from types import FrameType

from . import __version__
from ._build import is_source
from ._compile import INCLUDE_DIR
from ._exceptions import BuildError, HotReloadError, LoadError
from ._reloader import HotReloader

DEFAULT_CALL = "hello_world_func"  # the seed example's function
_libc = ctypes.CDLL(None)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default: sys.argv[1:]); return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    compiler_flags: list[str] = []
    if "--" in args:  # everything after -- goes to the compiler untouched
        cut = args.index("--")
        args, compiler_flags = args[:cut], args[cut + 1 :]
    options = _parser().parse_args(args)
    if options.include:
        print(INCLUDE_DIR)
        return 0
    if options.command is None:
        _parser().print_help()
        return 2
    logging.basicConfig(format="hotr: %(message)s", level=logging.WARNING)
    return _run(options, compiler_flags)


def _parser() -> argparse.ArgumentParser:
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
            "can edit.  Arguments after -- go to the compiler."
        ),
        usage="hotr run [TARGET ...] [--call SYMBOL] [--build CMD] [--output PATH] "
        "[--keep-globals] [-- FLAGS]",
    )
    run.add_argument("targets", nargs="*", metavar="TARGET", help=".c source file(s) or a .so")
    run.add_argument(
        "--call",
        action="append",
        metavar="SYMBOL",
        help=f"void(void) function to call after each load (repeatable; default {DEFAULT_CALL} "
        "when the library has it)",
    )
    run.add_argument(
        "--build",
        metavar="CMD",
        help='custom build command, e.g. "make" or "cargo build" (split like a shell, never '
        "run by one); needs --output",
    )
    run.add_argument("--output", metavar="PATH", help="the library the build writes")
    run.add_argument("--cc", metavar="CC", help="compiler for C sources (default $CC, else cc)")
    run.add_argument(
        "-j",
        "--jobs",
        type=int,
        metavar="N",
        help="most compilers at once (default: one per CPU)",
    )
    run.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="kill a build that runs longer (default 60)",
    )
    run.add_argument(
        "--keep-globals",
        action="store_true",
        help="carry global variables (same name and size) into each new version",
    )
    run.add_argument(
        "--backend",
        choices=["auto", "inotify", "poll"],
        default="auto",
        help="how changes are seen (default auto: inotify, polling on network file systems)",
    )
    run.add_argument(
        "--probe",
        action="store_true",
        help="load each new version in a child process first (survives crashing constructors)",
    )
    return parser


def _run(options: argparse.Namespace, compiler_flags: list[str]) -> int:
    targets: list[str] = options.targets or [_demo_source()]
    if options.build and not options.output:
        return _fail("--build needs --output, the library the command writes")
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
            backend=options.backend,
        )
    except (OSError, ValueError, HotReloadError) as exc:
        return _fail(str(exc))
    signal.signal(signal.SIGTERM, _interrupt)
    with reloader:
        try:
            name = ", ".join(os.path.basename(t) for t in targets)
            _step(reloader, options.call, name)
            while True:
                if reloader.watch_for_changes() > 0:
                    _step(reloader, options.call, name)
        except KeyboardInterrupt:
            _status("stopped")
    return 0


def _step(reloader: HotReloader, calls: list[str] | None, name: str) -> None:
    """Apply a change and print one status line; call the functions if a new version loaded."""
    before = reloader.version
    try:
        reloader.update()
    except BuildError as exc:
        _status(f"{exc.reason}; version {before or '-'} stays live\n$ {exc.command}")
        sys.stderr.write(
            exc.diagnostics if exc.diagnostics.endswith("\n") else exc.diagnostics + "\n"
        )
        return
    except LoadError as exc:
        _status(f"{exc}; version {before or '-'} stays live")
        return
    if reloader.version == before:
        return
    info = reloader.history[-1]
    what = ", ".join(os.path.basename(p) for p in info.changed) or name
    built = "" if info.build_ms is None else f"built in {info.build_ms:.1f} ms, "
    _status(f"{what}: {built}loaded version {info.number} in {info.load_ms:.2f} ms")
    library = reloader.library
    for name in calls or ([DEFAULT_CALL] if hasattr(library, DEFAULT_CALL) else []):
        try:
            function = library[name]
        except AttributeError as exc:
            _status(str(exc))
            continue
        function.restype = None
        function()
    _libc.fflush(None)  # C stdio buffers a pipe: show what the functions printed now


def _demo_source() -> str:
    """Copy the bundled example to a directory the user can edit (kept across runs)."""
    directory = os.environ.get("HOTR_DEMO_DIR") or os.path.join(
        tempfile.gettempdir(), f"hotr-demo-{os.getuid()}"
    )
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, "example.c")
    if not os.path.exists(target):
        with as_file(files("hotr") / "data" / "example.c") as bundled:
            shutil.copyfile(bundled, target)
    _status(f"demo: edit {target} and save it to reload; Ctrl-C to stop")
    return target


def _status(message: str) -> None:
    print(f"hotr: {message}", file=sys.stderr, flush=True)


def _fail(message: str) -> int:
    _status(f"error: {message}")
    return 1


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
