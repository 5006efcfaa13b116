"""The public surface: exactly these names, typed, with one exception base."""

from __future__ import annotations

import types

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
