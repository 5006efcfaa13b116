"""What hotr knows of compilers: which one builds a source, what identifies it, and which
flags belong to compiling and which to linking.

One list of user flags is split so that each step gets what it understands: ``-l``, ``-L``,
``-Wl,...``, ``-Xlinker``, ``-shared``, ``-static...``, ``-rdynamic``, ``-nostdlib``,
``-fuse-ld=``, ``-u``, ``-z`` and library or object files (``.a``, ``.so``, ``.o``) go to the
link step only; ``-pthread``, ``-fopenmp``, ``-fsanitize=...``, ``-flto...``, ``--coverage``,
``-fprofile-...``, ``-m...`` (target), ``--sysroot`` and ``-B`` go to both; everything else
(``-O2``, ``-g``, ``-D``, ``-I``, ``-std=``, ``-W...``) to compiling only.

For extension modules: Python's and pybind11's header directories (given with ``-isystem``, so
that dependency output leaves them out and they are not watched), a pybind11 type registry of
each build's own, and the Cython run that turns a ``.pyx`` into C.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
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
_registries = itertools.count(1)  # pybind11 type registries handed out by this process


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


# Programs that run the compiler named after them (``ccache gcc``, ``distcc tcc``): hotr
# looks through them to the compiler.
_WRAPPERS = frozenset({"ccache", "sccache", "distcc", "icecc", "buildcache"})


def unwrapped(compiler: Sequence[str]) -> Sequence[str]:
    """The compiler's argv without the wrappers in front (``ccache tcc -g`` -> ``tcc -g``)."""
    start = 0
    while start < len(compiler) - 1 and os.path.basename(compiler[start]) in _WRAPPERS:
        start += 1
    return compiler[start:]


def is_tcc(compiler: Sequence[str]) -> bool:
    """True for tcc, which wants ``-MD`` for dependency output and has no ``-M -MG``."""
    return os.path.basename(unwrapped(compiler)[0]).startswith("tcc")


# How compilers say that an #include names no file: gcc gives strerror(ENOENT) ("fatal error:
# params.h: No such file or directory"), clang "fatal error: 'params.h' file not found".
_NO_SUCH_FILE = ("No such file or directory", "file not found")


def may_want_header(compiler: Sequence[str], diagnostics: str) -> bool:
    """True if a compile that failed with `diagnostics` may have failed for want of a header,
    so that asking the compiler which headers are missing (``-M -MG``) is worth its run: the
    diagnostics say a file was not found, or they may be in a language other than English.
    Never for tcc, which has no ``-MG``."""
    if is_tcc(compiler):
        return False
    return any(words in diagnostics for words in _NO_SUCH_FILE) or not _english_messages()


def _english_messages() -> bool:
    """True if the compilers hotr starts write their messages in English: gettext (and glibc's
    strerror) follow ``$LANGUAGE`` under any locale but C, then ``$LC_ALL``, ``$LC_MESSAGES``,
    ``$LANG``."""
    env = os.environ
    locale = env.get("LC_ALL") or env.get("LC_MESSAGES") or env.get("LANG") or "C"
    if locale in ("C", "POSIX") or locale.startswith("C."):
        return True
    languages = env.get("LANGUAGE") or locale
    return all(name.startswith("en") for name in languages.split(":") if name)


def identity(compiler: Sequence[str]) -> str:
    """What identifies a compiler in cache keys: its resolved path, size and modification
    time (an upgrade changes them), and the argv words.  A wrapper (ccache...) is seen
    through to the compiler it runs; a wrapper script is identified as itself: what it
    calls is not seen."""
    found = shutil.which(unwrapped(compiler)[0])
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
    return _says_gcc(identity(compiler), tuple(unwrapped(compiler)))


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


def python_flags() -> list[str]:
    """Flags that put Python's headers (``Python.h``) on an extension module's include path."""
    paths = sysconfig.get_paths()
    found = dict.fromkeys(paths[key] for key in ("include", "platinclude") if paths.get(key))
    return [flag for path in found for flag in ("-isystem", path)]


def pybind11_include() -> str | None:
    """pybind11's header directory, or None when pybind11 is not installed."""
    if importlib.util.find_spec("pybind11") is None:
        return None
    import pybind11

    include: str = pybind11.get_include()
    return include


def pybind11_registry() -> str:
    """A ``-DPYBIND11_COMPILER_TYPE`` no other build of this process used: pybind11 keeps one
    type registry per such name in the interpreter, and refuses to register a class twice, so
    each version of a module needs a registry of its own (and all its objects the same one)."""
    return f'-DPYBIND11_COMPILER_TYPE="_hotr_{os.getpid()}_{next(_registries)}"'


def cython_argv(source: str, output: str) -> list[str] | None:
    """The run of Cython that writes the C of `source` (a ``.pyx``) to `output` and the files it
    read to ``<output>.dep``; None when Cython is not installed."""
    if importlib.util.find_spec("Cython") is None:
        return None
    return [sys.executable, "-m", "cython", "-3", "--depfile", source, "-o", output]


def cython_identity() -> str:
    """What identifies the Cython that translates ``.pyx`` sources, in cache keys."""
    import importlib.metadata  # only module builds of .pyx need it

    try:
        version = importlib.metadata.version("Cython")
    except importlib.metadata.PackageNotFoundError:
        version = "none"
    return f"{sys.executable}\0cython {version}"


def cython_includes() -> str | None:
    """The directory of Cython's own ``.pxd`` files (``libc/math.pxd``): not watched."""
    spec = importlib.util.find_spec("Cython")
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(next(iter(spec.submodule_search_locations)), "Includes")
