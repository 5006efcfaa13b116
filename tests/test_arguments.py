"""Bad arguments are refused at the call, with an error that names the parameter and the fix."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Builder, reload_next, source

import hotr


@pytest.fixture
def src(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOTR_PRIVATE_DIR", str(tmp_path / "private"))
    path = tmp_path / "k.c"
    path.write_text("int f(void) { return 1; }\n")
    return path


def test_a_string_where_a_list_of_arguments_goes_is_a_type_error(src: Path) -> None:
    with pytest.raises(TypeError, match=r"flags must be a list of arguments, e.g. flags=\['-O2'\]"):
        hotr.HotReloader(src, flags="-O2")
    with pytest.raises(TypeError, match=r"build must be a list .* build=\['make', '-C', 'src'\]"):
        hotr.HotReloader(src.with_suffix(".so"), sources=[src], build="make -C src")
    with pytest.raises(TypeError, match="flags must be a list of strings"):
        hotr.load(src, flags=["-O2", 3])


BAD: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"path": ""}, ValueError, "path is an empty path"),
    ({"path": 123}, TypeError, "path must be a path or a list of paths, not int"),
    ({"path": b"k.c"}, TypeError, "path must be a path or a list of paths, not bytes"),
    ({"path": []}, ValueError, "path is an empty list"),
    ({"sources": [""]}, ValueError, "sources is an empty path"),
    ({"build_timeout": -1}, ValueError, "build_timeout must be a number of seconds > 0"),
    ({"build_timeout": 0}, ValueError, "build_timeout must be a number of seconds > 0"),
    ({"build_timeout": "60"}, TypeError, "build_timeout must be a number of seconds, not str"),
    ({"debounce": -0.1}, ValueError, "debounce must be a number of seconds >= 0"),
    ({"debounce": float("nan")}, ValueError, "debounce must be a number of seconds >= 0"),
    (
        {"debounce": 10**400},
        ValueError,
        "debounce must be a finite number of seconds, not an integer of 401 digits",
    ),
    (
        {"build_timeout": float("inf")},
        ValueError,
        "build_timeout must be a finite number of seconds, not inf",
    ),
    (
        {"build_timeout": 10**400},
        ValueError,
        "build_timeout must be a finite number of seconds, not an",
    ),
    (
        {"debounce": -(10**400)},
        ValueError,
        "debounce must be a number of seconds >= 0, not an integer of 401 digits",
    ),
    ({"cc": 3}, TypeError, "cc must be a compiler's name"),
    ({"cc": ""}, ValueError, "cc is empty"),
    ({"keep_globals": "yes"}, TypeError, "keep_globals must be True or False"),
    ({"probe": 1}, TypeError, "probe must be True or False"),
    ({"backend": "fsevents"}, ValueError, "unknown backend 'fsevents'"),
    ({"backend": None}, TypeError, "backend must be 'auto', 'inotify', 'poll' or a hotr.testing"),
    ({"prototypes": None}, TypeError, "prototypes must be True or False, not None"),
    ({"ffi": 3}, TypeError, "ffi must be a cffi.FFI or None, not int"),
    ({"jobs": 1.5}, TypeError, "jobs must be a whole number or None"),
    ({"jobs": True}, TypeError, "jobs must be a whole number or None"),
    ({"jobs": 0}, ValueError, "jobs: expected a whole number, at least 1"),
    ({"sources": ["k.c"], "build": []}, ValueError, "build is empty"),
]


@pytest.mark.parametrize(("options", "error", "message"), BAD, ids=[str(b[0])[:50] for b in BAD])
def test_bad_arguments_name_the_parameter(
    src: Path, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    path = options.pop("path", src)
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        hotr.HotReloader(path, **options)
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        hotr.load(path, **options)


def test_a_source_given_twice_is_refused(src: Path) -> None:
    # Compiled twice, it failed every link with "multiple definition of `f'".
    (src.parent / "other.c").write_text("int g(void) { return 2; }\n")
    (src.parent / "link.c").symlink_to(src)
    for twice in ([src, src.parent / "other.c", src], [src, src.parent / "." / "k.c"]):
        with pytest.raises(ValueError, match="path names one source twice"):
            hotr.HotReloader(twice)
    with pytest.raises(ValueError, match=r"path names one source twice \(.*k\.c', .*link\.c'\)"):
        hotr.load([src, src.parent / "link.c"])
    with hotr.HotReloader([src, src.parent / "other.c"]) as r:
        assert r.update().g() == 2


def test_callbacks_and_the_background_options_are_checked(src: Path) -> None:
    # Each of these was taken, and failed later (a callback at the first reload, logged) or
    # never (manual=3 was taken as true), or raised AttributeError.
    with hotr.HotReloader(src) as r:
        with pytest.raises(TypeError, match="on_reload must be a callable, not int"):
            r.on_reload(3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="on_error must be a callable, not NoneType"):
            r.on_error(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_reload must be a callable, not str"):
        hotr.load(src, on_reload="print")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="manual must be True or False, not 3"):
        hotr.load(src, manual=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="manual must be True or False, not 'yes'"):
        hotr.Watcher(manual="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="backend must be 'auto', 'inotify' or 'poll', not None"):
        hotr.Watcher(backend=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name must be a module name or None, not int"):
        hotr.load_module(src, name=3)  # type: ignore[arg-type]


def test_watcher_remove_names_itself_in_its_errors() -> None:
    # It said "reloader_of() takes a hotr.Library ...": a function the caller never called.
    with hotr.Watcher() as watcher:
        for wrong in (3, None, "libk.so"):
            with pytest.raises(TypeError) as info:
                watcher.remove(wrong)  # type: ignore[arg-type]
            assert str(info.value) == (
                "Watcher.remove(library): library must be the hotr.Library that "
                f"Watcher.add() returned, not {type(wrong).__name__}"
            )


def test_watcher_remove_leaves_a_library_it_never_added_alone(builder: Builder) -> None:
    # It closed any hotr.Library without a word: one from hotr.load, or another Watcher's.
    lib = hotr.load(builder.lib)
    with hotr.Watcher() as watcher, hotr.Watcher() as other:
        theirs = other.add(builder.lib)
        for foreign in (lib, theirs):
            with pytest.raises(ValueError, match=r"Watcher.remove\(library\): .* not one this "):
                watcher.remove(foreign)
            assert foreign.value() == 1  # still open, still answering
        assert other.libraries == [theirs]
        other.remove(theirs)
        other.remove(theirs)  # removed already: nothing to do, as close() twice
    hotr.reloader_of(lib).close()


def test_every_entry_point_names_its_own_parameter_of_a_wrong_type(builder: Builder) -> None:
    # hot_reload_init(123) raised "path must be ..." from HotReloader, naming a parameter it
    # does not have; the seed API's other functions raised AttributeError ('int' object has no
    # attribute 'update'), load_module(123) "'int' object is not iterable", and
    # load_module([b"m.c"]) "a bytes-like object is required, not 'str'".
    api: Any = hotr  # the calls are wrong on purpose
    expected: list[tuple[Any, str]] = [
        (lambda: api.hot_reload_init(123), "hot_reload_init(lib_path): lib_path must be the "),
        (lambda: api.hot_reload_init(None), "os.PathLike), not NoneType"),
        (lambda: api.hot_reload_init(b"libhot.so"), "not bytes: decode it, os.fsdecode"),
        (lambda: api.hot_reload_update(3), "hot_reload_update(reloader): reloader must be "),
        (lambda: api.hot_reload_update(None), "not NoneType (hot_reload_init() returned None"),
        (lambda: api.watch_for_changes("x"), "watch_for_changes(reloader): reloader must be"),
        (lambda: api.hot_reload_cleanup(3), "hot_reload_cleanup(reloader): reloader must be"),
        (lambda: api.load_module(123), "target must be a path or a list of paths, not int"),
        (lambda: api.load_module(None), "target must be a path or a list of paths, not None"),
        (lambda: api.load_module(b"m.c"), "not bytes: decode it, os.fsdecode(target)"),
        (lambda: api.load_module([b"m.c"]), "target must hold paths, not bytes (b'm.c'): decode"),
        (lambda: api.load_module(["m.c", 5]), "target must hold paths, not int (5)"),
        (lambda: api.load(None), "path must be a path or a list of paths, not NoneType"),
        (lambda: api.HotReloader(b"libhot.so"), "not bytes: decode it, os.fsdecode(path)"),
    ]
    for call, message in expected:
        with pytest.raises(TypeError) as info:
            call()
        assert message in str(info.value), (message, str(info.value))
    with hotr.Watcher() as watcher, pytest.raises(TypeError, match="path must be a path or a"):
        watcher.add(123)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="target is an empty list"):
        hotr.load_module([])


def test_an_integer_too_long_for_repr_is_named_by_its_digits(src: Path) -> None:
    # repr() of an int over 4300 digits raises ValueError (sys.get_int_max_str_digits)
    message = "build_timeout must be a finite number of seconds, not an integer of 5001 digits"
    with pytest.raises(ValueError, match=message):
        hotr.HotReloader(src, build_timeout=10**5000)
    with hotr.HotReloader(src) as r, pytest.raises(ValueError, match=">= 0, not an integer of"):
        r.watch_for_changes(-(10**5000))


def test_wait_timeouts_are_checked(src: Path) -> None:
    with hotr.HotReloader(src) as r:
        r.update()
        with pytest.raises(ValueError, match="timeout must be a number of seconds >= 0, not -1"):
            r.watch_for_changes(-1)
        with pytest.raises(TypeError, match="timeout must be a number of seconds, not str"):
            r.watch_for_changes("1")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout must be a number of seconds >= 0"):
            asyncio.run(r.wait_for_change(-5))
        with pytest.raises(ValueError, match="timeout must be a finite number of seconds"):
            r.watch_for_changes(10**400)
        with pytest.raises(ValueError, match="timeout must be a finite number of seconds"):
            asyncio.run(r.wait_for_change(10**400))
        assert r.watch_for_changes(0) == 0


def test_long_finite_waits_are_waited_for(tmp_path: Path, builder: Builder) -> None:
    """Any finite number of seconds is accepted, so it must work: poll() takes at most 24.8
    days and select() what fits a _PyTime_t, and a longer timeout (in a thread other than the
    main one), debounce or build_timeout raised OverflowError, a debounce's in hotr's own thread,
    which then watched nothing for anyone."""
    builder.rename(source(1))
    with hotr.HotReloader(builder.lib) as r:
        r.update()
        found: list[object] = []

        def wait() -> None:
            try:
                found.append(r.watch_for_changes(1e300))
            except BaseException as error:
                found.append(error)

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        waiter.join(0.3)
        assert not found, found
        builder.rename(source(2))
        waiter.join(10)
        assert found == [1], found
    held = tmp_path / "held.c"
    held.write_text("int value(void) { return 1; }\n")
    with hotr.HotReloader(held, debounce=3e6) as slow, hotr.HotReloader(builder.lib) as other:
        slow.update()
        other.update()
        held.write_text("int value(void) { return 2; }\n")  # held back 35 days
        time.sleep(0.3)
        builder.rename(source(3))
        assert other.watch_for_changes(timeout=10) == 1, "hotr's thread died"
    out = tmp_path / "libbuilt.so"
    c_file = tmp_path / "built.c"
    c_file.write_text("int value(void) { return 7; }\n")
    command = ["cc", "-shared", "-fPIC", str(c_file), "-o", str(out)]
    with hotr.HotReloader(out, sources=[c_file], build=command, build_timeout=1e300) as built:
        assert built.update().value() == 7


def test_symbol_names_are_strings(src: Path) -> None:
    with hotr.HotReloader(src) as r:
        lib = r.update()
        with pytest.raises(TypeError, match=r"a symbol name is a str, not int \(3\)"):
            lib[3]  # type: ignore[index]


def test_poll_is_false_until_something_is_loaded(builder: Builder) -> None:
    # poll() asks "has it changed since the version I have?": before update() there is none,
    # so a change made before the first update() is simply part of what it loads.
    with hotr.HotReloader(builder.lib) as r:
        assert r.poll() is False
        builder.rename(source(2))
        assert r.poll() is False
        lib = r.update()
        assert lib.value() == 2
        builder.rename(source(3))
        reload_next(r)
        assert lib.value() == 3


def test_watcher_add_takes_its_own_backend(builder: Builder) -> None:
    with hotr.Watcher(backend="poll") as watcher:
        assert hotr.reloader_of(watcher.add(builder.lib)).backend == "poll"
        overridden = watcher.add(builder.lib, backend="inotify")
        assert hotr.reloader_of(overridden).backend == "inotify"
        with pytest.raises(ValueError, match="unknown backend 'zz'"):
            watcher.add(builder.lib, backend="zz")
    with pytest.raises(ValueError, match="unknown backend 'zz'"):
        hotr.Watcher(backend="zz")


def test_bad_environment_values_name_the_variable(
    src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOTR_BACKEND", "fsevents")
    with pytest.raises(ValueError, match="HOTR_BACKEND='fsevents' is not a backend: use one of"):
        hotr.HotReloader(src)
    monkeypatch.delenv("HOTR_BACKEND")
    for value in ("abc", "0", "-1", "inf"):
        monkeypatch.setenv("HOTR_POLL_INTERVAL", value)
        with pytest.raises(ValueError, match=f"HOTR_POLL_INTERVAL='{value}' is not a number"):
            hotr.HotReloader(src, backend="poll")


def test_the_seed_api_returns_none_for_a_path_it_cannot_watch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="hotr"):
        assert hotr.hot_reload_init("") is None
    assert "path is an empty path" in caplog.text


def test_tracebacks_name_the_public_exceptions(tmp_path: Path) -> None:
    for name in ("HotReloadError", "LoadError", "BuildError", "SymbolNotFoundError"):
        assert getattr(hotr, name).__module__ == "hotr"
    (tmp_path / "bad.so").write_text("not a library\n")
    result = subprocess.run(
        [sys.executable, "-c", f"import hotr; hotr.load({str(tmp_path / 'bad.so')!r})"],
        capture_output=True,
        text=True,
        env={"HOTR_PRIVATE_DIR": str(tmp_path / "private"), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith("hotr.LoadError: cannot load"), result.stderr
