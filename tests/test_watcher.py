"""hotr.Watcher: one thread for many libraries, one inotify descriptor for the whole process;
only the changed library reloads."""

from __future__ import annotations

import os
import select
import threading
import time
from pathlib import Path

import pytest
from conftest import TAGGED, Builder, source, tagged_versions

import hotr


def inotify_fds() -> int:
    return sum(
        os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:inotify"
        for fd in os.listdir("/proc/self/fd")
        if os.path.exists(f"/proc/self/fd/{fd}")
    )


def wait_until(check: object, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@pytest.mark.parametrize("spread", ["one directory", "many directories"])
def test_100_libraries_one_changes(builder: Builder, tmp_path: Path, spread: str) -> None:
    versions = tagged_versions(builder.compile(TAGGED), 201)
    paths = []
    for i in range(100):
        directory = tmp_path / ("libs" if spread == "one directory" else f"d{i}")
        directory.mkdir(exist_ok=True)
        paths.append(directory / f"lib{i}.so")
        paths[-1].write_bytes(versions[i])
    with hotr.Watcher() as watcher:
        libs = [watcher.add(p) for p in paths]
        assert inotify_fds() == 1
        names = [t.name for t in threading.enumerate()]
        assert names.count("hotr:watcher") == 1 and names.count("hotr") == 1, names
        assert [lib.value() for lib in libs] == list(range(1, 101))
        tmp = paths[37].with_suffix(".tmp")
        tmp.write_bytes(versions[150])
        os.rename(tmp, paths[37])
        wait_until(lambda: libs[37].value() == 151, "the changed library was not reloaded")
        time.sleep(0.1)
        assert [hotr.reloader_of(lib).version for lib in libs] == [1] * 37 + [2] + [1] * 62
        watcher.remove(libs[5])
        assert len(watcher.libraries) == 99
        with pytest.raises(hotr.HotReloadError):
            libs[5].value()
    assert "hotr:watcher" not in [t.name for t in threading.enumerate()]


def test_watcher_builds_sources_and_reports_errors(tmp_path: Path, builder: Builder) -> None:
    src = tmp_path / "k.c"
    src.write_text("int value(void) { return 1; }\n")
    errors: list[hotr.HotReloadError] = []
    with hotr.Watcher() as watcher:
        lib = watcher.add(src)
        hotr.reloader_of(lib).on_error(errors.append)
        src.write_text("int value(void) { return 2 }\n")
        wait_until(lambda: errors, "the failed build was not reported")
        assert isinstance(errors[0], hotr.BuildError)
        assert lib.value() == 1
        src.write_text("int value(void) { return 3; }\n")
        wait_until(lambda: lib.value() == 3, "the fixed source was not loaded")


def test_manual_watcher_loads_only_on_update(builder: Builder) -> None:
    with hotr.Watcher(manual=True) as watcher:
        lib = watcher.add(builder.lib)
        reloader = hotr.reloader_of(lib)
        builder.rename(source(2))
        wait_until(reloader.poll, "the change was not seen")
        time.sleep(0.1)
        assert lib.value() == 1, "a manual watcher loaded by itself"
        reloader.update()
        assert lib.value() == 2


def test_watcher_polling_backend(builder: Builder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTR_POLL_INTERVAL", "0.05")
    with hotr.Watcher(backend="poll") as watcher:
        lib = watcher.add(builder.lib)
        builder.rename(source(2))
        wait_until(lambda: lib.value() == 2, "polling did not reload")


def test_a_watched_library_can_be_waited_on_too(builder: Builder) -> None:
    with hotr.Watcher() as watcher:
        lib = watcher.add(builder.lib)
        reloader = hotr.reloader_of(lib)
        assert select.select([reloader], [], [], 0)[0] == []
        builder.rename(source(2))
        wait_until(lambda: lib.value() == 2, "the watcher did not reload")
        # The watcher took the change in; the program has not seen it yet, and does now.
        assert select.select([reloader], [], [], 0)[0] == [reloader]
        assert reloader.watch_for_changes(timeout=0) == 1
        assert reloader.watch_for_changes(timeout=0.1) == 0
        assert select.select([reloader], [], [], 0)[0] == [reloader], "not taken in yet"
        assert reloader.poll() is False
        assert select.select([reloader], [], [], 0)[0] == []
        assert reloader.version == 2
    with pytest.raises(hotr.HotReloadError, match="closed"):
        watcher.add(builder.lib)


def test_watcher_recovers_a_directory_removed_and_created_again(
    builder: Builder, tmp_path: Path
) -> None:
    sub = tmp_path / "plugins"
    sub.mkdir()
    (sub / "libp.so").write_bytes(builder.compile(source(1)))
    with hotr.Watcher() as watcher:
        lib = watcher.add(sub / "libp.so")
        (sub / "libp.so").unlink()
        sub.rmdir()
        sub.mkdir()
        (sub / "libp.so").write_bytes(builder.compile(source(2)))
        wait_until(lambda: lib.value() == 2, "the re-created directory was not seen")
