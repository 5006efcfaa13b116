"""What a reloader remembers of its versions: r.history, and the contents rollback() returns to."""

from __future__ import annotations

import os

from . import _versions
from ._record import Record
from ._store import PrivateStore
from ._versions import Version

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections import deque
else:
    from _collections import deque  # collections imports keyword, operator, reprlib: 1.5 ms

HISTORY_LENGTH = 100  # versions r.history remembers
ROLLBACK_DEPTH = 9  # contents kept for rollback(): the live one and 8 earlier


class VersionInfo(Record):
    """A loaded version, as r.history reports it (a named tuple).

    Attributes:
        number: its version number (1 for the first load).
        loaded_at: when it was loaded (seconds since the epoch).
        sha256: SHA-256 of the library file's content, hex (as sha256sum prints it); empty
            for a library over 64 KiB if nobody asked while it was live.
        load_ms: milliseconds from reading the file to the new code being live.
        build_ms: milliseconds the build took, or None when no build ran for it.
        changed: the files whose change led to this version (empty for the first load).
        rollback: True when rollback() loaded it (the content of an earlier version).
        carried: with keep_globals, the globals copied over from the previous version.
        not_carried: with keep_globals, (name, reason) of the globals that were not.
        status: where the version is now: ``"live"``, ``"retired"`` (mapped until its calls
            return, or, for an extension module, until no object of it is left), ``"unloaded"``,
            or ``"kept mapped: <why>"`` (an extension module that can never be unloaded
            safely, from the moment it is replaced).
        build_output: what the build it came from printed: the compiler's warnings (or a
            custom build command's output); empty when it printed nothing or no build ran.
    """

    number: int
    loaded_at: float
    sha256: str
    load_ms: float
    build_ms: float | None
    changed: tuple[str, ...]
    rollback: bool = False
    carried: tuple[str, ...] = ()
    not_carried: tuple[tuple[str, str], ...] = ()
    status: str = ""
    build_output: str = ""


class History:
    """The last HISTORY_LENGTH versions; each one's hash is computed when first asked for,
    off the path to the new code."""

    def __init__(self) -> None:
        self._entries: deque[tuple[Version, VersionInfo]] = deque(maxlen=HISTORY_LENGTH)

    def record(self, version: Version, info: VersionInfo) -> None:
        """Remember `version`, described by `info` (its sha256 filled in later)."""
        self._entries.append((version, info))

    def infos(self) -> list[VersionInfo]:
        """The versions remembered, oldest first."""
        with _versions.UNMAPPING:  # no version half-unloaded meanwhile (see there)
            statuses = [_status(v) for v, _ in self._entries]
        return [
            info._replace(sha256=v.sha256(), status=status)
            for (v, info), status in zip(self._entries, statuses, strict=True)
        ]


def _status(version: Version) -> str:
    if version.stage == "live":
        return "live"
    staying = version.staying()
    if staying:
        return f"kept mapped: {staying}"
    return "retired" if version.stage != "ended" else "unloaded"


Content = bytes | str  # a version's bytes, or the path of a file holding them


class Contents:
    """The contents of the last good versions, for rollback(): a small library's bytes (kept
    anyway, to tell a rewrite from a change), a large one's as a hard link to its copy in the
    reloader's private directory, made by flush(), off the path to the new code."""

    def __init__(self, store: PrivateStore, directory: str) -> None:
        self._store = store
        self._directory = directory
        self._kept: deque[Content] = deque()
        self._to_keep: list[str] = []
        self._serial = 0

    def keep(self, path: str, content: bytes | None) -> None:
        """Keep the content of the version just loaded from the copy at `path`."""
        if content is not None:
            self._kept.append(content)
            self._trim()
        else:
            self._to_keep.append(path)

    def flush(self) -> None:
        """Make the links keep() asked for (before any of those copies is deleted)."""
        to_keep, self._to_keep = self._to_keep, []
        for path in to_keep:
            self._serial += 1
            kept = os.path.join(self._directory, f"kept-{self._serial}")
            try:
                os.link(path, kept)
            except OSError:  # a file system without hard links: copy it
                import shutil

                try:
                    shutil.copyfile(path, kept)
                except OSError:
                    continue  # the copy is gone already: that content cannot be kept
            self._kept.append(kept)
        self._trim()

    def _trim(self) -> None:
        while len(self._kept) > ROLLBACK_DEPTH:
            self.drop(self._kept.popleft())

    @property
    def pending(self) -> bool:
        """True if keep() was asked for and flush() has not run since."""
        return bool(self._to_keep)

    def __len__(self) -> int:
        return len(self._kept) + len(self._to_keep)

    def take_previous(self) -> tuple[Content, Content]:
        """Take the current and the previous content off the top; give them back with
        `restore` if the rollback fails."""
        self.flush()
        current = self._kept.pop()
        return self._kept.pop(), current

    def restore(self, previous: Content, current: Content) -> None:
        """Put back what take_previous took."""
        self._kept.extend((previous, current))

    def drop(self, content: Content) -> None:
        """Forget a content for good."""
        if isinstance(content, str):
            self._store.remove(content)
