"""Check that bytes are a complete ELF shared object this process can load.

Mapping a truncated ELF file kills the process with SIGBUS when a page past the end is touched,
and dlopen only reads the headers it needs, so hotr checks every offset the headers point at
against the file size before the file reaches the loader.  Reference: elf(5).
"""

from __future__ import annotations

import functools
import struct
import sys
from dataclasses import dataclass

ELFMAG = b"\x7fELF"
ET_EXEC = 2
ET_DYN = 3
PT_LOAD = 1
PT_DYNAMIC = 2
PT_INTERP = 3
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


def check_shared_object(data: bytes) -> None:
    """Raise ElfError unless `data` is a whole ELF shared object for this process."""
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
    else:
        ehdr, phdr, shdr = endian + "HHIIIIIHHHHHH", endian + "IIIIIIII", endian + "IIIIIIIIII"
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
    has_dynamic = False
    table = data[e_phoff : e_phoff + e_phnum * e_phentsize]
    for fields in struct.iter_unpack(phdr, table):
        if ei_class == 2:
            p_type, _pflags, p_offset, _va, _pa, p_filesz = fields[:6]
        else:
            p_type, p_offset, _va, _pa, p_filesz = fields[:5]
        if p_type == PT_INTERP:
            raise ElfError("an executable (it names a program interpreter), not a shared object")
        has_dynamic |= p_type == PT_DYNAMIC
        if p_type in (PT_LOAD, PT_DYNAMIC) and p_offset + p_filesz > size:
            raise ElfError(
                f"truncated: a segment ends at byte {p_offset + p_filesz}, the file has {size}"
            )
    if not has_dynamic:
        raise ElfError("not a shared object (no dynamic section)")
    table = data[e_shoff : e_shoff + e_shnum * e_shentsize]
    for i, fields in enumerate(struct.iter_unpack(shdr, table)):
        sh_type, sh_offset, sh_size = fields[1], fields[4], fields[5]
        if sh_type != SHT_NOBITS and sh_offset + sh_size > size:
            raise ElfError(
                f"truncated: section {i} ends at byte {sh_offset + sh_size}, the file has {size}"
            )


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
RESET_SECTION = "hotr_reset"  # where hotr.h's HOTR_RESET puts a global


@dataclass(frozen=True)
class Globals:
    """Global variables of a shared object that can be carried to a new version.

    Attributes:
        variables: name -> (offset from the load base, size in bytes), writable data only.
        reset: names marked HOTR_RESET (never carried).
        ambiguous: names defined more than once (file-scope statics of several files).
    """

    variables: dict[str, tuple[int, int]]
    reset: frozenset[str]
    ambiguous: frozenset[str]


def read_globals(data: bytes) -> Globals:
    """Read the writable global and static variables from the ELF symbol table of `data`.

    The full table (.symtab) also has file-scope statics; a stripped file has only the exported
    symbols (.dynsym).  Names the toolchain owns (leading double underscore, crtstuff's
    ``completed.*``) are left out: copying them (``__dso_handle``) would break the new version.
    `data` must already have passed check_shared_object().
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

    def c_string(offset: int) -> str:
        return data[offset : data.index(b"\0", offset)].decode(errors="replace")

    section_names = [c_string(names_at + s[0]) if names_at else "" for s in sections]
    tables = [s for s in sections if s[1] == SHT_SYMTAB] or [
        s for s in sections if s[1] == SHT_DYNSYM
    ]
    variables: dict[str, tuple[int, int]] = {}
    reset: set[str] = set()
    seen: set[str] = set()
    ambiguous: set[str] = set()
    for table in tables:
        offset, size, link = table[4], table[5], table[6]
        strings = sections[link][4]
        for entry in struct.iter_unpack(sym.format, data[offset : offset + size]):
            if wide:
                st_name, st_info, _other, st_shndx, st_value, st_size = entry
            else:
                st_name, st_value, st_size, st_info, _other, st_shndx = entry
            if st_info & 0xF != STT_OBJECT or st_size == 0 or not 0 < st_shndx < e_shnum:
                continue
            flags = sections[st_shndx][2]
            if flags & (SHF_WRITE | SHF_ALLOC) != SHF_WRITE | SHF_ALLOC:
                continue
            name = c_string(strings + st_name)
            if name.startswith("__") or name.startswith("completed."):
                continue
            if section_names[st_shndx] == RESET_SECTION:
                reset.add(name)
                continue
            if name in seen:
                ambiguous.add(name)
            seen.add(name)
            variables[name] = (st_value, st_size)
    for name in ambiguous:
        del variables[name]
    return Globals(variables, frozenset(reset), frozenset(ambiguous))
