"""What hotr reads from ELF files: whether one is a loadable shared object (checked in C,
_elfcheck.c), and the variables keep_globals may carry (its symbol table).  Reference: elf(5).
"""

from __future__ import annotations

import os
import struct
import sys

from ._record import Record
from ._shim import check_elf, check_elf_file

TYPE_CHECKING = False
if TYPE_CHECKING:
    import mmap
    from collections.abc import Iterator
    from typing import BinaryIO

    Buffer = bytes | mmap.mmap  # what the checks read: the file's bytes or a mapping of them
    _Checked = tuple[
        list[tuple[int, int]],
        tuple[int, int] | None,
        list[bytes],
        list[bytes],
        list[bytes],
        list[bytes],
    ]  # what check_elf returns


class ElfError(ValueError):
    """The bytes are not a loadable shared object; the message says why."""


def host_header() -> tuple[int, int, int]:
    """Return (class, data encoding, machine) of the running interpreter's own ELF image."""
    global _host
    if _host is None:
        with open(sys.executable, "rb") as f:
            head = f.read(20)
        endian = "<" if head[5] == 1 else ">"
        (machine,) = struct.unpack_from(endian + "H", head, 18)
        _host = head[4], head[5], machine
    return _host


_host: tuple[int, int, int] | None = None


def map_read(f: BinaryIO) -> mmap.mmap:
    """A read-only mapping of the open file `f` (mmap is imported here: only large libraries
    and rarely needed reads use it)."""
    import mmap

    return mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)


class ElfInfo(Record):
    """What the loader needs to know of a checked shared object (addresses relative to its
    load base)."""

    code: list[tuple[int, int]]  # executable segments: a function outside them would fault
    relro: tuple[int, int] | None  # PT_GNU_RELRO: read-only once the loader has relocated it
    needed: tuple[str, ...]  # DT_NEEDED (read only when a search path uses $ORIGIN)
    rpath: tuple[str, ...]  # DT_RPATH entries
    runpath: tuple[str, ...]  # DT_RUNPATH entries
    absent: tuple[str, ...]  # names asked about that it defines no symbol of (no dlsym needed)


def check_shared_object(data: Buffer, names: tuple[str, ...] = ()) -> ElfInfo:
    """Raise ElfError unless `data` (bytes or a mapping of the file) is a whole ELF shared
    object for this process; return what the loader needs to know of it, and which of `names`
    it surely defines no symbol of (``absent``).

    The checks (every offset the headers give inside the file, everything glibc's loader
    trusts inside the image it maps) are in _elfcheck.c: they run on every reload, over every
    relocation.
    """
    asked = _asked(names)
    try:
        checked = check_elf(data, *host_header(), asked)
    except ValueError as exc:
        raise ElfError(str(exc)) from None
    return _info(checked, names, asked)


def check_shared_file(
    path: str, names: tuple[str, ...], start: int
) -> tuple[ElfInfo, tuple[int, bytes]]:
    """check_shared_object() of the file at `path` (a large library: mapped for the check in
    C, which costs less than a Python open and mmap), and its (size, first `start` bytes).
    OSError if it cannot be read."""
    asked = _asked(names)
    try:
        checked, head, size = check_elf_file(path, *host_header(), asked, start)
    except ValueError as exc:
        raise ElfError(str(exc)) from None
    return _info(checked, names, asked), (size, head)


def _asked(names: tuple[str, ...]) -> tuple[bytes, ...]:
    asked = _encoded.get(names)
    if asked is None:
        asked = _encoded[names] = tuple(name.encode() for name in names)
    return asked


def _info(checked: _Checked, names: tuple[str, ...], asked: tuple[bytes, ...]) -> ElfInfo:
    code, relro, needed, rpath, runpath, defined = checked
    absent = (
        names
        if not defined
        else tuple(n for n, r in zip(names, asked, strict=True) if r not in defined)
    )
    # Most libraries have no $ORIGIN anywhere, so none of these are read (see check_elf).
    return ElfInfo(
        code,
        relro,
        _names(needed) if needed else (),
        _names(rpath) if rpath else (),
        _names(runpath) if runpath else (),
        absent,
    )


_encoded: dict[tuple[str, ...], tuple[bytes, ...]] = {}  # check_shared_object's names, as bytes


def _names(raw: list[bytes]) -> tuple[str, ...]:
    """File names and search paths from the dynamic string table (a colon-separated list)."""
    return tuple(p for text in raw for p in os.fsdecode(text).split(":") if p)


def _c_string(data: Buffer, start: int, limit: int) -> str:
    end = data.find(b"\0", start, limit)
    return bytes(data[start : limit if end < 0 else end]).decode(errors="surrogateescape")


SHT_SYMTAB = 2
SHT_DYNSYM = 11
SHF_WRITE = 0x1
SHF_ALLOC = 0x2
STT_OBJECT = 1
STT_FILE = 4
STT_TLS = 6
STB_LOCAL = 0
RESET_SECTION = "hotr_reset"  # where hotr.h's HOTR_RESET puts a global


def _numbered(name: str) -> bool:
    """Whether `name` is gcc's name of a function-local static: `count.0`.

    gcc names a function-local static `count` as `count.0`, `count.1`... in order of
    appearance, so the numbers can move when a function is added (clang writes
    `function.count`, stable).
    """
    base, _, number = name.rpartition(".")
    return bool(base) and number.isascii() and number.isdigit()


# How a variable is matched from one version to the next: (source file, name, kind), with the
# file empty for a global and the base name (`count` of `count.0`) for a numbered static.
Key = tuple[str, str, str]


class Variable(Record):
    """One variable keep_globals may carry.

    Attributes:
        name: its name as reports show it (a static's file is added when two share a name).
        offset: its address relative to the load base.
        size: its size in bytes.
    """

    name: str
    offset: int
    size: int


class Globals(Record):
    """The writable variables of a shared object, keyed to match across versions.

    Attributes:
        variables: key -> Variable for every variable that may be carried.
        skipped: name -> why a variable can never be carried (HOTR_RESET, read-only after
            loading, an identity that cannot be told across versions).
    """

    variables: dict[Key, Variable]
    skipped: dict[str, str]


def read_globals(data: Buffer, relro: tuple[int, int] | None) -> Globals:
    """Read the writable global and static variables from the ELF symbol table of `data`.

    The full table (.symtab) also has file-scope and function-local statics, each after the
    STT_FILE symbol of its source file; a stripped file has only the exported symbols
    (.dynsym).  Names the toolchain owns (leading double underscore, crtstuff's
    ``completed.*``) are left out: copying them (``__dso_handle``) would break the new version.
    Variables inside `relro` (PT_GNU_RELRO: const tables the loader relocated, then made
    read-only) are skipped: writing there faults.  `data` must have passed
    check_shared_object().
    """
    endian = "<" if data[5] == 1 else ">"
    wide = data[4] == 2
    if wide:
        (e_shoff,) = struct.unpack_from(endian + "Q", data, 0x28)
        e_shentsize, e_shnum, e_shstrndx = struct.unpack_from(endian + "HHH", data, 0x3A)
        shdr, sym = struct.Struct(endian + "IIQQQQIIQQ"), struct.Struct(endian + "IBBHQQ")
    else:
        (e_shoff,) = struct.unpack_from(endian + "I", data, 0x20)
        e_shentsize, e_shnum, e_shstrndx = struct.unpack_from(endian + "HHH", data, 0x2E)
        shdr, sym = struct.Struct(endian + "IIIIIIIIII"), struct.Struct(endian + "IIIBBH")
    sections = [shdr.unpack_from(data, e_shoff + i * e_shentsize) for i in range(e_shnum)]
    names_at = sections[e_shstrndx][4] if e_shstrndx < e_shnum else 0
    size = len(data)

    def c_string(offset: int) -> str:
        return _c_string(data, offset, size)

    section_names = [c_string(names_at + s[0]) if names_at else "" for s in sections]
    tables = [s for s in sections if s[1] == SHT_SYMTAB] or [
        s for s in sections if s[1] == SHT_DYNSYM
    ]
    found: dict[Key, list[Variable]] = {}
    skipped: dict[str, str] = {}
    for table in tables:
        offset, length, link = table[4], table[5], table[6]
        strings = sections[link][4]
        source = ""
        for entry in struct.iter_unpack(sym.format, data[offset : offset + length]):
            if wide:
                st_name, st_info, _other, st_shndx, st_value, st_size = entry
            else:
                st_name, st_value, st_size, st_info, _other, st_shndx = entry
            kind = st_info & 0xF
            if kind == STT_FILE:
                source = c_string(strings + st_name)
                continue
            if kind == STT_TLS and st_size and 0 < st_shndx < e_shnum:
                skipped[c_string(strings + st_name)] = (
                    "thread-local: each thread has its own, which hotr cannot reach"
                )
                continue
            if kind != STT_OBJECT or st_size == 0 or not 0 < st_shndx < e_shnum:
                continue
            flags = sections[st_shndx][2]
            if flags & (SHF_WRITE | SHF_ALLOC) != SHF_WRITE | SHF_ALLOC:
                continue
            name = c_string(strings + st_name)
            if name.startswith("__") or name.startswith("completed."):
                continue
            if section_names[st_shndx] == RESET_SECTION:
                skipped[name] = "marked HOTR_RESET"
                continue
            if relro is not None and st_value < relro[1] and relro[0] < st_value + st_size:
                skipped[name] = "read-only after loading (RELRO: a const table the loader fills in)"
                continue
            if st_info >> 4 != STB_LOCAL:
                key: Key = ("", name, "global")
            elif _numbered(name):
                key = (source, name.rpartition(".")[0], "numbered")
            else:
                key = (source, name, "static")
            found.setdefault(key, []).append(Variable(name, st_value, st_size))
    variables: dict[Key, Variable] = {}
    shown: dict[str, int] = {}
    for key in found:
        shown[key[1]] = shown.get(key[1], 0) + 1
    for key, same in found.items():
        if len(same) == 1:
            unique = shown[key[1]] == 1 or not key[0]
            label = key[1] if unique else f"{key[1]} ({os.path.basename(key[0])})"
            variables[key] = Variable(label, same[0].offset, same[0].size)
            continue
        names = ", ".join(v.name for v in same)
        where = os.path.basename(key[0]) or "this library"
        reason = (
            f"several function-local statics named {key[1]!r} in {where} ({names}): the "
            "compiler numbers them, and the numbers can change between versions"
            if key[2] == "numbered"
            else f"defined more than once ({names} in files that are all named {where})"
        )
        for variable in same:
            skipped[variable.name] = reason
    return Globals(variables, skipped)


STB_GNU_UNIQUE = 10
ELFOSABI_GNU = 3  # e_ident[EI_OSABI] of a file that uses GNU extensions (unique symbols)


def unique_symbols(data: Buffer) -> list[str]:
    """The exported symbols with STB_GNU_UNIQUE binding (g++ gives it to static locals of
    inline functions and static members of templates).  glibc never unloads a library that has
    one, and binds every later library's same-named symbol to the first definition, so a new
    version would share the old one's variable.  `data` must have passed check_shared_object().
    """
    if data[7] != ELFOSABI_GNU:
        return []  # the linker marks a file with such symbols as GNU's: no scan for the rest
    size = len(data)
    found = [
        _c_string(data, at, size)
        for at, info, _ in _dynamic_symbols(data)
        if info >> 4 == STB_GNU_UNIQUE
    ]
    return sorted(set(found))


def cxx_names(data: Buffer, name: str) -> list[str]:
    """The C++ (mangled) names of a function `name` at namespace scope that the library
    defines (``_Z5valuev`` for ``value``): what a C function compiled as C++ is called.  `data`
    must have passed check_shared_object()."""
    prefix, size = f"_Z{len(name)}{name}", len(data)
    defined = (_c_string(data, at, size) for at, _, section in _dynamic_symbols(data) if section)
    return sorted({n for n in defined if n.startswith(prefix)})


def _dynamic_symbols(data: Buffer) -> Iterator[tuple[int, int, int]]:
    """(where its name starts, st_info, st_shndx) of each entry of the dynamic symbol tables
    (SHT_DYNSYM)."""
    endian = "<" if data[5] == 1 else ">"
    wide = data[4] == 2
    if wide:
        (e_shoff,) = struct.unpack_from(endian + "Q", data, 0x28)
        e_shentsize, e_shnum = struct.unpack_from(endian + "HH", data, 0x3A)
        shdr, sym = struct.Struct(endian + "IIQQQQIIQQ"), struct.Struct(endian + "IBBHQQ")
    else:
        (e_shoff,) = struct.unpack_from(endian + "I", data, 0x20)
        e_shentsize, e_shnum = struct.unpack_from(endian + "HH", data, 0x2E)
        shdr, sym = struct.Struct(endian + "IIIIIIIIII"), struct.Struct(endian + "IIIBBH")
    size = len(data)
    if e_shoff == 0 or e_shoff + e_shnum * e_shentsize > size:
        return
    sections = [shdr.unpack_from(data, e_shoff + i * e_shentsize) for i in range(e_shnum)]
    for table in (s for s in sections if s[1] == SHT_DYNSYM):
        offset, length, link = table[4], table[5], table[6]
        if link >= e_shnum or offset + length > size:
            continue
        strings = sections[link][4]
        length -= length % sym.size
        for entry in struct.iter_unpack(sym.format, data[offset : offset + length]):
            st_name, st_info, st_shndx = (
                (entry[0], entry[1], entry[3]) if wide else (entry[0], entry[3], entry[5])
            )
            yield strings + st_name, st_info, st_shndx
