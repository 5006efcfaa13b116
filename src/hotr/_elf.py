"""Check that bytes are a complete ELF shared object this process can load.

Mapping a truncated ELF file kills the process with SIGBUS when a page past the end is touched,
and dlopen only reads the headers it needs, so hotr checks every offset the headers point at
against the file size before the file reaches the loader.  Reference: elf(5).
"""

from __future__ import annotations

import functools
import mmap
import os
import re
import struct
import sys
from dataclasses import dataclass, field
from typing import NamedTuple

Buffer = bytes | mmap.mmap  # what the checks read: the file's bytes or a mapping of them

ELFMAG = b"\x7fELF"
ET_EXEC = 2
ET_DYN = 3
PT_LOAD = 1
PT_DYNAMIC = 2
SHT_NOBITS = 8

_MACHINES = {
    3: "x86",
    8: "MIPS",
    20: "PowerPC",
    21: "PowerPC64",
    22: "S/390",
    40: "ARM",
    62: "x86-64",
    183: "AArch64",
    243: "RISC-V",
}


class ElfError(ValueError):
    """The bytes are not a loadable shared object; the message says why."""


def _machine_name(machine: int) -> str:
    return _MACHINES.get(machine, f"machine {machine}")


@functools.cache
def host_header() -> tuple[int, int, int]:
    """Return (class, data encoding, machine) of the running interpreter's own ELF image."""
    with open(sys.executable, "rb") as f:
        head = f.read(20)
    endian = "<" if head[5] == 1 else ">"
    (machine,) = struct.unpack_from(endian + "H", head, 18)
    return head[4], head[5], machine


class ElfInfo(NamedTuple):
    """What the loader needs to know of a checked shared object (addresses relative to its
    load base)."""

    code: list[tuple[int, int]]  # executable segments: a function outside them would fault
    relro: tuple[int, int] | None  # PT_GNU_RELRO: read-only once the loader has relocated it
    needed: tuple[str, ...]  # DT_NEEDED (read only when a search path uses $ORIGIN)
    rpath: tuple[str, ...]  # DT_RPATH entries
    runpath: tuple[str, ...]  # DT_RUNPATH entries


def check_shared_object(data: Buffer) -> ElfInfo:
    """Raise ElfError unless `data` (bytes or a mapping of the file) is a whole ELF shared
    object for this process; return what the loader needs to know of it."""
    size = len(data)
    if size == 0:
        raise ElfError("the file is empty (a writer may still be creating it)")
    if size < 16 or data[:4] != ELFMAG:
        raise ElfError("not an ELF file (no ELF magic number at the start)")
    ei_class, ei_data = data[4], data[5]
    host_class, host_data, host_machine = host_header()
    if ei_class not in (1, 2) or ei_data not in (1, 2):
        raise ElfError("not a valid ELF file (bad class or byte order)")
    if ei_class != host_class:
        bits = {1: 32, 2: 64}
        raise ElfError(
            f"wrong ELF class: {bits[ei_class]}-bit file, this process is {bits[host_class]}-bit"
        )
    if ei_data != host_data:
        raise ElfError("wrong byte order for this machine")
    endian = "<" if ei_data == 1 else ">"
    if ei_class == 2:
        ehdr, phdr, shdr = endian + "HHIQQQIHHHHHH", endian + "IIQQQQQQ", endian + "IIQQQQIIQQ"
        # only type, flags, addr, offset, size of each section header
        sections = endian + "4xIQQQQ24x"
    else:
        ehdr, phdr, shdr = endian + "HHIIIIIHHHHHH", endian + "IIIIIIII", endian + "IIIIIIIIII"
        sections = endian + "4xIIIII16x"
    if size < 16 + struct.calcsize(ehdr):
        raise ElfError(f"truncated: {size} bytes is shorter than the ELF header")
    (
        e_type,
        e_machine,
        _ver,
        _entry,
        e_phoff,
        e_shoff,
        _flags,
        _ehsize,
        e_phentsize,
        e_phnum,
        e_shentsize,
        e_shnum,
        _shstrndx,
    ) = struct.unpack_from(ehdr, data, 16)
    if e_machine != host_machine:
        raise ElfError(
            f"wrong architecture: built for {_machine_name(e_machine)}, "
            f"this process runs on {_machine_name(host_machine)}"
        )
    if e_type == ET_EXEC:
        raise ElfError("an executable, not a shared object (link it with -shared)")
    if e_type != ET_DYN:
        raise ElfError(f"not a shared object (ELF type {e_type}; link it with -shared)")
    _check_table(size, e_phoff, e_phnum, e_phentsize, struct.calcsize(phdr), "program header")
    _check_table(size, e_shoff, e_shnum, e_shentsize, struct.calcsize(shdr), "section header")
    segments = [
        _segment(fields, ei_class)
        for fields in struct.iter_unpack(phdr, data[e_phoff : e_phoff + e_phnum * e_phentsize])
    ]
    _check_segments(segments, size)
    needed, rpath, runpath = _check_dynamic(data, segments, endian, ei_class)
    spans = [
        (g.vaddr, g.vaddr + g.filesz, g.vaddr - g.offset) for g in segments if g.type == PT_LOAD
    ]
    table = data[e_shoff : e_shoff + e_shnum * e_shentsize]
    for i, (sh_type, sh_flags, sh_addr, sh_offset, sh_size) in enumerate(
        struct.iter_unpack(sections, table)
    ):
        if sh_type == SHT_NOBITS:
            continue
        if sh_offset + sh_size > size:
            raise ElfError(
                f"truncated: section {i} ends at byte {sh_offset + sh_size}, the file has {size}"
            )
        # The sections (when the file has them) say where the code and data really are: a
        # loaded section must sit in a segment that maps it from the same file offset.
        if sh_flags & SHF_ALLOC and sh_size:
            for low, high, delta in spans:
                if low <= sh_addr < high:
                    if sh_addr + sh_size <= high and delta == sh_addr - sh_offset:
                        break
                    raise ElfError(
                        f"corrupt headers: section {i} is not loaded from where the file has it"
                    )
            else:
                raise ElfError(f"corrupt headers: section {i} lies outside the loaded segments")
    code = [(g.vaddr, g.vaddr + g.memsz) for g in segments if g.type == PT_LOAD and g.flags & _PF_X]
    relro = next(((g.vaddr, g.vaddr + g.memsz) for g in segments if g.type == _PT_GNU_RELRO), None)
    return ElfInfo(code, relro, needed, rpath, runpath)


class _Segment(NamedTuple):  # a NamedTuple: built for every header of every reload, cheaply
    type: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int
    align: int
    flags: int


def _segment(fields: tuple[int, ...], ei_class: int) -> _Segment:
    if ei_class == 2:  # Elf64_Phdr: type, flags, offset, vaddr, paddr, filesz, memsz, align
        return _Segment(fields[0], fields[2], fields[3], fields[5], fields[6], fields[7], fields[1])
    # Elf32_Phdr: type, offset, vaddr, paddr, filesz, memsz, flags, align
    return _Segment(fields[0], fields[1], fields[2], fields[4], fields[5], fields[7], fields[6])


# glibc's loader trusts these headers (dl-load.c, dl-map-segments.h): a file size larger than the
# memory size, or a dynamic section pointing outside the mapped image, crashes the process inside
# dlopen.  So they are checked here first, against what the loader will map.
_PT_TLS = 7
_PT_GNU_EH_FRAME = 0x6474E550
_PT_GNU_RELRO = 0x6474E552
_MAX_IMAGE = 1 << 40
_DT_POINTERS = {
    3: "DT_PLTGOT",
    4: "DT_HASH",
    5: "DT_STRTAB",
    6: "DT_SYMTAB",
    7: "DT_RELA",
    12: "DT_INIT",
    13: "DT_FINI",
    17: "DT_REL",
    23: "DT_JMPREL",
    25: "DT_INIT_ARRAY",
    26: "DT_FINI_ARRAY",
    32: "DT_PREINIT_ARRAY",
    0x6FFFFEF5: "DT_GNU_HASH",
    0x6FFFFFF0: "DT_VERSYM",
    0x6FFFFFFC: "DT_VERDEF",
    0x6FFFFFFE: "DT_VERNEED",
}
_DT_SIZES = {7: 8, 17: 18, 23: 2, 5: 10, 25: 27, 26: 28, 32: 33}  # table tag -> its size tag
_DT_STRINGS = {1: "DT_NEEDED", 14: "DT_SONAME", 15: "DT_RPATH", 29: "DT_RUNPATH"}
_DT_FLAGS_1 = 0x6FFFFFFB
_PF_X, _PF_W, _PF_R = 1, 2, 4
# Relocation tables: (table tag, size tag, entry size tag); r_offset is each entry's first field.
_RELOCATIONS = ((7, 8, 9), (17, 18, 19), (23, 2, None))
_DT_PLTREL, _DT_TEXTREL, _DT_FLAGS, _DF_TEXTREL, _DT_RELA = 20, 22, 30, 0x4, 7
_DF_1_PIE = 0x08000000


def _check_segments(segments: list[_Segment], size: int) -> None:
    loads = [s for s in segments if s.type == PT_LOAD]
    if not loads:
        raise ElfError("not a loadable object (no PT_LOAD segment)")
    end = -1
    for s in segments:
        if s.type in (PT_LOAD, PT_DYNAMIC, _PT_TLS) and s.offset + s.filesz > size:
            raise ElfError(
                f"truncated: a segment ends at byte {s.offset + s.filesz}, the file has {size}"
            )
        if s.type in (PT_LOAD, _PT_TLS):
            if s.filesz > s.memsz or (
                s.type == PT_LOAD and s.flags & _PF_X and s.filesz != s.memsz
            ):
                raise ElfError(
                    "corrupt program header: a segment's file and memory sizes do not fit "
                    "(larger in the file, or code not all in the file)"
                )
            if s.align & (s.align - 1):
                raise ElfError("corrupt program header: an alignment is not a power of two")
        if s.type == PT_LOAD:
            if not s.flags & _PF_R:  # the loader reads its tables from these pages
                raise ElfError("corrupt program header: a loadable segment is not readable")
            if s.align > 1 and (s.vaddr - s.offset) % s.align:
                raise ElfError(
                    "corrupt program header: a segment's address and offset are not congruent"
                )
            if s.vaddr < end or s.vaddr + s.memsz > _MAX_IMAGE:
                raise ElfError(
                    "corrupt program header: segments overlap, are out of order or too large"
                )
            end = s.vaddr + s.memsz
        if s.type in (PT_DYNAMIC, _PT_GNU_RELRO, _PT_GNU_EH_FRAME) and not _mapped(
            loads, s.vaddr, s.memsz
        ):
            raise ElfError("corrupt program header: a segment lies outside the loaded image")
    if not any(s.type == PT_DYNAMIC for s in segments):
        raise ElfError("not a shared object (no dynamic section)")


def _mapped(loads: list[_Segment], vaddr: int, length: int) -> bool:
    end = vaddr + length
    for s in loads:  # noqa: SIM110 (a plain loop: any() over a generator costs more per reload)
        if s.vaddr <= vaddr and end <= s.vaddr + s.memsz:
            return True
    return False


def _check_dynamic(
    data: Buffer, segments: list[_Segment], endian: str, ei_class: int
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Every address and string offset the dynamic section gives lies inside the image.

    Returns the DT_NEEDED names and the DT_RPATH and DT_RUNPATH entries.
    """
    loads = [s for s in segments if s.type == PT_LOAD]
    dynamic = next(s for s in segments if s.type == PT_DYNAMIC)
    backing = [
        s
        for s in loads
        if s.vaddr <= dynamic.vaddr and dynamic.vaddr + dynamic.filesz <= s.vaddr + s.filesz
    ]
    if not backing or dynamic.offset - backing[0].offset != dynamic.vaddr - backing[0].vaddr:
        raise ElfError("corrupt program header: the dynamic section is not where it is loaded")
    entry = struct.Struct(endian + ("qQ" if ei_class == 2 else "iI"))
    entries: dict[int, int] = {}
    strings: list[tuple[int, int]] = []
    raw = data[dynamic.offset : dynamic.offset + dynamic.filesz]
    for tag, value in entry.iter_unpack(raw[: len(raw) - len(raw) % entry.size]):
        if tag == 0:
            break
        if tag in _DT_STRINGS:
            strings.append((tag, value))
        else:
            entries[tag] = value
    else:
        raise ElfError("corrupt dynamic section: no DT_NULL at its end")
    for tag, name in _DT_POINTERS.items():
        if tag in entries:
            length = entries.get(_DT_SIZES.get(tag, -1), 1)
            if not _mapped(loads, entries[tag], max(length, 1)):
                raise ElfError(f"corrupt dynamic section: {name} points outside the image")
    if entries.get(_DT_FLAGS_1, 0) & _DF_1_PIE:
        raise ElfError(
            "an executable (position-independent), not a shared object; link it with -shared"
        )
    if 5 not in entries or 6 not in entries:
        raise ElfError("corrupt dynamic section: no string or symbol table")
    if any(offset >= entries.get(10, 0) for _, offset in strings):
        raise ElfError("corrupt dynamic section: a library name lies outside the string table")
    code = [g for g in loads if g.flags & _PF_X]
    if not code:
        raise ElfError("corrupt program header: no executable segment")
    for tag, name in ((12, "DT_INIT"), (13, "DT_FINI")):  # called by dlopen / dlclose
        if tag in entries and not _mapped(code, entries[tag], 1):
            raise ElfError(f"corrupt dynamic section: {name} is not in executable code")
    if _DT_TEXTREL not in entries and not entries.get(_DT_FLAGS, 0) & _DF_TEXTREL:
        _check_relocations(data, loads, entries, endian, ei_class)
    # The names are read only when a search path uses $ORIGIN (_origin.py): most libraries
    # have no DT_RPATH or DT_RUNPATH at all, and this runs on every reload.
    found: dict[int, list[str]] = {1: [], 15: [], 29: []}
    searched = [(tag, offset) for tag, offset in strings if tag in (15, 29)]
    if searched:
        table = _file_offset(loads, entries[5], entries.get(10, 0))
        if table is None:
            raise ElfError("corrupt dynamic section: the string table is not in the file")
        for tag, offset in searched:
            found[tag].append(_c_string(data, table + offset, table + entries[10]))
        if any("ORIGIN" in text for texts in found.values() for text in texts):
            for tag, offset in strings:
                if tag == 1:
                    found[1].append(_c_string(data, table + offset, table + entries[10]))
    paths = {tag: tuple(p for text in found[tag] for p in text.split(":") if p) for tag in (15, 29)}
    return tuple(found[1]), paths[15], paths[29]


def _c_string(data: Buffer, start: int, limit: int) -> str:
    end = data.find(b"\0", start, limit)
    return bytes(data[start : limit if end < 0 else end]).decode(errors="surrogateescape")


def _check_relocations(
    data: Buffer, loads: list[_Segment], entries: dict[int, int], endian: str, ei_class: int
) -> None:
    """Every place the loader will patch lies in a writable segment (else dlopen faults)."""
    word = "Q" if ei_class == 2 else "I"
    writable = [g for g in loads if g.flags & _PF_W]
    for table, size_tag, entsize_tag in _RELOCATIONS:
        if table not in entries or not entries.get(size_tag):
            continue
        rela = table == _DT_RELA or (table == 23 and entries.get(_DT_PLTREL) == _DT_RELA)
        entsize = entries.get(entsize_tag or -1) or (3 if rela else 2) * (8 if ei_class == 2 else 4)
        start = _file_offset(loads, entries[table], entries[size_tag])
        if start is None or entsize < struct.calcsize(word):
            raise ElfError("corrupt dynamic section: a relocation table is not in the file")
        count = entries[size_tag] // entsize
        entry = endian + word + f"{entsize - struct.calcsize(word)}x"
        targets = [t for (t,) in struct.iter_unpack(entry, data[start : start + count * entsize])]
        if targets and len(writable) == 1:  # the usual case: one RW segment, check the extremes
            targets = [min(targets), max(targets)]
        if not all(_mapped(writable, target, 1) for target in targets):
            raise ElfError("corrupt relocation: it would write outside the writable segments")


def _file_offset(loads: list[_Segment], vaddr: int, length: int) -> int | None:
    for g in loads:
        if g.vaddr <= vaddr and vaddr + length <= g.vaddr + g.filesz:
            return g.offset + vaddr - g.vaddr
    return None


def _check_table(size: int, offset: int, count: int, entsize: int, minsize: int, what: str) -> None:
    if count and entsize != minsize:
        raise ElfError(f"not a valid ELF file ({what} entries of {entsize} bytes)")
    if count and offset + count * entsize > size:
        raise ElfError(f"truncated: the {what} table ends past the end of the file ({size} bytes)")


SHT_SYMTAB = 2
SHT_DYNSYM = 11
SHF_WRITE = 0x1
SHF_ALLOC = 0x2
STT_OBJECT = 1
STT_FILE = 4
STB_LOCAL = 0
RESET_SECTION = "hotr_reset"  # where hotr.h's HOTR_RESET puts a global
# gcc names a function-local static `count` as `count.0`, `count.1`... in order of appearance,
# so the numbers can move when a function is added (clang writes `function.count`, stable).
_NUMBERED = re.compile(r"^(.+)\.(\d+)$")

# How a variable is matched from one version to the next: (source file, name, kind), with the
# file empty for a global and the base name (`count` of `count.0`) for a numbered static.
Key = tuple[str, str, str]


@dataclass(frozen=True)
class Variable:
    """One variable keep_globals may carry.

    Attributes:
        name: its name as reports show it (a static's file is added when two share a name).
        offset: its address relative to the load base.
        size: its size in bytes.
    """

    name: str
    offset: int
    size: int


@dataclass(frozen=True)
class Globals:
    """The writable variables of a shared object, keyed to match across versions.

    Attributes:
        variables: key -> Variable for every variable that may be carried.
        skipped: name -> why a variable can never be carried (HOTR_RESET, read-only after
            loading, an identity that cannot be told across versions).
    """

    variables: dict[Key, Variable]
    skipped: dict[str, str] = field(default_factory=dict)


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
            elif numbered := _NUMBERED.match(name):
                key = (source, numbered.group(1), "numbered")
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
