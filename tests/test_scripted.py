"""Timing-bound behaviour with a scripted change source and clock (hotr.testing): debounce, lost
directories, an overflowed event queue, drivers; no sleeps.  The files are real and so is the
loader; only what inotify would report, and when, is scripted.  The same behaviour is tested on
the real file system elsewhere."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from conftest import Builder, source, wait_until_blocked

import hotr
from hotr.testing import ScriptedBackend


@pytest.fixture
def scripted() -> ScriptedBackend:
    return ScriptedBackend()


def land(builder: Builder, n: int, scripted: ScriptedBackend) -> None:
    builder.rename(source(n))
    scripted.written(builder.lib)


def test_the_first_change_after_a_quiet_spell_is_ready_at_once(
    builder: Builder, scripted: ScriptedBackend
) -> None:
    with hotr.HotReloader(builder.lib, backend=scripted, debounce=0.5) as r:
        assert r.backend == "scripted"
        lib = r.update()
        land(builder, 2, scripted)
        assert r.poll() is True
        assert r.update().value() == 2
        assert lib.value() == 2


def test_changes_closer_than_debounce_wait_for_it(
    builder: Builder, scripted: ScriptedBackend
) -> None:
    with hotr.HotReloader(builder.lib, backend=scripted, debounce=0.5) as r:
        r.update()
        land(builder, 2, scripted)
        r.update()
        land(builder, 3, scripted)
        land(builder, 4, scripted)  # a burst: one reload of the final content
        assert r.poll() is False
        assert r.watch_for_changes(timeout=0) == 0
        scripted.advance(0.499)
        assert r.poll() is False
        scripted.advance(0.001)
        assert r.poll() is True
        assert r.update().value() == 4
        assert r.version == 3, "the burst loaded more than once"
        scripted.advance(10)
        assert r.poll() is False


def test_a_long_burst_is_one_reload_once_it_is_quiet(
    builder: Builder, scripted: ScriptedBackend
) -> None:
    # 100 writes 5 ms apart with debounce 20 ms: the first loads at once, the other 99 are one
    # reload of the final content, 20 ms after the last (not one every 20 ms meanwhile).
    with hotr.HotReloader(builder.lib, backend=scripted, debounce=0.02) as r:
        r.update()
        versions = [builder.compile(source(n)) for n in range(2, 102)]
        for data in versions:
            builder.write_bytes(data)
            scripted.written(builder.lib)
            if r.poll():
                r.update()
            scripted.advance(0.005)
        assert r.version == 2, "the burst was cut into reloads while it lasted"
        scripted.advance(0.0149)
        assert r.poll() is False
        scripted.advance(0.0002)
        assert r.poll() is True
        assert r.update().value() == 101
        assert r.version == 3


def test_a_burst_that_never_ends_still_reloads_once_a_second(
    builder: Builder, scripted: ScriptedBackend
) -> None:
    with hotr.HotReloader(builder.lib, backend=scripted, debounce=0.02) as r:
        r.update()
        data = [builder.compile(source(n)) for n in (2, 3)]
        due = 0
        for n in range(300):  # 3 s of writes 10 ms apart
            builder.write_bytes(data[n % 2])
            scripted.written(builder.lib)
            if r.poll():
                due += 1
                r.update()
            scripted.advance(0.01)
        assert 3 <= due <= 4, f"{due} reloads were due in 3 s of writes"


def test_a_load_takes_in_a_change_still_held_back(
    builder: Builder, scripted: ScriptedBackend
) -> None:
    # A change inside the debounce interval, then an update() for another reason: the load
    # reads the file as it is now, so the held-back change is part of it, not one more reload.
    with hotr.HotReloader(builder.lib, backend=scripted, debounce=0.5) as r:
        r.update()
        land(builder, 2, scripted)
        land(builder, 3, scripted)
        assert r.update().value() == 3
        scripted.advance(1)
        assert r.poll() is False
        assert r.watch_for_changes(timeout=0) == 0


def test_a_lost_directory_is_reported_once_then_recovers(
    builder: Builder, scripted: ScriptedBackend
) -> None:
    with hotr.HotReloader(builder.lib, backend=scripted) as r:
        lib = r.update()
        scripted.lost(builder.lib)
        assert r.watch_for_changes(timeout=0) == -1
        assert r.watch_for_changes(timeout=0) == 0, "a loss is reported once"
        assert r.poll() is False
        assert lib.value() == 1
        land(builder, 2, scripted)  # the directory is back, with a new version in it
        assert r.watch_for_changes(timeout=0) == 1
        assert r.update().value() == 2


def test_a_loss_is_reported_to_every_waiter(builder: Builder, scripted: ScriptedBackend) -> None:
    with hotr.HotReloader(builder.lib, backend=scripted) as r:
        r.update()
        results: list[int] = []
        waiters = [
            threading.Thread(target=lambda: results.append(r.watch_for_changes(timeout=5)))
            for _ in range(3)
        ]
        for thread in waiters:
            thread.start()
        wait_until_blocked(waiters)
        scripted.lost(builder.lib)
        for thread in waiters:
            thread.join()
        assert results == [-1, -1, -1]


def test_an_overflowed_queue_rescans_and_loses_nothing(
    builder: Builder, scripted: ScriptedBackend
) -> None:
    with hotr.HotReloader(builder.lib, backend=scripted) as r:
        r.update()
        scripted.overflow()  # nothing changed: nothing to do
        assert r.poll() is False
        builder.rename(source(2))  # changed, and the event for it was dropped
        scripted.overflow()
        assert r.poll() is True
        assert r.update().value() == 2


def test_an_overflow_rescans_sources_too(tmp_path: Path, scripted: ScriptedBackend) -> None:
    src = tmp_path / "k.c"
    src.write_text("int value(void) { return 1; }\n")
    with hotr.HotReloader(src, backend=scripted) as r:
        lib = r.update()
        assert str(src) in scripted.watched
        src.write_text("int value(void) { return 2; }\n")
        scripted.overflow()
        assert r.watch_for_changes(timeout=0) == 1
        r.update()
        assert lib.value() == 2


def test_a_header_found_by_the_build_is_watched(tmp_path: Path, scripted: ScriptedBackend) -> None:
    src = tmp_path / "k.c"
    header = tmp_path / "k.h"
    header.write_text("#define V 1\n")
    src.write_text('#include "k.h"\nint value(void) { return V; }\n')
    with hotr.HotReloader(src, backend=scripted) as r:
        lib = r.update()
        assert scripted.watched == sorted([str(src), str(header)])
        header.write_text("#define V 2\n")
        scripted.written(header)
        assert r.poll() is True
        r.update()
        assert lib.value() == 2


def test_manual_mode_reports_only_built_versions(tmp_path: Path, scripted: ScriptedBackend) -> None:
    src = tmp_path / "k.c"
    src.write_text("int value(void) { return 1; }\n")
    with hotr.load(src, backend=scripted, manual=True) as lib:
        r = hotr.reloader_of(lib)
        src.write_text("int value(void) { return 2; }\n")
        scripted.written(src)
        assert r.watch_for_changes(timeout=10) == 1  # once the background build is done
        assert lib.value() == 1, "manual mode loaded by itself"
        r.update()
        assert lib.value() == 2


def test_stop_unwatches_and_ends_waiting(builder: Builder, scripted: ScriptedBackend) -> None:
    with hotr.HotReloader(builder.lib, backend=scripted) as r:
        r.update()
        assert scripted.watched == [str(builder.lib)]
        r.stop()
        assert scripted.watched == []
        assert r.watch_for_changes(timeout=0) == -1
    with pytest.raises(ValueError, match="nothing watches"):
        scripted.written(builder.lib)


def test_the_library_and_its_sources_have_their_own_debounce(
    tmp_path: Path, scripted: ScriptedBackend
) -> None:
    # A custom build writes the watched library; the library's event must not hold back the
    # next save of a source, nor the other way round.
    src = tmp_path / "k.c"
    src.write_text("int value(void) { return 1; }\n")
    lib_path = tmp_path / "libk.so"
    build = ["cc", "-shared", "-fPIC", str(src), "-o", str(lib_path)]
    with hotr.HotReloader(lib_path, sources=[src], build=build, backend=scripted, debounce=5) as r:
        lib = r.update()
        scripted.written(lib_path)  # what inotify says about the build's output
        src.write_text("int value(void) { return 2; }\n")
        scripted.written(src)
        assert r.poll() is True, "the save waited for the library's debounce interval"
        r.update()
        assert lib.value() == 2


def test_the_module_example(builder: Builder) -> None:
    # hotr.testing's docstring, as written there.
    versions = iter(range(2, 10))

    def rebuild(path: str) -> None:
        builder.rename(source(next(versions)))

    backend = hotr.testing.ScriptedBackend()
    r = hotr.HotReloader(str(builder.lib), backend=backend, debounce=0.02)
    r.update()
    rebuild(str(builder.lib))
    backend.written(str(builder.lib))
    assert r.poll()
    r.update()
    rebuild(str(builder.lib))
    backend.written(str(builder.lib))
    assert not r.poll()
    backend.advance(0.02)
    assert r.poll()
    r.close()
