"""The per-user object cache: compiled objects kept between runs and shared by processes.

Layout under the cache directory (``$HOTR_CACHE_DIR``, else ``$XDG_CACHE_HOME/hotr``, else
``~/.cache/hotr``; mode 0700, checked like the private directory)::

    manifests/<unit key>.json   which headers (path, sha256) the unit used, each set's object
                                and what its compile printed (warnings, shown again on a hit)
    objects/<object key>.o      an object file, written once and never changed
    tmp/                        compiler output on its way into objects/
    lock                        flock, held to update a manifest and to evict

A unit key digests what is known before compiling (compiler identity, argv, working directory,
source path and content); the headers come from the compiler's dependency output, so a manifest
lists each header set seen with that unit key, and the object key digests the unit key with the
header contents.  Every file is written to a temporary name and renamed into place, so readers
never see half a file; a reader takes its own hard link (or copy) of an object before linking
it, so eviction by another process never pulls an object from under a link.  The size is bounded
by ``$HOTR_CACHE_SIZE`` (default 1G): least recently used files go first.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator

from . import _env
from ._exceptions import HotReloadError
from ._log import logger
from ._store import ensure_private_directory
from ._threads import Handle, start

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


_ENTRIES = 16  # header sets remembered per unit key (a header edited back and forth)
_STALE_TMP = 3600.0  # seconds: a temporary file this old was left by a process that died


def digest(*parts: str | bytes) -> str:
    """A sha256 over `parts`, each length-prefixed so that no two lists digest alike."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8", "surrogateescape") if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def file_digest(path: str) -> str | None:
    """The sha256 of a file's content, or None when it cannot be read (removed)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 16):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


class ObjectCache:
    """The cache directory at `root`, bounded to `limit` bytes (see the module docstring)."""

    def __init__(self, root: str, limit: int) -> None:
        self.root = root
        self.limit = limit
        ensure_private_directory(root, "cache directory", "HOTR_CACHE_DIR")
        for sub in ("manifests", "objects", "tmp"):
            with contextlib.suppress(FileExistsError):
                os.mkdir(os.path.join(root, sub), 0o700)
        self._lock = threading.Lock()
        self._added = 0  # bytes stored by this process since its last eviction pass
        self._checked = False  # an eviction pass ran in this process
        self._pending: list[tuple[str, dict[str, str], str, str]] = []  # for store_later()
        self._changed = threading.Condition(self._lock)  # pending work came, or was done
        self._storing = False  # objects given to store_later() are not all stored yet
        self._worker: Handle | None = None  # stores them; started on first use

    def temp_path(self, suffix: str) -> str:
        """A new, unused path in the cache's tmp directory for a compiler to write to."""
        fd, path = self._create_temp(suffix)
        os.close(fd)
        return path

    def _create_temp(self, suffix: str) -> tuple[int, str]:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        while True:
            path = os.path.join(self.root, "tmp", f"{os.getpid()}-{secrets.token_hex(6)}{suffix}")
            with contextlib.suppress(FileExistsError):
                return os.open(path, flags, 0o600), path

    def lookup(
        self, unit: str, header_digest: Callable[[str], str | None]
    ) -> tuple[list[str], str, str, int | None] | None:
        """A stored object of unit key `unit` whose headers have the content `header_digest`
        gives now: (its headers, its object key, what its compile printed, its size in bytes
        when stored, None if the entry does not say); None if there is none."""
        for entry in self._entries(unit):
            headers: dict[str, str] = entry["headers"]
            if all(header_digest(path) == sha for path, sha in headers.items()):
                found = entry["object"], entry.get("printed", ""), entry.get("size")
                return list(headers), *found
        return None

    def fetch(self, key: str, dest: str, size: int | None = None) -> bool:
        """Put the object `key` at `dest`, a file only the caller reads (a hard link, or a copy
        across file systems), and mark it used.  False if it is not (or no longer) in the
        cache, or is not `size` bytes long (cut short: a crash before the disk had its data,
        since objects are not flushed; it is then removed, so that a compile replaces it);
        `dest` is then gone."""
        source = os.path.join(self.root, "objects", f"{key}.o")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(dest)  # not renamed over: ext4 would flush it (auto_da_alloc)
        try:
            os.link(source, dest)
        except FileNotFoundError:
            return False
        except OSError:
            temp = f"{dest}.{os.getpid()}.{threading.get_ident()}.tmp"
            try:
                shutil.copyfile(source, temp)
                os.rename(temp, dest)
            except FileNotFoundError:
                return False
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
        if size is not None and os.path.getsize(dest) != size:
            logger.warning("removing a damaged object from the object cache: %s", source)
            for path in (source, dest):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            return False
        with contextlib.suppress(OSError):
            os.utime(source)
        return True

    def store(self, unit: str, headers: dict[str, str], produced: str, printed: str = "") -> str:
        """Move the compiler's output `produced` (from temp_path()) into the cache as the
        object of `unit` with these header digests, and what the compile `printed`; return its
        object key."""
        key = object_key(unit, headers)
        size = os.path.getsize(produced)
        target = os.path.join(self.root, "objects", f"{key}.o")
        if os.path.exists(target):  # another process stored the same object meanwhile
            os.unlink(produced)
        else:
            os.rename(produced, target)
        entry: dict[str, Any] = {"headers": headers, "object": key, "size": size}
        if printed:
            entry["printed"] = printed
        with self._locked():
            entries = [e for e in self._entries(unit) if e["object"] != key]
            self._write_manifest(unit, [entry, *entries][:_ENTRIES])
        with self._lock:
            self._added += size
        return key

    def store_later(self, unit: str, headers: dict[str, str], produced: str, printed: str) -> None:
        """store() in a thread of the cache's own, so that the build does not wait for the
        cache's renames and manifest (they cost milliseconds on a busy disk); then trim().
        The thread lives on, waiting for the next object: starting one per save cost the
        build a tenth of a millisecond.  A process waits for the stores at exit (flush())."""
        with self._lock:
            self._pending.append((unit, headers, produced, printed))
            self._storing = True
            if self._worker is None:
                self._worker = start(self._work, "hotr-cache", hold_signals=True)
            else:
                self._changed.notify_all()

    def _work(self) -> None:
        while True:
            with self._lock:
                self._changed.wait_for(lambda: bool(self._pending))
                unit, headers, produced, printed = self._pending.pop(0)
            try:
                self.store(unit, headers, produced, printed)
            except OSError as exc:
                logger.debug("not caching %s: %s", produced, exc)
                with contextlib.suppress(OSError):
                    os.unlink(produced)
            with self._lock:
                if self._pending:
                    continue
            self.trim()
            with self._lock:
                if not self._pending:
                    self._storing = False
                    self._changed.notify_all()

    def flush(self, timeout: float) -> None:
        """Wait (at most `timeout` seconds) for the objects given to store_later()."""
        with self._lock:
            self._changed.wait_for(lambda: not self._storing, timeout)

    def forget_pending(self) -> None:
        """In a forked child: the parent stores what it has pending; this process does not
        (and its thread is the parent's: the next store_later() starts one here)."""
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pending = []
        self._storing = False
        self._worker = None

    def trim(self) -> None:
        """Evict least recently used files until the cache is within its limit again.  Runs
        when this process has added a 32nd of the limit since its last pass (or never ran one),
        so the directory is not scanned on every save.  Never raises."""
        with self._lock:
            if self._checked and self._added < self.limit // 32:
                return
            self._checked, self._added = True, 0
        try:
            with self._locked():
                self._evict()
        except OSError as exc:
            logger.warning("cannot trim the object cache %s: %s", self.root, exc)

    def _evict(self) -> None:
        now = time.time()
        files: list[tuple[float, int, str]] = []
        for sub in ("objects", "manifests", "tmp"):
            for entry in os.scandir(os.path.join(self.root, sub)):
                with contextlib.suppress(OSError):
                    info = entry.stat(follow_symlinks=False)
                    if sub == "tmp":
                        if now - info.st_mtime > _STALE_TMP:
                            os.unlink(entry.path)
                        continue
                    files.append((info.st_mtime, info.st_size, entry.path))
        total = sum(size for _, size, _ in files)
        if total <= self.limit:
            return
        files.sort()
        goal = self.limit * 3 // 4  # room for a while, so the next pass is not soon
        removed = 0
        for _, size, path in files:
            if total <= goal:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            total -= size
            removed += 1
        logger.debug("evicted %d files from the object cache %s", removed, self.root)

    def _entries(self, unit: str) -> list[dict[str, Any]]:
        path = os.path.join(self.root, "manifests", f"{unit}.json")
        try:
            with open(path, encoding="utf-8") as f:
                entries = json.load(f)
        except (OSError, ValueError):
            return []
        with contextlib.suppress(OSError):
            os.utime(path)
        if not isinstance(entries, list):
            return []
        return [e for e in entries if _well_formed(e)]

    def _write_manifest(self, unit: str, entries: list[dict[str, Any]]) -> None:
        fd, temp = self._create_temp(".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(entries, f)
            # Unlinked, then renamed (under the lock): ext4 flushes a file renamed over another
            # (auto_da_alloc), milliseconds.  A reader in between finds no manifest: a miss.
            target = os.path.join(self.root, "manifests", f"{unit}.json")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)
            os.rename(temp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(os.path.join(self.root, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def object_key(unit: str, headers: dict[str, str]) -> str:
    """The key of the object built for unit key `unit` with these header digests."""
    return digest(unit, *(f"{path}\0{sha}" for path, sha in sorted(headers.items())))


def _well_formed(entry: object) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("object"), str):
        return False
    if not isinstance(entry.get("printed", ""), str):
        return False
    size = entry.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
        return False
    headers = entry.get("headers")
    return isinstance(headers, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    )


_opened: dict[tuple[str, int], ObjectCache | None] = {}
_opened_lock = threading.Lock()


def open_cache() -> ObjectCache | None:
    """The cache the environment names, or None when it is off (``HOTR_CACHE_SIZE=0``) or
    cannot be used (then a warning says why, once, and builds go on without it)."""
    limit = _env.cache_size()
    root = _env.cache_root()
    with _opened_lock:
        if (root, limit) in _opened:
            return _opened[(root, limit)]
        cache: ObjectCache | None = None
        if limit > 0:
            try:
                os.makedirs(os.path.dirname(root), 0o700, exist_ok=True)
                cache = ObjectCache(root, limit)
            except (OSError, HotReloadError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else str(exc)
                logger.warning("not using the object cache %s: %s", root, reason)
        _opened[(root, limit)] = cache
        return cache


def _flush_all() -> None:
    """At exit: let the cache threads finish storing (a little while at most)."""
    for cache in list(_opened.values()):
        if cache is not None:
            cache.flush(5.0)


def _after_fork_in_child() -> None:
    global _opened_lock
    _opened_lock = threading.Lock()
    for cache in _opened.values():
        if cache is not None:
            cache.forget_pending()


atexit.register(_flush_all)
os.register_at_fork(after_in_child=_after_fork_in_child)
