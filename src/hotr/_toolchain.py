"""What hotr knows of compilers: which one builds a source, what identifies it, and which
flags belong to compiling and which to linking.

One list of user flags is split so that each step gets what it understands: ``-l``, ``-L``,
``-Wl,...``, ``-Xlinker``, ``-shared``, ``-static...``, ``-rdynamic``, ``-nostdlib``,
``-fuse-ld=``, ``-u``, ``-z`` and library or object files (``.a``, ``.so``, ``.o``) go to the
link step only; ``-pthread``, ``-fopenmp``, ``-fsanitize=...``, ``-flto...``, ``--coverage``,
``-fprofile-...``, ``-m...`` (target), ``--sysroot`` and ``-B`` go to both; everything else
(``-O2``, ``-g``, ``-D``, ``-I``, ``-std=``, ``-W...``) to compiling only.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence

C_SUFFIXES = (".c",)
CXX_SUFFIXES = (".cc", ".cpp", ".cxx", ".C", ".c++")

# Options whose value is the next argument ("-I dir"), by the step they belong to.
_COMPILE_PAIRS = frozenset(
    {"-I", "-D", "-U", "-include", "-imacros", "-isystem", "-iquote", "-idirafter", "-x"}
)
_LINK_PAIRS = frozenset({"-l", "-L", "-Xlinker", "-T", "-u", "-z"})
_BOTH_PAIRS = frozenset({"--sysroot", "-B"})
_LINK_PREFIXES = ("-l", "-L", "-Wl,", "-static", "-fuse-ld=", "-T")
_LINK_EXACT = frozenset({"-shared", "-rdynamic", "-nostdlib", "-nodefaultlibs", "-nostartfiles"})
_BOTH_PREFIXES = ("-fsanitize", "-flto", "-fprofile-", "-m", "--sysroot=", "-B", "-fno-lto")
_BOTH_EXACT = frozenset({"-pthread", "-fopenmp", "--coverage", "-fno-sanitize-recover"})
_LINK_FILES = (".a", ".so", ".o")


def is_cxx(path: str) -> bool:
    """True if `path` names a C++ source (built and linked with the C++ compiler)."""
    return path.endswith(CXX_SUFFIXES)


def split_flags(flags: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split one list of user flags into (compile flags, link flags); see the module docstring.
    A flag that belongs to both steps is in both lists."""
    compile_flags: list[str] = []
    link_flags: list[str] = []
    words = iter(flags)
    for word in words:
        if word in _COMPILE_PAIRS or word in _LINK_PAIRS or word in _BOTH_PAIRS:
            group = [word, next(words, "")]
            if word in _COMPILE_PAIRS:
                compile_flags += group
            elif word in _LINK_PAIRS:
                link_flags += group
            else:
                compile_flags += group
                link_flags += group
        elif _is_link_only(word):
            link_flags.append(word)
        elif word in _BOTH_EXACT or word.startswith(_BOTH_PREFIXES):
            compile_flags.append(word)
            link_flags.append(word)
        else:
            compile_flags.append(word)
    return compile_flags, link_flags


def _is_link_only(word: str) -> bool:
    if word in _LINK_EXACT or word.startswith(_LINK_PREFIXES):
        return True
    return not word.startswith("-") and (word.endswith(_LINK_FILES) or ".so." in word)


def c_compiler(cc: str | None) -> list[str]:
    """The C compiler's argv: `cc`, else ``$CC``, else ``cc``."""
    return shlex.split(cc or os.environ.get("CC") or "cc")


def cxx_compiler(cxx: str | None) -> list[str]:
    """The C++ compiler's argv: `cxx`, else ``$CXX``, else ``c++``."""
    return shlex.split(cxx or os.environ.get("CXX") or "c++")


def is_tcc(compiler: Sequence[str]) -> bool:
    """True for tcc, which wants ``-MD`` for dependency output and knows no colour flag."""
    return os.path.basename(compiler[0]).startswith("tcc")


def identity(compiler: Sequence[str]) -> str:
    """What identifies a compiler in cache keys: its resolved path, size and modification
    time (an upgrade changes them), and the argv words.  A wrapper script is identified as
    itself: what it calls is not seen."""
    found = shutil.which(compiler[0])
    if found is None:
        return shlex.join(compiler)
    real = os.path.realpath(found)
    try:
        info = os.stat(real)
    except OSError:
        return shlex.join(compiler)
    return f"{real}\0{info.st_size}\0{info.st_mtime_ns}\0{shlex.join(compiler)}"


def is_gcc(compiler: Sequence[str]) -> bool:
    """True if the compiler is GCC (g++ needs ``-fno-gnu-unique`` for reloads to work)."""
    return _says_gcc(identity(compiler), tuple(compiler))


@functools.lru_cache(maxsize=16)
def _says_gcc(_identity: str, compiler: tuple[str, ...]) -> bool:
    try:
        out = subprocess.run(
            [*compiler, "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=30,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "clang" not in out and ("Free Software Foundation" in out or "g++" in out)
