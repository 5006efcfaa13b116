"""State across reloads: hotr_load/hotr_unload and the state slot, keep_globals, rollback, hooks."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest
from conftest import INCLUDE_DIR, Builder, reload_next, run_python

import hotr

COUNTER = """
#include <hotr.h>
#include <stdio.h>
#include <stdlib.h>
static int *count;
static void mark(const char *what, int version, int reloading) {
    const char *path = getenv("HOTR_TEST_MARK");
    if (path) { FILE *f = fopen(path, "a"); fprintf(f, "%s %d %d\\n", what, version, reloading);
                fclose(f); }
}
int hotr_load(void **state, int version, int reloading) {
    if (*state == NULL) *state = calloc(1, sizeof(int));
    count = *state;
    mark("load", version, reloading);
    return REJECT;
}
int hotr_unload(void **state, int version, int reloading) {
    mark("unload", version, reloading);
    if (!reloading) { free(*state); *state = NULL; }
    return 0;
}
int tick(void) { return ++*count; }
int tag(void) { return TAG; }
"""


def counter(tag: int, reject: int = 0) -> str:
    return f"#define TAG {tag}\n#define REJECT {reject}\n" + COUNTER


def marks(builder: Builder) -> list[str]:
    path = builder.dir / "mark.txt"
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def counting(builder: Builder) -> Builder:
    builder.write_bytes(builder.compile(counter(1), f"-I{INCLUDE_DIR}"))
    return builder


def land(builder: Builder, code: str) -> None:
    builder.write_bytes(builder.compile(code, f"-I{INCLUDE_DIR}"))


def test_counter_survives_50_reloads_through_the_state_slot(counting: Builder) -> None:
    with hotr.HotReloader(counting.lib, debounce=0) as r:
        lib = r.update()
        tick = lib.tick
        assert tick() == 1
        for n in range(2, 52):
            land(counting, counter((n + 1) % 2 + 1))
            reload_next(r)
            assert lib.tag() == (n + 1) % 2 + 1
            assert tick() == n, f"the count was lost at reload {n - 1}"
        assert r.version == 51
    log = marks(counting)
    assert log[0] == "load 1 0"
    assert log[1:3] == ["unload 1 1", "load 2 1"]
    assert log[-1] == "unload 51 0", "the final unload must say reloading == 0"
    assert len(log) == 1 + 2 * 50 + 1


def test_hotr_load_refusing_rolls_back(counting: Builder) -> None:
    errors: list[hotr.HotReloadError] = []
    with hotr.HotReloader(counting.lib) as r:
        r.on_error(errors.append)
        lib = r.update()
        assert lib.tick() == 1
        land(counting, counter(2, reject=7))
        assert r.watch_for_changes(timeout=5) == 1
        with pytest.raises(hotr.LoadError, match="hotr_load returned 7; version 1 stays live"):
            r.update()
        assert lib.tag() == 1
        assert lib.tick() == 2, "the state slot was lost by the refused version"
        assert r.version == 1
        assert marks(counting) == ["load 1 0", "unload 1 1", "load 2 1", "load 1 1"]
        assert [type(e) for e in errors] == [hotr.LoadError]
        land(counting, counter(3))
        reload_next(r)
        assert (lib.tag(), lib.tick()) == (3, 3)


def test_first_load_refused(builder: Builder) -> None:
    land(builder, counter(1, reject=1))
    with (
        hotr.HotReloader(builder.lib) as r,
        pytest.raises(hotr.LoadError, match="hotr_load returned 1; nothing was loaded"),
    ):
        r.update()


def test_hooks_with_default_build_find_hotr_h(tmp_path: Path, builder: Builder) -> None:
    src = tmp_path / "counter.c"
    src.write_text(counter(1))
    with hotr.HotReloader(src) as r:
        assert r.update().tick() == 1


def test_close_gives_final_unload(counting: Builder) -> None:
    r = hotr.HotReloader(counting.lib)
    r.update().tick()
    r.close()
    assert marks(counting) == ["load 1 0", "unload 1 0"]


BLOCKING = """
#include <hotr.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
static volatile int busy;
static void mark(const char *what) {
    FILE *f = fopen(getenv("HOTR_TEST_MARK"), "a"); fprintf(f, "%s busy=%d\\n", what, busy);
    fclose(f);
}
int hotr_unload(void **state, int version, int reloading) { mark("unload"); return 0; }
void cleanup(void) { mark("cleanup"); }
int is_busy(void) { return busy; }
int read_one(int fd) { char c; busy = 1; int n = (int)read(fd, &c, 1); busy = 0; return n; }
"""


def test_close_during_a_call_unloads_when_it_returns(builder: Builder) -> None:
    """close() while a call runs: hotr_unload(reloading=0), which frees the state, and cleanup()
    wait for the call to return (it would use the state freed under it)."""
    land(builder, BLOCKING)
    r = hotr.HotReloader(builder.lib)
    lib = r.update()
    readable, writable = os.pipe()
    call = threading.Thread(target=lib.read_one, args=(readable,))
    call.start()
    try:
        deadline = time.monotonic() + 10
        while not lib.is_busy():
            assert time.monotonic() < deadline, "the call did not start"
            time.sleep(0.001)
        r.close()
        assert marks(builder) == []
    finally:
        os.write(writable, b"x")
        call.join(10)
        os.close(readable)
        os.close(writable)
    assert not call.is_alive()
    assert marks(builder) == ["unload busy=0", "cleanup busy=0"]


GLOBALS = """
#include <hotr.h>
int counter = 5;
double samples[4] = {1, 2, 3, 4};
int grows[GROWS] = {1, 2};
HOTR_RESET int frames = 0;
static int hidden = 3;
#ifdef OLD
int removed_later = 9;
#else
int fresh = 1;
#endif
void bump(void) { counter++; samples[0] = 10; grows[0] = 50; frames++; hidden++; }
int get_counter(void) { return counter; }
double get_sample(void) { return samples[0]; }
int get_grows(void) { return grows[0]; }
int get_frames(void) { return frames; }
int get_hidden(void) { return hidden; }
"""


def test_keep_globals_carries_same_size_and_reports_the_rest(builder: Builder) -> None:
    import ctypes

    land(builder, "#define OLD\n#define GROWS 2\n" + GLOBALS)
    with hotr.HotReloader(builder.lib, keep_globals=True) as r:
        lib = r.update()
        lib.get_sample.restype = ctypes.c_double
        lib.bump()
        land(builder, "#define GROWS 4\n" + GLOBALS)
        reload_next(r)
        assert lib.get_counter() == 6
        assert lib.get_sample() == 10.0
        assert lib.get_hidden() == 4, "a file-scope static was not carried"
        assert lib.get_frames() == 0, "HOTR_RESET was carried"
        assert lib.get_grows() == 1, "a global whose size changed was carried"
        info = r.history[-1]
        assert set(info.carried) == {"counter", "samples", "hidden"}
        reasons = dict(info.not_carried)
        assert reasons["grows"] == "size changed from 8 to 16 bytes"
        assert reasons["fresh"] == "new in this version"
        assert reasons["removed_later"] == "removed in this version"
        assert reasons["frames"] == "marked HOTR_RESET"


def test_without_keep_globals_state_starts_fresh(builder: Builder) -> None:
    land(builder, "#define OLD\n#define GROWS 2\n" + GLOBALS)
    with hotr.HotReloader(builder.lib) as r:
        lib = r.update()
        lib.bump()
        land(builder, "#define GROWS 2\n" + GLOBALS)
        reload_next(r)
        assert lib.get_counter() == 5
        assert r.history[-1].carried == ()


def test_rollback_twice(counting: Builder) -> None:
    seen: list[tuple[int, int]] = []
    with hotr.HotReloader(counting.lib) as r:
        r.on_reload(lambda old, new: seen.append((old, new)))
        lib = r.update()
        assert lib.tick() == 1
        for tag in (2, 3):
            land(counting, counter(tag))
            reload_next(r)
        assert lib.tag() == 3
        r.rollback()
        assert lib.tag() == 2
        r.rollback()
        assert lib.tag() == 1
        with pytest.raises(hotr.HotReloadError, match="no earlier version"):
            r.rollback()
        assert lib.tag() == 1
        assert lib.tick() == 2, "the state slot did not survive the rollbacks"
        assert [v.rollback for v in r.history] == [False, False, False, True, True]
        assert r.history[-1].sha256 == r.history[0].sha256
        assert seen == [(1, 2), (2, 3), (3, 4), (4, 5)]


def test_raising_callbacks_are_logged_not_raised(
    builder: Builder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="hotr")
    with hotr.HotReloader(builder.lib) as r:

        @r.on_reload
        def broken(old: int, new: int) -> None:
            raise RuntimeError("callback bug")

        lib = r.update()
        builder.rename("int value(void) { return 2; }\n")
        reload_next(r)
        assert lib.value() == 2
    assert "callback bug" in caplog.text


def test_load_passes_keep_globals(tmp_path: Path, builder: Builder) -> None:
    src = tmp_path / "g.c"
    src.write_text("#define OLD\n#define GROWS 2\n" + GLOBALS)
    with hotr.load(src, keep_globals=True) as lib:
        lib.bump()
        reloaded: list[int] = []
        hotr.reloader_of(lib).on_reload(lambda old, new: reloaded.append(new))

        src.write_text("#define GROWS 2\n" + GLOBALS)
        deadline = time.monotonic() + 10
        while not reloaded:
            assert time.monotonic() < deadline, "no reload in the background"
            time.sleep(0.01)
        assert lib.get_counter() == 6


READ_ONLY_AFTER_LOADING = """
#include <hotr.h>
static int one(void) { return 1; }
static int two(void) { return 2; }
const char *const names[] = {"alpha", "beta"};   /* .data.rel.ro: relocated, then read-only */
int (*const table[])(void) = {one, two};
int plain = 7;
void bump(void) { plain++; }
int get_plain(void) { return plain; }
int call(int i) { return table[i]() + (names[i][0] == 'a'); }
int tag(void) { return TAG; }
"""


def test_keep_globals_never_writes_read_only_memory(builder: Builder) -> None:
    # Writing a RELRO page faults: the carry runs in a child.
    versions = [
        builder.compile_to_file(f"#define TAG {n}\n" + READ_ONLY_AFTER_LOADING, f"-I{INCLUDE_DIR}")
        for n in (1, 2)
    ]
    proc = run_python(
        f"""
        import os, shutil, hotr
        lib_path = {str(builder.lib)!r}
        shutil.copyfile({versions[0]!r}, lib_path)
        with hotr.HotReloader(lib_path, keep_globals=True) as r:
            lib = r.update()
            lib.bump()
            shutil.copyfile({versions[1]!r}, lib_path + ".tmp")
            os.rename(lib_path + ".tmp", lib_path)
            assert r.watch_for_changes(timeout=5) == 1
            r.update()
            assert lib.tag() == 2 and lib.get_plain() == 8 and lib.call(0) == 2
            reasons = dict(r.history[-1].not_carried)
            assert "plain" in r.history[-1].carried
            for name in ("names", "table"):
                assert reasons[name].startswith("read-only after loading"), reasons
        """,
        env={"HOTR_PRIVATE_DIR": str(builder.dir / "private")},
    )
    assert proc.returncode == 0


NUMBERED = """
int first(void) { static int count = 100; return ++count; }
EXTRA
int second(void) { static int count = 200; return ++count; }
int lonely(void) { static int calls; return ++calls; }
"""


def test_compiler_numbered_statics_are_never_mixed_up(builder: Builder) -> None:
    # gcc names both `count`s count.0 and count.1 in order of appearance; a function added in
    # between renumbers them.  Carrying by those names would swap the values.
    land(builder, NUMBERED.replace("EXTRA", ""))
    with hotr.HotReloader(builder.lib, keep_globals=True) as r:
        lib = r.update()
        assert (lib.first(), lib.second(), lib.lonely()) == (101, 201, 1)
        land(builder, NUMBERED.replace("EXTRA", "int middle(void) { static int count; return 0; }"))
        reload_next(r)
        reasons = dict(r.history[-1].not_carried)
        assert any(
            "several function-local statics named 'count'" in why for why in reasons.values()
        )
        assert r.history[-1].carried == ("calls",)
        assert (lib.first(), lib.second()) == (101, 201), "not carried: both start afresh"
        assert lib.lonely() == 2, "an unambiguous function-local static was not carried"


def test_thread_locals_are_reported_not_carried(builder: Builder) -> None:
    code = (
        "__thread int per_thread = 1;\nint shared = 1;\n"
        "int bump(void) { return ++per_thread + ++shared; }\nint tag(void) { return TAG; }\n"
    )
    land(builder, "#define TAG 1\n" + code)
    with hotr.HotReloader(builder.lib, keep_globals=True) as r:
        lib = r.update()
        assert lib.bump() == 4
        land(builder, "#define TAG 2\n" + code)
        reload_next(r)
        assert lib.tag() == 2
        info = r.history[-1]
        assert info.carried == ("shared",)
        assert dict(info.not_carried)["per_thread"].startswith("thread-local")


def test_keep_globals_after_the_old_copy_was_deleted(builder: Builder) -> None:
    # Something (a /tmp cleaner, a user) removes hotr's private copy of the running version.
    land(builder, "#define OLD\n#define GROWS 2\n" + GLOBALS)
    with hotr.HotReloader(builder.lib, keep_globals=True) as r:
        lib = r.update()
        lib.bump()
        for copy in (builder.dir / "private").rglob("v*"):
            copy.unlink()
        land(builder, "#define GROWS 2\n" + GLOBALS)
        reload_next(r)
        assert lib.get_counter() == 6
        assert "counter" in r.history[-1].carried
