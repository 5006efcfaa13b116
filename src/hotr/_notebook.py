"""The IPython extension (``%load_ext hotr``): C cells that reload in place, libraries that
follow their files between cells.

``%%hotr NAME`` writes the cell to ``NAME.c`` in a private directory that one HotReloader
watches; running the cell again rebuilds and reloads it, so every Function already handed out
(in variables, lists, closures) calls the new code.  ``%hotr load`` uses hotr.load(manual=True):
the build runs in the background as files change, and the new version goes live in IPython's
``pre_run_cell`` event, between cells, never in the middle of one.  See docs/notebooks.md.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, line_cell_magic, magics_class

from ._background import load
from ._exceptions import BuildError, CrashError, HotReloadError
from ._library import Function, Library, reloader_of
from ._pipeline import HOOKS
from ._reloader import HotReloader, core_of

USAGE = """\
%%hotr NAME [--cc CC] [--no-guard] [-- FLAGS...]   (cell magic) build the cell's C and load it
%hotr                                             list what is loaded
%hotr load PATH [--name NAME] [--cc CC] [--no-guard] [-- FLAGS...]
                                                  load a library or C source; reload it
                                                  between cells when it changes
%hotr rollback NAME                               go back to NAME's previous version
%hotr close NAME                                  unload NAME (its functions then raise)"""


@dataclass
class Options:
    """What a %%hotr line or %hotr load asks for, besides its name or path."""

    cc: str | None = None
    flags: tuple[str, ...] = ()
    guard: bool = True


@dataclass
class Entry:
    """One library the extension loaded: from a cell, or from a path on disk."""

    name: str
    reloader: HotReloader
    source: str  # "cell", or the path given to %hotr load
    options: Options
    text: str | None = None  # the cell last built (cells only)
    built: int = 0  # the version built from `text` (a rollback makes another one live)
    failure: str | None = None  # why `text` did not load, shown again when it is rerun
    functions: dict[str, Function] = field(default_factory=dict)  # what is in the namespace
    shown: int = 0  # the version whose functions those are
    errors: list[HotReloadError] = field(default_factory=list)  # background failures, unseen


@magics_class
class HotrMagics(Magics):
    """The ``%hotr`` line magic and the ``%%hotr`` cell magic (see the module docstring)."""

    def __init__(self, shell: InteractiveShell) -> None:
        super().__init__(shell)
        self._shell = shell
        self._entries: dict[str, Entry] = {}
        self._cells = tempfile.TemporaryDirectory(prefix="hotr-cells-")

    @line_cell_magic
    def hotr(self, line: str, cell: str | None = None) -> None:
        """Build C cells and load libraries that reload in place; ``%hotr help`` for usage."""
        words = _split(line)
        if cell is not None:
            name, options = _options(words, name_first=True)
            self._run_cell(name, options, cell)
            return
        if not words:
            self._list()
            return
        command, rest = words[0], words[1:]
        commands: dict[str, Callable[[list[str]], None]] = {
            "load": self._load,
            "rollback": self._rollback,
            "close": self._close,
            "help": lambda _: print(USAGE),
        }
        if command not in commands:
            raise UsageError(f"%hotr: unknown command {command!r}\n{USAGE}")
        commands[command](rest)

    # -- cells -------------------------------------------------------------------------------

    def _run_cell(self, name: str, options: Options, cell: str) -> None:
        entry = self._entries.get(name)
        if entry is not None and entry.source != "cell":
            raise UsageError(f"{name!r} was loaded from {entry.source}: pick another name")
        if entry is not None and entry.options != options:
            print(f"{name}: new compiler options; a new library (old references now raise)")
            self._end(entry)
            entry = None
        if (
            entry is not None
            and entry.text == cell
            and entry.built == entry.reloader.version
            and not entry.reloader.poll()
        ):
            if entry.failure is not None:
                raise UsageError(entry.failure)
            self._inject(entry)
            print(f"{name}: unchanged, version {entry.reloader.version}")
            return  # the same cell, live, and no header it includes changed: nothing to build
        path = os.path.join(self._cells.name, f"{name}.c")
        _write(path, cell)
        if entry is None:
            # The notebook's directory is on the include path: #include "kernel.h" finds it.
            flags = [f"-I{os.getcwd()}", *options.flags]
            # No debounce: the cell is written once per run, and that run must build it.
            reloader = HotReloader(
                path, cc=options.cc, flags=flags, debounce=0, guard=options.guard
            )
            entry = self._entries[name] = Entry(name, reloader, "cell", options)
        builds = core_of(entry.reloader).builds
        started = builds.started_from if builds is not None else None
        try:
            entry.reloader.update()
        except HotReloadError as exc:
            entry.text = cell
            entry.failure = _failure(name, exc, entry.reloader.version)
            raise UsageError(entry.failure) from None
        entry.text = cell  # only now: an interrupted build is run again by a rerun
        entry.built = entry.reloader.version
        entry.failure = None
        self._inject(entry)
        self._report(entry)
        if builds is not None and builds.started_from != started and builds.printed:
            print(builds.printed.rstrip(), file=sys.stderr)  # the compiler's warnings

    # -- %hotr commands ----------------------------------------------------------------------

    def _list(self) -> None:
        if not self._entries:
            print("nothing loaded: run a %%hotr NAME cell, or %hotr load PATH")
            return
        rows = [("NAME", "VERSION", "SOURCE", "FUNCTIONS")]
        for entry in self._entries.values():
            rows.append(
                (
                    entry.name,
                    str(entry.reloader.version),
                    entry.source,
                    ", ".join(entry.functions) or "-",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        for row in rows:
            columns = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            print("  ".join([*columns, row[3]]))

    def _load(self, words: list[str]) -> None:
        if not words or words[0].startswith("-"):
            raise UsageError(f"%hotr load needs a PATH\n{USAGE}")
        path = words[0]
        name, options = _options(words[1:], name_first=False)
        name = name or _default_name(path)
        if name in self._entries:
            raise UsageError(f"{name!r} is loaded already: %hotr close {name}, or --name")
        taken = self._shell.user_ns.get(name)
        if taken is not None and not isinstance(taken, Library):
            raise UsageError(
                f"{name!r} already names your {type(taken).__name__} object: load it under "
                "another name (--name NAME)"
            )
        entry: Entry | None = None

        def failed(error: HotReloadError) -> None:
            # A crash was raised in its cell already; a background failure is shown before
            # the next cell (this is a thread).
            if entry is not None and not isinstance(error, CrashError):
                entry.errors.append(error)

        try:
            library = load(
                path,
                manual=True,
                on_error=failed,
                cc=options.cc,
                flags=options.flags,
                guard=options.guard,
            )
        except (HotReloadError, OSError, TypeError, ValueError) as exc:
            raise UsageError(f"%hotr load {path}: {exc}") from None
        entry = Entry(name, reloader_of(library), path, options)
        self._entries[name] = entry
        self._shell.user_ns[name] = library
        self._inject(entry)
        self._report(entry)

    def _rollback(self, words: list[str]) -> None:
        entry = self._entry(words, "rollback")
        try:
            entry.reloader.rollback()
        except HotReloadError as exc:
            raise UsageError(f"{entry.name}: {exc}") from None
        self._inject(entry)
        print(f"{entry.name}: rolled back, now version {entry.reloader.version}")

    def _close(self, words: list[str]) -> None:
        entry = self._entry(words, "close")
        self._end(entry)
        print(f"{entry.name}: closed")

    def _entry(self, words: list[str], command: str) -> Entry:
        if len(words) != 1:
            raise UsageError(f"%hotr {command} takes one NAME\n{USAGE}")
        entry = self._entries.get(words[0])
        if entry is None:
            known = ", ".join(self._entries) or "nothing is loaded"
            raise UsageError(f"%hotr {command}: no library named {words[0]!r} ({known})")
        return entry

    # -- between cells -----------------------------------------------------------------------

    def pre_run_cell(self, *_: Any) -> None:
        """Before each cell: apply what changed on disk for %hotr load libraries, and put
        in the namespace the functions of a version a crash rolled back to."""
        for entry in list(self._entries.values()):
            if entry.reloader.closed:
                continue
            if entry.source != "cell":
                self._apply(entry)
            if entry.reloader.version != entry.shown:
                # A crash's rollback takes back no name another cell's function holds now.
                self._inject(entry, claim=not entry.reloader.history[-1].rollback)
                if entry.source != "cell":
                    self._report(entry)

    def _apply(self, entry: Entry) -> None:
        """Show the background failures of a %hotr load library, and load its new build."""
        while entry.errors:
            error = entry.errors.pop(0)
            print(_failure(entry.name, error, entry.reloader.version), file=sys.stderr)
        try:
            if entry.reloader.poll():
                entry.reloader.update()
        except HotReloadError as exc:
            print(_failure(entry.name, exc, entry.reloader.version), file=sys.stderr)

    def unload(self) -> None:
        """Close every library (their functions raise from now on) and remove the cells."""
        for entry in list(self._entries.values()):
            self._end(entry)
        self._cells.cleanup()

    # -- helpers -----------------------------------------------------------------------------

    def _inject(self, entry: Entry, *, claim: bool = True) -> None:
        """Put the functions the live version defines into the namespace (the same Function
        objects every time); take out the ones it no longer defines, if still ours there.  A
        name the user bound to something else (an array, a module) is left alone, and said so;
        one bound to another library's function is taken (and said so) only if `claim`."""
        defined = core_of(entry.reloader).defined() or ()
        namespace = self._shell.user_ns
        functions: dict[str, Function] = {}
        for name in defined:
            if name in HOOKS:
                continue
            try:
                function = entry.reloader.library[name]
            except HotReloadError:
                continue  # not exported (an inline function the compiler did not emit)
            taken = namespace.get(name)
            if taken is not None and not isinstance(taken, Function):
                print(
                    f"{entry.name}: {name!r} already names your {type(taken).__name__} object; "
                    f"the function is not put in its place: rename one, or del {name} and "
                    "run the cell again"
                )
                continue
            if isinstance(taken, Function) and taken is not function:
                if not claim:
                    continue
                for other in self._entries.values():
                    if other is not entry and other.functions.get(name) is taken:
                        owner = f"{entry.name}: {name!r} is {entry.name}'s function now"
                        print(f"{owner}, no longer {other.name}'s")
            namespace[name] = functions[name] = function
        for name, function in entry.functions.items():
            if name not in functions and namespace.get(name) is function:
                del namespace[name]
        entry.functions = functions
        entry.shown = entry.reloader.version

    def _report(self, entry: Entry) -> None:
        info = entry.reloader.history[-1]
        built = f", built in {info.build_ms:.0f} ms" if info.build_ms is not None else ""
        shown = list(entry.functions)
        if len(shown) > 20:
            shown[20:] = [f"and {len(shown) - 20} more"]
        names = ", ".join(shown) or (
            "no functions" if entry.source == "cell" else f"call its functions as {entry.name}.f()"
        )
        print(f"{entry.name}: version {info.number}{built}: {names}")
        if entry.source != "cell" and info.build_output:  # a cell's: see _run_cell
            print(info.build_output.rstrip(), file=sys.stderr)  # the compiler's warnings

    def _end(self, entry: Entry) -> None:
        namespace = self._shell.user_ns
        for name, function in entry.functions.items():
            if namespace.get(name) is function:
                del namespace[name]
        entry.reloader.close()
        self._entries.pop(entry.name, None)


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"%hotr: {exc}: {line!r}") from None


def _options(words: list[str], *, name_first: bool) -> tuple[str, Options]:
    """NAME (or --name NAME), --cc CC, --no-guard, and everything after '--' as flags."""
    options = Options()
    name = ""
    if name_first:
        if not words or words[0].startswith("-"):
            raise UsageError(f"%%hotr needs a NAME for the library\n{USAGE}")
        name, words = words[0], words[1:]
        if not name.isidentifier():
            raise UsageError(f"%%hotr NAME must be an identifier (it names NAME.c), not {name!r}")
    at = 0
    while at < len(words):
        word = words[at]
        if word == "--":
            options.flags = tuple(words[at + 1 :])
            break
        if word in ("--cc", "--name"):
            if at + 1 == len(words) or words[at + 1] == "--":
                raise UsageError(
                    f"%hotr: {word} needs a value ({word} {word[2:].upper()})\n{USAGE}"
                )
            if word == "--cc":
                options.cc = words[at + 1]
            elif name_first:
                raise UsageError("%%hotr takes the NAME first, not --name")
            else:
                name = words[at + 1]
            at += 2
            continue
        if word == "--no-guard":
            options.guard = False
            at += 1
            continue
        raise UsageError(f"%hotr: unknown option {word!r} (compiler flags go after --)\n{USAGE}")
    return name, options


def _default_name(path: str) -> str:
    """``libkernel.so`` and ``kernel.c`` are both ``kernel``."""
    stem = os.path.basename(path).split(".")[0]
    stem = stem[3:] if stem.startswith("lib") and len(stem) > 3 else stem
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in stem)
    return name if name.isidentifier() else f"lib_{name}"


def _write(path: str, text: str) -> None:
    """Replace `path` at once (rename), as an editor saves."""
    temporary = f"{path}.tmp"
    with open(temporary, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    os.replace(temporary, path)


def _failure(name: str, exc: HotReloadError, live: int) -> str:
    """What a cell shows for a failed build or load: the compiler's diagnostics in full."""
    stays = f"version {live} stays live" if live else "nothing is loaded yet"
    if isinstance(exc, BuildError):
        return f"{name}: {exc.reason}; {stays}\n{exc.diagnostics.rstrip()}"
    return f"{name}: {exc}; {stays}"


def load_ipython_extension(shell: InteractiveShell) -> None:
    """Register the magics and the pre_run_cell hook (``%load_ext hotr``)."""
    unload_ipython_extension(shell)  # %reload_ext: one set of magics, one hook
    magics = HotrMagics(shell)
    shell.register_magics(magics)
    shell.events.register("pre_run_cell", magics.pre_run_cell)
    _loaded[id(shell)] = magics


def unload_ipython_extension(shell: InteractiveShell) -> None:
    """Unregister the hook and close every library the extension loaded."""
    magics = _loaded.pop(id(shell), None)
    if magics is None:
        return
    with contextlib.suppress(ValueError):
        shell.events.unregister("pre_run_cell", magics.pre_run_cell)
    magics.unload()


_loaded: dict[int, HotrMagics] = {}
