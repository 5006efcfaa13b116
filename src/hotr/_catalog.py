"""The prototypes of each library hotr builds, so that its functions are typed as declared.

Each build also runs the compiler's preprocessor on the C sources (``cc -E``, started beside
the compile so it adds little to the build's time); the prototypes found are filed under the
SHA-256 of the library that build wrote.  A version loaded later is typed by the prototypes of
the build that made its bytes, which also holds for a rollback to earlier content.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import threading
from collections import OrderedDict
from typing import NamedTuple

from ._prototypes import parse
from ._typed import Signature, signature

logger = logging.getLogger("hotr")

_KEEP = 16  # builds remembered: more than rollback can go back (8)
_TIMEOUT = 30.0


class Built(NamedTuple):
    """What one build's sources declare."""

    typed: dict[str, Signature]  # the functions with a ctypes signature
    defined: tuple[str, ...]  # every function the sources define (not static), in order


class PrototypeCatalog:
    """The prototypes of the last few builds of one reloader, by the built library's digest."""

    def __init__(self, preprocessor: list[str], sources: list[str]) -> None:
        self._argv = preprocessor
        self._sources = [s for s in sources if s.endswith(".c")]  # C++ names are mangled
        self._lock = threading.Lock()
        self._by_digest: OrderedDict[str, Built] = OrderedDict()

    def start(self) -> list[subprocess.Popen[str]]:
        """Start preprocessing every C source (call just before the compile starts)."""
        running = []
        for source in self._sources:
            try:
                running.append(
                    subprocess.Popen(
                        [*self._argv, source],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,
                        text=True,
                        errors="replace",
                    )
                )
            except OSError as exc:
                logger.debug("cannot preprocess %s for its prototypes: %s", source, exc)
        return running

    def finish(self, running: list[subprocess.Popen[str]], library: str | None) -> None:
        """Collect what `start` began and file it under `library`'s content (None: the build
        failed or was interrupted; the preprocessors are just ended)."""
        texts: list[str] = []
        try:
            if library is not None:
                for proc in running:
                    text, _ = proc.communicate(timeout=_TIMEOUT)
                    if proc.returncode == 0:
                        texts.append(text)
                    else:
                        logger.debug("preprocessing for prototypes failed: %s", proc.args)
        except subprocess.TimeoutExpired:
            logger.debug("preprocessing for prototypes took over %s s; left untyped", _TIMEOUT)
            return
        finally:
            for proc in running:
                if proc.returncode is None:
                    proc.kill()
                    proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()
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
        if library is None:
            return
        try:
            with open(library, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            return
        with self._lock:
            self._by_digest[digest] = Built(found, tuple(defined))
            self._by_digest.move_to_end(digest)
            while len(self._by_digest) > _KEEP:
                self._by_digest.popitem(last=False)

    def built(self, digest: str) -> Built | None:
        """What the build that wrote content `digest` declares (None: not built here)."""
        with self._lock:
            return self._by_digest.get(digest)
