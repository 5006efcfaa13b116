"""ctypes types for C prototypes (_prototypes.py), and the converters pointer parameters use.

A pointer parameter takes what a Python caller has at hand: a ctypes array or pointer (or an
instance of the pointed-to type, passed by reference as ctypes does), ``None`` (NULL), ``bytes``
when the C side promises not to write (``const char *``, ``const void *``), and any object with
the buffer protocol (a numpy array, bytearray, array.array, memoryview): its memory is passed,
not copied, when it is C-contiguous and its items match the pointed-to type.
"""

from __future__ import annotations

import ctypes
from typing import Any

from ._prototypes import Array, CType, FunctionType, Opaque, Pointer, Prototype, Scalar

Signature = tuple[Any, tuple[Any, ...] | None]  # (restype, argtypes); argtypes None: untyped

_SCALARS: dict[str, Any] = {
    "void": None,
    "bool": ctypes.c_bool,
    "char": ctypes.c_char,
    "signed char": ctypes.c_byte,
    "unsigned char": ctypes.c_ubyte,
    "short": ctypes.c_short,
    "unsigned short": ctypes.c_ushort,
    "int": ctypes.c_int,
    "unsigned int": ctypes.c_uint,
    "long": ctypes.c_long,
    "unsigned long": ctypes.c_ulong,
    "long long": ctypes.c_longlong,
    "unsigned long long": ctypes.c_ulonglong,
    "float": ctypes.c_float,
    "double": ctypes.c_double,
    "long double": ctypes.c_longdouble,
    "wchar_t": ctypes.c_wchar,  # a one-character str, as ctypes has it
}
_FLOATS = frozenset(("float", "double", "long double"))
_INTEGER_FORMATS = frozenset("bBhHiIlLqQnN?c")
_FLOAT_FORMATS = frozenset("efdg")
_CArgObject = type(ctypes.byref(ctypes.c_int()))
_CFuncPtr: type = ctypes.CFUNCTYPE(None).__mro__[1]  # ctypes' base class of function pointers


def signature(prototype: Prototype) -> Signature | None:
    """(restype, argtypes) for `prototype`, or None if a type in it has no ctypes mapping.

    A variadic function, or one declared ``f()``, gets its result type only.
    """
    ftype = prototype.type
    try:
        restype = _result(ftype.result)
        if ftype.params is None or ftype.variadic:
            return restype, None
        return restype, tuple(_param(p) for p in ftype.params)
    except LookupError:
        return None


def _result(ctype: CType) -> Any:
    if isinstance(ctype, Scalar):
        return _SCALARS[ctype.name]
    if isinstance(ctype, Pointer):
        target = ctype.target
        if isinstance(target, Scalar) and target.name == "char":
            return ctypes.c_char_p  # bytes (None for NULL)
        if isinstance(target, Scalar) and target.name == "wchar_t":
            return ctypes.c_wchar_p  # str (None for NULL)
        if isinstance(target, Scalar) and target.name not in ("void", "bool"):
            return ctypes.POINTER(_SCALARS[target.name])  # result[i] reads the items
        return ctypes.c_void_p
    raise LookupError(ctype)


def _param(ctype: CType) -> Any:
    if isinstance(ctype, Scalar):
        if ctype.name == "void":
            raise LookupError(ctype)
        return _SCALARS[ctype.name]
    if isinstance(ctype, Pointer):
        target, const = ctype.target, ctype.const
        if target == Scalar("wchar_t"):
            return ctypes.c_wchar_p  # a str, None, a create_unicode_buffer(), as ctypes has it
        while isinstance(target, Array):  # double m[][2]: rows of doubles, passed as double *
            row: Array = target
            target, const = row.target, row.const
        if isinstance(target, Scalar) and target.name != "void":
            return pointer_to(target.name, const=const)
        if isinstance(target, (Scalar, Opaque, Pointer, FunctionType)):
            return void_pointer(const=const)
    raise LookupError(ctype)


_made: dict[tuple[str, bool], type] = {}


def pointer_to(name: str, *, const: bool) -> type:
    """The converter for a ``name *`` parameter (``const name *`` with `const`)."""
    key = (name, const)
    if key not in _made:
        item = _SCALARS[name]
        spelled = f"{'const ' if const else ''}{name} *"
        _made[key] = type(
            f"{item.__name__}_pointer",
            (_TypedPointer,),
            {
                "_pointer": ctypes.POINTER(item),
                "_item": item,
                "_float": name in _FLOATS,
                "_const": const,
                "_spelled": spelled,
                "__doc__": f"Accepts what a C {spelled} parameter can be given.",
            },
        )
    return _made[key]


def void_pointer(*, const: bool) -> type:
    """The converter for a ``void *`` (or struct, or other pointer) parameter."""
    key = ("void", const)
    if key not in _made:
        _made[key] = type(
            "void_pointer",
            (_VoidPointer,),
            {"_const": const, "_spelled": f"{'const ' if const else ''}void *"},
        )
    return _made[key]


class _TypedPointer:
    """A ``T *`` parameter (see the module docstring); `_pointer` is ``POINTER(T)``."""

    _pointer: Any
    _item: Any
    _float: bool
    _const: bool
    _spelled: str

    @classmethod
    def from_param(cls, obj: object) -> object:
        if obj is None:
            return None
        if isinstance(obj, (ctypes.Array, ctypes._Pointer, ctypes._SimpleCData, _CArgObject)):
            return cls._pointer.from_param(obj)
        if isinstance(obj, bytes) and cls._const and ctypes.sizeof(cls._item) == 1:
            return obj  # ctypes passes a pointer to the bytes' own memory
        view = _view(obj, cls._spelled)
        fmt = view.format.lstrip("@=<>!")
        kinds = _FLOAT_FORMATS if cls._float else _INTEGER_FORMATS
        if fmt not in kinds or view.itemsize != ctypes.sizeof(cls._item):
            raise TypeError(
                f"a {cls._spelled} parameter needs items of {ctypes.sizeof(cls._item)}-byte "
                f"{'floats' if cls._float else 'integers'}; this {type(obj).__name__} has "
                f"format {view.format!r} ({view.itemsize} bytes each)"
            )
        return _address(obj, view, cls._const, cls._spelled)


class _VoidPointer:
    """A ``void *`` parameter: any pointer-like object, an address (int), or a buffer."""

    _const: bool
    _spelled: str

    @classmethod
    def from_param(cls, obj: object) -> object:
        if obj is None:
            return None
        if isinstance(obj, int) and not isinstance(obj, bool):
            return ctypes.c_void_p(obj)
        if isinstance(obj, (ctypes.Array, ctypes._Pointer, _CArgObject, ctypes.c_void_p)):
            return obj
        if isinstance(obj, (ctypes.c_char_p, _CFuncPtr)):
            return obj
        if isinstance(obj, (ctypes.Structure, ctypes.Union, ctypes._SimpleCData)):
            return ctypes.byref(obj)
        if isinstance(obj, bytes) and cls._const:
            return obj
        return _address(obj, _view(obj, cls._spelled), cls._const, cls._spelled)


def _view(obj: object, spelled: str) -> memoryview:
    """A memoryview of `obj`; TypeError (naming what is accepted) if it has no buffer."""
    if isinstance(obj, str):
        raise TypeError(f"a {spelled} parameter takes bytes, not str: pass text.encode()")
    try:
        view = memoryview(obj)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"a {spelled} parameter takes a ctypes array or pointer, None, or an object with "
            f"the buffer protocol (a numpy array, bytearray), not {type(obj).__name__}"
        ) from None
    if not view.c_contiguous:
        raise TypeError(
            f"a {spelled} parameter needs C-contiguous memory; this {type(obj).__name__} is "
            "not (numpy: pass numpy.ascontiguousarray(a))"
        )
    return view


def _address(obj: object, view: memoryview, const: bool, spelled: str) -> object:
    """What ctypes passes as the pointer to `obj`'s memory (no copy)."""
    if not view.readonly:
        if view.nbytes:  # a reference to its first byte: cheaper than an array type per size
            return ctypes.byref(ctypes.c_char.from_buffer(obj))  # type: ignore[arg-type]
        return (ctypes.c_char * 0).from_buffer(obj)  # type: ignore[arg-type]
    if not const:
        raise TypeError(
            f"a {spelled} parameter (not const) may be written through, and this "
            f"{type(obj).__name__} is read-only: pass a writable buffer (bytearray, "
            "ctypes.create_string_buffer, a writable numpy array)"
        )
    interface = getattr(obj, "__array_interface__", None)  # numpy: its data pointer, no copy
    if isinstance(interface, dict) and isinstance(interface.get("data"), tuple):
        return ctypes.c_void_p(interface["data"][0])
    return (ctypes.c_char * view.nbytes).from_buffer_copy(view)  # read-only: a copy is the same
