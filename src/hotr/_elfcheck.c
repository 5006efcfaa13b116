/* check_elf(): is a buffer a complete ELF shared object this process can load?
 *
 * Mapping a truncated ELF file kills the process with SIGBUS when a page past the end is
 * touched, and glibc's loader trusts the headers it reads (dl-load.c, dl-map-segments.h): a
 * file size larger than the memory size, or a dynamic section pointing outside the mapped
 * image, crashes the process inside dlopen.  So every offset and address the headers give is
 * checked here, against the buffer and against what the loader will map, before the file
 * reaches the loader.  Reference: elf(5).
 *
 * This runs on every reload, over every relocation of the library (a million, for a large
 * C++ library), so it is C.  It reads only inside the buffer: every offset is checked before
 * use, and all address arithmetic is done in 128 bits (64 on a 32-bit host, where the fields
 * are 32 bits), so nothing overflows.  The file's class and byte order are the host's (that is
 * checked first), so fields are read natively.
 *
 * Returns (code ranges, relro range or None, needed, rpath, runpath, defined): the executable
 * segments (a function outside them would fault), PT_GNU_RELRO (read-only once relocated), the
 * DT_RPATH / DT_RUNPATH entries with, only when $ORIGIN is used in them or in a name, the
 * DT_NEEDED names (bytes), and those of the names asked about that the file may define (see
 * maybe_defined).  Raises ValueError with the reason.
 */
#define _GNU_SOURCE  /* memmem */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "_elfcheck.h"

#ifdef __SIZEOF_INT128__
typedef unsigned __int128 wide;
#else
typedef uint64_t wide;  /* a 32-bit host: the fields are 32 bits wide */
#endif

#define PT_LOAD 1
#define PT_DYNAMIC 2
#define PT_TLS 7
#define PT_GNU_EH_FRAME 0x6474E550u
#define PT_GNU_RELRO 0x6474E552u
#define PF_X 1u
#define PF_W 2u
#define PF_R 4u
#define SHT_NOBITS 8u
#define SHF_ALLOC 2u
#define ET_EXEC 2
#define ET_DYN 3
#define MAX_IMAGE ((wide)1 << 40)
#define DF_TEXTREL 4u
#define DF_1_PIE 0x08000000u

/* Dynamic tags whose values are looked up; every other tag is ignored. */
enum {
    T_PLTRELSZ, T_PLTGOT, T_HASH, T_STRTAB, T_SYMTAB, T_RELA, T_RELASZ, T_RELAENT, T_STRSZ,
    T_INIT, T_FINI, T_REL, T_RELSZ, T_RELENT, T_PLTREL, T_TEXTREL, T_JMPREL, T_INIT_ARRAY,
    T_FINI_ARRAY, T_INIT_ARRAYSZ, T_FINI_ARRAYSZ, T_FLAGS, T_PREINIT_ARRAY,
    T_PREINIT_ARRAYSZ, T_GNU_HASH, T_VERSYM, T_FLAGS_1, T_VERDEF, T_VERNEED, T_COUNT
};
static const int64_t TAGS[T_COUNT] = {
    2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 17, 18, 19, 20, 22, 23, 25, 26, 27, 28, 30, 32, 33,
    0x6FFFFEF5, 0x6FFFFFF0, 0x6FFFFFFB, 0x6FFFFFFC, 0x6FFFFFFE,
};

/* Tables the loader reads: (tag, its size tag or -1, name), in the order they are checked. */
static const struct { int tag, size; const char *name; } POINTERS[] = {
    {T_PLTGOT, -1, "DT_PLTGOT"}, {T_HASH, -1, "DT_HASH"}, {T_STRTAB, T_STRSZ, "DT_STRTAB"},
    {T_SYMTAB, -1, "DT_SYMTAB"}, {T_RELA, T_RELASZ, "DT_RELA"}, {T_INIT, -1, "DT_INIT"},
    {T_FINI, -1, "DT_FINI"}, {T_REL, T_RELSZ, "DT_REL"}, {T_JMPREL, T_PLTRELSZ, "DT_JMPREL"},
    {T_INIT_ARRAY, T_INIT_ARRAYSZ, "DT_INIT_ARRAY"},
    {T_FINI_ARRAY, T_FINI_ARRAYSZ, "DT_FINI_ARRAY"},
    {T_PREINIT_ARRAY, T_PREINIT_ARRAYSZ, "DT_PREINIT_ARRAY"}, {T_GNU_HASH, -1, "DT_GNU_HASH"},
    {T_VERSYM, -1, "DT_VERSYM"}, {T_VERDEF, -1, "DT_VERDEF"}, {T_VERNEED, -1, "DT_VERNEED"},
};

typedef struct {
    uint32_t type, flags;
    wide offset, vaddr, filesz, memsz, align;
} Segment;

typedef struct {
    const unsigned char *data;
    wide size;
    int wide64;  /* ELFCLASS64 */
    Segment *segments;
    Py_ssize_t nsegments;
    wide value[T_COUNT];
    int present[T_COUNT];
} Elf;

static const struct { int number; const char *name; } MACHINES[] = {
    {3, "x86"}, {8, "MIPS"}, {20, "PowerPC"}, {21, "PowerPC64"}, {22, "S/390"}, {40, "ARM"},
    {62, "x86-64"}, {183, "AArch64"}, {243, "RISC-V"},
};

static PyObject *
refuse(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    PyObject *message = PyUnicode_FromFormatV(format, args);
    va_end(args);
    if (message != NULL) {
        PyErr_SetObject(PyExc_ValueError, message);
        Py_DECREF(message);
    }
    return NULL;
}

/* A wide number in decimal (a sum of two 64-bit fields may not fit 64 bits). */
static const char *
decimal(wide value, char *buffer)
{
    char digits[48];
    int n = 0;
    do {
        digits[n++] = (char)('0' + (int)(value % 10));
        value /= 10;
    } while (value);
    for (int i = 0; i < n; i++)
        buffer[i] = digits[n - 1 - i];
    buffer[n] = 0;
    return buffer;
}

static const char *
machine_name(unsigned machine, char *buffer, size_t length)
{
    for (size_t i = 0; i < sizeof MACHINES / sizeof MACHINES[0]; i++)
        if (MACHINES[i].number == (int)machine)
            return MACHINES[i].name;
    snprintf(buffer, length, "machine %u", machine);
    return buffer;
}

/* Native reads at a checked offset (the caller has checked offset + width <= size). */
static uint16_t rd16(const Elf *e, wide at) { uint16_t v; memcpy(&v, e->data + (size_t)at, 2); return v; }
static uint32_t rd32(const Elf *e, wide at) { uint32_t v; memcpy(&v, e->data + (size_t)at, 4); return v; }
static uint64_t rd64(const Elf *e, wide at) { uint64_t v; memcpy(&v, e->data + (size_t)at, 8); return v; }
static wide rdword(const Elf *e, wide at) { return e->wide64 ? rd64(e, at) : rd32(e, at); }

static int
mapped(const Elf *e, int (*pick)(const Segment *), wide vaddr, wide length)
{
    wide end = vaddr + length;
    for (Py_ssize_t i = 0; i < e->nsegments; i++) {
        const Segment *s = &e->segments[i];
        if (pick(s) && s->vaddr <= vaddr && end <= s->vaddr + s->memsz)
            return 1;
    }
    return 0;
}

static int is_load(const Segment *s) { return s->type == PT_LOAD; }
static int is_code(const Segment *s) { return s->type == PT_LOAD && (s->flags & PF_X); }
static int is_writable(const Segment *s) { return s->type == PT_LOAD && (s->flags & PF_W); }

/* The file offset of [vaddr, vaddr + length) if a loaded segment has it all in the file. */
static int
file_offset(const Elf *e, wide vaddr, wide length, wide *offset)
{
    for (Py_ssize_t i = 0; i < e->nsegments; i++) {
        const Segment *s = &e->segments[i];
        if (s->type == PT_LOAD && s->vaddr <= vaddr && vaddr + length <= s->vaddr + s->filesz) {
            *offset = s->offset + vaddr - s->vaddr;
            return 1;
        }
    }
    return 0;
}

static int
check_table(const Elf *e, wide offset, wide count, wide entsize, wide minsize, const char *what)
{
    if (count && entsize != minsize) {
        refuse("not a valid ELF file (%s entries of %llu bytes)", what,
               (unsigned long long)entsize);
        return -1;
    }
    if (count && offset + count * entsize > e->size) {
        refuse("truncated: the %s table ends past the end of the file (%llu bytes)", what,
               (unsigned long long)e->size);
        return -1;
    }
    return 0;
}

static int
check_segments(Elf *e)
{
    int loads = 0, dynamic = 0, have_end = 0;
    wide end = 0;
    for (Py_ssize_t i = 0; i < e->nsegments; i++)
        loads += e->segments[i].type == PT_LOAD;
    if (!loads) {
        refuse("not a loadable object (no PT_LOAD segment)");
        return -1;
    }
    for (Py_ssize_t i = 0; i < e->nsegments; i++) {
        const Segment *s = &e->segments[i];
        int load = s->type == PT_LOAD;
        if ((load || s->type == PT_DYNAMIC || s->type == PT_TLS)
            && s->offset + s->filesz > e->size) {
            char end[48];
            refuse("truncated: a segment ends at byte %s, the file has %llu",
                   decimal(s->offset + s->filesz, end), (unsigned long long)e->size);
            return -1;
        }
        if (load || s->type == PT_TLS) {
            if (s->filesz > s->memsz || (load && (s->flags & PF_X) && s->filesz != s->memsz)) {
                refuse("corrupt program header: a segment's file and memory sizes do not fit "
                       "(larger in the file, or code not all in the file)");
                return -1;
            }
            if (s->align & (s->align - 1)) {
                refuse("corrupt program header: an alignment is not a power of two");
                return -1;
            }
        }
        if (load) {
            if (!(s->flags & PF_R)) {  /* the loader reads its tables from these pages */
                refuse("corrupt program header: a loadable segment is not readable");
                return -1;
            }
            /* A power of two (checked above): congruent when the low bits agree. */
            if (s->align > 1 && (s->vaddr & (s->align - 1)) != (s->offset & (s->align - 1))) {
                refuse("corrupt program header: a segment's address and offset are not "
                       "congruent");
                return -1;
            }
            if ((have_end && s->vaddr < end) || s->vaddr + s->memsz > MAX_IMAGE) {
                refuse("corrupt program header: segments overlap, are out of order or too "
                       "large");
                return -1;
            }
            end = s->vaddr + s->memsz;
            have_end = 1;
        }
        if ((s->type == PT_DYNAMIC || s->type == PT_GNU_RELRO || s->type == PT_GNU_EH_FRAME)
            && !mapped(e, is_load, s->vaddr, s->memsz)) {
            refuse("corrupt program header: a segment lies outside the loaded image");
            return -1;
        }
        dynamic |= s->type == PT_DYNAMIC;
    }
    if (!dynamic) {
        refuse("not a shared object (no dynamic section)");
        return -1;
    }
    return 0;
}

static int
check_relocations(const Elf *e)
{
    /* (table, size, entry size or -1) for DT_RELA, DT_REL, DT_JMPREL. */
    static const int tables[3][3] = {
        {T_RELA, T_RELASZ, T_RELAENT}, {T_REL, T_RELSZ, T_RELENT}, {T_JMPREL, T_PLTRELSZ, -1},
    };
    wide word = e->wide64 ? 8 : 4;
    Py_ssize_t writable = 0;
    for (Py_ssize_t i = 0; i < e->nsegments; i++)
        writable += is_writable(&e->segments[i]);
    for (int t = 0; t < 3; t++) {
        int table = tables[t][0], size = tables[t][1], entsize_tag = tables[t][2];
        if (!e->present[table] || !e->present[size] || !e->value[size])
            continue;
        int rela = table == T_RELA
                   || (table == T_JMPREL && e->present[T_PLTREL] && e->value[T_PLTREL] == 7);
        wide entsize = entsize_tag >= 0 && e->present[entsize_tag] ? e->value[entsize_tag] : 0;
        if (!entsize)
            entsize = (rela ? 3 : 2) * word;
        wide start;
        if (!file_offset(e, e->value[table], e->value[size], &start) || entsize < word) {
            refuse("corrupt dynamic section: a relocation table is not in the file");
            return -1;
        }
        wide count = e->value[size] / entsize;
        if (!count)
            continue;
        /* Every entry lies in the file: start + count * entsize <= start + size. */
        wide low = rdword(e, start), high = low;
        for (wide i = 0; i < count; i++) {
            wide target = rdword(e, start + i * entsize);
            if (writable == 1) {  /* the usual case: one RW segment, check the extremes */
                low = target < low ? target : low;
                high = target > high ? target : high;
            }
            else if (!mapped(e, is_writable, target, 1)) {
                refuse("corrupt relocation: it would write outside the writable segments");
                return -1;
            }
        }
        if (writable == 1
            && !(mapped(e, is_writable, low, 1) && mapped(e, is_writable, high, 1))) {
            refuse("corrupt relocation: it would write outside the writable segments");
            return -1;
        }
    }
    return 0;
}

/* One NUL-terminated string of the string table at [table + offset, limit), as bytes. */
static PyObject *
string_at(const Elf *e, wide table, wide offset, wide limit)
{
    wide start = table + offset;
    const unsigned char *begin = e->data + (size_t)start;
    const unsigned char *nul = memchr(begin, 0, (size_t)(limit - start));
    return PyBytes_FromStringAndSize((const char *)begin,
                                     nul ? nul - begin : (Py_ssize_t)(limit - start));
}

/* The dynamic section: every address and string offset it gives lies inside the image.
 * Fills lists of the DT_NEEDED, DT_RPATH and DT_RUNPATH strings (see the file comment). */
static int
check_dynamic(Elf *e, PyObject *needed, PyObject *rpath, PyObject *runpath)
{
    const Segment *dyn = NULL, *backing = NULL;
    for (Py_ssize_t i = 0; i < e->nsegments && !dyn; i++)
        if (e->segments[i].type == PT_DYNAMIC)
            dyn = &e->segments[i];
    for (Py_ssize_t i = 0; i < e->nsegments && !backing; i++) {
        const Segment *s = &e->segments[i];
        if (s->type == PT_LOAD && s->vaddr <= dyn->vaddr
            && dyn->vaddr + dyn->filesz <= s->vaddr + s->filesz)
            backing = s;
    }
    /* dyn->offset - backing->offset == dyn->vaddr - backing->vaddr, without going negative */
    if (!backing || dyn->offset + backing->vaddr != dyn->vaddr + backing->offset) {
        refuse("corrupt program header: the dynamic section is not where it is loaded");
        return -1;
    }
    wide entry = e->wide64 ? 16 : 8, length = dyn->filesz - dyn->filesz % entry;
    /* Strings seen: (tag, string table offset); at most as many as entries. */
    Py_ssize_t nstrings = 0, room = (Py_ssize_t)(length / entry);
    wide *strings = PyMem_Malloc(sizeof(wide) * 2 * (room ? room : 1));
    if (strings == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    int ended = 0;
    for (wide at = dyn->offset; at < dyn->offset + length; at += entry) {
        int64_t tag = e->wide64 ? (int64_t)rd64(e, at) : (int32_t)rd32(e, at);
        wide value = e->wide64 ? rd64(e, at + 8) : rd32(e, at + 4);
        if (tag == 0) {
            ended = 1;
            break;
        }
        if (tag == 1 || tag == 14 || tag == 15 || tag == 29) {  /* NEEDED SONAME RPATH RUNPATH */
            strings[2 * nstrings] = (wide)tag;
            strings[2 * nstrings + 1] = value;
            nstrings++;
            continue;
        }
        for (int t = 0; t < T_COUNT; t++)
            if (TAGS[t] == tag) {
                e->value[t] = value;
                e->present[t] = 1;
            }
    }
    int status = -1;
    if (!ended) {
        refuse("corrupt dynamic section: no DT_NULL at its end");
        goto done;
    }
    for (size_t p = 0; p < sizeof POINTERS / sizeof POINTERS[0]; p++) {
        int tag = POINTERS[p].tag, size = POINTERS[p].size;
        if (!e->present[tag])
            continue;
        wide extent = size >= 0 && e->present[size] ? e->value[size] : 1;
        if (!mapped(e, is_load, e->value[tag], extent ? extent : 1)) {
            refuse("corrupt dynamic section: %s points outside the image", POINTERS[p].name);
            goto done;
        }
    }
    if (e->present[T_FLAGS_1] && (e->value[T_FLAGS_1] & DF_1_PIE)) {
        refuse("an executable (position-independent), not a shared object; link it with "
               "-shared");
        goto done;
    }
    /* What glibc takes for granted of the tables it walks (elf/get-dynamic-info.h asserts the
     * entry sizes: a wrong one ends the process with "Inconsistency detected by ld.so"; a
     * missing size or hash table is dereferenced as NULL; sizes without their table leave the
     * relocations undone, and the constructors run on unrelocated pointers). */
    wide word = e->wide64 ? 8 : 4;
    static const struct { int table, size, entsize, entry; const char *name; } TABLES[] = {
        {T_RELA, T_RELASZ, T_RELAENT, 3, "DT_RELA"},
        {T_REL, T_RELSZ, T_RELENT, 2, "DT_REL"},
        {T_JMPREL, T_PLTRELSZ, T_PLTREL, 0, "DT_JMPREL"},
        {T_INIT_ARRAY, T_INIT_ARRAYSZ, -1, 0, "DT_INIT_ARRAY"},
        {T_FINI_ARRAY, T_FINI_ARRAYSZ, -1, 0, "DT_FINI_ARRAY"},
        {T_PREINIT_ARRAY, T_PREINIT_ARRAYSZ, -1, 0, "DT_PREINIT_ARRAY"},
    };
    for (size_t t = 0; t < sizeof TABLES / sizeof TABLES[0]; t++) {
        int table = TABLES[t].table, size = TABLES[t].size, entsize = TABLES[t].entsize;
        int has_table = e->present[table], has_size = e->present[size];
        if (has_table && (!has_size || (entsize >= 0 && !e->present[entsize]))) {
            refuse("corrupt dynamic section: %s without its size", TABLES[t].name);
            goto done;
        }
        if (!has_table && has_size && e->value[size]) {
            refuse("corrupt dynamic section: a size without its table (%s)", TABLES[t].name);
            goto done;
        }
        if (has_table && TABLES[t].entry && e->value[entsize] != TABLES[t].entry * word) {
            refuse("corrupt dynamic section: %s entries are not the size of a relocation",
                   TABLES[t].name);
            goto done;
        }
    }
    if (e->present[T_PLTREL] && e->value[T_PLTREL] != 7 && e->value[T_PLTREL] != 17) {
        refuse("corrupt dynamic section: DT_PLTREL is neither DT_RELA nor DT_REL");
        goto done;
    }
    if (!e->present[T_HASH] && !e->present[T_GNU_HASH]) {
        refuse("corrupt dynamic section: no symbol hash table (DT_HASH, DT_GNU_HASH)");
        goto done;
    }
    if (!e->present[T_STRTAB] || !e->present[T_SYMTAB]) {
        refuse("corrupt dynamic section: no string or symbol table");
        goto done;
    }
    wide strsz = e->present[T_STRSZ] ? e->value[T_STRSZ] : 0;
    for (Py_ssize_t i = 0; i < nstrings; i++)
        if (strings[2 * i + 1] >= strsz) {
            refuse("corrupt dynamic section: a library name lies outside the string table");
            goto done;
        }
    int code = 0;
    for (Py_ssize_t i = 0; i < e->nsegments; i++)
        code |= is_code(&e->segments[i]);
    if (!code) {
        refuse("corrupt program header: no executable segment");
        goto done;
    }
    if (e->present[T_INIT] && !mapped(e, is_code, e->value[T_INIT], 1)) {
        refuse("corrupt dynamic section: DT_INIT is not in executable code");
        goto done;
    }
    if (e->present[T_FINI] && !mapped(e, is_code, e->value[T_FINI], 1)) {
        refuse("corrupt dynamic section: DT_FINI is not in executable code");
        goto done;
    }
    int textrel = e->present[T_TEXTREL]
                  || (e->present[T_FLAGS] && (e->value[T_FLAGS] & DF_TEXTREL));
    if (!textrel && check_relocations(e) < 0)
        goto done;
    /* The names are returned only when $ORIGIN is used (_origin.py), in a search path or in
     * a DT_NEEDED name; most libraries use it nowhere, and this runs on every reload. */
    if (nstrings) {
        wide table;
        if (!file_offset(e, e->value[T_STRTAB], strsz, &table)) {
            refuse("corrupt dynamic section: the string table is not in the file");
            goto done;
        }
        int origin = 0;
        for (Py_ssize_t i = 0; i < nstrings && !origin; i++) {
            wide start = table + strings[2 * i + 1], limit = table + strsz;
            const unsigned char *text = e->data + (size_t)start;
            const unsigned char *nul = memchr(text, 0, (size_t)(limit - start));
            size_t length = nul ? (size_t)(nul - text) : (size_t)(limit - start);
            origin = strings[2 * i] != 14 && memmem(text, length, "ORIGIN", 6) != NULL;
        }
        for (Py_ssize_t i = 0; i < nstrings; i++) {
            wide tag = strings[2 * i];
            if (tag == 14 || (tag == 1 && !origin))
                continue;
            PyObject *text = string_at(e, table, strings[2 * i + 1], table + strsz);
            if (text == NULL)
                goto done;
            PyObject *list = tag == 1 ? needed : tag == 15 ? rpath : runpath;
            int added = PyList_Append(list, text);
            Py_DECREF(text);
            if (added < 0)
                goto done;
        }
    }
    status = 0;
done:
    PyMem_Free(strings);
    return status;
}

/* The sections (when the file has them) say where the code and data really are: a loaded
 * section must sit in a segment that maps it from the same file offset. */
static int
check_sections(const Elf *e, wide shoff, wide shnum)
{
    wide entry = e->wide64 ? 64 : 40;
    for (wide i = 0; i < shnum; i++) {
        wide at = shoff + i * entry;
        uint32_t type = rd32(e, at + 4);
        wide flags = e->wide64 ? rd64(e, at + 8) : rd32(e, at + 8);
        wide addr = e->wide64 ? rd64(e, at + 16) : rd32(e, at + 12);
        wide offset = e->wide64 ? rd64(e, at + 24) : rd32(e, at + 16);
        wide size = e->wide64 ? rd64(e, at + 32) : rd32(e, at + 20);
        if (type == SHT_NOBITS)
            continue;
        if (offset + size > e->size) {
            char end[48];
            refuse("truncated: section %llu ends at byte %s, the file has %llu",
                   (unsigned long long)i, decimal(offset + size, end),
                   (unsigned long long)e->size);
            return -1;
        }
        if (!(flags & SHF_ALLOC) || !size)
            continue;
        int found = 0;
        for (Py_ssize_t s = 0; s < e->nsegments && !found; s++) {
            const Segment *g = &e->segments[s];
            if (g->type != PT_LOAD || !(g->vaddr <= addr && addr < g->vaddr + g->filesz))
                continue;
            /* g->vaddr - g->offset == addr - offset, without going negative */
            if (addr + size <= g->vaddr + g->filesz && g->vaddr + offset == addr + g->offset) {
                found = 1;
                continue;
            }
            refuse("corrupt headers: section %llu is not loaded from where the file has it",
                   (unsigned long long)i);
            return -1;
        }
        if (!found) {
            refuse("corrupt headers: section %llu lies outside the loaded segments",
                   (unsigned long long)i);
            return -1;
        }
    }
    return 0;
}

static PyObject *
range_or_none(const Segment *s)
{
    if (s == NULL)
        Py_RETURN_NONE;
    return Py_BuildValue("(KK)", (unsigned long long)s->vaddr,
                         (unsigned long long)(s->vaddr + s->memsz));
}

/* Those of `names` (a tuple of bytes) that may be symbols the file defines: whose text, with
 * its NUL, occurs in the dynamic string table.  A symbol's name is there, but the linker may
 * store it as the tail of a longer one, so this says "may"; dlsym says which are.  It spares
 * the reloader a dlsym for each hook a library does not define, the loader's costliest call
 * (a failed lookup walks every dependency, then formats an error). */
static PyObject *
maybe_defined(const Elf *e, PyObject *names)
{
    wide table = 0, strsz = e->present[T_STRSZ] ? e->value[T_STRSZ] : 0;
    int known = strsz > 0 && file_offset(e, e->value[T_STRTAB], strsz, &table);
    PyObject *found = PyList_New(0);
    for (Py_ssize_t i = 0; found != NULL && i < PyTuple_GET_SIZE(names); i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        if (!PyBytes_Check(name)) {
            PyErr_SetString(PyExc_TypeError, "check_elf: the names must be bytes");
            Py_CLEAR(found);
            break;
        }
        /* The NUL too: PyBytes keep one after their last byte. */
        size_t length = (size_t)PyBytes_GET_SIZE(name) + 1;
        if (known && !memmem(e->data + (size_t)table, (size_t)strsz, PyBytes_AS_STRING(name),
                             length))
            continue;
        if (PyList_Append(found, name) < 0)
            Py_CLEAR(found);
    }
    return found;
}

static PyObject *
check(Elf *e, int host_class, int host_data, unsigned host_machine, PyObject *names)
{
    const unsigned char *d = e->data;
    if (e->size == 0)
        return refuse("the file is empty (a writer may still be creating it)");
    if (e->size < 16 || memcmp(d, "\x7f" "ELF", 4) != 0)
        return refuse("not an ELF file (no ELF magic number at the start)");
    int ei_class = d[4], ei_data = d[5];
    if ((ei_class != 1 && ei_class != 2) || (ei_data != 1 && ei_data != 2))
        return refuse("not a valid ELF file (bad class or byte order)");
    if (ei_class != host_class)
        return refuse("wrong ELF class: %d-bit file, this process is %d-bit",
                      ei_class == 2 ? 64 : 32, host_class == 2 ? 64 : 32);
    if (ei_data != host_data)
        return refuse("wrong byte order for this machine");
    e->wide64 = ei_class == 2;
    wide ehsize = e->wide64 ? 64 : 52, phentry = e->wide64 ? 56 : 32;
    wide shentry = e->wide64 ? 64 : 40;
    if (e->size < ehsize)
        return refuse("truncated: %llu bytes is shorter than the ELF header",
                      (unsigned long long)e->size);
    unsigned type = rd16(e, 16), machine = rd16(e, 18);
    wide phoff = e->wide64 ? rd64(e, 32) : rd32(e, 28);
    wide shoff = e->wide64 ? rd64(e, 40) : rd32(e, 32);
    wide at = e->wide64 ? 54 : 42;
    wide phentsize = rd16(e, at), phnum = rd16(e, at + 2);
    wide shentsize = rd16(e, at + 4), shnum = rd16(e, at + 6);
    if (machine != host_machine) {
        char ours[32], theirs[32];
        return refuse("wrong architecture: built for %s, this process runs on %s",
                      machine_name(machine, theirs, sizeof theirs),
                      machine_name(host_machine, ours, sizeof ours));
    }
    if (type == ET_EXEC)
        return refuse("an executable, not a shared object (link it with -shared)");
    if (type != ET_DYN)
        return refuse("not a shared object (ELF type %u; link it with -shared)", type);
    if (check_table(e, phoff, phnum, phentsize, phentry, "program header") < 0
        || check_table(e, shoff, shnum, shentsize, shentry, "section header") < 0)
        return NULL;
    Segment *segments = PyMem_Calloc(phnum ? (size_t)phnum : 1, sizeof(Segment));
    if (segments == NULL)
        return PyErr_NoMemory();
    e->segments = segments;
    e->nsegments = (Py_ssize_t)phnum;
    for (wide i = 0; i < phnum; i++) {
        wide p = phoff + i * phentry;
        Segment *s = &segments[i];
        s->type = rd32(e, p);
        if (e->wide64) {
            s->flags = rd32(e, p + 4);
            s->offset = rd64(e, p + 8);
            s->vaddr = rd64(e, p + 16);
            s->filesz = rd64(e, p + 32);
            s->memsz = rd64(e, p + 40);
            s->align = rd64(e, p + 48);
        }
        else {
            s->offset = rd32(e, p + 4);
            s->vaddr = rd32(e, p + 8);
            s->filesz = rd32(e, p + 16);
            s->memsz = rd32(e, p + 20);
            s->flags = rd32(e, p + 24);
            s->align = rd32(e, p + 28);
        }
    }
    PyObject *result = NULL, *code = NULL, *relro = NULL, *defined = NULL;
    PyObject *needed = PyList_New(0), *rpath = PyList_New(0), *runpath = PyList_New(0);
    if (needed == NULL || rpath == NULL || runpath == NULL)
        goto done;
    if (check_segments(e) < 0 || check_dynamic(e, needed, rpath, runpath) < 0
        || check_sections(e, shoff, shnum) < 0)
        goto done;
    code = PyList_New(0);
    if (code == NULL)
        goto done;
    const Segment *relro_segment = NULL;
    for (Py_ssize_t i = 0; i < e->nsegments; i++) {
        const Segment *s = &segments[i];
        if (is_code(s)) {
            PyObject *range = range_or_none(s);
            if (range == NULL || PyList_Append(code, range) < 0) {
                Py_XDECREF(range);
                goto done;
            }
            Py_DECREF(range);
        }
        if (s->type == PT_GNU_RELRO && relro_segment == NULL)
            relro_segment = s;
    }
    relro = range_or_none(relro_segment);
    defined = relro != NULL ? maybe_defined(e, names) : NULL;
    if (defined != NULL)
        result = PyTuple_Pack(6, code, relro, needed, rpath, runpath, defined);
done:
    PyMem_Free(segments);
    e->segments = NULL;
    Py_XDECREF(code);
    Py_XDECREF(relro);
    Py_XDECREF(defined);
    Py_XDECREF(needed);
    Py_XDECREF(rpath);
    Py_XDECREF(runpath);
    return result;
}

PyObject *
hotr_check_elf(PyObject *module, PyObject *args)
{
    Py_buffer view;
    int host_class, host_data;
    unsigned int host_machine;
    PyObject *names;
    if (!PyArg_ParseTuple(args, "y*iiIO!", &view, &host_class, &host_data, &host_machine,
                          &PyTuple_Type, &names))
        return NULL;
    Elf e;
    memset(&e, 0, sizeof e);
    e.data = view.buf;
    e.size = (wide)view.len;
    PyObject *result = check(&e, host_class, host_data, host_machine, names);
    PyBuffer_Release(&view);
    return result;
}

PyObject *
hotr_check_elf_file(PyObject *module, PyObject *args)
{
    /* check_elf_file(path, host_class, host_data, host_machine, names, start): check_elf's
     * result for the file at `path`, mapped here for the check, its first `start` bytes and
     * its size.
     * For large libraries: the mapping and its end cost a Python open() and mmap() each. */
    PyObject *path = NULL, *names;
    int host_class, host_data;
    unsigned int host_machine;
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "O&iiIO!n", PyUnicode_FSConverter, &path, &host_class,
                          &host_data, &host_machine, &PyTuple_Type, &names, &start))
        return NULL;
    int fd = open(PyBytes_AS_STRING(path), O_RDONLY | O_CLOEXEC);
    struct stat info;
    void *image = MAP_FAILED;
    int empty = 0;
    if (fd >= 0 && fstat(fd, &info) == 0) {
        empty = info.st_size == 0;
        if (!empty)
            image = mmap(NULL, (size_t)info.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    }
    if (image == MAP_FAILED) {
        if (empty) /* a refusal, as check_elf's are: the file may have been cut meanwhile */
            PyErr_SetString(PyExc_ValueError,
                            "the file is empty (a writer may still be creating it)");
        else
            PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        if (fd >= 0)
            close(fd);
        Py_DECREF(path);
        return NULL;
    }
    close(fd);
    Py_DECREF(path);
    Elf e;
    memset(&e, 0, sizeof e);
    e.data = image;
    e.size = (wide)info.st_size;
    PyObject *checked = check(&e, host_class, host_data, host_machine, names);
    PyObject *result = NULL;
    if (checked != NULL) {
        Py_ssize_t length = start < (Py_ssize_t)info.st_size ? start : (Py_ssize_t)info.st_size;
        result = Py_BuildValue("(Ny#n)", checked, (const char *)image, length,
                               (Py_ssize_t)info.st_size);
    }
    munmap(image, (size_t)info.st_size);
    return result;
}
