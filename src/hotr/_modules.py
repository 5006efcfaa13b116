"""hotr.load_module(): a compiled Python extension module that reloads in a running interpreter.

Each version is an ordinary hotr version (a private copy under a path no earlier version used,
checked and mapped by the Loader), whose module initialisation then runs afresh through
importlib's ExtensionFileLoader: single-phase ``PyInit`` and multi-phase (PEP 489) alike.  A
fresh path matters: CPython 3.12+ keeps single-phase modules by (path, name).

The program holds one module object (also ``sys.modules[name]``).  On each reload its namespace
takes the new version's: classes, constants and other objects are the new version's own, and
each function is a live function (LiveCallable, _shim.c) that calls the live version and counts
its calls in flight, so a function taken earlier (``from fastmath import norm``) follows too.
That function is a real builtin function, called as fast as the module's own: its C function
(in _shim.c) is the counting call through its LiveCallable, of the calling convention of the
live version's function.  With guard=True that call goes through the guard's trampoline, and a
crash in the module's code is the reloader's CrashError and rollback, as for a library.

A retired version is unmapped only when that is safe: a multi-phase module whose types are heap
types, once the module and every type of it is gone (weak references tell) and no call runs in
it.  Anything else stays mapped (single-phase modules: CPython keeps their functions; static
types; functions that hold no reference to their module, as pybind11's; Cython's shared
function type), and r.history says so.
"""

from __future__ import annotations

import _thread
import copyreg
import ctypes
import functools
import gc
import os
import sys
import types
import weakref
from collections.abc import Sequence

from ._background import astart, start
from ._exceptions import HotReloadError, LoadError, SymbolNotFoundError
from ._library import MODULE_KEY
from ._log import logger
from ._reloader import HotReloader, checked_paths, core_of
from ._shim import LiveCallable, live_builtin, retarget
from ._versions import Hold, Version

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ._library import CrashHandler

_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE
_TP_DEALLOC = 6 * ctypes.sizeof(ctypes.c_void_p)  # offsetof(PyTypeObject, tp_dealloc)
# Function objects of the binding generators (builtin: C API and pybind11).
_FUNCTION_TYPES = ("cython_function_or_method", "fused_cython_function", "nb_func")
# Cython's own module functions (__pyx_unpickle_<class>, which pickle finds by name and checks
# to be the very function a cdef class's __reduce__ returns) stay the version's own.
_PYX = "__pyx_"
_ORIGIN = "hotr.origin"  # (module, name) of a live function, in its state's __dict__
_ON_CRASH = "hotr.on_crash"  # a guarded live function's crash handler, in its state's __dict__
_IMPORT_LOCK = _thread.allocate_lock()  # one module init at a time touches sys.modules[name]


class _ModuleDefBase(ctypes.Structure):
    _fields_ = (
        ("ob_refcnt", ctypes.c_ssize_t),
        ("ob_type", ctypes.c_void_p),
        ("m_init", ctypes.c_void_p),
        ("m_index", ctypes.c_ssize_t),
        ("m_copy", ctypes.c_void_p),
    )


class _ModuleDef(ctypes.Structure):  # PyModuleDef, as far as its m_slots (stable ABI)
    _fields_ = (
        ("m_base", _ModuleDefBase),
        ("m_name", ctypes.c_char_p),
        ("m_doc", ctypes.c_char_p),
        ("m_size", ctypes.c_ssize_t),
        ("m_methods", ctypes.c_void_p),
        ("m_slots", ctypes.c_void_p),
    )


class _CAPI:
    """The three C API functions hotr calls through ctypes, looked up on first use."""

    def __init__(self) -> None:
        api = ctypes.pythonapi
        self.get_def = api.PyModule_GetDef
        self.get_def.argtypes = (ctypes.py_object,)
        self.get_def.restype = ctypes.c_void_p
        self.interpreter = api.PyInterpreterState_Get
        self.interpreter.argtypes = ()
        self.interpreter.restype = ctypes.c_void_p
        self.state_dict = api.PyInterpreterState_GetDict
        self.state_dict.argtypes = (ctypes.c_void_p,)
        self.state_dict.restype = ctypes.c_void_p  # borrowed (a py_object restype would steal it)


@functools.cache
def _capi() -> _CAPI:
    return _CAPI()


class _ModuleReloader(HotReloader):
    """A HotReloader whose default build makes an extension module (Python's headers,
    Cython for .pyx, pybind11 for C++)."""

    _module = True


def load_module(
    target: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    name: str | None = None,
    on_reload: Callable[[int, int], object] | None = None,
    on_error: Callable[[HotReloadError], object] | None = None,
    manual: bool = False,
    **options: Any,
) -> types.ModuleType:
    """Import the extension module `target` now and reload it in the background on every change.

    `target` is a built module (``fastmath.cpython-311-x86_64-linux-gnu.so``) or its sources
    (``fastmath.c``, ``fastmath.cpp`` with pybind11, ``fastmath.pyx`` with Cython), which hotr
    builds.  The module is put in ``sys.modules[name]`` and returned; its attributes follow every
    reload, and its functions, wherever they were taken to (``from fastmath import norm``), call
    the live version.  Objects an old version made keep their old type and code.  A new version
    that defines ``__hotr_reload__`` has it called with the previous (real) module before it goes
    live, to carry state over.  The other arguments are hotr.load's (``guard=True``: a crash in
    a module function's code is a CrashError and a rollback, docs/guard.md);
    ``hotr.reloader_of(module)`` is the reloader.

    Args:
        name: the module's name, which its init function is named after (``PyInit_<name>``);
            default: the file name up to its first dot.  A package's module is named in full
            (``"pkg._speedups"``: ``PyInit__speedups``); the package is imported, as an
            import of its module would, and holds the module as its attribute.

    Raises:
        FileNotFoundError: `target` does not exist.
        LoadError: the first version cannot be loaded (its init raised: the exception is the
            LoadError's ``__cause__``; BuildError: cannot be built).
        Exception: what importing the package of a module named in full raised.

    Example::

        fastmath = hotr.load_module("fastmath.c")
        from fastmath import norm
        norm(3.0, 4.0)  # the newest build's norm
    """
    binding = _binding(target, name, options)
    start(binding.reloader, on_reload, on_error, manual)
    return binding.register()


async def aload_module(
    target: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    name: str | None = None,
    on_reload: Callable[[int, int], object] | None = None,
    on_error: Callable[[HotReloadError], object] | None = None,
    **options: Any,
) -> types.ModuleType:
    """hotr.load_module() for asyncio: reloads (and each version's module init) happen on the
    running loop, in a task, as with hotr.aload.

    The first build runs in the loop's default executor (and so does the first module init
    then); the task ends when the reloader is stopped or closed.

    Example::

        fastmath = await hotr.aload_module("fastmath.c")
    """
    binding = _binding(target, name, options)
    await astart(binding.reloader, on_reload, on_error)
    return binding.register()


def _binding(
    target: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    name: str | None,
    options: dict[str, Any],
) -> ModuleBinding:
    """The checked arguments' reloader, with the module binding it loads through."""
    first = checked_paths(target, "target")[0]
    if name is None:
        name = os.path.basename(first).split(".", 1)[0]
    if not isinstance(name, str):
        raise TypeError(f"name must be a module name or None, not {type(name).__name__}")
    # A module of a package ("pkg._speedups") is named in full; its init is PyInit_<last part>.
    if not all(part.isidentifier() for part in name.split(".")):
        raise ValueError(f"name: {name!r} is not a module name; pass name= (PyInit_<name>)")
    # No prototypes: a module's functions are typed by the module itself, so reading them
    # (cc -E beside each compile) would only slow every save.
    reloader = _ModuleReloader(target, **{**options, "prototypes": False})
    core = core_of(reloader)
    binding = ModuleBinding(name, core.label, reloader, core.tracker.poke, core.functions.on_crash)
    core.loader.extension = binding
    return binding


class ModuleBinding:
    """The module object the program holds, and each version's module init and switch."""

    def __init__(
        self,
        name: str,
        label: str,
        reloader: HotReloader,
        wake: Callable[[], None],
        on_crash: CrashHandler | None,
    ) -> None:
        self.name = name
        self._on_crash = on_crash  # None: calls are not guarded
        self.module = _HeldModule(name)
        object.__setattr__(self.module, "_hotr_binding", self)
        vars(self.module)[MODULE_KEY] = reloader
        self._label = label
        self.reloader = reloader
        self._wake = wake
        self._functions: dict[str, tuple[LiveCallable, Any]] = {}  # name: (state, function)
        self._defined: set[str] = set()  # the names the live version put in the module
        self._state_type: type[_State] | None = None
        self._live: types.ModuleType | None = None  # the live version's own module
        self._next: types.ModuleType | None = None  # initialised, not yet switched to

    @property
    def live(self) -> types.ModuleType | None:
        """The live version's own module (None before the first version is live)."""
        return self._live

    def register(self) -> types.ModuleType:
        """Put the module in sys.modules (after its first version loaded) and return it."""
        previous = sys.modules.get(self.name)
        if previous is not None and previous is not self.module:
            logger.warning(
                "sys.modules[%r] was %r; it is now the hot-reloaded module (references to the "
                "other one keep it)",
                self.name,
                previous,
            )
        sys.modules[self.name] = self.module
        # As an import of a package's module does: the package is imported (its __init__ finds
        # this module in sys.modules) and holds it, so `import pkg.fast; pkg.fast.f()` works.
        package, _, short = self.name.rpartition(".")
        if package:
            try:
                parent = _package(package)
            except BaseException:
                self.reloader.close()
                if sys.modules.get(self.name) is self.module:
                    del sys.modules[self.name]
                raise
            if parent is not None:
                setattr(parent, short, self.module)
        return self.module

    def init(self, version: Version) -> None:
        short = self.name.rpartition(".")[2]
        if version.symbol(f"PyInit_{short}") is None:
            raise LoadError(self._label, _no_init(version, short))
        version.extra_handles = 1  # CPython's dlopen of the same copy (it never closes it)
        version.hold = _always("its module init failed")
        module = self._run_init(version)
        hook = vars(module).get("__hotr_reload__")
        version.hold = _holder(module, version, self._wake)
        if self._live is not None and callable(hook):
            try:
                hook(self._live)
            except Exception as exc:
                raise LoadError(
                    self._label, f"its __hotr_reload__ raised {type(exc).__name__}: {exc}"
                ) from exc
        self._next = module

    def _run_init(self, version: Version) -> types.ModuleType:
        import importlib.machinery
        import importlib.util

        _forget_pybind11_state(self.name, version.path)
        loader = importlib.machinery.ExtensionFileLoader(self.name, version.path)
        spec = importlib.util.spec_from_file_location(self.name, version.path, loader=loader)
        assert spec is not None
        with _IMPORT_LOCK:
            before = sys.modules.get(self.name)
            names = set(sys.modules)
            try:
                module = importlib.util.module_from_spec(spec)
                loader.exec_module(module)
            except Exception as exc:
                raise LoadError(
                    self._label, f"its module init raised {type(exc).__name__}: {exc}"
                ) from exc
            finally:  # CPython and Cython may have put the new module there
                if before is None:
                    sys.modules.pop(self.name, None)
                else:
                    sys.modules[self.name] = before
                # Cython also puts it under the full name it was compiled with (a .pyx in a
                # package): there it would stay this version's, stale after the next reload.
                for added in set(sys.modules) - names:
                    if getattr(sys.modules[added], "__file__", None) == version.path:
                        del sys.modules[added]
        return module

    def switch(self, version: Version) -> None:
        module, self._next = self._next, None
        assert module is not None
        namespace = dict(vars(module))
        for key, value in namespace.items():
            if _is_function(value) and key not in self._functions and not key.startswith(_PYX):
                self._functions[key] = self._live_function(key, value)
        states, targets, missing = [], [], []
        for key, (state, function) in self._functions.items():
            value = namespace.get(key)
            present = _is_function(value)
            states.append(state)
            targets.append(value if present else 0)
            missing.append(None if present else SymbolNotFoundError(self.name, key, version.number))
            if present:
                namespace[key] = function
        # A version that stays mapped for good needs no count of its calls: the live builtins
        # become copies of its functions, as fast as they are (see set_kind in _shim.c).
        retarget(states, targets, version.pin, missing, None, bool(version.staying()))
        public = vars(self.module)
        for key in self._defined - namespace.keys():  # what the last version had, this lacks
            public.pop(key, None)
        for key in public.keys() - self._defined - namespace.keys() - {MODULE_KEY}:
            vars(module)[key] = public[key]  # what the program set: the new code sees it too
        public.update(namespace)
        self._defined = set(namespace) - {MODULE_KEY}  # attributes the program set stay
        self._live = module

    def _live_function(self, key: str, value: Any) -> tuple[LiveCallable, Any]:
        """A live function for `key` (first seen as `value`): a builtin function whose self is
        the LiveCallable that retarget() points at each version's function."""
        if self._state_type is None:
            self._state_type = type(self.name.rpartition(".")[2], (_State,), {})
            copyreg.pickle(self._state_type, _reduce_state)
        state = self._state_type(value, self.reloader, self._on_crash is not None)
        doc = value.__doc__ if isinstance(value.__doc__, str) else None
        signature = _text_signature(value)
        if signature:  # kept where CPython reads it from (inspect.signature, help)
            doc = f"{key}{signature}\n--\n\n{doc or ''}"
        function = live_builtin(state, key, doc, self.name)
        vars(state).update({key: function, _ORIGIN: (self.name, key)})
        if self._on_crash is not None:
            vars(state)[_ON_CRASH] = self._on_crash
        return state, function


class _HeldModule(types.ModuleType):
    """The module the program holds.  What the program sets on it (or deletes) is set on the
    live version's own module too, as on a module it imported: that version's code reads its
    own module, and the next version's __hotr_reload__ is handed it (``fastmath.calls += 1``
    is carried over)."""

    __slots__ = ("_hotr_binding",)  # its ModuleBinding, outside the namespace
    _hotr_binding: ModuleBinding

    def __setattr__(self, key: str, value: Any) -> None:
        super().__setattr__(key, value)
        live = self._hotr_binding.live
        if live is not None:
            setattr(live, key, value)

    def __delattr__(self, key: str) -> None:
        super().__delattr__(key)
        live = self._hotr_binding.live
        if live is not None and key in vars(live):
            delattr(live, key)


class _State(LiveCallable):
    """What a module's live function calls through (see _shim.c); each module has a subclass
    named after it, which the builtin's repr shows (``<built-in method norm of fastmath
    object>``) while its calls are counted (a version that may be unloaded)."""

    def _crashed(
        self, signal: int, version: int, pc: int, accessed: int, where: str
    ) -> BaseException:
        """Called by the shim after a guarded call crashed: the CrashError to raise (the
        reloader rolls back first)."""
        on_crash: CrashHandler = vars(self)[_ON_CRASH]
        return on_crash(vars(self)[_ORIGIN][1], signal, version, pc, accessed, where)


def _text_signature(value: Any) -> str | None:
    """The text signature for a live function of `value`: a builtin's own, or for Cython's (and
    nanobind's) functions, which have a real signature instead, that signature's text without
    annotations (a text signature has none)."""
    signature = getattr(value, "__text_signature__", None)
    if isinstance(signature, str) or isinstance(value, types.BuiltinFunctionType):
        return signature or None  # a builtin without one: inspect finds none either
    import inspect

    try:
        found = inspect.signature(value)
    except (TypeError, ValueError):
        return None
    empty = inspect.Parameter.empty
    parameters = [p.replace(annotation=empty) for p in found.parameters.values()]
    text = str(found.replace(parameters=parameters, return_annotation=empty))
    return text if _spellable(text) else None


def _spellable(signature: str) -> bool:
    """True if inspect can read `signature` as a text signature: Python syntax whose defaults
    are literals (``k=Thing()`` is not)."""
    import ast

    try:
        (definition,) = ast.parse(f"def f{signature}: pass").body
    except SyntaxError:
        return False
    assert isinstance(definition, ast.FunctionDef)
    arguments = definition.args
    try:
        for default in [*arguments.defaults, *filter(None, arguments.kw_defaults)]:
            ast.literal_eval(default)
    except ValueError:
        return False
    return True


def _reduce_state(state: _State) -> tuple[Callable[[str, str], _State], tuple[str, str]]:
    """Pickle a live function's state by name (the function pickles as getattr(state, name))."""
    return _live_state, vars(state)[_ORIGIN]


def _live_state(module: str, key: str) -> Any:
    """The self of the live function `key` of `module` now: its _State, or the module whose
    function it is a copy of (then getattr(self, key) is the function too)."""
    return vars(sys.modules[module])[key].__self__


def _is_function(value: object) -> bool:
    return isinstance(value, types.BuiltinFunctionType) or type(value).__name__ in _FUNCTION_TYPES


def _always(reason: str) -> Callable[[], Hold]:
    return lambda: (True, reason)


def _holder(
    module: types.ModuleType, version: Version, wake: Callable[[], None]
) -> Callable[[], Hold]:
    """Why `version` (whose init made `module`) must stay mapped, as a function of now."""
    reason = _never_unloadable(module, version)
    if reason is not None:
        return _always(reason)
    watch = _Watch([module, *(v for v in vars(module).values() if isinstance(v, type))], wake)
    return watch.hold


class _Watch:
    """Tells when a module and its types are gone for good: their weak references died (in a
    garbage collection, as a rule: heap types are in reference cycles), and then a collection
    finished, so that no deallocation of theirs (running the version's code, reading its
    method tables) is still under way."""

    def __init__(self, objects: list[object], wake: Callable[[], None]) -> None:
        self._refs = [weakref.ref(o, self._died) for o in objects]
        self._wake = wake
        self._settled = False

    def hold(self) -> Hold:
        return None if self._settled else (False, "objects of it are still in use")

    def _died(self, _: object) -> None:
        if all(ref() is None for ref in self._refs):
            _dying.add(self)

    def settle(self) -> None:
        self._settled = True
        self._wake()


_dying: set[_Watch] = set()  # gone, waiting for the end of a garbage collection


def _collected(phase: str, _: object) -> None:
    if phase == "stop":
        while _dying:
            _dying.pop().settle()


gc.callbacks.append(_collected)


def _never_unloadable(module: types.ModuleType, version: Version) -> str | None:
    """Why no state of the program could make unmapping `version` safe, or None."""
    address = _capi().get_def(module)
    if not address or not _ModuleDef.from_address(address).m_slots:
        return "a single-phase module (CPython keeps its functions)"
    for key, value in vars(module).items():
        # A C API (PyCapsule_Import; Cython's cimport reads __pyx_capi__): other modules hold
        # pointers into the version's code, in C, where nothing can count them.
        if _is_capsule(value):
            return f"{key} is a capsule (other modules may hold pointers into it)"
        if key == "__pyx_capi__" and isinstance(value, dict):
            return f"{key} holds capsules (other modules may hold pointers into it)"
        if isinstance(value, type) and _static_in(value, version):
            return f"{key} is a static type"
        if _static_in(type(value), version):
            return f"the type {type(value).__qualname__} of {key} is a static type"
        if _is_function(value) and getattr(value, "__self__", None) is not module:
            return f"its function {key} holds no reference to the module"
        kind = type(value)
        if kind.__module__ != module.__name__ and _code_in(kind, version):
            return f"the type {kind.__qualname__} of {key} is shared beyond the module"
    return None


def _is_capsule(value: object) -> bool:
    kind = type(value)
    return kind.__module__ == "builtins" and kind.__qualname__ == "PyCapsule"


def _static_in(kind: type, version: Version) -> bool:
    """True if `kind` is a static type of `version`: its object lies in the version's data, or
    its tp_dealloc in its code (a static type that inherits its dealloc has only the former)."""
    if kind.__flags__ & _HEAPTYPE:
        return False
    return version.owns(id(kind)) or _code_in(kind, version)


def _code_in(kind: type, version: Version) -> bool:
    """True if the type's tp_dealloc is code of `version`."""
    return version.is_code(ctypes.c_void_p.from_address(id(kind) + _TP_DEALLOC).value or 0)


def _forget_pybind11_state(name: str, path: str) -> None:
    """Before a module init: drop pybind11's cached module `name` (pybind11 >= 3 hands it
    back), and set aside the type registry of the build `path` comes from if it is there
    already (a rollback loads an earlier build again, whose classes that registry holds: a
    second registration is "already registered"), so that the init makes a new one.  The old
    one is kept for good: the earlier version's code and objects still use it."""
    address = _capi().state_dict(_capi().interpreter())
    if not address:
        return
    state = ctypes.cast(address, ctypes.py_object).value  # a reference of our own
    cache = state.get("__pybind11_module_cache")
    if isinstance(cache, dict):
        cache.pop(name, None)
    # Only hotr's registries (PYBIND11_COMPILER_TYPE "_hotr_<pid>_<n>", _toolchain.py): one
    # that other modules share (pybind11's default) must stay where they find it.
    keys = [k for k in state if isinstance(k, str) and k.startswith(_PYBIND11_INTERNALS)]
    keys = [k for k in keys if "_hotr_" in k]
    if not keys:
        return
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return
    for key in keys:
        if f"{key}\0".encode() in data:  # the registry this build was compiled with
            _set_aside.append(state.pop(key))


_PYBIND11_INTERNALS = "__pybind11_internals_v"  # the start of a registry's key (internals.h)
_set_aside: list[object] = []  # registries of builds loaded again: their versions use them


def _package(name: str) -> types.ModuleType | None:
    """The package `name`, imported if it is not yet; None if there is no such package (the
    module's name is then only a name)."""
    import importlib

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(f"{exc.name}.")):
            return None
        raise


def _no_init(version: Version, short: str) -> str:
    """Why a version is no module `short`, naming the init functions it has."""
    import re  # here: an error's path, and re costs 3 ms of `import hotr`

    try:
        with open(version.path, "rb") as f:
            found = sorted({m.decode() for m in re.findall(rb"PyInit_(\w+)", f.read())})
    except OSError:
        found = []
    if found:
        names = ", ".join(f"PyInit_{n}" for n in found)
        return f"it has no PyInit_{short} (it has {names}: pass name={found[0]!r})"
    return f"it has no PyInit_{short}: it is not a Python extension module"
