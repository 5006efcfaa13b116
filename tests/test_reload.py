"""Reloading through every way tools write a library, on the real compiler and loader."""

from __future__ import annotations

import ctypes
import logging
import os
import select
import threading
import time
from pathlib import Path

import pytest
from conftest import WAYS, Builder, marks, reload_next, run_python, source

import hotr

pytestmark = pytest.mark.every_python


@pytest.mark.parametrize("way", WAYS)
def test_each_way_of_writing_is_reloaded_every_time(builder: Builder, way: str) -> None:
    with hotr.HotReloader(builder.lib) as r:
        lib = r.update()
        value = lib.value
        assert value() == 1
        for n in range(2, 8):
            getattr(builder, way)(source(n))
            reload_next(r)
            assert value() == n, f"rebuild {n} by {way} not loaded"
            assert r.version == n


def test_symlink_retargeted_is_reloaded(builder: Builder) -> None:
    real = [builder.dir / f"libv{n}.so" for n in (1, 2)]
    for n, path in enumerate(real, 1):
        path.write_bytes(builder.compile(source(n)))
    link = builder.dir / "libcurrent.so"
    link.symlink_to(real[0].name)
    with hotr.HotReloader(link) as r:
        lib = r.update()
        assert lib.value() == 1
        tmp = builder.dir / "tmp-link"
        tmp.symlink_to(real[1].name)
        os.rename(tmp, link)  # ln -sfn: a new symlink renamed over the old one
        reload_next(r)
        assert lib.value() == 2
        real[1].write_bytes(builder.compile(source(3)))  # the target itself rebuilt in place
        reload_next(r)
        assert lib.value() == 3


def test_function_taken_before_reload_keeps_its_ctypes_settings(builder: Builder) -> None:
    code = "double scale(double x, int k) { return x * k * %d; }\n"
    builder.lib.write_bytes(builder.compile(source(1, code % 1)))
    with hotr.HotReloader(builder.lib) as r:
        scale = r.update().scale
        scale.restype = ctypes.c_double
        scale.argtypes = [ctypes.c_double, ctypes.c_int]
        seen: list[object] = []

        def check(result: object, func: object, args: tuple[object, ...]) -> object:
            seen.append(args)
            return result

        scale.errcheck = check
        assert scale(1.5, 2) == 3.0
        builder.rename(source(2, code % 10))
        reload_next(r)
        assert scale(1.5, 2) == 30.0
        assert scale.restype is ctypes.c_double
        assert list(scale.argtypes) == [ctypes.c_double, ctypes.c_int]
        assert len(seen) == 2
        with pytest.raises(ctypes.ArgumentError):
            scale("not a number", 2)


def test_c_functions_named_like_python_attributes(builder: Builder) -> None:
    names = ["version", "close", "handle", "update", "path", "reload", "_handle_x"]
    code = "".join(f"int {n}(void) {{ return {i}; }}\n" for i, n in enumerate(names))
    builder.lib.write_bytes(builder.compile(source(1, code)))
    with hotr.HotReloader(builder.lib) as r:
        lib = r.update()
        for i, n in enumerate(names):
            assert getattr(lib, n)() == i
            assert lib[n]() == i
        assert r.version == 1


def test_same_function_object_each_time(reloader: hotr.HotReloader) -> None:
    lib = reloader.library
    assert lib.value is lib.value is lib["value"]
    assert isinstance(lib.value, hotr.Function)
    assert lib.value.__name__ == "value"


def test_missing_symbol_is_attribute_error(reloader: hotr.HotReloader) -> None:
    with pytest.raises(hotr.SymbolNotFoundError, match="no_such_function"):
        reloader.library.no_such_function  # noqa: B018
    assert not hasattr(reloader.library, "no_such_function")


def test_function_removed_then_restored(builder: Builder) -> None:
    extra = "int extra(void) { return 7; }\n"
    builder.lib.write_bytes(builder.compile(source(1, extra)))
    with hotr.HotReloader(builder.lib) as r:
        f = r.update().extra
        builder.rename(source(2))
        reload_next(r)
        with pytest.raises(hotr.SymbolNotFoundError, match="version 2"):
            f()
        builder.rename(source(3, extra))
        reload_next(r)
        assert f() == 7


def test_same_bytes_do_not_reload(builder: Builder, reloader: hotr.HotReloader) -> None:
    builder.copy(source(1))  # rewritten, same content
    assert reloader.watch_for_changes(timeout=5) == 1
    reloader.update()
    assert reloader.version == 1
    os.utime(builder.lib)  # a touch is not even a change
    assert reloader.watch_for_changes(timeout=0.2) == 0


def test_a_large_library_is_told_from_a_rewrite_past_its_first_page(builder: Builder) -> None:
    # Large files are compared by size and first page before the whole content: these two
    # versions agree in both (no build ID; the code starts on the second page).
    pad = "__attribute__((used)) static const char pad[200000] = {1};\n"
    flags = ("-Wl,--build-id=none",)
    one, two = (builder.compile(source(n, pad), *flags) for n in (1, 2))
    assert len(one) == len(two) > 65536 and one[:4096] == two[:4096] and one != two
    builder.write_bytes(one)
    with hotr.HotReloader(builder.lib) as r:
        lib = r.update()
        builder.write_bytes(two)
        assert reload_next(r).value() == 2 and r.version == 2
        builder.write_bytes(two)  # rewritten, same content
        assert r.watch_for_changes(timeout=5) == 1
        r.update()
        assert r.version == 2 and lib.value() == 2


def test_a_large_library_cut_or_corrupt_is_refused_and_the_live_one_stays(
    builder: Builder,
) -> None:
    # Above 64 KiB the copy is checked on a mapping of the private file, not in Python bytes.
    pad = "__attribute__((used)) static const char pad[200000] = {1};\n"
    one, two = (builder.compile(source(n, pad)) for n in (1, 2))
    assert len(one) > 65536
    builder.write_bytes(one)
    with hotr.HotReloader(builder.lib) as r:
        lib = r.update()
        for data, reason in (
            (two[: len(two) // 2], "truncated"),
            (two[:-1], "truncated"),
            (b"\0" * len(two), "not an ELF file"),
        ):
            builder.write_bytes(data)
            assert r.watch_for_changes(timeout=5) == 1
            with pytest.raises(hotr.LoadError, match=reason):
                r.update()
            assert lib.value() == 1 and r.version == 1
        builder.write_bytes(two)
        assert reload_next(r).value() == 2 and r.version == 2


def test_burst_of_writes_gives_one_reload_of_final_content(builder: Builder) -> None:
    variants = [builder.compile(source(n)) for n in range(2, 22)]
    with hotr.HotReloader(builder.lib, debounce=0.2) as r:
        lib = r.update()
        for data in variants:  # 20 complete saves, far faster than the debounce
            builder.write_bytes(data)
        assert r.watch_for_changes(timeout=5) == 1
        r.update()
        assert lib.value() == 21
        assert r.version == 2
        assert r.watch_for_changes(timeout=0.5) == 0


def test_changes_closer_than_debounce_are_spaced(builder: Builder) -> None:
    with hotr.HotReloader(builder.lib, debounce=0.3) as r:
        r.update()
        third = builder.compile(source(3))  # compiled first: the two changes land close
        builder.rename(source(2))
        reload_next(r)
        first = time.monotonic()  # the first change was published just before this
        builder.write_bytes(third)
        reload_next(r)
        assert time.monotonic() - first >= 0.25
        assert r.library.value() == 3


def test_poll_and_fileno(builder: Builder, reloader: hotr.HotReloader) -> None:
    assert reloader.poll() is False
    builder.rename(source(2))
    readable, _, _ = select.select([reloader], [], [], 5)
    assert readable == [reloader]
    assert reloader.poll() is True
    reloader.update()
    assert reloader.poll() is False
    assert reloader.library.value() == 2


def test_watch_times_out_without_change(reloader: hotr.HotReloader) -> None:
    started = time.monotonic()
    assert reloader.watch_for_changes(timeout=0.1) == 0
    assert 0.05 <= time.monotonic() - started < 2


def test_cleanup_hook_runs_before_unload(builder: Builder) -> None:
    r = hotr.HotReloader(builder.lib)
    r.update()
    builder.rename(source(2))
    reload_next(r)
    assert marks(builder) == []  # unloading is housekeeping, done at the next call
    assert r.poll() is False
    assert marks(builder) == ["cleanup 1"]
    r.close()
    assert marks(builder) == ["cleanup 1", "cleanup 2"]


def test_relative_path_resolved_at_creation(
    builder: Builder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(builder.dir)
    with hotr.HotReloader("libhot.so") as r:
        lib = r.update()
        monkeypatch.chdir("/")
        builder.rename(source(2))
        reload_next(r)
        assert lib.value() == 2
        assert r.path == str(builder.lib)


def test_reloads_are_logged(builder: Builder, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hotr")
    with hotr.HotReloader(builder.lib) as r:
        r.update()
        builder.rename(source(2))
        reload_next(r)
    loaded = [
        rec for rec in caplog.records if rec.name == "hotr" and "loaded version" in rec.getMessage()
    ]
    assert len(loaded) == 2


def test_load_reloads_in_background(builder: Builder) -> None:
    lib = hotr.load(builder.lib)
    try:
        value = lib.value
        assert value() == 1
        for n in (2, 3):
            builder.link(source(n))
            deadline = time.monotonic() + 5
            while value() != n:
                assert time.monotonic() < deadline, f"version {n} not loaded in the background"
                time.sleep(0.005)
    finally:
        hotr.reloader_of(lib).close()
    assert not any(
        t.name.startswith("hotr:") for t in threading.enumerate() if t.is_alive() and not t.daemon
    )


def test_load_thread_ends_on_close(builder: Builder) -> None:
    with hotr.load(builder.lib) as lib:
        assert lib.value() == 1
        thread = next(t for t in threading.enumerate() if t.name == "hotr:libhot.so")
    thread.join(timeout=1)
    assert not thread.is_alive()


def test_background_failure_keeps_old_version(
    builder: Builder, caplog: pytest.LogCaptureFixture
) -> None:
    with hotr.load(builder.lib) as lib:
        builder.write_bytes(b"\x7fELF not really")
        deadline = time.monotonic() + 5
        while not any("cannot load" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the failed load was not logged"
            time.sleep(0.005)
        assert lib.value() == 1
        builder.rename(source(2))
        while lib.value() != 2:
            assert time.monotonic() < deadline + 5
            time.sleep(0.005)


def test_directory_removed_reports_error_then_recovers(tmp_path: Path, builder: Builder) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    lib_path = sub / "libhot.so"
    lib_path.write_bytes(builder.compile(source(1)))
    with hotr.HotReloader(lib_path) as r:
        lib = r.update()
        lib_path.unlink()
        sub.rmdir()
        assert r.watch_for_changes(timeout=5) == -1
        assert lib.value() == 1
        started = time.monotonic()
        assert r.watch_for_changes(timeout=0.3) == 0  # waits; no busy loop of -1
        assert time.monotonic() - started >= 0.25
        sub.mkdir()
        lib_path.write_bytes(builder.compile(source(2)))
        assert r.watch_for_changes(timeout=5) == 1
        r.update()
        assert lib.value() == 2


def test_a_relative_private_directory_holds_after_chdir(builder: Builder) -> None:
    # HOTR_PRIVATE_DIR=private, then the program changes directory: the next version's copy
    # and the removal at exit still use the directory made at the start.
    other = builder.dir / "elsewhere"
    other.mkdir()
    run_python(
        f"""
        import os, hotr
        os.chdir({str(builder.dir)!r})
        r = hotr.HotReloader({str(builder.lib)!r})
        lib = r.update()
        os.chdir({str(other)!r})
        os.rename({builder.compile_to_file(source(2))!r}, {str(builder.lib)!r})
        assert r.update().value() == 2
        """,
        env={"HOTR_PRIVATE_DIR": "private"},
    )
    assert list((builder.dir / "private").iterdir()) == []
    assert list(other.iterdir()) == []


def test_file_names_near_the_length_limit_load_and_reload(builder: Builder) -> None:
    # A name of 255 bytes is valid; hotr's private names derived from it ("v1-", "0-", "lib",
    # ".so.d") must still fit in one path component.
    lib = builder.dir / ("x" * 252 + ".so")
    lib.write_bytes(builder.compile(source(1)))
    c = builder.dir / ("é" * 126 + ".c")  # 254 bytes
    c.write_text("int value(void) { return 1; }\n")
    with hotr.HotReloader(lib) as r, hotr.HotReloader(c) as built:
        assert r.update().value() == 1
        assert built.update().value() == 1
        os.replace(builder.compile_to_file(source(2)), lib)
        c.write_text("int value(void) { return 2; }\n")
        assert r.update().value() == 2
        assert built.update().value() == 2
