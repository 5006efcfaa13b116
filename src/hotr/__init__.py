"""hotr: hot-reload native shared libraries inside a running Python process.

Edit and rebuild a C library while the program runs; the next call runs the new code::

    import hotr

    lib = hotr.load("./libhot.so")  # reloads in the background on every rebuild
    lib.hello_world_func()
"""

from __future__ import annotations

from ._background import aload, load
from ._exceptions import BuildError, CrashError, HotReloadError, LoadError, SymbolNotFoundError
from ._history import VersionInfo
from ._library import Function, Library, reloader_of
from ._reloader import HotReloader
from ._seed import hot_reload_cleanup, hot_reload_init, hot_reload_update, watch_for_changes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from ._modules import aload_module, load_module
    from ._watcher import Watcher

__version__ = "0.1.0"  # pyproject.toml reads it from here (importlib.metadata costs ~20 ms)

__all__ = [
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


def load_ipython_extension(shell: InteractiveShell) -> None:
    """``%load_ext hotr``: the ``%%hotr`` cell magic and ``%hotr`` (docs/notebooks.md).

    IPython is imported here, only when the extension is loaded.
    """
    from . import _notebook

    _notebook.load_ipython_extension(shell)


def unload_ipython_extension(shell: InteractiveShell) -> None:
    """``%unload_ext hotr``: close the libraries the extension loaded."""
    from . import _notebook

    _notebook.unload_ipython_extension(shell)


def __getattr__(name: str) -> object:
    """The public names `import hotr` imports on first use: extension modules and Watcher
    (with what they import, 3 ms of the 15 `import hotr` may cost)."""
    if name in ("load_module", "aload_module"):
        from . import _modules as module
    elif name == "Watcher":
        from . import _watcher as module  # type: ignore[no-redef]
    else:
        raise AttributeError(f"module 'hotr' has no attribute {name!r}")
    exported = globals()[name] = getattr(module, name)
    exported.__module__ = "hotr"
    return exported


def __dir__() -> list[str]:
    """Every public name, the ones imported on first use too (tab completion lists them)."""
    return sorted({*globals(), *__all__})


# Tracebacks and reprs name the public path (hotr.LoadError), not the private module.
for _name in __all__:
    _exported = globals().get(_name)
    if hasattr(_exported, "__module__") and _name != "__version__":
        _exported.__module__ = "hotr"
del _name, _exported, annotations, TYPE_CHECKING  # not hotr's names
