"""Check that bytes are a complete ELF shared object this process can load.

Mapping a truncated ELF file kills the process with SIGBUS when a page past the end is touched,
and dlopen only reads the headers it needs, so hotr checks every offset the headers point at
against the file size before the file reaches the loader.  Reference: elf(5).
"""

from __future__ import annotations

import functools
import struct
import sys

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
