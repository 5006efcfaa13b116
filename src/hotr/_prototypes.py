"""C prototypes read from preprocessed sources: the types of the functions a build defines.

The sources are run through the build's own compiler as ``cc -E`` (same include path, CFLAGS and
flags), and the top-level declarations of the output are parsed by a small recursive-descent
parser of the declaration grammar: specifiers, typedef names, pointers, arrays, parameter lists.
Only what the files the user wrote declare is kept (line markers flag system headers); the
typedefs of every header are followed, so ``uint32_t`` and ``size_t`` resolve to their integer
types.  Anything the parser does not know makes that one declaration unknown, never an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._log import logger


@dataclass(frozen=True)
class Scalar:
    """An arithmetic type (or void), by its keywords: ``"unsigned long"``, ``"double"``."""

    name: str


@dataclass(frozen=True)
class Pointer:
    """A pointer; `const` says whether what it points to is const."""

    target: CType
    const: bool


@dataclass(frozen=True)
class Opaque:
    """A struct or union (usable only behind a pointer), or a type the parser does not map."""

    name: str


@dataclass(frozen=True)
class Array:
    """An array; `const` says whether its elements are (``const double v[]``)."""

    target: CType
    const: bool = False


@dataclass(frozen=True)
class FunctionType:
    """A function: `params` None when the list is unspecified (``f()`` before C23)."""

    result: CType
    params: tuple[CType, ...] | None
    variadic: bool


CType = Scalar | Pointer | Opaque | Array | FunctionType


@dataclass(frozen=True)
class Prototype:
    """The C type of one function, as declared."""

    name: str
    type: FunctionType
    defined: bool  # a definition (with a body), not only a declaration


class Unsupported(Exception):
    """The declaration uses grammar the parser does not follow."""


_TOKEN = re.compile(
    r"""[A-Za-z_$][\w$]*
      | \.?[0-9](?:[eEpP][+-]|[\w.'])*
      | "(?:[^"\\\n]|\\.)*"
      | '(?:[^'\\\n]|\\.)*'
      | \.\.\.|->|[-+*/%&|^<>=!]=|<<=?|>>=?|&&|\|\||\+\+|--|\#\#|\S""",
    re.VERBOSE,
)
# A line marker, `# 12 "file.h" 1 3 4` (flags: 1 entering a file, 2 back in it, 3 system);
# any other directive left in the output (#pragma) is dropped with it.
_MARKER = re.compile(
    r'^\#[ \t]*(?:line[ \t]+)?(?:[0-9]+[ \t]+"((?:[^"\\\n]|\\.)*)"([^\n]*))?.*$', re.M
)
_SYSTEM_DIRS = ("/usr/include/", "/usr/lib/", "/usr/local/include/", "/usr/local/lib/")
# Keywords that add nothing to the type as ctypes sees it.
_IGNORED = frozenset(
    (
        "extern",
        "inline",
        "__inline",
        "__inline__",
        "_Noreturn",
        "noreturn",
        "volatile",
        "__volatile__",
        "restrict",
        "__restrict",
        "__restrict__",
        "register",
        "auto",
        "_Thread_local",
        "thread_local",
        "__thread",
        "__extension__",
        "constexpr",
    )
)
_CONST = frozenset(("const", "__const", "__const__"))
_SKIP_PARENS = frozenset(
    (
        "__attribute__",
        "__attribute",
        "__declspec",
        "_Alignas",
        "alignas",
        "__asm__",
        "__asm",
        "asm",
        "_Static_assert",
        "static_assert",
        "__nonnull",
    )
)
_BASE = frozenset(
    (
        "void",
        "char",
        "short",
        "int",
        "long",
        "signed",
        "unsigned",
        "float",
        "double",
        "_Bool",
        "bool",
        "__signed",
        "__signed__",
        "__unsigned",
        "_Complex",
        "__complex__",
        "_Imaginary",
        "__int128",
        "__int128_t",
        "__uint128_t",
        "_Float16",
        "_Float32",
        "_Float64",
        "_Float128",
        "_Float32x",
        "_Float64x",
        "__float128",
        "__fp16",
        "_Decimal32",
        "_Decimal64",
        "_Decimal128",
        "__bf16",
        "_BitInt",
    )
)
_TAGS = frozenset(("struct", "union", "enum"))


def parse(text: str) -> dict[str, Prototype]:
    """The functions declared in preprocessed C `text` outside system headers, by name.

    A definition wins over a declaration; a declaration that cannot be parsed is skipped (and
    logged at debug level).
    """
    tokens, system = _tokenize(text)
    parser = _Parser(tokens, system)
    found: dict[str, Prototype] = {}
    for prototype in parser.declarations():
        known = found.get(prototype.name)
        if known is None or (prototype.defined and not known.defined):
            found[prototype.name] = prototype
    return found


def _tokenize(text: str) -> tuple[list[str], list[bool]]:
    """The tokens of `text`, and for each whether it comes from a system header.

    Of a system header only the typedefs are kept (most of its text is declarations of no
    interest, and tokenizing them would dominate the time).  A system file is one entered with
    flags 1 and 3, or one under the system's include directories; the user's own file flagged
    3 is a system macro expanded in the user's code.
    """
    tokens: list[str] = []
    system: list[bool] = []
    system_files: set[str] = set()
    in_system = False
    at = 0
    for marker in _MARKER.finditer(text):
        _add(text[at : marker.start()], in_system, tokens, system)
        at = marker.end()
        name, flags = marker.group(1), (marker.group(2) or "").split()
        if name is None:
            continue
        if ("1" in flags and "3" in flags) or name.startswith(_SYSTEM_DIRS):
            system_files.add(name)  # tcc writes no flags: its system headers are known by place
        in_system = name in system_files
    _add(text[at:], in_system, tokens, system)
    return tokens, system


def _add(chunk: str, in_system: bool, tokens: list[str], system: list[bool]) -> None:
    if not in_system:
        found = _TOKEN.findall(chunk)
        tokens.extend(found)
        system.extend([False] * len(found))
        return
    for start, end in _typedefs(chunk):
        found = _TOKEN.findall(chunk, start, end)
        tokens.extend(found)
        system.extend([True] * len(found))


def _typedefs(chunk: str) -> list[tuple[int, int]]:
    """Where each typedef of `chunk` starts and ends (past its ';'), found with string
    searches: a system header's text is long, and its typedefs are few."""
    spans = []
    at = 0
    while (start := chunk.find("typedef", at)) >= 0:
        at = start + 7
        if _is_word(chunk[start - 1 : start]) or _is_word(chunk[at : at + 1]):
            continue  # inside a longer name
        end = chunk.find(";", start)
        while end >= 0 and chunk.count("{", start, end) != chunk.count("}", start, end):
            end = chunk.find(";", end + 1)  # the ';' of a member inside the struct's braces
        if end < 0:
            break
        spans.append((start, end + 1))
        at = end + 1
    return spans


def _is_word(char: str) -> bool:
    return char.isalnum() or char in ("_", "$")


class _Parser:
    """Recursive descent over the tokens of one translation unit (see the module docstring)."""

    def __init__(self, tokens: list[str], system: list[bool]) -> None:
        self._tokens = tokens
        self._system = system
        self._at = 0
        self._typedefs: dict[str, CType] = {}
        self.name_at = 0  # where the last declarator's name was (a macro may supply the rest)

    def declarations(self) -> list[Prototype]:
        found: list[Prototype] = []
        while self._at < len(self._tokens):
            start = self._at
            try:
                found.extend(self._external())
            except (Unsupported, IndexError) as exc:
                if not self._system[min(start, len(self._system) - 1)]:
                    logger.debug("not typed: %s (%s)", " ".join(self._tokens[start:][:12]), exc)
                self._at = start
                self._resync()
        return found

    # -- the top level -----------------------------------------------------------------------

    def _external(self) -> list[Prototype]:
        """One external declaration or function definition."""
        if self._peek() == ";":
            self._at += 1
            return []
        base, flags = self._specifiers()
        found: list[Prototype] = []
        while True:
            self.name_at = self._at
            name, ctype = self._declarator(base, "const" in flags)
            start = self.name_at  # a declaration is the user's if its name is
            if self._peek() in _SKIP_PARENS:
                self._skip_parens_after_keyword()  # __asm__("alias"): not this C name's symbol
                if not self._system[start]:
                    raise Unsupported(f"{name} has an asm label or trailing attribute")
            while self._peek() in _SKIP_PARENS:
                self._skip_parens_after_keyword()
            if "typedef" in flags:
                if name == "wchar_t" and isinstance(ctype, Scalar):
                    ctype = Scalar(name)  # a typedef of int, but ctypes has c_wchar for it
                if name:
                    self._typedefs[name] = ctype
            elif isinstance(ctype, FunctionType) and name and "static" not in flags:
                if self._peek() == "{":
                    self._skip_balanced("{", "}")
                    if not self._system[start]:
                        found.append(Prototype(name, ctype, defined=True))
                    return found
                if not self._system[start]:
                    found.append(Prototype(name, ctype, defined=False))
            elif self._peek() == "{":  # a static function's body
                self._skip_balanced("{", "}")
                return found
            if self._peek() == "=":
                self._skip_initializer()
            token = self._next()
            if token == ";":
                return found
            if token != ",":
                raise Unsupported(f"unexpected {token!r}")

    def _resync(self) -> None:
        """Skip past the declaration that could not be parsed: to a ';' or a '}' at the top."""
        depth = 0
        while self._at < len(self._tokens):
            token = self._next()
            if token in "({[":
                depth += 1
            elif token in ")}]":
                depth -= 1
                if token == "}" and depth <= 0 and self._peek() != ";":
                    return
            elif token == ";" and depth <= 0:
                return

    # -- specifiers --------------------------------------------------------------------------

    def _specifiers(self) -> tuple[CType, set[str]]:
        """Declaration specifiers: the base type, and the storage flags met (typedef, static)."""
        words: list[str] = []
        flags: set[str] = set()
        const = False
        named: CType | None = None
        while True:
            token = self._peek()
            if token in _IGNORED:
                self._at += 1
            elif token in _CONST:
                const = True
                self._at += 1
            elif token in ("typedef", "static"):
                flags.add(token)
                self._at += 1
            elif token in _SKIP_PARENS:
                self._skip_parens_after_keyword()
            elif token in ("_Atomic", "typeof", "__typeof__", "__typeof", "typeof_unqual"):
                raise Unsupported(token)
            elif token in _BASE:
                words.append(token)
                self._at += 1
            elif token in _TAGS:
                self._at += 1
                tag = self._next() if _is_ident(self._peek()) else ""
                if self._peek() == "{":
                    self._skip_balanced("{", "}")
                named = Scalar("int") if token == "enum" else Opaque(f"{token} {tag}".strip())
            elif _is_ident(token) and not words and named is None and token in self._typedefs:
                named = self._typedefs[token]
                self._at += 1
            else:
                break
        if named is not None:
            if words:
                raise Unsupported(f"{' '.join(words)} with a named type")
            base = named
        elif words:
            base = _scalar(words)
        else:
            base = Scalar("int")  # implicit int (old C)
        if const:
            flags.add("const")
        return base, flags

    # -- declarators -------------------------------------------------------------------------

    def _declarator(self, base: CType, const: bool = False) -> tuple[str, CType]:
        """A (possibly abstract) declarator applied to `base`: the name ('' if none), the type."""
        pointers: list[bool] = []  # for each '*', whether what it points to is const
        target_const = const
        while self._peek() == "*":
            self._at += 1
            pointers.append(target_const)
            target_const = False
            while self._peek() in _CONST or self._peek() in _IGNORED:
                target_const = target_const or self._peek() in _CONST
                self._at += 1
            while self._peek() in _SKIP_PARENS:
                self._skip_parens_after_keyword()
        for target_is_const in pointers:
            base = Pointer(base, target_is_const)
        name = ""
        inner: list[str] | None = None
        if self._peek() == "(" and self._nested_declarator():
            self._at += 1
            start = self._at
            self._skip_until_close()
            inner = self._tokens[start : self._at - 1]
        elif _is_ident(self._peek()) and self._peek() not in self._typedefs:
            self.name_at = self._at
            name = self._next()
        base = self._suffixes(base, target_const and not pointers)
        if inner is not None:
            sub = self._sub(inner)
            name, base = sub.declarator_of(base)
            self.name_at = start + sub.name_at
        return name, base

    def declarator_of(self, base: CType) -> tuple[str, CType]:
        name, ctype = self._declarator(base)
        if self._at != len(self._tokens):
            raise Unsupported("nested declarator")
        return name, ctype

    def _sub(self, tokens: list[str]) -> _Parser:
        sub = _Parser(tokens, [False] * len(tokens))
        sub._typedefs = self._typedefs
        return sub

    def _nested_declarator(self) -> bool:
        """After '(': a parenthesized declarator (``(*f)``), not a parameter list."""
        following = self._tokens[self._at + 1]
        if following in ("*", "(", "^"):
            return True
        return (
            _is_ident(following)
            and following not in self._typedefs
            and following not in _BASE
            and following not in _TAGS
            and following not in _CONST
            and following not in _IGNORED
            and following not in _SKIP_PARENS
            and following not in ("typedef", "static")
        )

    def _suffixes(self, base: CType, const: bool = False) -> CType:
        """Array and function suffixes; applied innermost last (``a[2][3]``: array of arrays).
        `const`: the elements of the innermost array are const."""
        made: list[tuple[str, tuple[tuple[CType, ...] | None, bool]]] = []
        while self._peek() in ("[", "("):
            if self._next() == "[":
                self._skip_until_close("]")
                made.append(("array", (None, False)))
            else:
                made.append(("function", self._params()))
        for kind, (params, variadic) in reversed(made):
            if kind == "array":
                base, const = Array(base, const), False
            else:
                base = FunctionType(base, params, variadic)
        return base

    def _params(self) -> tuple[tuple[CType, ...] | None, bool]:
        """A parameter list after its '(': the types (None if unspecified), and whether '...'."""
        if self._peek() == ")":
            self._at += 1
            return None, False
        if self._peek() == "void" and self._tokens[self._at + 1] == ")":
            self._at += 2
            return (), False
        params: list[CType] = []
        variadic = False
        while True:
            if self._peek() == "...":
                self._at += 1
                variadic = True
            else:
                base, flags = self._specifiers()
                _, ctype = self._declarator(base, "const" in flags)
                params.append(_decay(ctype))
            while self._peek() in _SKIP_PARENS:
                self._skip_parens_after_keyword()
            token = self._next()
            if token == ")":
                return tuple(params), variadic
            if token != ",":
                raise Unsupported(f"unexpected {token!r} in a parameter list")

    # -- tokens ------------------------------------------------------------------------------

    def _peek(self) -> str:
        return self._tokens[self._at] if self._at < len(self._tokens) else ""

    def _next(self) -> str:
        token = self._tokens[self._at]
        self._at += 1
        return token

    def _skip_parens_after_keyword(self) -> None:
        self._at += 1
        if self._peek() == "(":
            self._at += 1
            self._skip_until_close()

    def _skip_balanced(self, opening: str, closing: str) -> None:
        assert self._next() == opening
        self._skip_until_close(closing)

    def _skip_until_close(self, closing: str = ")") -> None:
        """Skip to just past the bracket that closes the one just passed."""
        depth = 1
        while depth:
            token = self._next()
            if token in "([{":
                depth += 1
            elif token in ")]}":
                depth -= 1
        if self._tokens[self._at - 1] != closing:
            raise Unsupported("unbalanced brackets")

    def _skip_initializer(self) -> None:
        self._at += 1
        depth = 0
        while True:
            token = self._peek()
            if depth == 0 and token in (",", ";"):
                return
            if token in "([{":
                depth += 1
            elif token in ")]}":
                depth -= 1
            self._at += 1


def _is_ident(token: str) -> bool:
    return bool(token) and (token[0].isalpha() or token[0] in "_$")


def _scalar(words: list[str]) -> CType:
    """The arithmetic type named by `words` (``unsigned long int``), or Opaque if unmapped."""
    signed = {"__signed": "signed", "__signed__": "signed", "__unsigned": "unsigned"}
    words = [signed.get(w, w) for w in words]
    counts = {w: words.count(w) for w in set(words)}
    if set(counts) - {"char", "short", "int", "long", "signed", "unsigned", "float", "double"}:
        if set(counts) <= {"_Bool", "bool"}:
            return Scalar("bool")
        if words == ["void"]:
            return Scalar("void")
        return Opaque(" ".join(words))
    if "float" in counts or "double" in counts:
        kind = "float" if "float" in counts else "double"
        if counts.get("long") == 1 and kind == "double" and len(words) == 2:
            return Scalar("long double")
        if len(words) != 1:
            raise Unsupported(" ".join(words))
        return Scalar(kind)
    unsigned = "unsigned" in counts
    if counts.get("signed", 0) + counts.get("unsigned", 0) > 1:
        raise Unsupported(" ".join(words))
    if "char" in counts:
        if "signed" in counts:
            return Scalar("signed char")
        return Scalar("unsigned char" if unsigned else "char")
    longs = counts.get("long", 0)
    size = "short" if "short" in counts else ("long long" if longs == 2 else "long" * longs)
    size = size or "int"
    return Scalar(f"unsigned {size}" if unsigned else size)


def _decay(ctype: CType) -> CType:
    """A parameter's array type is a pointer; a function type, a pointer to it."""
    if isinstance(ctype, Array):
        return Pointer(ctype.target, ctype.const)
    if isinstance(ctype, FunctionType):
        return Pointer(ctype, False)
    return ctype
