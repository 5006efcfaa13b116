"""The public surface: exactly these names, typed, with one exception base."""

from __future__ import annotations

import pickle
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from conftest import run_python

import hotr


def test_public_names_are_exactly_these() -> None:
    assert sorted(hotr.__all__) == hotr.__all__
    assert hotr.__all__ == [
        "BuildError",
        "CrashError",
        "Function",
        "HotReloadError",
        "HotReloader",
        "Library",
        "LoadError",
        "SymbolNotFoundError",
        "VersionInfo",
        "Watcher",
        "__version__",
        "aload",
        "aload_module",
        "hot_reload_cleanup",
        "hot_reload_init",
        "hot_reload_update",
        "load",
        "load_module",
        "reloader_of",
        "watch_for_changes",
    ]
    public = {
        n
        for n in dir(hotr)
        if not n.startswith("_") and not isinstance(getattr(hotr, n), types.ModuleType)
    }
    ipython_protocol = {"load_ipython_extension", "unload_ipython_extension"}  # %load_ext hotr
    assert public <= set(hotr.__all__) | ipython_protocol


def test_exception_tree() -> None:
    assert issubclass(hotr.LoadError, hotr.HotReloadError)
    assert issubclass(hotr.SymbolNotFoundError, hotr.HotReloadError)
    assert issubclass(hotr.SymbolNotFoundError, AttributeError)
    assert issubclass(hotr.BuildError, hotr.LoadError)
    err = hotr.LoadError("/x/libhot.so", "truncated: oops")
    assert str(err) == "cannot load '/x/libhot.so': truncated: oops"
    assert (err.path, err.reason) == ("/x/libhot.so", "truncated: oops")


def test_package_is_typed() -> None:
    from importlib.resources import files

    assert files("hotr").joinpath("py.typed").is_file()


def test_every_error_pickles_as_it_was() -> None:
    # A process pool sends a worker's exception to its caller by pickling it.
    import pickle

    errors = [
        hotr.HotReloadError("x"),
        hotr.LoadError("lib.so", "why"),
        hotr.BuildError("k.c", "cc k.c", 1, "k.c:1: error: x"),
        hotr.BuildError("k.c", "make", None, "", timeout=3.0),
        hotr.SymbolNotFoundError("lib.so", "f", 2),
        hotr.CrashError("lib.so", "f", 2, 11, 0x1000, None, "f+0x4", "rolled back to version 1"),
    ]
    for error in errors:
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error) and str(again) == str(error)
        assert vars(again) == vars(error)


@pytest.mark.every_python  # what the standard library imports differs between versions
def test_import_leaves_the_heavy_modules_out(tmp_path: Path) -> None:
    """`import hotr` and a first load pull in none of typing, logging, re, enum, asyncio or
    subprocess (together about 15 ms of start-up): each comes only when something needs it."""
    lib = tmp_path / "libone.so"
    src = tmp_path / "one.c"
    src.write_text("int one(void) { return 1; }\n")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    out = run_python(
        """
        import sys
        import hotr
        assert hotr.load(sys.argv[1]).one() == 1
        heavy = {"typing", "logging", "re", "enum", "asyncio", "subprocess", "signal"}
        print(sorted(heavy & set(sys.modules)))
        """,
        argv=[str(lib)],
    )
    assert out.stdout.split() == ["[]"]


def test_a_warning_reaches_stderr_in_a_program_that_never_imported_logging(
    tmp_path: Path,
) -> None:
    """hotr imports logging only for a record worth showing; a warning is then shown as
    logging shows any warning nobody configured a handler for."""
    lib = tmp_path / "libunload.so"
    src = tmp_path / "unload.c"
    src.write_text(
        "int one(void) { return 1; }\n"
        "int hotr_unload(void **state, int version, int reloading) { return 7; }\n"
    )
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    out = run_python(
        """
        import sys
        import hotr
        with hotr.HotReloader(sys.argv[1]) as r:
            assert r.update().one() == 1
        """,
        argv=[str(lib)],
    )
    assert "hotr_unload of version 1 returned 7" in out.stderr


def test_every_public_name_is_listed_and_reachable_from_a_fresh_interpreter() -> None:
    # Watcher and load_module are imported on first use: dir() and attribute access find them.
    run_python(
        """
        import sys
        import hotr
        assert "hotr._watcher" not in sys.modules and "hotr._modules" not in sys.modules
        assert set(hotr.__all__) <= set(dir(hotr)), set(hotr.__all__) - set(dir(hotr))
        for name in hotr.__all__:
            assert getattr(hotr, name) is not None, name
        assert hotr.Watcher.__module__ == "hotr" and hotr.load_module.__module__ == "hotr"
        try:
            hotr.Nonexistent
        except AttributeError as exc:
            assert "Nonexistent" in str(exc)
        else:
            raise AssertionError("hotr.Nonexistent did not raise AttributeError")
        """
    )


@pytest.mark.every_python  # namedtuple's errors and methods differ between versions
def test_version_info_behaves_as_the_named_tuple_it_stands_for() -> None:
    """VersionInfo is made without collections; it answers as collections.namedtuple's class
    with the same fields does on this version: errors, _replace/__replace__, repr, pickling."""
    import collections
    import copy

    fields = hotr.VersionInfo._fields
    defaults = list(hotr.VersionInfo._field_defaults.values())
    make: Any = collections.namedtuple  # a class made at run time, as hotr's own is
    twin = make("VersionInfo", fields, defaults=defaults)
    values = (1, 2.0, "ab", 0.5, None, ("k.c",), False, (), (), "live")
    ours, theirs = hotr.VersionInfo(*values), twin(*values)

    def outcome(call: object, record: object) -> tuple[str, str]:
        try:
            result = call(record)  # type: ignore[operator]
        except Exception as error:
            return type(error).__name__, str(error)
        return "ok", repr(tuple(result)) if isinstance(result, tuple) else repr(result)

    calls = [
        lambda t: t._replace(number=5),
        lambda t: t._replace(nope=1),
        lambda t: t._make(values[:3]),
        lambda t: t._asdict(),
        lambda t: type(t)(*values[:2]),
        lambda t: repr(t).split("(", 1)[1],
        lambda t: copy.copy(t),
        lambda t: type(t).number.__doc__,
        lambda t: type(type(t).number).__name__,
        lambda t: [type(t).__dict__[name].__qualname__.split(".")[1] for name in ("_replace",)],
    ]
    if sys.version_info >= (3, 13):
        calls.append(lambda t: copy.replace(t, status="retired"))  # type: ignore[attr-defined]
        calls.append(lambda t: copy.replace(t, nope=1))  # type: ignore[attr-defined]
    for index, call in enumerate(calls):
        assert outcome(call, ours) == outcome(call, theirs), index
    assert pickle.loads(pickle.dumps(ours)) == ours and type(
        pickle.loads(pickle.dumps(ours))
    ) is type(ours)
    assert repr(ours).startswith("VersionInfo(number=1, loaded_at=2.0")
    import inspect

    for name, method in vars(twin).items():  # what help(VersionInfo) shows of each method
        if callable(method) or isinstance(method, classmethod):
            mine = getattr(vars(hotr.VersionInfo)[name], "__func__", vars(hotr.VersionInfo)[name])
            twins = getattr(method, "__func__", method)
            assert mine.__doc__ == twins.__doc__, name
            assert inspect.signature(mine) == inspect.signature(twins), name
    match ours:
        case hotr.VersionInfo(number, _, sha):
            assert (number, sha) == (1, "ab")
        case _:
            raise AssertionError("match did not take the positional fields")
