"""$ORIGIN for private copies: a library loads with hotr as it loads with ``ctypes.CDLL(path)``.

glibc expands ``$ORIGIN`` in DT_RUNPATH / DT_RPATH to the directory of the path a library was
opened by (ld.so(8)).  hotr opens a private copy, so ``$ORIGIN/libdep.so`` would be looked for in
the private directory.  So before the copy is loaded, hotr gives it a directory of its own
(`<copy>.d/`) and puts symlinks there: for an entry ``$ORIGIN/<rel>``, ``<dir>/<rel>`` links to
``<original dir>/<rel>``; for ``$ORIGIN`` itself, each DT_NEEDED name found beside the original
(and, through them, their own ``$ORIGIN`` neighbours) gets a link.  The copy sits as many levels
deep as the entries climb with ``..``, so every link stays inside the private directory.  The
loader then resolves each dependency to the very file CDLL would have used; a dependency is
shared with anything else in the process that loaded the same file.
"""

from __future__ import annotations

import os

from ._elf import ElfError, ElfInfo, check_shared_object, map_read
from ._log import logger

_MARKERS = ("$ORIGIN", "${ORIGIN}")
_MAX_DEPENDENCIES = 64


def origin_entries(info: ElfInfo) -> list[str]:
    """The search entries that use $ORIGIN, relative to it ("" for $ORIGIN itself).

    glibc ignores DT_RPATH when DT_RUNPATH is present.
    """
    return [rel for entry in info.runpath or info.rpath if (rel := _relative(entry)) is not None]


def origin_names(info: ElfInfo) -> list[str]:
    """The DT_NEEDED names that are $ORIGIN/<file>, as <file> (glibc expands $ORIGIN there
    too)."""
    return [rel for name in info.needed if (rel := _relative(name))]


def _relative(entry: str) -> str | None:
    """`entry` relative to $ORIGIN ("" for $ORIGIN itself), or None if it does not use it."""
    for marker in _MARKERS:
        if entry.startswith(marker):
            rest = entry[len(marker) :].lstrip("/")
            return os.path.normpath(rest) if rest else ""
    return None


def place(copy: str, original: str, info: ElfInfo) -> tuple[str, str]:
    """Move `copy` into a directory of its own with the links its $ORIGIN entries need.

    Returns (the path to load, the path to delete when the version ends).  A library without
    $ORIGIN entries stays where it is.
    """
    if not (info.runpath or info.rpath or info.needed):
        return copy, copy  # most libraries: no search path at all (needed is read for $ORIGIN)
    entries, names = origin_entries(info), origin_names(info)
    if not entries and not names:
        return copy, copy
    depth = max((_climbs(rel) for rel in entries + names), default=0)
    root = copy + ".d"
    directory = os.path.join(root, *["o"] * depth)
    loaded = os.path.join(directory, os.path.basename(original))
    try:
        os.makedirs(directory, 0o700)
        os.rename(copy, loaded)
    except OSError:
        import shutil  # rarely needed: not at import time

        shutil.rmtree(root, ignore_errors=True)
        raise
    links: dict[str, str] = {}
    origin = os.path.dirname(original)
    for name in names:
        _link(os.path.normpath(os.path.join(directory, name)), os.path.join(origin, name), links)
    _link_entries(directory, origin, info, entries, depth, links, set())
    return loaded, root


def _climbs(relative: str) -> int:
    parts = relative.split("/")
    count = 0
    while count < len(parts) and parts[count] == "..":
        count += 1
    return count


def _link_entries(
    directory: str,
    origin: str,
    info: ElfInfo,
    entries: list[str],
    depth: int,
    links: dict[str, str],
    visited: set[str],
) -> None:
    """Links for one library loaded from `directory` whose real $ORIGIN is `origin`."""
    for relative in sorted(entries, key=len):
        if _climbs(relative) > depth:
            logger.debug("$ORIGIN/%s climbs out of hotr's private directory; not linked", relative)
            continue
        if relative:
            _link(
                os.path.normpath(os.path.join(directory, relative)),
                os.path.join(origin, relative),
                links,
            )
            continue
        for name in info.needed:
            source = os.path.join(origin, name)
            if "/" in name or not os.path.exists(source):
                continue
            _link(os.path.join(directory, name), source, links)
            real = os.path.realpath(source)
            if real in visited or len(visited) >= _MAX_DEPENDENCIES:
                continue
            visited.add(real)
            needed = _read_info(source)
            if needed is not None:  # it is loaded through our link: its $ORIGIN is `directory`
                _link_entries(
                    directory, origin, needed, origin_entries(needed), depth, links, visited
                )


def _link(location: str, target: str, links: dict[str, str]) -> None:
    """A symlink at `location` to `target`, unless a link made already covers the place."""
    for made in links:
        if location == made or location.startswith(made + "/"):
            return  # never create anything through one of our own links
    try:
        os.makedirs(os.path.dirname(location), 0o700, exist_ok=True)
        os.symlink(target, location)
        links[location] = target
    except FileExistsError:
        pass


def _read_info(path: str) -> ElfInfo | None:
    try:
        with open(path, "rb") as f, map_read(f) as image:
            return check_shared_object(image)
    except (OSError, ValueError, ElfError):
        return None
