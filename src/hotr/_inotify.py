"""The inotify side of the reactor: one inotify instance for the whole process (inotify(7)).

Watching a file's inode would miss most rebuilds: GNU ld unlinks its output and creates a new
file, editors and install(1) save by renaming a temporary file over the old one.  So hotr
watches directory entries.  Each watched path is resolved one component at a time (`resolve`)
into the entries that decide what it names: the file's own entry, the entry of every symlink on
the way (a deploy that switches ``current -> releases/42`` is a rename in the directory holding
``current``), and, when a component is missing, the missing entry in the deepest directory that
exists (so a directory removed and created again is seen the moment it is back).  Any event on
one of those entries resolves the path again, as does every directory on the way moving or
going (its own IN_MOVE_SELF: ``mv build build.old`` moves the watched directories with it).

A change counts once its writer is done: IN_CLOSE_WRITE for a write in place or a new file,
IN_MOVED_TO for a rename, a new resolution for a symlink or a directory moved into place (they
have no writer).  An overflowed event queue (IN_Q_OVERFLOW) resolves every path again and tells
every watcher to look ("rescan"), so a dropped event loses nothing.
"""

from __future__ import annotations

import _thread
import errno
import os
import stat

from . import _libc
from ._log import logger
from ._shim import inotify_queued, inotify_read
from ._signals import deferred

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from functools import partial
    from typing import Literal

    from ._source import Sink

    # What a watched directory entry is to the path being watched: the file itself (it may not
    # exist yet), a symlink on the way to it, a directory on the way that does not exist, or
    # (with the name "") a directory on the way, watched only for moving or going itself.
    Role = Literal["file", "link", "missing", "dir"]
    Point = tuple[str, str, Role]  # (real directory, entry name, role)
    # "present": the path names an existing file; "absent": its directory exists, the file
    # does not; "unreachable": a directory on the way does not exist.
    _State = Literal["present", "absent", "unreachable"]
else:
    from _functools import partial  # functools imports collections: 1.5 ms

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_MASK_ADD = 0x20000000

_MASK = (
    IN_CLOSE_WRITE
    | IN_MOVED_TO
    | IN_MOVED_FROM
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_DONT_FOLLOW
    | IN_EXCL_UNLINK
)
_SELF_MASK = IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | IN_MASK_ADD
_SELF_GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED | IN_UNMOUNT
_READ_SIZE = 64 * 1024  # many events a read; the kernel never splits one
_MAX_LINKS = 40  # as the kernel's ELOOP limit
_SETTLE = 8  # resolutions in a row before a path that keeps changing is left as it is
# A file created under the watched name with no close event after this long, unchanged and open
# for writing by no process hotr can see, is complete: a hard link whose other name is gone.
_QUIET_AFTER_CREATE = 0.5


def resolve(path: str) -> tuple[tuple[Point, ...], str | None]:
    """The entries that decide what the absolute `path` names, and the real path of the file it
    names now (None when some component does not exist)."""
    points: list[Point] = []
    directory = "/"
    pending = [part for part in reversed(path.split("/")) if part]
    links = 0
    while pending:
        name = pending.pop()
        if name == ".":
            continue
        if name == "..":
            directory = os.path.dirname(directory)
            continue
        entry = os.path.join(directory, name)
        last = not pending
        try:
            info = os.lstat(entry)
        except OSError:
            points.append((directory, name, "file" if last else "missing"))
            return tuple(points), None
        if stat.S_ISLNK(info.st_mode):
            points.append((directory, name, "link"))
            links += 1
            try:
                target = os.readlink(entry)
            except OSError:
                return tuple(points), None
            if links > _MAX_LINKS:
                return tuple(points), None
            if target.startswith("/"):
                directory = "/"
            pending.extend(part for part in reversed(target.split("/")) if part)
            continue
        if last:
            points.append((directory, name, "file"))
            return tuple(points), entry
        if not stat.S_ISDIR(info.st_mode):
            points.append((directory, name, "missing"))
            return tuple(points), None
        directory = entry
        points.append((directory, "", "dir"))
    return tuple(points), None


class InotifyWatch:
    """One watched path: the directory entries it is resolved through, and what it names."""

    backend = "inotify"

    def __init__(self, owner: InotifyWatches, path: str, sink: Sink) -> None:
        self.owner, self.path, self.sink = owner, path, sink
        self.attached: set[Point] = set()
        self.points: tuple[Point, ...] = ()
        self.final: str | None = None
        self.state: _State = "unreachable"
        self.created: tuple[int, ...] | None = None  # created, its close event not seen yet

    def close(self) -> None:
        """Stop watching the path; safe to call twice."""
        self.owner.unwatch(self)


class _Directory:
    __slots__ = ("entries", "names", "paths")

    def __init__(self, paths: set[str]) -> None:
        self.paths = paths
        self.names: dict[str, set[InotifyWatch]] = {}
        self.entries = False  # watched for its entries' events, not only its own


class InotifyWatches:
    """The process's inotify instance and the watch table over it.

    Any thread may call read(): it reads what the kernel queued and tells every affected watch,
    under one lock, so whoever reads, every watcher hears every event.
    """

    def __init__(
        self,
        on_unwatchable: Callable[[InotifyWatch, OSError], None],
        call_later: Callable[[float, Callable[[], None]], object],
    ) -> None:
        self.fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        self._on_unwatchable = on_unwatchable
        self._call_later = call_later  # (seconds, callback): run it later, in another thread
        self._lock = _thread.RLock()
        self._by_wd: dict[int, _Directory] = {}
        self._wds: dict[str, int] = {}
        self._watches: set[InotifyWatch] = set()
        self._created: list[tuple[InotifyWatch, str]] = []  # for _time_created()
        self._closed = False

    def watch(self, path: str, sink: Sink) -> InotifyWatch:
        """Watch `path` (absolute).  Raises OSError (ENOSPC: no inotify watches left)."""
        with self._lock:
            watch = InotifyWatch(self, path, sink)
            try:
                self._apply(watch)
            except OSError:
                self._detach_all(watch)
                raise
            watch.state = _state_of(watch)
            self._watches.add(watch)
            return watch

    def unwatch(self, watch: InotifyWatch) -> None:
        """Stop watching (the directory watches go once nothing uses them)."""
        with self._lock:
            self._watches.discard(watch)
            self._detach_all(watch)

    def read(self, *, blocking: bool = True) -> None:
        """Read every queued event and tell the watches concerned; never waits for events.

        With `blocking` False, return at once if another thread is reading (it reads on until
        the queue is empty).
        """
        if not self._lock.acquire(blocking=blocking):
            return
        try:
            self._read()
        finally:
            self._lock.release()

    def _read(self) -> None:
        while not self._closed:
            # FIONREAD: how much is queued, so an empty queue costs no exception (EAGAIN).
            queued = inotify_queued(self.fd)
            if not queued:
                return
            with deferred():  # events read are events delivered: a Ctrl-C waits for them
                try:
                    events, emptied = inotify_read(self.fd, max(queued, _READ_SIZE))
                except (BlockingIOError, InterruptedError):
                    return
                for wd, mask, name in events:
                    self._dispatch(wd, mask, name)
                self._time_created()
            if emptied:
                return  # no second ioctl to find that out

    def close(self) -> None:
        """Close the instance (its watches go with it); safe to call twice."""
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self.fd)

    def abandon(self) -> None:
        """In a forked child: drop the descriptor the parent shares, touching none of its
        watches (inotify_rm_watch here would remove them for the parent too)."""
        self._closed = True
        try:
            os.close(self.fd)
        except OSError:
            pass

    # -- events ------------------------------------------------------------------------------

    def _dispatch(self, wd: int, mask: int, name: str) -> None:
        if mask & IN_Q_OVERFLOW:
            logger.info("the inotify event queue overflowed; looking at every watched file again")
            for watch in list(self._watches):
                self._refresh(watch)
                watch.sink("rescan")
            return
        directory = self._by_wd.get(wd)
        if directory is None:
            return
        if mask & _SELF_GONE:
            self._forget_directory(wd, directory, remove=not mask & (IN_IGNORED | IN_UNMOUNT))
            gone = [directory, *self._forget_below(directory.paths)]
            paths = {path for d in gone for path in d.paths}
            for watch in {w for d in gone for ws in d.names.values() for w in ws}:
                watch.attached = {p for p in watch.attached if p[0] not in paths}
                self._refresh(watch, True)  # a file found there now is another file
            return
        watches = directory.names.get(name)
        if not watches:
            return  # the usual case: another file of the directory (a temporary, an object)
        for watch in list(watches):
            last = watch.points[-1] if watch.points else None
            if (
                last is not None
                and last[2] == "file"
                and any(last[:2] == (path, name) for path in directory.paths)
                and self._file_event(watch, os.path.join(last[0], name), mask)
            ):
                continue
            self._refresh(watch, mask & IN_CREATE != 0)

    def _file_event(self, watch: InotifyWatch, entry: str, mask: int) -> bool:
        """An event on the file's own entry, which is (or is left) anything but a symlink:
        what the path resolves through did not move, so at most one lstat tells all.  False
        for a symlink: the path must be resolved again."""
        mode: int | None
        linked = False  # a name made for a file that is complete already (ln)
        if mask & (IN_DELETE | IN_MOVED_FROM):
            mode = None  # gone; a new file there brings an event of its own
        elif mask & IN_CLOSE_WRITE:
            mode = stat.S_IFREG  # only a file opened for writing is closed after writing
        else:  # created or renamed in: it may be a symlink, or a hard link
            try:
                info = os.lstat(entry)
            except OSError:
                mode = None
            else:
                mode, linked = info.st_mode, info.st_nlink > 1
            if mode is not None and stat.S_ISLNK(mode):
                return False
        before = watch.state
        watch.final = entry if mode is not None else None
        watch.state = "present" if mode is not None else "absent"
        watch.created = None
        if mode is not None and (mask & (IN_CLOSE_WRITE | IN_MOVED_TO) or linked):
            watch.sink("written")  # a writer is done, or a whole file was put in place
        elif mode is None and before == "present":
            watch.sink("gone")
        elif mode is not None and mask & IN_CREATE:
            # Created and being written (its IN_CLOSE_WRITE will follow), or a hard link whose
            # other name went before hotr looked (no event will follow): see _quiet().
            watch.created = _identity(entry)
            self._created.append((watch, entry))  # timed once the events read are delivered
        return True

    def _time_created(self) -> None:
        """Set the timer of _quiet() for the files created in the events just delivered and
        still waiting for their close event.  A linker's whole output (created, written,
        closed) is mostly read at once: then no timer is set, and hotr's thread is not woken
        to compete for the GIL with the reload."""
        created, self._created = self._created, []
        for watch, entry in created:
            if watch.created is not None and watch.final == entry:
                self._call_later(_QUIET_AFTER_CREATE, partial(self._quiet, watch, entry))

    def _quiet(self, watch: InotifyWatch, entry: str) -> None:
        """A while after `entry` was created with no close event since: if it is the same file,
        unchanged, and no process hotr can see has it open for writing, it is complete."""
        with self._lock:
            if watch not in self._watches or watch.created is None or watch.final != entry:
                return
            now = _identity(entry)
            if now is None:
                watch.created = None
            elif now != watch.created or _open_for_writing(now[0], now[1]):
                watch.created = now  # still being written: look again later
                self._call_later(_QUIET_AFTER_CREATE, lambda: self._quiet(watch, entry))
            else:
                watch.created = None
                watch.sink("written")

    def _refresh(self, watch: InotifyWatch, created: bool = False) -> None:
        """Resolve `watch` again after a change on its way (a directory or symlink, or a
        symlink in the file's place or a watched directory gone: `created`) and report what it
        means."""
        if watch not in self._watches:
            return
        before, named_before = watch.state, watch.final
        try:
            self._apply(watch)
        except OSError as exc:
            self.unwatch(watch)
            self._on_unwatchable(watch, exc)
            return
        watch.state = state = _state_of(watch)
        if state == "present":
            if created or before != "present" or watch.final != named_before:
                watch.sink("written")
        elif state == "absent":
            if before == "present":
                watch.sink("gone")
        elif before != "unreachable":
            watch.sink("lost")

    # -- the watch table ---------------------------------------------------------------------

    def _apply(self, watch: InotifyWatch) -> None:
        """Make the directory watches match what `watch.path` resolves to now.

        Resolving again after the watches are in place catches a change made in between;
        a directory that vanished before it could be watched is resolved again too.
        """
        for _ in range(_SETTLE):
            points, final = resolve(watch.path)
            if (points, final) == (watch.points, watch.final) and watch.attached == set(points):
                return
            wanted = set(points)
            for point in watch.attached - wanted:
                self._detach(watch, point)
            vanished = False
            for point in wanted - watch.attached:
                try:
                    self._attach(watch, point)
                except OSError as exc:
                    if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                        raise
                    vanished = True
            watch.points, watch.final = points, final
            if not vanished and resolve(watch.path) == (points, final):
                return

    def _attach(self, watch: InotifyWatch, point: Point) -> None:
        path, name, role = point
        entries = role != "dir"  # else only the directory's own move or removal matters
        wd = self._wds.get(path)
        if wd is None or (entries and not self._by_wd[wd].entries):
            try:
                wd = _libc.inotify_add_watch(self.fd, path, _MASK if entries else _SELF_MASK)
            except PermissionError:
                if entries:
                    raise
                watch.attached.add(point)  # a directory one may pass but not read (0711)
                return
            directory = self._by_wd.setdefault(wd, _Directory(set()))  # known: another alias
            directory.paths.add(path)
            directory.entries |= entries
            self._wds[path] = wd
        self._by_wd[wd].names.setdefault(name, set()).add(watch)
        watch.attached.add(point)

    def _detach(self, watch: InotifyWatch, point: Point) -> None:
        watch.attached.discard(point)
        path, name, _ = point
        wd = self._wds.get(path)
        directory = self._by_wd.get(wd) if wd is not None else None
        if wd is None or directory is None:
            return
        if any(p[0] in directory.paths and p[1] == name for p in watch.attached):
            return  # the same entry serves another point of this watch
        users = directory.names.get(name)
        if users is not None:
            users.discard(watch)
            if not users:
                del directory.names[name]
        if not directory.names:
            self._forget_directory(wd, directory, remove=True)

    def _detach_all(self, watch: InotifyWatch) -> None:
        for point in list(watch.attached):
            self._detach(watch, point)
        watch.attached.clear()

    def _forget_below(self, paths: set[str]) -> list[_Directory]:
        """Stop watching the directories under `paths`, which moved or went with them."""
        prefixes = tuple(path.rstrip("/") + "/" for path in paths)
        below = [
            (wd, d) for wd, d in self._by_wd.items() if any(p.startswith(prefixes) for p in d.paths)
        ]
        for wd, directory in below:
            self._forget_directory(wd, directory, remove=True)
        return [directory for _, directory in below]

    def _forget_directory(self, wd: int, directory: _Directory, *, remove: bool) -> None:
        self._by_wd.pop(wd, None)
        for path in directory.paths:
            if self._wds.get(path) == wd:
                del self._wds[path]
        if remove and not self._closed:
            try:  # EINVAL: the kernel dropped it already
                _libc.inotify_rm_watch(self.fd, wd)
            except OSError:
                pass


def _state_of(watch: InotifyWatch) -> _State:
    if watch.final is not None:
        return "present"
    if watch.points and watch.points[-1][2] == "file":
        return "absent"
    return "unreachable"


def _identity(path: str) -> tuple[int, ...] | None:
    """(device, inode, size, mtime) of `path` itself, or None if it is gone."""
    try:
        s = os.lstat(path)
    except OSError:
        return None
    return s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns


def _open_for_writing(device: int, inode: int) -> bool:
    """True if a process whose descriptors hotr may read (its user's) has the file open for
    writing (/proc/PID/fdinfo: the open flags)."""
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return False
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue  # another user's, or gone
        for fd in fds:
            try:
                s = os.stat(f"/proc/{pid}/fd/{fd}")
                if (s.st_dev, s.st_ino) != (device, inode):
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    flags = next(int(line.split()[1], 8) for line in f if line.startswith("flags:"))
            except (OSError, StopIteration, ValueError):
                continue
            if flags & (os.O_WRONLY | os.O_RDWR):
                return True
    return False
