"""The same reload guarantees on both watching backends: inotify and polling."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import WAYS, Builder, reload_next, source
from inotify_simple import INotify

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


def test_polling_has_no_fileno(builder: Builder, backend: str) -> None:
    with hotr.HotReloader(builder.lib, backend=backend) as r:
        if backend == "poll":
            with pytest.raises(hotr.HotReloadError, match="polling"):
                r.fileno()
        else:
            assert r.fileno() >= 0


def test_env_picks_the_backend(builder: Builder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTR_BACKEND", "poll")
    with hotr.HotReloader(builder.lib) as r:
        assert r.backend == "poll"
    with hotr.HotReloader(builder.lib, backend="inotify") as r:
        assert r.backend == "inotify"
    with pytest.raises(ValueError, match="unknown backend 'fsevents'"):
        hotr.HotReloader(builder.lib, backend="fsevents")


def test_auto_falls_back_to_polling_without_inotify(builder: Builder) -> None:
    hogs: list[INotify] = []
    try:
        while len(hogs) < 10_000:  # use up this user's inotify instances (fs.inotify)
            try:
                hogs.append(INotify())
            except OSError:
                break
        with hotr.HotReloader(builder.lib) as r:
            assert r.backend == "poll"
            lib = r.update()
            builder.rename(source(2))
            reload_next(r)
            assert lib.value() == 2
        with pytest.raises(hotr.HotReloadError, match="cannot watch"):
            hotr.HotReloader(builder.lib, backend="inotify")
    finally:
        for hog in hogs:
            hog.close()
