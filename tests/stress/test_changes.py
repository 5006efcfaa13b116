"""Every way a library file changes, including the awkward ones, on the real file system."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import TAGGED, Builder, reload_next, source, tagged_versions

import hotr


def test_truncate_then_write_in_two_steps(builder: Builder) -> None:
    new = builder.compile(source(2))
    with hotr.HotReloader(builder.lib) as r:
        lib = r.update()
        with open(builder.lib, "r+b") as f:  # step 1: truncate, close
            f.truncate(0)
        assert r.watch_for_changes(timeout=5) == 1
        with pytest.raises(hotr.LoadError, match="empty"):
            r.update()
        assert lib.value() == 1
        time.sleep(0.05)  # the pause between the two steps of the writer
        with open(builder.lib, "r+b") as f:  # step 2: write the content
            f.write(new)
        reload_next(r)
        assert lib.value() == 2


def test_deleted_then_recreated_later(builder: Builder) -> None:
    with hotr.HotReloader(builder.lib) as r:
        lib = r.update()
        builder.lib.unlink()
        assert r.watch_for_changes(timeout=0.3) == 0  # a deletion alone is not a new version
        assert lib.value() == 1
        builder.lib.write_bytes(builder.compile(source(2)))
        reload_next(r)
        assert lib.value() == 2


@pytest.mark.parametrize("how", ["renamed", "removed"])
def test_directory_renamed_or_removed(tmp_path: Path, builder: Builder, how: str) -> None:
    sub = tmp_path / "libs"
    sub.mkdir()
    (sub / "libhot.so").write_bytes(builder.compile(source(1)))
    with hotr.HotReloader(sub / "libhot.so") as r:
        lib = r.update()
        if how == "renamed":
            sub.rename(tmp_path / "elsewhere")
        else:
            (sub / "libhot.so").unlink()
            sub.rmdir()
        assert r.watch_for_changes(timeout=5) == -1
        assert lib.value() == 1
        started = time.process_time()
        assert r.watch_for_changes(timeout=1.0) == 0
        assert time.process_time() - started < 0.2, "waiting on a lost directory busy-loops"
        assert r.poll() is False
        assert lib.value() == 1


def test_100_writes_in_10_ms_load_final_content_at_most_twice(builder: Builder) -> None:
    versions = tagged_versions(builder.compile(TAGGED), 101)
    builder.write_bytes(versions[0])
    variants = versions[1:]
    with hotr.HotReloader(builder.lib) as r:  # default debounce
        lib = r.update()
        started = time.perf_counter()
        for data in variants:
            builder.write_bytes(data)
        burst = time.perf_counter() - started
        deadline = time.monotonic() + 5
        while lib.value() != 101:
            assert time.monotonic() < deadline, "the final content was not loaded"
            if r.watch_for_changes(timeout=1) == 1:
                r.update()
        assert r.version <= 3, f"{r.version - 1} reloads for one burst ({burst * 1000:.1f} ms)"
        assert r.watch_for_changes(timeout=0.3) == 0


def test_paths_with_spaces_and_non_ascii(tmp_path: Path, builder: Builder) -> None:
    odd = tmp_path / "dossier été" / "lib with spaces ünï.so"
    odd.parent.mkdir()
    odd.write_bytes(builder.compile(source(1)))
    with hotr.HotReloader(odd) as r:
        lib = r.update()
        tmp = odd.with_name("tmp ü.so")
        tmp.write_bytes(builder.compile(source(2)))
        os.rename(tmp, odd)
        reload_next(r)
        assert lib.value() == 2


@pytest.mark.parametrize("where", ["/dev/shm", "disk"])
def test_library_on_tmpfs_and_on_disk(tmp_path: Path, builder: Builder, where: str) -> None:
    if where == "/dev/shm" and not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    directory = Path(where) / f"hotr-test-{os.getpid()}" if where != "disk" else tmp_path / "d"
    directory.mkdir()
    try:
        lib_path = directory / "libhot.so"
        lib_path.write_bytes(builder.compile(source(1)))
        with hotr.HotReloader(lib_path) as r:
            lib = r.update()
            lib_path.write_bytes(builder.compile(source(2)))
            reload_next(r)
            assert lib.value() == 2
    finally:
        for p in directory.iterdir():
            p.unlink()
        directory.rmdir()
