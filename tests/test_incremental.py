"""Builds of many sources with the real compilers: only what changed is compiled, a bounded
number of compilers at once, objects cached across processes, flags split between compiling and
linking, C++.  A compiler wrapper logs every run it makes, so the tests count them."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import reload_next, run_python

import hotr


def save(path: Path, text: str) -> None:
    """Save as editors do: write a temporary file, rename it over the original."""
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text)
    os.rename(tmp, path)


class Project:
    """`count` C sources ``s0.c``... each with ``int f<i>(void)``; s0 and s1 include
    ``common.h``.  `cc` is a wrapper around the real compiler that logs each run."""

    def __init__(self, root: Path, count: int, real: str = "gcc", delay: float = 0) -> None:
        self.root = root
        self.log = root / "cc.log"
        self.cc = root / f"{real}-logging"  # hotr knows tcc by its name
        pause = f"sleep {delay}\n" if delay else ""
        self.cc.write_text(
            "#!/bin/sh\n"
            f'echo "start $$ $*" >> "{self.log}"\n'
            f"{pause}"
            f'{real} "$@"; status=$?\n'
            f'echo "end $$" >> "{self.log}"\n'
            "exit $status\n"
        )
        self.cc.chmod(0o755)
        (root / "common.h").write_text("#define BASE 100\n")
        self.sources = []
        for i in range(count):
            path = root / f"s{i}.c"
            path.write_text(self.text(i, i))
            self.sources.append(path)
        past = time.time() - 60  # written a while ago, as a project's files usually are
        for path in [*self.sources, root / "common.h"]:
            os.utime(path, (past, past))

    @staticmethod
    def text(i: int, value: int) -> str:
        include = '#include "common.h"\n' if i < 2 else "#define BASE 0\n"
        return f"{include}int f{i}(void) {{ return BASE + {value}; }}\n"

    def runs(self) -> list[list[str]]:
        """The argv of each compiler run so far, but preprocessing (and forget them)."""
        if not self.log.exists():
            return []
        lines = self.log.read_text().splitlines()
        self.log.unlink()
        runs = [line.split()[2:] for line in lines if line.startswith("start ")]
        return [argv for argv in runs if "-E" not in argv]  # not the prototypes' preprocessor

    def compiled(self) -> list[str]:
        """The sources compiled since the last call, sorted; links are counted as "link"."""
        found = []
        for argv in self.runs():
            if "-c" in argv:
                found += [os.path.basename(a) for a in argv if a.endswith(".c")]
            else:
                found.append("link")
        return sorted(found)

    def most_at_once(self) -> int:
        """The largest number of compiler runs that overlapped in time."""
        running = most = 0
        for line in self.log.read_text().splitlines():
            running += 1 if line.startswith("start ") else -1
            most = max(most, running)
        return most


@pytest.fixture
def private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOTR_PRIVATE_DIR", str(tmp_path / "private"))
    return tmp_path


def test_a_save_compiles_only_that_source_then_links(private: Path) -> None:
    p = Project(private, 6)
    with hotr.HotReloader(p.sources, cc=str(p.cc)) as r:
        lib = r.update()
        assert p.compiled() == sorted([f"s{i}.c" for i in range(6)] + ["link"])
        save(p.sources[4], p.text(4, 40))
        reload_next(r)
        assert lib.f4() == 40 and lib.f5() == 5
        assert p.compiled() == ["link", "s4.c"]


def test_a_header_rebuilds_exactly_the_sources_that_include_it(private: Path) -> None:
    p = Project(private, 5)
    with hotr.HotReloader(p.sources, cc=str(p.cc)) as r:
        lib = r.update()
        p.runs()
        save(private / "common.h", "#define BASE 200\n")
        reload_next(r)
        assert (lib.f0(), lib.f1(), lib.f2()) == (200, 201, 2)
        assert p.compiled() == ["link", "s0.c", "s1.c"]


def test_an_unchanged_project_in_a_second_process_links_without_compiling(private: Path) -> None:
    p = Project(private, 4)
    code = f"""
        import hotr
        lib = hotr.load({[str(s) for s in p.sources]!r}, cc={str(p.cc)!r})
        print(lib.f0() + lib.f3())
    """
    assert run_python(code).stdout.split() == ["103"]
    assert p.compiled() == ["link", "s0.c", "s1.c", "s2.c", "s3.c"]
    assert run_python(code).stdout.split() == ["103"]
    assert p.compiled() == ["link"]
    save(private / "common.h", "#define BASE 1\n")  # a header changed while nobody ran
    assert run_python(code).stdout.split() == ["4"]
    assert p.compiled() == ["link", "s0.c", "s1.c"]


def test_a_process_forked_after_a_build_stores_its_own_builds_in_the_cache(private: Path) -> None:
    p = Project(private, 2)
    sources = [str(s) for s in p.sources]
    code = f"""
        import os, sys, hotr
        with hotr.HotReloader({sources!r}, cc={str(p.cc)!r}) as r:
            r.update()  # its object is stored by the cache's thread, in this process only
        pid = os.fork()
        if pid == 0:
            tmp = {str(p.sources[1])!r} + ".swp"
            with open(tmp, "w") as f:
                f.write({p.text(1, 7)!r})
            os.rename(tmp, {str(p.sources[1])!r})
            with hotr.HotReloader({sources!r}, cc={str(p.cc)!r}) as r:
                print(r.update().f1())
            sys.exit(0)  # the cache's store is waited for at exit
        assert os.waitpid(pid, 0)[1] == 0
    """
    assert run_python(code).stdout.split() == ["107"]
    assert p.compiled() == ["link", "link", "s0.c", "s1.c", "s1.c"]
    again = f"""
        import hotr
        print(hotr.load({sources!r}, cc={str(p.cc)!r}).f1())
    """
    assert run_python(again).stdout.split() == ["107"]
    assert p.compiled() == ["link"]  # the child's s1.c came from the cache


def test_a_header_that_shadows_another_is_not_mistaken_for_it_in_the_cache(private: Path) -> None:
    # s0.c includes "common.h" from inc/ (-Iinc); a common.h put beside s0.c comes first on
    # the search path: a later process must compile with it, not take the old object.
    p = Project(private, 2)
    (private / "inc").mkdir()
    os.rename(private / "common.h", private / "inc" / "common.h")
    code = f"""
        import hotr
        lib = hotr.load({[str(s) for s in p.sources]!r}, cc={str(p.cc)!r},
                        compile_flags=["-I{private / "inc"}"])
        print(lib.f0())
    """
    assert run_python(code).stdout.split() == ["100"]
    (private / "common.h").write_text("#define BASE 900\n")
    assert run_python(code).stdout.split() == ["900"]


def test_a_header_that_comes_to_shadow_another_while_running_is_not_mistaken_for_it(
    private: Path,
) -> None:
    # As above, in one process, through two -I directories: hotr keeps each include
    # directory's listing while the directory is unchanged, and must see a header added to it.
    p = Project(private, 2)
    (private / "inc").mkdir()
    (private / "first").mkdir()
    os.rename(private / "common.h", private / "inc" / "common.h")
    time.sleep(0.05)  # the directories' times are past the clock's tick: listings are kept
    flags = [f"-I{private / 'first'}", f"-I{private / 'inc'}"]
    with hotr.HotReloader(p.sources, cc=str(p.cc), compile_flags=flags, debounce=0) as r:
        lib = r.update()
        save(p.sources[0], p.text(0, 1))
        assert reload_next(r).f0() == 101
        (private / "first" / "common.h").write_text("#define BASE 900\n")
        save(p.sources[0], p.text(0, 0))  # the first build's source: its object is cached
        assert reload_next(r).f0() == 900 and lib.f0() == 900


def test_two_processes_building_the_same_project_at_once(private: Path) -> None:
    p = Project(private, 6, delay=0.05)
    code = f"""
        import hotr
        lib = hotr.load({[str(s) for s in p.sources]!r}, cc={str(p.cc)!r})
        print(sum(getattr(lib, f"f{{i}}")() for i in range(6)))
    """
    env = {**os.environ}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code.replace("\n        ", "\n")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [o.split()[-1] for o in outputs] == ["215", "215"], outputs
    p.runs()
    assert run_python(code).stdout.split() == ["215"]
    assert p.compiled() == ["link"]


def test_at_most_jobs_compilers_at_once_first_build_too(private: Path) -> None:
    p = Project(private, 6, delay=0.3)
    with hotr.HotReloader(p.sources, cc=str(p.cc), jobs=3) as r:
        r.update()
        assert p.most_at_once() == 3


def test_by_default_at_most_one_compiler_per_cpu(private: Path) -> None:
    p = Project(private, 2 * (os.cpu_count() or 1) + 1, delay=0.1)
    with hotr.HotReloader(p.sources, cc=str(p.cc)) as r:
        r.update()
        assert 1 <= p.most_at_once() <= (os.cpu_count() or 1)


def test_a_compile_error_in_one_source_shows_it_once_and_keeps_the_old_version(
    private: Path,
) -> None:
    p = Project(private, 4)
    with hotr.HotReloader(p.sources, cc=str(p.cc)) as r:
        lib = r.update()
        p.runs()
        save(p.sources[2], "int f2(void) { return 1 +; }\n")
        assert r.watch_for_changes(timeout=5) == 1
        with pytest.raises(hotr.BuildError) as info:
            r.update()
        diagnostics = info.value.diagnostics
        assert diagnostics.count(f"{p.sources[2]}:1:") == 1, diagnostics
        assert "s0.c" not in diagnostics and "s3.c" not in diagnostics
        assert p.compiled() == ["s2.c"]  # no link of a library that cannot be whole
        assert lib.f2() == 2 and r.version == 1
        save(p.sources[2], p.text(2, 22))
        reload_next(r)
        assert lib.f2() == 22
        assert p.compiled() == ["link", "s2.c"]


def test_errors_in_two_sources_show_both(private: Path) -> None:
    p = Project(private, 3)
    with hotr.HotReloader(p.sources, cc=str(p.cc)) as r:
        r.update()
        save(p.sources[0], "int f0(void) { return 1 +; }\n")
        save(p.sources[2], "int f2(void) { return 2 +; }\n")
        while r.watch_for_changes(timeout=1):
            with pytest.raises(hotr.BuildError) as info:
                r.update()
        for source in (p.sources[0], p.sources[2]):
            assert info.value.diagnostics.count(f"{source}:1:") == 1


def test_a_removed_header_is_never_built_around(private: Path) -> None:
    p = Project(private, 3)
    extra = private / "extra.h"
    extra.write_text("#define EXTRA 7\n")
    save(p.sources[2], '#include "extra.h"\nint f2(void) { return EXTRA; }\n')
    with hotr.HotReloader(p.sources, cc=str(p.cc)) as r:
        lib = r.update()
        assert lib.f2() == 7
        extra.unlink()  # a removal alone is no change (linkers do it); then a save comes
        save(p.sources[0], p.text(0, 5))
        assert r.watch_for_changes(timeout=5) == 1
        with pytest.raises(hotr.BuildError, match=r"extra\.h"):
            r.update()
        assert lib.f2() == 7
        p.runs()
        save(p.sources[2], "int f2(void) { return 8; }\n")  # the include goes too
        reload_next(r)
        assert lib.f2() == 8
        assert p.compiled() == ["link", "s2.c"]


@pytest.mark.parametrize("count", [1, 3])
def test_a_missing_header_created_after_the_failed_build_builds_again(
    private: Path, count: int
) -> None:
    p = Project(private, count)
    (private / "inc").mkdir()
    with hotr.HotReloader(p.sources, cc=str(p.cc), flags=[f"-I{private / 'inc'}"]) as r:
        lib = r.update()
        save(p.sources[0], '#include "params.h"\nint f0(void) { return GAIN; }\n')
        assert r.watch_for_changes(timeout=5) == 1
        with pytest.raises(hotr.BuildError, match=r"params\.h"):
            r.update()
        (private / "inc" / "params.h").write_text("#define GAIN 9\n")  # in an -I directory
        assert r.watch_for_changes(timeout=5) == 1, "creating the header was not a change"
        r.update()
        assert lib.f0() == 9 and r.version == 2


@pytest.mark.parametrize("compiler", ["gcc", "tcc"])
def test_a_syntax_error_costs_no_extra_compiler_run(
    private: Path, monkeypatch: pytest.MonkeyPatch, compiler: str
) -> None:
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} is not installed")
    monkeypatch.setenv("LC_ALL", "C")  # messages hotr can read: no look for a header just in case
    p = Project(private, 1, real=compiler)
    with hotr.HotReloader(p.sources, cc=str(p.cc), prototypes=False) as r:
        r.update()
        p.log.unlink()
        save(p.sources[0], "int f0(void) { return 1 +; }\n")
        assert r.watch_for_changes(timeout=5) == 1
        with pytest.raises(hotr.BuildError):
            r.update()
        starts = [line for line in p.log.read_text().splitlines() if line.startswith("start ")]
        assert len(starts) == 1, starts  # the compile, and no -M -MG run after it


def test_a_removed_source_is_a_clear_error_and_the_old_version_stays(private: Path) -> None:
    p = Project(private, 3)
    with hotr.HotReloader(p.sources, cc=str(p.cc)) as r:
        lib = r.update()
        p.sources[2].unlink()
        save(p.sources[0], p.text(0, 5))
        assert r.watch_for_changes(timeout=5) == 1
        with pytest.raises(hotr.BuildError, match="source file was removed") as info:
            r.update()
        assert str(p.sources[2]) in str(info.value)
        assert lib.f2() == 2 and r.version == 1
        p.sources[2].write_text(p.text(2, 22))
        reload_next(r)
        assert lib.f2() == 22


def test_a_header_edited_while_it_is_compiled_is_never_cached_stale(private: Path) -> None:
    p = Project(private, 3)
    header = private / "common.h"
    # The compiler has read the header when a save replaces it, before the build ends.
    sneaky = private / "sneaky-cc"
    sneaky.write_text(
        "#!/bin/sh\n"
        'gcc "$@"; status=$?\n'
        f"if [ -e {private}/edit-now ]; then rm {private}/edit-now; "
        f"printf '#define BASE 500\\n' > {header}.new; mv {header}.new {header}; fi\n"
        "exit $status\n"
    )
    sneaky.chmod(0o755)
    with hotr.HotReloader(p.sources, cc=str(sneaky)) as r:
        lib = r.update()
        (private / "edit-now").touch()
        save(header, "#define BASE 300\n")
        deadline = time.monotonic() + 10
        while lib.f0() != 500:
            assert time.monotonic() < deadline, f"f0 is {lib.f0()}: built from a stale header"
            if r.watch_for_changes(timeout=1):
                r.update()
    with hotr.HotReloader(p.sources, cc=str(sneaky)) as again:  # from the cache now
        assert again.update().f1() == 501


def test_flags_are_split_between_compiling_and_linking(private: Path) -> None:
    p = Project(private, 2)
    save(p.sources[1], "#include <math.h>\nint f1(void) { return (int)sqrt(SQ); }\n")
    flags = ["-O2", "-DSQ=49.0", "-lm", "-Wl,--as-needed", "-pthread"]
    with hotr.HotReloader(p.sources, cc=str(p.cc), flags=flags) as r:
        assert r.update().f1() == 7
    runs = p.runs()
    compiles = [argv for argv in runs if "-c" in argv]
    (link,) = [argv for argv in runs if "-c" not in argv]
    for argv in compiles:
        assert {"-O2", "-DSQ=49.0", "-pthread"} <= set(argv)
        assert "-lm" not in argv and "-Wl,--as-needed" not in argv
    assert {"-lm", "-Wl,--as-needed", "-pthread"} <= set(link)
    assert "-DSQ=49.0" not in link


def test_explicit_compile_and_link_flags(private: Path) -> None:
    p = Project(private, 2)
    with hotr.HotReloader(
        p.sources, cc=str(p.cc), compile_flags=["-DBASE2=5"], link_flags=["-Wl,-z,now"]
    ) as r:
        r.update()
    runs = p.runs()
    assert all("-DBASE2=5" in a and "-Wl,-z,now" not in a for a in runs if "-c" in a)
    assert [a for a in runs if "-c" not in a and "-Wl,-z,now" in a and "-DBASE2=5" not in a]


@pytest.mark.parametrize("compiler", ["tcc", "clang"])
def test_other_compilers_with_several_sources_and_a_library(private: Path, compiler: str) -> None:
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} is not installed")
    p = Project(private, 3, real=compiler)
    save(p.sources[2], "#include <math.h>\nint f2(void) { return (int)sqrt(81.0); }\n")
    with hotr.HotReloader(p.sources, cc=str(p.cc), flags=["-lm"]) as r:
        lib = r.update()
        assert (lib.f0(), lib.f2()) == (100, 9)
        p.runs()
        save(private / "common.h", "#define BASE 1\n")
        reload_next(r)
        assert lib.f1() == 2
        assert p.compiled() == ["link", "s0.c", "s1.c"]


def test_the_cache_is_bounded(private: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = private / "small-cache"
    monkeypatch.setenv("HOTR_CACHE_DIR", str(cache))
    monkeypatch.setenv("HOTR_CACHE_SIZE", "40K")
    p = Project(private, 8)
    for path in p.sources:  # objects of about 8 KiB each
        path.write_text(path.read_text() + f"char pad_{path.stem}[8192] = {{1}};\n")
    with hotr.HotReloader(p.sources, cc=str(p.cc)) as r:
        assert r.update().f7() == 7

    def size() -> int:
        kept = [f for f in cache.rglob("*") if f.is_file() and f.parent.name != "tmp"]
        return sum(f.stat().st_size for f in kept)

    deadline = time.monotonic() + 10  # a thread of hotr's stores the objects and evicts
    while not 0 < size() <= 40 * 1024:
        assert time.monotonic() < deadline, f"the cache holds {size()} bytes"
        time.sleep(0.05)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700


def test_an_unusable_cache_is_reported_and_builds_go_on(
    private: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cache = private / "open-cache"
    cache.mkdir(mode=0o755)
    cache.chmod(0o755)
    monkeypatch.setenv("HOTR_CACHE_DIR", str(cache))
    p = Project(private, 2)
    with caplog.at_level(logging.WARNING, logger="hotr"), hotr.HotReloader(p.sources) as r:
        assert r.update().f1() == 101
    assert "not using the object cache" in caplog.text and "open to other users" in caplog.text
    assert not any(cache.iterdir())
    monkeypatch.setenv("HOTR_CACHE_SIZE", "lots")
    with pytest.raises(ValueError, match="HOTR_CACHE_SIZE='lots'"):
        hotr.HotReloader(p.sources)


def test_a_damaged_object_in_the_cache_is_compiled_again(
    private: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Objects are renamed into the cache unflushed: after a crash one may be cut short.  Every
    # later build linked it and failed ("file truncated"), until the cache was removed by hand.
    cache = private / "cache"
    monkeypatch.setenv("HOTR_CACHE_DIR", str(cache))
    p = Project(private, 2)
    with hotr.HotReloader(p.sources, cc=str(p.cc)) as r:
        assert r.update().f1() == 101
    with hotr.HotReloader(p.sources[0], cc=str(p.cc)) as r:  # a single source's library
        assert r.update().f0() == 100
    deadline = time.monotonic() + 10  # a thread of hotr's stores the objects
    while len(list((cache / "manifests").iterdir())) < 3:
        assert time.monotonic() < deadline, "the objects were never stored"
        time.sleep(0.05)
    objects = list((cache / "objects").iterdir())
    assert len(objects) == 3
    for damaged, length in zip(objects, (0, 100, 7), strict=True):
        with damaged.open("r+b") as f:
            f.truncate(length)
    p.runs()
    with caplog.at_level(logging.WARNING, logger="hotr"):
        with hotr.HotReloader(p.sources, cc=str(p.cc)) as r:
            assert r.update().f1() == 101
        with hotr.HotReloader(p.sources[0], cc=str(p.cc)) as r:
            assert r.update().f0() == 100
    assert p.compiled() == ["link", "link", "s0.c", "s1.c"]  # a single source: one run
    assert caplog.text.count("removing a damaged object from the object cache") == 3
    with hotr.HotReloader(p.sources, cc=str(p.cc)) as r:  # the new objects are cached
        assert r.update().f0() == 100
    assert p.compiled() == ["link"]


def test_jobs_is_checked(private: Path) -> None:
    p = Project(private, 1)
    with pytest.raises(ValueError, match="jobs"):
        hotr.HotReloader(p.sources, jobs=0)


CXX_V = """
#include <string>
inline int &calls() {{ static int n = 0; return n; }}  // g++: STB_GNU_UNIQUE unless told
static std::string greeting = "v{v}";
extern "C" int call(void) {{ return ++calls() + {v} * 100; }}
extern "C" int size(void) {{ return (int)greeting.size(); }}
"""


def test_cxx_static_locals_reset_on_reload_and_no_unique_warning(
    private: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    src = private / "counter.cpp"
    src.write_text(CXX_V.format(v=1))
    with caplog.at_level(logging.WARNING, logger="hotr"), hotr.HotReloader(src) as r:
        lib = r.update()
        assert (lib.call(), lib.call(), lib.size()) == (101, 102, 2)
        save(src, CXX_V.format(v=2))
        reload_next(r)
        assert lib.call() == 201  # the new version's own counter, not the old one's
        save(src, CXX_V.format(v=3))
        reload_next(r)
        assert (lib.call(), lib.size()) == (301, 2)
    assert "STB_GNU_UNIQUE" not in caplog.text


def test_a_library_with_unique_symbols_is_warned_of_by_name(
    private: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    src = private / "unique.cpp"
    src.write_text(CXX_V.format(v=1))
    lib = private / "libunique.so"
    subprocess.run(["g++", "-shared", "-fPIC", str(src), "-o", str(lib)], check=True)
    with caplog.at_level(logging.WARNING, logger="hotr"), hotr.HotReloader(lib) as r:
        r.update()
        r.poll()  # the symbol table is read off the path to the new code, at the next poll
    assert "STB_GNU_UNIQUE" in caplog.text and "_ZZ5callsvE1n" in caplog.text


def test_c_and_cxx_sources_link_with_the_cxx_compiler(private: Path) -> None:
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    (private / "glue.c").write_text("int twice(int x) { return 2 * x; }\n")
    (private / "state.cpp").write_text(
        '#include <vector>\nextern "C" int twice(int);\n'
        "static std::vector<int> seen;\n"
        'extern "C" int push(int x) { seen.push_back(twice(x)); return (int)seen.size(); }\n'
    )
    with hotr.HotReloader([private / "glue.c", private / "state.cpp"]) as r:
        lib = r.update()
        assert (lib.push(1), lib.push(2)) == (1, 2)


@pytest.mark.parametrize("compiler", ["gcc", "tcc"])
def test_names_with_spaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compiler: str) -> None:
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} is not installed")
    root = tmp_path / "my project"
    root.mkdir()
    monkeypatch.setenv("HOTR_PRIVATE_DIR", str(tmp_path / "private"))
    p = Project(root, 3, real=compiler)
    spaced = root / "the base.h"
    spaced.write_text("#define BASE 10\n")
    save(root / "common.h", '#include "the base.h"\n')
    p.runs()
    cc = shlex.quote(str(p.cc))  # cc= is split like a shell would (cc="ccache gcc")
    with hotr.HotReloader(p.sources, cc=cc) as r:
        lib = r.update()
        assert (lib.f0(), lib.f2()) == (10, 2)
        assert p.compiled() == ["link", "s0.c", "s1.c", "s2.c"]
        save(spaced, "#define BASE 20\n")
        reload_next(r)
        assert (lib.f1(), lib.f2()) == (21, 2)
        assert p.compiled() == ["link", "s0.c", "s1.c"]
    with hotr.HotReloader(p.sources, cc=cc) as again:
        assert again.update().f0() == 20
        assert p.compiled() == ["link"]


def test_close_during_a_parallel_build_stops_it_and_starts_no_more_compilers(
    private: Path,
) -> None:
    p = Project(private, 6, delay=30)
    r = hotr.HotReloader(p.sources, cc=str(p.cc), jobs=2)
    errors: list[BaseException] = []

    def build() -> None:
        try:
            r.update()
        except BaseException as exc:  # the test inspects what was raised
            errors.append(exc)

    thread = threading.Thread(target=build)
    thread.start()
    deadline = time.monotonic() + 10
    while len(p.log.read_text().splitlines() if p.log.exists() else []) < 2:
        assert time.monotonic() < deadline, "the compilers did not start"
        time.sleep(0.01)
    started = time.monotonic()
    r.close()
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - started < 5, "close() waited for the build"
    (error,) = errors
    assert type(error) is hotr.HotReloadError and "closed" in str(error), repr(error)
    time.sleep(0.2)  # a compiler started after close() would have logged by now
    assert len(p.runs()) == 2


@pytest.mark.parametrize("count", [1, 2])
def test_builds_run_where_the_reloader_was_made_after_a_chdir(
    private: Path, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    root = private / "project"
    (root / "inc").mkdir(parents=True)
    (root / "inc" / "k.h").write_text("#define K 2\ndouble half(double x);\n")
    save(root / "a.c", '#include "k.h"\ndouble half(double x) { return x / K; }\n')
    save(root / "b.c", "int other(void) { return 7; }\n")
    elsewhere = private / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(root)
    with hotr.HotReloader(["a.c", "b.c"][:count], flags=["-Iinc", "-O2"]) as r:
        lib = r.update()
        assert lib.half(3.0) == 1.5  # typed from the prototype in inc/k.h
        monkeypatch.chdir(elsewhere)  # relative flags still mean what they meant
        save(root / "inc" / "k.h", "#define K 4\ndouble half(double x);\n")
        reload_next(r)
        assert lib.half(3.0) == 0.75
        save(
            root / "a.c",
            '#include "k.h"\n#include "extra.h"\ndouble half(double x) { return x / E; }\n',
        )
        with pytest.raises(hotr.BuildError, match=r"extra\.h"):
            reload_next(r)
        (root / "inc" / "extra.h").write_text("#define E 8\n")  # builds again when it appears
        reload_next(r)
        assert lib.half(4.0) == 0.5


def test_a_custom_build_runs_where_the_reloader_was_made(
    private: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (private / "k.c").write_text("int value(void) { return 1; }\n")
    (private / "build.sh").write_text("cc -shared -fPIC k.c -o libk.so\n")
    elsewhere = private / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(private)
    with hotr.HotReloader("libk.so", sources=["k.c"], build=["sh", "build.sh"]) as r:
        lib = r.update()
        assert lib.value() == 1
        monkeypatch.chdir(elsewhere)
        save(private / "k.c", "int value(void) { return 2; }\n")
        reload_next(r)
        assert lib.value() == 2


def test_a_versions_build_output_holds_the_warnings_of_what_was_compiled(private: Path) -> None:
    # Warnings were kept inside the builder: hotr run, %hotr load and r.history never showed
    # them.  As make does, a build shows the warnings of the files it compiled; as ccache
    # does, an object taken from the cache shows the warnings of its compile again.
    p = Project(private, 3)
    unused = "int f2(void) { int unused; return 2; }\n"
    p.sources[2].write_text(unused)
    with hotr.HotReloader(p.sources, cc=str(p.cc), flags=["-Wall"]) as r:
        r.update()
        first = r.history[-1].build_output
        assert "s2.c" in first and "warning: unused variable" in first, first
        assert "s0.c" not in first
        save(p.sources[0], Project.text(0, 5))
        reload_next(r)
        assert r.library.f0() == 105
        assert r.history[-1].build_output == ""  # s0.c compiled cleanly; s2.c was not compiled
    p.runs()
    with hotr.HotReloader(p.sources, cc=str(p.cc), flags=["-Wall"]) as again:
        again.update()
        assert p.compiled() == ["link"]  # every object from the cache
        assert again.history[-1].build_output == first
