"""The same reload guarantees on both watching backends: inotify and polling."""

from __future__ import annotations

import os
import select
from pathlib import Path

import pytest
from conftest import WAYS, Builder, reload_next, run_python, source

import hotr


@pytest.fixture(params=["inotify", "poll"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("HOTR_POLL_INTERVAL", "0.05")
    return str(request.param)


@pytest.mark.parametrize("way", WAYS)
def test_each_way_of_writing(builder: Builder, backend: str, way: str) -> None:
    with hotr.HotReloader(builder.lib, backend=backend) as r:
        assert r.backend == backend
        lib = r.update()
        for n in (2, 3, 4):
            getattr(builder, way)(source(n))
            reload_next(r)
            assert lib.value() == n


def test_bad_file_keeps_old_version(builder: Builder, backend: str) -> None:
    with hotr.HotReloader(builder.lib, backend=backend) as r:
        lib = r.update()
        builder.write_bytes(b"this is not a library at all")
        assert r.watch_for_changes(timeout=5) == 1
        with pytest.raises(hotr.LoadError, match="not an ELF file"):
            r.update()
        assert lib.value() == 1


def test_touch_and_same_bytes_are_not_changes(builder: Builder, backend: str) -> None:
    with hotr.HotReloader(builder.lib, backend=backend) as r:
        r.update()
        os.utime(builder.lib)
        builder.copy(source(1))
        if r.watch_for_changes(timeout=0.5) == 1:  # inotify sees the rewrite; polling sees no
            r.update()  # new content at all
        assert r.version == 1


def test_symlink_retargeted(builder: Builder, backend: str) -> None:
    targets = [builder.dir / f"v{n}.so" for n in (1, 2)]
    for n, path in enumerate(targets, 1):
        path.write_bytes(builder.compile(source(n)))
    link = builder.dir / "current.so"
    link.symlink_to(targets[0].name)
    with hotr.HotReloader(link, backend=backend) as r:
        lib = r.update()
        tmp = builder.dir / "tmp-link"
        tmp.symlink_to(targets[1].name)
        os.rename(tmp, link)
        reload_next(r)
        assert lib.value() == 2


def test_sources_rebuild_on_both(tmp_path: Path, backend: str, builder: Builder) -> None:
    src = tmp_path / "k.c"
    src.write_text("int value(void) { return 1; }\n")
    with hotr.HotReloader(src, backend=backend) as r:
        lib = r.update()
        src.write_text("int value(void) { return 2; }\n")
        reload_next(r)
        assert lib.value() == 2


def test_fileno_on_both(builder: Builder, backend: str) -> None:
    with hotr.HotReloader(builder.lib, backend=backend) as r:
        lib = r.update()
        assert select.select([r], [], [], 0.2)[0] == []
        builder.rename(source(2))
        assert select.select([r], [], [], 5)[0] == [r]
        r.update()
        assert lib.value() == 2
        assert select.select([r], [], [], 0)[0] == [], "update() leaves the descriptor quiet"


def test_env_picks_the_backend(builder: Builder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTR_BACKEND", "poll")
    with hotr.HotReloader(builder.lib) as r:
        assert r.backend == "poll"
    with hotr.HotReloader(builder.lib, backend="inotify") as r:
        assert r.backend == "inotify"
    with pytest.raises(ValueError, match="unknown backend 'fsevents'"):
        hotr.HotReloader(builder.lib, backend="fsevents")


def test_auto_falls_back_to_polling_without_inotify(builder: Builder) -> None:
    # A fresh process (one inotify instance per process, made on first use) whose user has no
    # inotify instances left: auto polls, and says so at WARNING; inotify asked for fails.
    run_python(
        f"""
        import ctypes, logging, os, hotr
        logging.basicConfig(level=logging.WARNING)
        libc = ctypes.CDLL(None)
        hogs = []
        while len(hogs) < 10_000 and (fd := libc.inotify_init1(os.O_CLOEXEC)) >= 0:
            hogs.append(fd)
        warned = []
        logging.getLogger("hotr").addHandler(type("H", (logging.Handler,), {{
            "emit": lambda self, record: warned.append(record)}})())
        try:
            with hotr.HotReloader({str(builder.lib)!r}) as r:
                assert r.backend == "poll", r.backend
                lib = r.update()
                tmp = {str(builder.dir / "next.so")!r}
                open(tmp, "wb").write(open({builder.compile_to_file(source(2))!r}, "rb").read())
                os.rename(tmp, {str(builder.lib)!r})
                assert r.watch_for_changes(timeout=5) == 1
                r.update()
                assert lib.value() == 2
            assert [w.levelname for w in warned if "polling" in w.getMessage()] == ["WARNING"]
            try:
                hotr.HotReloader({str(builder.lib)!r}, backend="inotify")
            except hotr.HotReloadError as exc:
                assert "cannot watch" in str(exc), exc
            else:
                raise AssertionError("inotify was asked for and none could be had")
        finally:
            for fd in hogs:
                os.close(fd)
        """,
        env={"HOTR_POLL_INTERVAL": "0.05"},
    )


def test_one_inotify_instance_for_1000_reloaders(builder: Builder, tmp_path: Path) -> None:
    run_python(
        f"""
        import os, shutil, hotr
        def inotify_fds():
            return sum(os.readlink(f"/proc/self/fd/{{fd}}") == "anon_inode:inotify"
                       for fd in os.listdir("/proc/self/fd")
                       if os.path.exists(f"/proc/self/fd/{{fd}}"))
        paths = []
        for i in range(1000):
            path = os.path.join({str(tmp_path)!r}, f"d{{i % 50}}", f"lib{{i}}.so")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            shutil.copyfile({str(builder.lib)!r}, path)
            paths.append(path)
        fds = len(os.listdir("/proc/self/fd"))
        reloaders = [hotr.HotReloader(p) for p in paths]
        for r in reloaders:
            r.update()
        assert inotify_fds() == 1, inotify_fds()
        used = len(os.listdir("/proc/self/fd")) - fds
        assert used <= 4, f"1000 reloaders use {{used}} descriptors"
        assert all(r.backend == "inotify" for r in reloaders)
        for r in reloaders:
            r.close()
        print("descriptors for 1000 reloaders:", used)
        """,
        env={"HOTR_PRIVATE_DIR": str(tmp_path / "private")},
    )
