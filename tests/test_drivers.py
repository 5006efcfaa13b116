"""Any number of drivers on one reloader at once: none loses a change, none steals another's.

Each scenario is one the old core lost changes in; each repeats (10 times here, 50 with --long)
and counts the changes lost, which must be none.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from conftest import Builder, source, wait_until_blocked

import hotr


@pytest.fixture
def rounds(request: pytest.FixtureRequest) -> int:
    return 50 if request.config.getoption("--long") else 10


def wait_until(check: object, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.002)


def save(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.rename(path)


def test_manual_load_with_update_every_frame_loads_every_save(tmp_path: Path, rounds: int) -> None:
    src = tmp_path / "frame.c"
    src.write_text("int value(void) { return 0; }\n")
    lost = 0
    with hotr.load(src, manual=True) as lib:
        reloader = hotr.reloader_of(lib)
        for n in range(1, rounds + 1):
            save(src, f"int value(void) {{ return {n}; }}\n")
            deadline = time.monotonic() + 10
            while lib.value() != n and time.monotonic() < deadline:
                reloader.update()  # once per "frame"
                time.sleep(0.002)
            lost += lib.value() != n
    assert lost == 0, f"{lost} of {rounds} saves never loaded"


def test_background_load_beside_a_program_that_polls(builder: Builder, rounds: int) -> None:
    stop = threading.Event()
    with hotr.load(builder.lib, debounce=0) as lib:
        reloader = hotr.reloader_of(lib)

        def program() -> None:
            while not stop.is_set():
                reloader.poll()
                time.sleep(0.0005)

        pollers = [threading.Thread(target=program) for _ in range(2)]
        for thread in pollers:
            thread.start()
        lost = 0
        try:
            for n in range(2, rounds + 2):
                builder.rename(source(n))
                deadline = time.monotonic() + 5
                while lib.value() != n and time.monotonic() < deadline:
                    time.sleep(0.002)
                lost += lib.value() != n
        finally:
            stop.set()
            for thread in pollers:
                thread.join()
    assert lost == 0, f"{lost} of {rounds} changes were lost to a polling program"


def test_threads_waiting_at_once_each_see_each_change(builder: Builder, rounds: int) -> None:
    with hotr.load(builder.lib, debounce=0) as lib:  # the background thread too
        reloader = hotr.reloader_of(lib)
        for n in range(2, rounds + 2):
            results: list[int] = []
            errors: list[BaseException] = []

            def wait(results: list[int] = results, errors: list[BaseException] = errors) -> None:
                try:
                    results.append(reloader.watch_for_changes(timeout=5))
                except BaseException as exc:
                    errors.append(exc)

            reloader.poll()  # the program has seen everything until now: the waiters start here
            waiters = [threading.Thread(target=wait) for _ in range(4)]
            for thread in waiters:
                thread.start()
            builder.rename(source(n))
            for thread in waiters:
                thread.join()
            assert not errors, errors
            assert results == [1, 1, 1, 1], f"round {n}: {results}"
            wait_until(lambda n=n: lib.value() == n, f"version {n} not loaded in the background")
        assert reloader.version == rounds + 1, "a change was loaded twice or not at all"


def test_update_from_many_threads_loads_each_change_once(builder: Builder, rounds: int) -> None:
    with hotr.HotReloader(builder.lib, debounce=0) as reloader:
        lib = reloader.update()
        for n in range(2, rounds + 2):
            builder.rename(source(n))
            assert reloader.watch_for_changes(timeout=5) == 1
            threads = [threading.Thread(target=reloader.update) for _ in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert lib.value() == n
            assert reloader.version == n, "one change was loaded more than once"


def test_close_ends_every_waiting_thread_at_once(builder: Builder) -> None:
    reloader = hotr.HotReloader(builder.lib)
    reloader.update()
    results: list[int] = []
    waiters = [
        threading.Thread(target=lambda: results.append(reloader.watch_for_changes()))
        for _ in range(5)
    ]
    for thread in waiters:
        thread.start()
    wait_until_blocked(waiters)
    started = time.monotonic()
    reloader.close()
    for thread in waiters:
        thread.join(timeout=2)
    assert results == [-1] * 5
    assert time.monotonic() - started < 1


def test_stop_ends_waiters_and_the_background_thread(builder: Builder) -> None:
    lib = hotr.load(builder.lib)
    reloader = hotr.reloader_of(lib)
    results: list[int] = []
    waiter = threading.Thread(target=lambda: results.append(reloader.watch_for_changes()))
    waiter.start()
    wait_until_blocked([waiter])
    reloader.stop()
    waiter.join(timeout=2)
    assert results == [-1]
    assert lib.value() == 1, "stop() keeps the loaded version"
    reloader.close()


def test_a_change_loaded_in_the_background_is_still_reported_to_the_program(
    builder: Builder,
) -> None:
    with hotr.load(builder.lib) as lib:
        reloader = hotr.reloader_of(lib)
        builder.rename(source(2))
        wait_until(lambda: lib.value() == 2, "not loaded in the background")
        assert reloader.watch_for_changes(timeout=0) == 1  # it happened while nobody waited
        assert reloader.watch_for_changes(timeout=0.1) == 0  # reported once


def test_poll_is_false_until_the_first_update(builder: Builder) -> None:
    with hotr.HotReloader(builder.lib) as reloader:
        assert reloader.poll() is False
        builder.rename(source(2))
        time.sleep(0.05)
        assert reloader.poll() is False, "nothing is loaded yet: no change can be waiting"
        assert reloader.update().value() == 2
        assert reloader.poll() is False


def test_a_failed_first_build_waits_for_the_next_save(tmp_path: Path) -> None:
    src = tmp_path / "broken.c"
    src.write_text("int value(void) { return 1 +; }\n")
    with hotr.HotReloader(src) as reloader:
        with pytest.raises(hotr.BuildError):
            reloader.update()
        assert reloader.poll() is False
        started = time.monotonic()
        assert reloader.watch_for_changes(timeout=0.3) == 0, "a failed build kept reporting"
        assert time.monotonic() - started >= 0.25
        with pytest.raises(hotr.BuildError):  # nothing changed: the same error, no new build
            reloader.update()
        save(src, "int value(void) { return 2; }\n")
        assert reloader.watch_for_changes(timeout=5) == 1
        assert reloader.update().value() == 2


def test_a_failed_first_load_waits_for_the_next_change(builder: Builder) -> None:
    builder.write_bytes(b"not a library")
    with hotr.HotReloader(builder.lib) as reloader:
        with pytest.raises(hotr.LoadError, match="not an ELF file"):
            reloader.update()
        assert reloader.poll() is False
        assert reloader.watch_for_changes(timeout=0.2) == 0
        builder.rename(source(3))
        assert reloader.watch_for_changes(timeout=5) == 1
        assert reloader.update().value() == 3


def test_each_thread_sees_each_change_once_however_late_it_comes_back(builder: Builder) -> None:
    # Two long-lived watcher threads, one slow to come back to its wait: each reports each
    # change exactly once, whichever loaded it and whenever the thread waits again.
    with hotr.load(builder.lib, debounce=0) as lib:
        reloader = hotr.reloader_of(lib)
        seen: dict[str, list[int]] = {"quick": [], "slow": []}
        stop = threading.Event()

        def watch(name: str, pause: float) -> None:
            while not stop.is_set():
                if reloader.watch_for_changes(timeout=0.05) == 1:
                    seen[name].append(reloader.version)
                    time.sleep(pause)

        threads = [
            threading.Thread(target=watch, args=("quick", 0)),
            threading.Thread(target=watch, args=("slow", 0.3)),
        ]
        for thread in threads:
            thread.start()
        wait_until_blocked(threads)
        for n in (2, 3):
            builder.rename(source(n))
            wait_until(lambda n=n: len(seen["quick"]) == n - 1, f"change {n} not reported")
        wait_until(lambda: len(seen["slow"]) == 2, "the slow thread missed a change")
        stop.set()
        for thread in threads:
            thread.join()
        assert len(seen["quick"]) == len(seen["slow"]) == 2, seen


def test_a_thread_that_only_waits_is_told_once(builder: Builder) -> None:
    with hotr.HotReloader(builder.lib) as reloader:
        reloader.update()
        told: list[int] = []
        stop = threading.Event()

        def notifier() -> None:
            while not stop.is_set():
                if reloader.watch_for_changes(timeout=0.05) == 1:
                    told.append(1)

        thread = threading.Thread(target=notifier)
        thread.start()
        wait_until_blocked([thread])
        builder.rename(source(2))
        wait_until(lambda: told, "the change was not reported")
        time.sleep(0.3)  # the program takes its time to update(): the notifier must not spin
        reloader.update()
        time.sleep(0.1)
        stop.set()
        thread.join()
        assert told == [1], f"told {len(told)} times of one change"


def test_a_save_of_sources_is_reported_once_not_again_when_built(tmp_path: Path) -> None:
    # The waiting thread hears of each save when it is made; the build that update() runs for
    # it is not a second change.
    src = tmp_path / "kernel.c"
    save(src, "int value(void) { return 0; }\n")
    with hotr.HotReloader(src) as reloader:
        lib = reloader.update()
        told: list[int] = []
        stop = threading.Event()

        def waiter() -> None:
            while not stop.is_set():
                if reloader.watch_for_changes(timeout=0.05) == 1:
                    told.append(1)

        thread = threading.Thread(target=waiter)
        thread.start()
        try:
            for n in range(1, 6):
                save(src, f"int value(void) {{ return {n}; }}\n")
                wait_until(lambda n=n: len(told) >= n, f"save {n} was not reported")
                reloader.update()
                assert lib.value() == n
            time.sleep(0.3)  # room for a report of the last build, which must not come
        finally:
            stop.set()
            thread.join()
        assert len(told) == 5, f"{len(told)} reports of 5 saves"


def test_update_right_after_a_save_takes_it_in_however_close_the_saves(tmp_path: Path) -> None:
    # A program that writes its own sources and then calls update() (a notebook cell, a
    # generator): the debounce holds back what waits and polls hear, never what update() loads.
    src = tmp_path / "gen.c"
    save(src, "int value(void) { return 0; }\n")
    with hotr.HotReloader(src, debounce=0.5) as reloader:
        lib = reloader.update()
        for n in range(1, 6):
            save(src, f"int value(void) {{ return {n}; }}\n")
            reloader.update()
            assert lib.value() == n, f"save {n} was held back from update()"
