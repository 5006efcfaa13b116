"""Named tuples declared as with typing.NamedTuple, made here without collections.

Importing typing costs about 3 ms and a typing.NamedTuple class about 1 ms more (it compiles
each annotation); collections.namedtuple makes the same class in 0.05 ms, but importing
collections costs 1.5 ms of `import hotr`.  This makes the same kind of class, as
collections.namedtuple makes it on the running version: the same field descriptors, defaults,
_fields, _make, _replace (and __replace__ from 3.13), _asdict, errors, repr, signatures and
docstrings (what help() shows).  A type checker sees typing.NamedTuple itself, so a class
declared on Record is checked as a NamedTuple.
"""

from __future__ import annotations

__all__ = ["Record"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple as Record
else:
    import sys
    from _collections import _tuplegetter

    _REPLACE_ERROR = TypeError if sys.version_info >= (3, 13) else ValueError

    def _named_tuple(name, fields, defaults, module):
        arguments = ", ".join(fields)
        code = f"def __new__(_cls, {arguments}):\n    return _tuple_new(_cls, ({arguments},))\n"
        scope = {"_tuple_new": tuple.__new__}
        exec(code, scope)  # as collections.namedtuple does: a __new__ with named arguments
        new = scope["__new__"]
        new.__defaults__ = tuple(defaults) or None
        new.__doc__ = f"Create new instance of {name}({arguments})"

        def _make(cls, iterable):
            made = tuple.__new__(cls, iterable)
            if len(made) != len(fields):
                raise TypeError(f"Expected {len(fields)} arguments, got {len(made)}")
            return made

        def _replace(self, /, **kwds):
            made = self._make(map(kwds.pop, fields, self))
            if kwds:
                raise _REPLACE_ERROR(f"Got unexpected field names: {list(kwds)!r}")
            return made

        def __repr__(self):
            shown = ", ".join(
                f"{field}={value!r}" for field, value in zip(fields, self, strict=True)
            )
            return f"{self.__class__.__name__}({shown})"

        def _asdict(self):
            return dict(zip(fields, self, strict=True))

        def __getnewargs__(self):
            return tuple(self)

        defaulted = fields[len(fields) - len(defaults) :]
        namespace = {
            "__doc__": f"{name}({arguments})",
            "__slots__": (),
            "__module__": module,
            "__match_args__": tuple(fields),
            "_fields": tuple(fields),
            "_field_defaults": dict(zip(defaulted, defaults, strict=True)),
            "__new__": new,
            "_make": classmethod(_make),
            "_replace": _replace,
            "_asdict": _asdict,
            "__repr__": __repr__,
            "__getnewargs__": __getnewargs__,
        }
        if sys.version_info >= (3, 13):
            namespace["__replace__"] = _replace  # copy.replace()
        _make.__doc__ = f"Make a new {name} object from a sequence or iterable"
        _replace.__doc__ = f"Return a new {name} object replacing specified fields with new values"
        __repr__.__doc__ = "Return a nicely formatted representation string"
        _asdict.__doc__ = "Return a new dict which maps field names to their values."
        __getnewargs__.__doc__ = "Return self as a plain tuple.  Used by copy and pickle."
        for method in (new, _make, _replace, __repr__, _asdict, __getnewargs__):
            method.__qualname__ = f"{name}.{method.__name__}"
        for index, field in enumerate(fields):
            namespace[field] = _tuplegetter(index, f"Alias for field number {index}")
        return type(name, (tuple,), namespace)

    class _RecordType(type):
        """Turns a class body of annotated fields (defaults last) into a named tuple."""

        def __new__(mcls, name, bases, namespace):
            if not bases:
                return super().__new__(mcls, name, bases, namespace)
            fields = list(namespace.get("__annotations__", {}))
            made = _named_tuple(
                name,
                fields,
                [namespace[field] for field in fields if field in namespace],
                namespace["__module__"],
            )
            for key, value in namespace.items():
                if key not in fields and key not in ("__module__", "__dict__", "__weakref__"):
                    setattr(made, key, value)
            return made

    class Record(metaclass=_RecordType):
        """Base of a named tuple class: `class Point(Record): x: int; y: int = 0`."""
