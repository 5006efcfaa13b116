"""Named tuples declared as with typing.NamedTuple, made by collections.namedtuple.

Importing typing costs about 3 ms and a typing.NamedTuple class about 1 ms more (it compiles
each annotation); collections.namedtuple makes the same class in 0.05 ms. A type checker sees
typing.NamedTuple itself, so a class declared on Record is checked as a NamedTuple.
"""

from __future__ import annotations

import collections

__all__ = ["Record"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple as Record
else:

    class _RecordType(type):
        """Turns a class body of annotated fields (defaults last) into a named tuple."""

        def __new__(mcls, name, bases, namespace):
            if not bases:
                return super().__new__(mcls, name, bases, namespace)
            fields = list(namespace.get("__annotations__", {}))
            made = collections.namedtuple(
                name,
                fields,
                defaults=[namespace[field] for field in fields if field in namespace],
                module=namespace["__module__"],
            )
            for key, value in namespace.items():
                if key not in fields and key not in ("__module__", "__dict__", "__weakref__"):
                    setattr(made, key, value)
            return made

    class Record(metaclass=_RecordType):
        """Base of a named tuple class: `class Point(Record): x: int; y: int = 0`."""
