"""What a compile reads besides its source, and how hotr knows a file is unchanged: stat
stamps, make-style dependency files, and the headers on a compile's search path (_compile.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from ._source import absolute

FRESH_NS = 20_000_000  # file times run behind the clock by up to a timer tick or two

Stamp = tuple[int, int, int, int] | None  # (inode, size, mtime, ctime); None: no such file


def stamp(path: str) -> Stamp:
    """A file's identity and change times, or None when it does not exist."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def read_depfile(path: str, *, one_per_line: bool, base: str) -> set[str]:
    """The files named in a make-style dependency file, made absolute from `base` (the
    directory the compiler ran in).  gcc and clang escape a space in a name (``\\ ``); tcc
    does not, but writes one name per line."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return set()
    found: set[str] = set()
    if one_per_line:
        for line in text.splitlines():
            name = line.strip().removesuffix("\\").strip()
            if name and not line.rstrip().removesuffix("\\").rstrip().endswith(":"):
                found.add(absolute(name, base))
        return found
    for rule in text.replace("\\\n", " ").splitlines():
        _, _, deps = rule.partition(": ")
        words = deps.replace("\\ ", "\0").split()
        found.update(absolute(w.replace("\0", " "), base) for w in words)
    return found


_HEADER_SUFFIXES = (".h", ".hh", ".hpp", ".hxx", ".h++", ".inc", ".inl", ".def", ".tcc")


def search_directories(
    source: str, argv: Sequence[str], base: str, *, system: bool = True
) -> list[str]:
    """The directories a compile of `source` run in `base` searches first for a header: the
    source's own and every -I, -iquote and (with `system`) -isystem directory (absolute)."""
    flags = ("-I", "-iquote", "-isystem") if system else ("-I", "-iquote")
    directories = [os.path.dirname(source)]
    for i, arg in enumerate(argv):
        for flag in flags:
            if arg == flag and i + 1 < len(argv):
                directories.append(absolute(argv[i + 1], base))
            elif arg.startswith(flag) and len(arg) > len(flag) and flag == "-I":
                directories.append(absolute(arg[2:], base))
    return directories


def awaited_headers(depfile: str, source: str, argv: Sequence[str], base: str) -> list[str]:
    """Where the headers that a ``-M -MG`` dependency file (of a compile run in `base`) names
    and that do not exist would appear: a name it gives as written in every directory searched
    first but -isystem."""
    here = base + os.sep  # read_depfile made the names as written absolute from here
    searched = search_directories(source, argv, base, system=False)
    directories = [d for d in searched if os.path.isdir(d)]
    awaited: list[str] = []
    for path in sorted(read_depfile(depfile, one_per_line=False, base=base)):
        if os.path.exists(path):
            continue
        if path.startswith(here):
            awaited += [os.path.join(d, path[len(here) :]) for d in directories]
        else:
            awaited.append(path)  # included by an absolute name
    return awaited


def headers_on_path(source: str, argv: Sequence[str], base: str) -> list[str]:
    """The header names in the directories a compile of `source` run in `base` searches
    first, each listed as it is now."""
    listed: list[str] = []
    for directory in search_directories(source, argv, base):
        listed += [os.path.abspath(directory), *_header_names(directory), "\0"]
    return listed


# Header names by directory, with the directory's stamp when listed (Python's include directory
# alone holds a hundred headers: listing it took a save 50 us and more).
_listings: dict[str, tuple[Stamp, list[str]]] = {}


def _header_names(directory: str) -> list[str]:
    """The header names in `directory`, sorted; none when it cannot be listed.  A listing is
    used again while the directory's stamp is the same, unless that stamp is so recent that a
    name added in the same timer tick would leave it unchanged."""
    now = stamp(directory)
    known = _listings.get(directory)
    if now is not None and known is not None and known[0] == now:
        return known[1]
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(_HEADER_SUFFIXES))
    except OSError:
        return []
    if now is not None and max(now[2], now[3]) < time.time_ns() - FRESH_NS:
        _listings[directory] = (now, names)
    return names
