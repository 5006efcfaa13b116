"""A version that cannot be loaded raises LoadError and leaves the previous one answering."""

from __future__ import annotations

import os
import random
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import CC, Builder, copies, run_python, source

import hotr


def patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


UNDEFINED = "int missing_fn(void);\nint use(void) { return missing_fn(); }\n"


def bad_cases(builder: Builder) -> dict[str, tuple[bytes, str]]:
    good = builder.compile(source(2))
    exe_src = builder.dir / "build" / "exe.c"
    exe_src.write_text("int main(void) { return 0; }\n")
    exe = builder.dir / "build" / "exe"
    subprocess.run([CC, str(exe_src), "-o", str(exe)], check=True)
    return {
        "empty": (b"", "empty"),
        "text": (b"hello, this is not a library\n", "not an ELF file"),
        "random": (random.Random(1).randbytes(4096), "not an ELF file"),
        "header only": (good[:64], "truncated"),
        "half": (good[: len(good) // 2], "truncated"),
        "all but one byte": (good[:-1], "truncated"),
        "wrong architecture": (patched(good, 18, "<H", 183), "wrong architecture"),
        "32-bit": (patched(good, 4, "B", 1), "wrong ELF class"),
        "relocatable object": (patched(good, 16, "<H", 1), "not a shared object"),
        "executable": (exe.read_bytes(), "executable"),
        "undefined symbol": (
            builder.compile(source(3, UNDEFINED)),
            "undefined symbol: missing_fn",
        ),
    }


def test_bad_versions_raise_and_keep_old_version(builder: Builder) -> None:
    cases = bad_cases(builder)
    with hotr.HotReloader(builder.lib) as r:
        lib = r.update()
        assert r.watch_for_changes(timeout=0.01) == 0  # this thread's doorbell exists from now
        fds = len(os.listdir("/proc/self/fd"))
        for name, (data, reason) in cases.items():
            builder.write_bytes(data)
            assert r.watch_for_changes(timeout=5) == 1, name
            with pytest.raises(hotr.LoadError, match=reason) as info:
                r.update()
            assert info.value.path == str(builder.lib), name
            assert str(builder.lib) in str(info.value)
            assert lib.value() == 1, f"{name}: the old version stopped answering"
            assert r.version == 1
            assert copies(builder.dir / "private") == ["v1-libhot.so"], (
                f"{name}: a private copy leaked"
            )
            # At most: the next version's file, made ahead, is used up by a refused one.
            assert len(os.listdir("/proc/self/fd")) <= fds, f"{name}: a descriptor leaked"
        builder.rename(source(2))
        assert r.watch_for_changes(timeout=5) == 1
        r.update()
        assert lib.value() == 2


def test_first_load_of_bad_file_raises(builder: Builder) -> None:
    builder.write_bytes(b"garbage")
    with hotr.HotReloader(builder.lib) as r:
        with pytest.raises(hotr.LoadError, match="not an ELF file"):
            r.update()
        with pytest.raises(hotr.HotReloadError, match="not loaded"):
            r.library.value  # noqa: B018


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.so"):
        hotr.HotReloader(tmp_path / "nope.so")


def test_truncated_at_every_section_boundary_never_loads(builder: Builder) -> None:
    # Mapping a truncated ELF kills the process with SIGBUS, so this runs in a child.
    run_python(
        f"""
        import os, struct, hotr
        lib_path = {str(builder.lib)!r}
        good = open({builder.compile_to_file(source(2))!r}, "rb").read()
        cuts = set()
        shoff, = struct.unpack_from("<Q", good, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", good, 0x3a)
        for i in range(shnum):
            off, size = struct.unpack_from("<QQ", good, shoff + i * shentsize + 0x18)
            cuts.update((off, off + size, off + size // 2))
        cuts = sorted(c for c in cuts if 0 < c < len(good))
        assert len(cuts) > 20, cuts
        with hotr.HotReloader(lib_path, debounce=0) as r:
            lib = r.update()
            for cut in cuts:
                tmp = lib_path + ".tmp"
                with open(tmp, "wb") as f:
                    f.write(good[:cut])
                os.rename(tmp, lib_path)
                assert r.watch_for_changes(timeout=5) == 1
                try:
                    r.update()
                except hotr.LoadError as exc:
                    assert "truncated" in exc.reason, (cut, exc.reason)
                else:
                    raise AssertionError(f"a file cut at byte {{cut}} was loaded")
                assert lib.value() == 1
        print(len(cuts), "cuts rejected")
        """
    )


def test_seed_functions_report_failure_by_value(
    builder: Builder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert hotr.hot_reload_init(tmp_path / "missing.so") is None
    assert "missing.so" in caplog.text
    r = hotr.hot_reload_init(builder.lib)
    assert r is not None
    lib = hotr.hot_reload_update(r)
    assert lib is not None and lib.value() == 1
    builder.write_bytes(b"junk")
    assert hotr.watch_for_changes(r, timeout=5) == 1
    assert hotr.hot_reload_update(r) is None
    assert "not an ELF file" in caplog.text
    assert lib.value() == 1
    builder.rename(source(2))
    assert hotr.watch_for_changes(r, 5) == 1
    assert hotr.hot_reload_update(r) is lib
    assert lib.value() == 2
    hotr.hot_reload_cleanup(r)
    hotr.hot_reload_cleanup(r)
    assert hotr.watch_for_changes(r, timeout=0) == -1
    assert hotr.hot_reload_update(r) is None


def dynamic_patched(data: bytes, changes: dict[int, tuple[int, int] | None]) -> bytes:
    """`data` with dynamic entries whose tag is a key of `changes` rewritten (tag, value), or
    retagged as DT_NULL-free padding (None: the entry is dropped)."""
    out = bytearray(data)
    (phoff,) = struct.unpack_from("<Q", out, 0x20)
    (phnum,) = struct.unpack_from("<H", out, 0x38)
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", out, phoff + i * 56)
        if p_type != 2:
            continue
        for at in range(p_offset, p_offset + p_filesz, 16):
            tag, _ = struct.unpack_from("<qQ", out, at)
            if tag in changes:
                change = changes[tag]
                # 0x6ffffdff is DT_VALRNGHI, a tag glibc does not act on: the entry is gone.
                struct.pack_into("<qQ", out, at, *(change or (0x6FFFFDFF, 0)))
    return bytes(out)


def test_dynamic_tables_glibc_takes_for_granted_are_checked(builder: Builder) -> None:
    # Each of these kills the process inside dlopen (an ld.so assertion, a NULL pointer): the
    # checks must refuse them first.  The loop runs in a child: a miss is a crash.
    good = builder.compile(source(2))
    cases: dict[str, tuple[dict[int, tuple[int, int] | None], str]] = {
        "wrong DT_RELAENT": ({9: (9, 4096)}, "not the size of a relocation"),
        "no DT_RELAENT": ({9: None}, "DT_RELA without its size"),
        "no DT_RELASZ": ({8: None}, "DT_RELA without its size"),
        "no DT_RELA": ({7: None}, "a size without its table"),
        "no hash table": ({4: None, 0x6FFFFEF5: None}, "no symbol hash table"),
        "no DT_INIT_ARRAYSZ": ({27: None}, "DT_INIT_ARRAY without its size"),
        "no DT_FINI_ARRAYSZ": ({28: None}, "DT_FINI_ARRAY without its size"),
    }
    files = {}
    for name, (changes, reason) in cases.items():
        patched = dynamic_patched(good, changes)
        assert patched != good, f"{name}: the test library has no such entry"
        path = builder.dir / "build" / f"{name.replace(' ', '-')}.so"
        path.write_bytes(patched)
        files[name] = (str(path), reason)
    run_python(
        f"""
        import os, shutil, hotr
        lib_path = {str(builder.lib)!r}
        with hotr.HotReloader(lib_path, debounce=0) as r:
            lib = r.update()
            for name, (path, reason) in {files!r}.items():
                shutil.copyfile(path, lib_path + ".tmp")
                os.rename(lib_path + ".tmp", lib_path)
                assert r.watch_for_changes(timeout=5) == 1, name
                try:
                    r.update()
                except hotr.LoadError as exc:
                    assert reason in exc.reason, (name, exc.reason)
                else:
                    raise AssertionError(f"{{name}} was loaded")
                assert lib.value() == 1
        """,
        env={"HOTR_PRIVATE_DIR": str(builder.dir / "private")},
    )
