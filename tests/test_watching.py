"""Recovery everywhere, on the real file system: directories removed and created again, a
directory symlink switched, the kernel's event queue overflowing; libraries that find their
dependencies through $ORIGIN; every C name reachable."""

from __future__ import annotations

import ctypes
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import CC, Builder, reload_next, run_python, source

import hotr


def test_sources_recover_after_their_directory_is_removed(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    src = project / "k.c"
    src.write_text("int value(void) { return 1; }\n")
    with hotr.HotReloader(src) as r:
        lib = r.update()
        shutil.rmtree(project)
        assert r.watch_for_changes(timeout=5) == -1
        assert lib.value() == 1
        project.mkdir()  # e.g. a branch switch or a fresh checkout
        src.write_text("int value(void) { return 2; }\n")
        assert r.watch_for_changes(timeout=5) == 1
        r.update()
        assert lib.value() == 2


def test_a_library_recovers_when_its_directory_returns_deeper_down(
    tmp_path: Path, builder: Builder
) -> None:
    lib_path = tmp_path / "build" / "out" / "libhot.so"
    lib_path.parent.mkdir(parents=True)
    lib_path.write_bytes(builder.compile(source(1)))
    with hotr.HotReloader(lib_path) as r:
        lib = r.update()
        shutil.rmtree(tmp_path / "build")  # a clean build: rm -rf build
        assert r.watch_for_changes(timeout=5) == -1
        lib_path.parent.mkdir(parents=True)
        lib_path.write_bytes(builder.compile(source(2)))
        reload_next(r)
        assert lib.value() == 2


@pytest.mark.parametrize("moved", ["dist/out", "dist"])
def test_a_directory_on_the_way_moved_aside_and_made_again(
    tmp_path: Path, builder: Builder, moved: str
) -> None:
    lib_path = tmp_path / "dist" / "out" / "libhot.so"
    lib_path.parent.mkdir(parents=True)
    lib_path.write_bytes(builder.compile(source(1)))
    new = builder.compile_to_file(source(2))
    aside = shlex.quote(str(tmp_path / moved))
    with hotr.HotReloader(lib_path) as r:
        lib = r.update()
        # mv dist dist.old && a fresh build, in one command run with the GIL held (PyDLL):
        # hotr reads the events only once the new library is in place, as it does when the
        # program is busy meanwhile.
        command = (
            f"mv {aside} {aside}.old && mkdir -p {shlex.quote(str(lib_path.parent))}"
            f" && cp {shlex.quote(new)} {shlex.quote(str(lib_path))}"
        )
        assert ctypes.PyDLL(None).system(command.encode()) == 0
        reload_next(r)
        assert lib.value() == 2


@pytest.mark.parametrize("backend", ["inotify", "poll"])
def test_a_directory_symlink_switched_atomically(
    tmp_path: Path, builder: Builder, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOTR_POLL_INTERVAL", "0.05")
    for n in (1, 2):
        release = tmp_path / "releases" / str(n) / "lib"
        release.mkdir(parents=True)
        (release / "libapp.so").write_bytes(builder.compile(source(n)))
    current = tmp_path / "current"
    current.symlink_to("releases/1")
    with hotr.HotReloader(current / "lib" / "libapp.so", backend=backend) as r:
        lib = r.update()
        assert lib.value() == 1
        new = tmp_path / "current.new"
        new.symlink_to("releases/2")
        os.rename(new, current)  # the deploy: ln -sfn releases/2 current, atomically
        reload_next(r)
        assert lib.value() == 2
        # ...and the release now current is watched itself.
        (tmp_path / "releases" / "2" / "lib" / "libapp.so").write_bytes(builder.compile(source(3)))
        reload_next(r)
        assert lib.value() == 3


def test_an_overflowed_event_queue_loses_no_change(tmp_path: Path, builder: Builder) -> None:
    # A C function, called without releasing the GIL so hotr's watch thread cannot read
    # meanwhile, makes more events than the kernel queues (fs.inotify.max_queued_events),
    # then renames a new version into place: its event is dropped with the overflow.
    storm = tmp_path / "storm.c"
    storm.write_text(
        "#include <fcntl.h>\n#include <stdio.h>\n#include <unistd.h>\n"
        "void storm(const char *dir, int n, const char *from, const char *to) {\n"
        "  char path[4096];\n"
        "  for (int i = 0; i < n; i++) {\n"
        '    snprintf(path, sizeof path, "%s/f%d", dir, i % 64);\n'
        "    close(open(path, O_WRONLY | O_CREAT, 0600));\n"
        "  }\n"
        "  rename(from, to);\n"
        "}\n"
    )
    helper = tmp_path / "libstorm.so"
    subprocess.run([CC, "-shared", "-fPIC", str(storm), "-o", str(helper)], check=True)
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    run_python(
        f"""
        import ctypes, logging, os, hotr
        overflowed = []
        logging.getLogger("hotr").addHandler(logging.Handler())
        logging.getLogger("hotr").setLevel(logging.INFO)
        logging.getLogger("hotr").handlers[0].emit = lambda record: overflowed.append(
            "overflowed" in record.getMessage())
        lib_path = {str(builder.lib)!r}
        r = hotr.HotReloader(lib_path)
        lib = r.update()
        storm = ctypes.PyDLL({str(helper)!r}).storm  # PyDLL: the GIL stays held
        storm.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p]
        nxt = lib_path + ".next"
        open(nxt, "wb").write(open({builder.compile_to_file(source(2))!r}, "rb").read())
        storm(os.path.dirname(lib_path).encode(), {limit * 2}, nxt.encode(), lib_path.encode())
        assert r.watch_for_changes(timeout=5) == 1, "the change was lost with the overflow"
        r.update()
        assert lib.value() == 2
        assert any(overflowed), "the queue did not overflow: the test proved nothing"
        r.close()
        """,
        env={"HOTR_PRIVATE_DIR": str(tmp_path / "private")},
    )


ORIGIN_MAIN = "int dep_value(void);\nint value(void) { return dep_value() * 10 + TAG; }\n"


@pytest.mark.parametrize("layout", ["$ORIGIN", "$ORIGIN/../deps", "needed"])
def test_a_library_finding_its_dependency_through_origin(tmp_path: Path, layout: str) -> None:
    lib_dir = tmp_path / "app" / "lib"
    dep_dir = tmp_path / "app" / "deps" if layout == "$ORIGIN/../deps" else lib_dir
    for path in {lib_dir, dep_dir}:
        path.mkdir(parents=True, exist_ok=True)
    dep_src, main_src = tmp_path / "dep.c", tmp_path / "main.c"
    dep_src.write_text("int dep_value(void) { return 4; }\n")
    # No -soname: the dependency is matched by the name in DT_NEEDED, looked up with $ORIGIN;
    # "needed": DT_NEEDED itself is "$ORIGIN/libdep.so" (the dependency's soname).
    soname = ["-Wl,-soname,$ORIGIN/libdep.so"] if layout == "needed" else []
    subprocess.run(
        [CC, "-shared", "-fPIC", *soname, str(dep_src), "-o", str(dep_dir / "libdep.so")],
        check=True,
    )
    rpath = [] if layout == "needed" else [f"-Wl,-rpath,{layout}"]
    main = lib_dir / "libmain.so"

    def build_main(tag: int) -> None:
        main_src.write_text(f"#define TAG {tag}\n" + ORIGIN_MAIN)
        out = main.with_suffix(".new")
        subprocess.run(
            [
                CC,
                "-shared",
                "-fPIC",
                str(main_src),
                "-o",
                str(out),
                f"-L{dep_dir}",
                "-ldep",
                *rpath,
            ],
            check=True,
        )
        os.rename(out, main)

    build_main(1)
    assert ctypes.CDLL(str(main)).value() == 41  # what hotr must match
    with hotr.HotReloader(main) as r:
        lib = r.update()
        assert lib.value() == 41
        build_main(2)
        reload_next(r)
        assert lib.value() == 42


def test_every_c_name_is_reachable_by_subscript(builder: Builder) -> None:
    names = ["_handle", "__init__", "__call__", "__getattr__", "_Library__reloader", "update"]
    code = "".join(f"int {n}(void) {{ return {i}; }}\n" for i, n in enumerate(names))
    builder.lib.write_bytes(builder.compile(source(1, code)))
    with hotr.HotReloader(builder.lib) as r:
        lib = r.update()
        assert [lib[n]() for n in names] == list(range(len(names)))
        assert isinstance(lib._handle, int), "the attribute still serves ctypes' in_dll"


def test_a_symlink_put_where_the_library_was(tmp_path: Path, builder: Builder) -> None:
    target = tmp_path / "libv2.so"
    target.write_bytes(builder.compile(source(2)))
    with hotr.HotReloader(builder.lib) as r:
        lib = r.update()
        builder.lib.unlink()
        builder.lib.symlink_to(target)  # a symlink has no writer: created is complete
        reload_next(r)
        assert lib.value() == 2


def test_a_path_through_a_symlinked_directory_and_dotdot(tmp_path: Path) -> None:
    # build/../lib/libk.so where build is a symlink: the kernel resolves '..' from the symlink's
    # target, as open() does, and so must the watch.
    real = tmp_path / "real"
    (real / "build").mkdir(parents=True)
    (real / "lib").mkdir()
    (tmp_path / "build").symlink_to(real / "build")
    builder = Builder(real / "lib")
    builder.lib = real / "lib" / "libk.so"
    builder.rename(source(1))
    path = tmp_path / "build" / ".." / "lib" / "libk.so"
    assert path.exists() and not (tmp_path / "lib").exists()
    with hotr.HotReloader(path) as r:
        lib = r.update()
        assert lib.value() == 1
        for n in (2, 3):
            builder.rename(source(n))
            reload_next(r)
            assert lib.value() == n


def test_a_hard_link_whose_other_name_is_gone_at_once_is_seen(builder: Builder) -> None:
    # write lib.so.tmp, unlink lib.so, link lib.so.tmp lib.so, unlink lib.so.tmp: inotify says
    # only IN_CREATE, and by the time hotr looks the file has one name, like a file being
    # written.  No close event comes; a quiet, unchanged file nobody writes is complete.
    with hotr.HotReloader(builder.lib, debounce=0) as r:
        lib = r.update()
        for n in (2, 3):
            tmp = builder.dir / "libhot.so.tmp"
            tmp.write_bytes(builder.compile(source(n)))
            builder.lib.unlink()
            os.link(tmp, builder.lib)
            tmp.unlink()
            assert r.watch_for_changes(timeout=10) == 1, "the hard link was never seen"
            r.update()
            assert lib.value() == n


def test_a_slow_writer_of_a_created_file_is_waited_for(builder: Builder) -> None:
    # Created, half written, then a pause longer than hotr's quiet time with the file still open
    # for writing: nothing is loaded until it is closed.
    data = builder.compile(source(2))
    with hotr.HotReloader(builder.lib, debounce=0) as r:
        lib = r.update()
        builder.lib.unlink()
        with open(builder.lib, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            assert r.watch_for_changes(timeout=1.5) == 0, "a file still being written was due"
            f.write(data[len(data) // 2 :])
        assert r.watch_for_changes(timeout=10) == 1
        r.update()
        assert lib.value() == 2
        assert r.version == 2
