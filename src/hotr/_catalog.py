"""The prototypes of each library hotr builds, so that its functions are typed as declared.

Each build also runs the compiler's preprocessor on the C sources (``cc -E``; see
PrototypeCatalog for when), unless only function bodies changed since the last build (the
sources' outlines and the headers are as they were): then the last build's prototypes hold.
The prototypes are filed under the SHA-256 of the library that build wrote: a version loaded
later is typed by the prototypes of the build that made its bytes, which also holds for a
rollback to earlier content.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import subprocess
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from ._commands import communicate
from ._log import logger
from ._prototypes import parse
from ._record import Record
from ._signals import deferred
from ._typed import Signature, signature

_KEEP = 16  # builds remembered: more than rollback can go back (8)
_TIMEOUT = 30.0


class Built(Record):
    """What one build's sources declare."""

    typed: dict[str, Signature]  # the functions with a ctypes signature
    defined: tuple[str, ...]  # every function the sources define (not static), in order


class Reading(Record):
    """Prototypes being read for one build: the preprocessor started beside the compile, or the
    earlier build's prototypes when the sources' outlines and headers are as they were (`key`)."""

    running: list[subprocess.Popen[bytes]]
    key: tuple[object, ...] | None
    reused: Built | None


class PrototypeCatalog:
    """The prototypes of the last few builds of one reloader, by the built library's digest.

    A build whose sources differ from the last one's only inside braces (function bodies: the
    usual edit), with the same headers, reuses its prototypes instead of preprocessing again.
    A single source is preprocessed beside its compile; several are preprocessed after the
    build, at most `jobs` at once, so that the compilers never run more than `jobs` at once.
    """

    def __init__(
        self, preprocessor: list[str], sources: Sequence[str], jobs: int, cwd: str
    ) -> None:
        self._argv = preprocessor
        self._cwd = cwd  # where the preprocessor runs, as the compiles do
        self._sources = [s for s in sources if s.endswith(".c")]  # C++ names are mangled
        self._jobs = max(1, jobs)
        self._lock = threading.Lock()
        self._by_digest: OrderedDict[str, Built] = OrderedDict()
        self._last: tuple[tuple[object, ...], Built] | None = None

    def start(self, headers: Iterable[str]) -> Reading:
        """Call just before the compile starts; `headers` are the ones the last build used."""
        key = self._key(headers)
        if key is not None and self._last is not None and self._last[0] == key:
            return Reading([], key, self._last[1])
        beside = len(self._sources) == 1 and self._jobs > 1
        return Reading(self._spawn(self._sources) if beside else [], key, None)

    def _spawn(self, sources: list[str]) -> list[subprocess.Popen[bytes]]:
        running = []
        for source in sources:
            try:
                running.append(
                    subprocess.Popen(
                        [*self._argv, source],
                        cwd=self._cwd,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,  # a session of its own: killed with its children
                    )
                )
            except OSError as exc:
                logger.debug("cannot preprocess %s for its prototypes: %s", source, exc)
        return running

    def _read_batch(self, sources: list[str]) -> tuple[list[str], bool]:
        """Preprocess `sources` at once; what _collect() returns."""
        running: list[subprocess.Popen[bytes]] = []
        try:
            with deferred():  # a Ctrl-C between starting them and owning them: no zombies
                running = self._spawn(sources)
        except BaseException:
            _collect(running, wanted=False)
            raise
        return _collect(running, wanted=True)

    def _key(self, headers: Iterable[str]) -> tuple[object, ...] | None:
        """What the prototypes depend on: the sources' outlines, the headers' size and time."""
        parts: list[object] = []
        for source in self._sources:
            try:
                with open(source, errors="replace") as f:
                    shape = outline(f.read())
            except OSError:
                return None
            if shape is None:
                return None
            parts.append(shape)
        for header in sorted(headers):
            try:
                info = os.stat(header)
            except OSError:
                return None
            parts.append((header, info.st_size, info.st_mtime_ns))
        return tuple(parts)

    def finish(self, reading: Reading, library: str | None, headers: Iterable[str]) -> None:
        """Collect what `start` began and file it under `library`'s content (None: the build
        failed or was interrupted; a preprocessor running is just ended)."""
        running, key, built = reading
        if library is None:
            _collect(running, wanted=False)
            return
        if built is not None:
            now = self._key(headers)
            if now != key:  # a source changed during the build: read it after all
                key, built = now, None
        if built is None:
            if running:
                texts, complete = _collect(running, wanted=True)
            else:
                texts, complete = [], True
                for at in range(0, len(self._sources), self._jobs):
                    batch = self._read_batch(self._sources[at : at + self._jobs])
                    texts += batch[0]
                    complete = complete and batch[1]
            if not complete and not texts:
                return
            built = _read(texts)
            if complete and key is not None:
                self._last = (key, built)
        self._file(library, built)

    def _file(self, library: str, built: Built) -> None:
        try:
            with open(library, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            return
        with self._lock:
            self._by_digest[digest] = built
            self._by_digest.move_to_end(digest)
            while len(self._by_digest) > _KEEP:
                self._by_digest.popitem(last=False)

    def built(self, digest: str) -> Built | None:
        """What the build that wrote content `digest` declares (None: not built here)."""
        with self._lock:
            return self._by_digest.get(digest)


def _collect(running: list[subprocess.Popen[bytes]], *, wanted: bool) -> tuple[list[str], bool]:
    """The outputs of the preprocessors `running` (none if not `wanted`: they are ended), and
    whether every one of them succeeded."""
    texts: list[str] = []
    complete = len(running) > 0 or not wanted
    try:
        for proc in running if wanted else ():
            # Done when it exits, as a build is (a server a compiler wrapper starts may hold
            # the output open for long after).
            text, expired = communicate(proc, _TIMEOUT)
            if expired:
                logger.debug("preprocessing for prototypes took over %s s; left untyped", _TIMEOUT)
                return [], False
            if proc.returncode == 0:
                texts.append(text)
            else:
                complete = False
                logger.debug("preprocessing for prototypes failed: %s", proc.args)
    finally:
        for proc in running:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
    return texts, complete


def _read(texts: list[str]) -> Built:
    """The prototypes in preprocessed sources."""
    found: dict[str, Signature] = {}
    defined: list[str] = []
    for text in texts:
        for name, prototype in parse(text).items():
            if prototype.defined:
                defined.append(name)
            typed = signature(prototype)
            if typed is None:
                logger.debug("%s: no ctypes type for %s; left untyped", name, prototype.type)
            else:
                found[name] = typed
    return Built(found, tuple(defined))


_OUTLINE = re.compile(
    r"""/\*.*?\*/|//[^\n]*
      | "(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'
      | ^[ \t]*\#(?:[^\n]*\\\n)*[^\n]*
      | [{}]""",
    re.VERBOSE | re.MULTILINE | re.DOTALL,
)
_CONDITIONAL = re.compile(r"^[ \t]*#[ \t]*(?:if|ifdef|ifndef|elif|elifdef|elifndef|else|endif)\b")


def outline(source: str) -> str | None:
    """`source` without the insides of its top-level braces (function bodies, struct members),
    comments dropped and directives kept: what the prototypes can depend on, from the file
    itself.  Two sources with the same outline declare the same functions (given the same
    headers and flags).  None when that cannot be told from the text: unbalanced braces, or a
    conditional directive inside braces (``#if`` could pick between two signatures there)."""
    kept: list[str] = []
    depth = 0
    at = 0
    for match in _OUTLINE.finditer(source):
        token = match.group()
        if depth == 0:
            kept.append(source[at : match.start()])
        at = match.end()
        if token == "{":
            if depth == 0:
                kept.append("{")
            depth += 1
        elif token == "}":
            depth -= 1
            if depth < 0:
                return None
            if depth == 0:
                kept.append("}")
        elif token.lstrip().startswith("#"):
            if depth and _CONDITIONAL.match(token):
                return None
            kept.append("\n" + token + "\n")
        elif token.startswith(("/*", "//")):
            kept.append(" ")
        elif depth == 0:
            kept.append(token)
    if depth:
        return None
    kept.append(source[at:])
    return "".join(kept)
