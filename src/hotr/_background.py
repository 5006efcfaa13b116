"""hotr.load() and hotr.aload(): a library that reloads itself, from a thread or an event loop."""

from __future__ import annotations

import os

from ._drivers import BackgroundDriver, Cursor, follow
from ._exceptions import HotReloadError
from ._library import Library
from ._reloader import HotReloader, core_of

TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Sequence
    from typing import Any, TypeAlias

    Target: TypeAlias = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def load(
    path: Target,
    *,
    on_reload: Callable[[int, int], object] | None = None,
    on_error: Callable[[HotReloadError], object] | None = None,
    manual: bool = False,
    **options: Any,
) -> Library:
    """Load the library at `path` now and reload it in the background whenever it changes.

    A daemon thread watches (and runs builds, when `path` is C sources); a version that fails
    to load is logged (logger ``hotr``) and the previous one keeps running.  `options` are
    HotReloader's (sources, build, cc, flags, compile_flags, link_flags, jobs, build_timeout,
    keep_globals, probe, prototypes, guard, backend, debounce).  ``hotr.reloader_of(lib)`` is the
    HotReloader: ``.stop()`` ends the watching (the version stays live), ``.close()`` or
    ``with lib:`` unloads; both happen at exit anyway.
    The program may call the reloader's update(), poll() and watch_for_changes() as well.

    Args:
        on_reload: called with (old_version, new_version) after each reload, in the thread.
        on_error: called with the error of each failed reload (build or load).
        manual: watch and build in the background, but load a new version only when the
            program calls ``hotr.reloader_of(lib).update()`` (once per frame, say): the switch
            happens at a point the program chooses, and costs no build time there.

    Raises:
        FileNotFoundError: `path` does not exist.
        LoadError: the first version cannot be loaded (BuildError: cannot be built).

    Example::

        lib = hotr.load("./libhot.so")  # or hotr.load("example.c")
        while True:
            lib.step()  # runs the newest build
    """
    reloader = HotReloader(path, **options)
    start(reloader, on_reload, on_error, manual)
    return reloader.library


def start(
    reloader: HotReloader,
    on_reload: Callable[[int, int], object] | None,
    on_error: Callable[[HotReloadError], object] | None,
    manual: bool,
) -> None:
    """Load the first version now (closing `reloader` if that fails), then reload in a
    background thread: hotr.load and hotr.load_module."""
    try:
        if not isinstance(manual, bool):
            raise TypeError(f"manual must be True or False, not {manual!r}")
        _register(reloader, on_reload, on_error)
        reloader.update()
    except BaseException:
        reloader.close()
        raise
    core = core_of(reloader)
    core.background_builds = manual
    driver = BackgroundDriver(
        f"hotr:{os.path.basename(reloader.path)}", manual=manual, until_empty=True
    )
    driver.attach(core, reloader)


async def aload(
    path: Target,
    *,
    on_reload: Callable[[int, int], object] | None = None,
    on_error: Callable[[HotReloadError], object] | None = None,
    **options: Any,
) -> Library:
    """hotr.load() for asyncio: reloads happen on the running loop, in a task.

    Loads run on the loop between other tasks, builds in the loop's default executor; no
    thread of its own (the process's watch thread wakes the loop).  The task ends when the
    reloader is stopped or closed (``with lib:``, ``hotr.reloader_of(lib).close()``).

    Example::

        lib = await hotr.aload("./libhot.so")
    """
    reloader = HotReloader(path, **options)
    await astart(reloader, on_reload, on_error)
    return reloader.library


async def astart(
    reloader: HotReloader,
    on_reload: Callable[[int, int], object] | None,
    on_error: Callable[[HotReloadError], object] | None,
) -> None:
    """Load the first version (closing `reloader` if that fails), then reload in a task on the
    running loop: hotr.aload and hotr.aload_module."""
    import asyncio  # here, not at import time: it costs ~20 ms

    loop = asyncio.get_running_loop()
    try:
        _register(reloader, on_reload, on_error)
        if core_of(reloader).builds is None:
            reloader.update()  # a load takes well under a millisecond: do it on the loop
        else:
            await loop.run_in_executor(None, reloader.update)  # a build may take seconds
    except BaseException:
        reloader.close()
        raise
    core = core_of(reloader)
    cursor = Cursor(core.tracker.snapshot())  # from now: a change before the task first runs counts
    _tasks.add(loop.create_task(_follow(reloader, cursor), name=f"hotr:{reloader.path}"))


_tasks: set[asyncio.Task[None]] = set()  # the running aload tasks (the loop keeps weak refs)


async def _follow(reloader: HotReloader, cursor: Cursor) -> None:
    try:
        async for _ in follow(core_of(reloader), cursor):
            pass
    finally:
        import asyncio

        task = asyncio.current_task()
        if task is not None:
            _tasks.discard(task)


def _register(
    reloader: HotReloader,
    on_reload: Callable[[int, int], object] | None,
    on_error: Callable[[HotReloadError], object] | None,
) -> None:
    if on_reload is not None:
        reloader.on_reload(on_reload)
    if on_error is not None:
        reloader.on_error(on_error)
