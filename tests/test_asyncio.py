"""asyncio: waiting on the loop (no thread of its own), changes(), aload()."""

from __future__ import annotations

import asyncio
import contextlib
import select
import threading
import time
from pathlib import Path

import pytest
from conftest import CC, Builder, source

import hotr


def test_wait_for_change(builder: Builder) -> None:
    async def main() -> None:
        with hotr.HotReloader(builder.lib) as r:
            lib = r.update()
            started = time.monotonic()
            assert await r.wait_for_change(timeout=0.1) is False
            assert time.monotonic() - started >= 0.09
            builder.rename(source(2))
            assert await r.wait_for_change(timeout=5) is True
            r.update()
            assert lib.value() == 2
            r.stop()
            with pytest.raises(hotr.HotReloadError, match="not being watched"):
                await r.wait_for_change(timeout=1)

    asyncio.run(main())


def test_other_tasks_run_while_waiting(builder: Builder) -> None:
    async def main() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        with hotr.HotReloader(builder.lib) as r:
            r.update()
            await r.wait_for_change(timeout=0.3)
        task.cancel()
        return ticks

    assert asyncio.run(main()) >= 10


def test_changes_yields_each_new_version(builder: Builder) -> None:
    async def main() -> list[int]:
        seen: list[int] = []
        with hotr.HotReloader(builder.lib) as r:
            lib = r.update()

            async def follow() -> None:
                async for version in r.changes():
                    seen.append(version.number)
                    if version.number == 3:
                        return

            task = asyncio.create_task(follow())
            await asyncio.sleep(0.05)
            builder.rename(source(2))
            while lib.value() != 2:
                await asyncio.sleep(0.01)
            builder.write_bytes(b"junk")  # a failure is logged, the iteration goes on
            await asyncio.sleep(0.1)
            builder.rename(source(3))
            await asyncio.wait_for(task, 5)
        return seen

    assert asyncio.run(main()) == [2, 3]


def test_aload_reloads_on_the_loop_without_threads(builder: Builder) -> None:
    hotr.HotReloader(builder.lib).close()  # the process's watch thread now runs

    async def main() -> None:
        threads = threading.active_count()
        reloads: list[tuple[int, int]] = []
        lib = await hotr.aload(builder.lib, on_reload=lambda old, new: reloads.append((old, new)))
        assert lib.value() == 1
        builder.rename(source(2))
        deadline = time.monotonic() + 5
        while lib.value() != 2:
            assert time.monotonic() < deadline, "aload did not reload"
            await asyncio.sleep(0.01)
        assert threading.active_count() == threads, "aload started a thread"
        assert reloads == [(1, 2)]
        (task,) = [t for t in asyncio.all_tasks() if t.get_name().startswith("hotr:")]
        hotr.reloader_of(lib).close()
        await asyncio.wait_for(task, 1)  # close() ends the task at once

    asyncio.run(main())


def test_waiters_of_every_kind_see_each_change(builder: Builder) -> None:
    # aload's own task, two more tasks in wait_for_change, one in changes(), and a thread in
    # watch_for_changes: all on one reloader, none steals another's change.
    async def main() -> None:
        lib = await hotr.aload(builder.lib)
        reloader = hotr.reloader_of(lib)
        seen: list[str] = []

        async def waiter(name: str) -> None:
            assert await reloader.wait_for_change(timeout=5), name
            seen.append(name)

        async def follower() -> None:
            async for version in reloader.changes():
                seen.append(f"changes {version.number}")
                return

        thread_result: list[int] = []
        thread = threading.Thread(
            target=lambda: thread_result.append(reloader.watch_for_changes(timeout=5))
        )
        thread.start()
        tasks = [asyncio.create_task(waiter(f"task {n}")) for n in (1, 2)]
        tasks.append(asyncio.create_task(follower()))
        await asyncio.sleep(0.05)
        builder.rename(source(2))
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        await asyncio.get_running_loop().run_in_executor(None, thread.join)
        assert thread_result == [1]
        assert sorted(seen) == ["changes 2", "task 1", "task 2"]
        assert lib.value() == 2
        assert reloader.version == 2, "the change was loaded more than once"
        reloader.close()

    asyncio.run(main())


def test_close_ends_every_waiting_task(builder: Builder) -> None:
    async def main() -> None:
        reloader = hotr.HotReloader(builder.lib)
        reloader.update()
        waits = [asyncio.create_task(reloader.wait_for_change()) for _ in range(3)]

        async def follow() -> None:
            async for _ in reloader.changes():
                pass

        follower = asyncio.create_task(follow())
        await asyncio.sleep(0.05)
        started = time.monotonic()
        reloader.close()
        for wait in waits:
            with pytest.raises(hotr.HotReloadError, match="not being watched"):
                await asyncio.wait_for(wait, 1)
        await asyncio.wait_for(follower, 1)
        assert time.monotonic() - started < 1

    asyncio.run(main())


def test_aload_builds_sources(builder: Builder) -> None:
    src = builder.dir / "k.c"
    src.write_text("int value(void) { return 5; }\n")

    async def main() -> None:
        with await hotr.aload(src) as lib:
            assert lib.value() == 5
            src.write_text("int value(void) { return 6; }\n")
            deadline = time.monotonic() + 10
            while lib.value() != 6:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)

    asyncio.run(main())


def test_a_task_that_only_waits_beside_one_that_loads(builder: Builder) -> None:
    # A notifier that never calls update() is told of each change once, and gives the loop
    # back, so the task in changes() runs and loads it.
    async def main() -> tuple[int, list[int]]:
        reloader = hotr.HotReloader(builder.lib)
        reloader.update()
        seen = 0
        loaded: list[int] = []

        async def notifier() -> None:
            nonlocal seen
            with contextlib.suppress(hotr.HotReloadError):
                while True:
                    if await reloader.wait_for_change():
                        seen += 1

        async def consumer() -> None:
            async for version in reloader.changes():
                loaded.append(version.number)

        tasks = [asyncio.create_task(notifier()), asyncio.create_task(consumer())]
        await asyncio.sleep(0.05)
        builder.rename(source(2))
        deadline = time.monotonic() + 5
        while not loaded:
            assert time.monotonic() < deadline, "the loop was never given back"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        reloader.close()
        await asyncio.wait_for(asyncio.gather(*tasks), 1)
        return seen, loaded

    seen, loaded = asyncio.run(main())
    assert loaded == [2]
    assert seen == 1, f"the notifier was told {seen} times of one change"


def test_changes_yields_versions_another_driver_loaded(builder: Builder) -> None:
    async def main() -> list[int]:
        reloader = hotr.HotReloader(builder.lib, debounce=0)
        reloader.update()
        got: list[int] = []

        async def follow() -> None:
            async for version in reloader.changes():
                got.append(version.number)
                if version.number == 3:
                    return

        task = asyncio.create_task(follow())
        await asyncio.sleep(0.05)
        for n in (2, 3):  # loaded from this (blocked) loop's thread, the loop busy meanwhile
            builder.rename(source(n))
            reloader.watch_for_changes(timeout=5)
            reloader.update()
        await asyncio.wait_for(task, 5)
        reloader.close()
        return got

    assert asyncio.run(main()) == [2, 3]


def test_a_new_task_is_not_told_of_a_change_loaded_before_it_began(builder: Builder) -> None:
    # A task starts with a copy of its creator's context: the creator's look, taken before
    # another task loaded a change, must not make every later task's first wait report it.
    async def main() -> list[bool]:
        with hotr.HotReloader(builder.lib) as r:
            lib = r.update()

            async def load_next(n: int) -> bool:
                builder.rename(source(n))
                changed = await r.wait_for_change(timeout=5)
                r.update()
                assert lib.value() == n
                return changed

            async def wait_briefly() -> bool:
                return await r.wait_for_change(timeout=0.2)

            assert await asyncio.create_task(load_next(2)) is True
            return [await asyncio.create_task(wait_briefly()) for _ in range(2)]

    assert asyncio.run(main()) == [False, False]


def test_changes_builds_a_save_made_during_another_threads_build(tmp_path: Path) -> None:
    # A compiler that takes a second after writing its output while `slow` exists: the
    # program's update() in a thread builds version 2 meanwhile, and the save of 3 that
    # changes() is told of then is built once that build is over, not dropped.
    compiler = tmp_path / "slowcc"
    compiler.write_text(
        f'#!/bin/sh\n{CC} "$@" || exit $?\n[ -e {tmp_path}/slow ] && sleep 1\nexit 0\n'
    )
    compiler.chmod(0o755)
    src = tmp_path / "k.c"
    src.write_text("int value(void) { return 1; }\n")

    async def main() -> int:
        with hotr.HotReloader(src, cc=str(compiler), debounce=0) as r:
            lib = r.update()
            task = asyncio.create_task(anext(aiter(r.changes()), None))
            await asyncio.sleep(0.05)
            (tmp_path / "slow").touch()
            src.write_text("int value(void) { return 2; }\n")
            thread = threading.Thread(target=r.update)
            thread.start()
            await asyncio.sleep(0.3)  # the thread's build is running
            (tmp_path / "slow").unlink()
            src.write_text("int value(void) { return 3; }\n")
            deadline = time.monotonic() + 10
            while lib.value() != 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            await asyncio.to_thread(thread.join, 10)
            task.cancel()
            return int(lib.value())

    assert asyncio.run(main()) == 3


def test_changes_reports_a_change_made_before_it_began(builder: Builder) -> None:
    # Like the waits, changes() reports changes since the version was loaded: a save that
    # hotr has seen already (fileno() is readable) but nothing took in yet is loaded.
    async def main() -> int:
        with hotr.HotReloader(builder.lib) as r:
            lib = r.update()
            builder.rename(source(2))
            assert select.select([r.fileno()], [], [], 5)[0], "the change was never seen"
            async for version in r.changes():
                assert version.number == 2
                return int(lib.value())
        return 0

    assert asyncio.run(asyncio.wait_for(main(), 5)) == 2
