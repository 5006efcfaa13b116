"""Fixtures that build real C libraries with the system compiler and replace them as tools do."""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

import hotr

CC = os.environ.get("CC", "cc")
# Where hotr.h is, as `hotr --include` tells users.
INCLUDE_DIR = subprocess.run(
    [sys.executable, "-m", "hotr", "--include"], capture_output=True, text=True, check=True
).stdout.strip()


def source(value: int, extra: str = "") -> str:
    """C source of a library whose value() returns `value`; cleanup() appends to $HOTR_TEST_MARK."""
    return (
        textwrap.dedent(
            """
        #include <stdio.h>
        #include <stdlib.h>
        int value(void) { return %d; }
        void cleanup(void) {
            const char *mark = getenv("HOTR_TEST_MARK");
            if (mark) { FILE *f = fopen(mark, "a"); fprintf(f, "cleanup %d\\n"); fclose(f); }
        }
        """
        )
        % (value, value)
        + extra
    )


class Builder:
    """Compiles C into `lib` (the watched file) by linker output, rename, in-place write..."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.lib = directory / "libhot.so"
        self._cache: dict[str, bytes] = {}
        self._n = 0

    def compile(self, code: str, *flags: str) -> bytes:
        """Return the bytes of `code` built as a shared library (cached by source)."""
        key = code + "\0".join(flags)
        if key not in self._cache:
            self._n += 1
            work = self.dir / "build"
            work.mkdir(exist_ok=True)
            src, out = work / f"s{self._n}.c", work / f"s{self._n}.so"
            src.write_text(code)
            subprocess.run(
                [CC, "-shared", "-fPIC", "-O1", *flags, str(src), "-o", str(out)], check=True
            )
            self._cache[key] = out.read_bytes()
        return self._cache[key]

    def compile_to_file(self, code: str, *flags: str) -> str:
        """Build `code` and return the path of a file holding the library (for child processes)."""
        data = self.compile(code, *flags)
        path = self.dir / "build" / f"lib-{abs(hash(data))}.so"
        path.write_bytes(data)
        return str(path)

    def link(self, code: str) -> None:
        """Let the compiler driver write the library itself (GNU ld unlinks and re-creates)."""
        src = self.dir / "build" / "linked.c"
        src.parent.mkdir(exist_ok=True)
        src.write_text(code)
        subprocess.run([CC, "-shared", "-fPIC", str(src), "-o", str(self.lib)], check=True)

    def rename(self, code: str) -> None:
        """Write a temporary file and rename it over the library, as editors and install do."""
        tmp = self.dir / ".libhot.so.tmp"
        tmp.write_bytes(self.compile(code))
        os.rename(tmp, self.lib)

    def in_place(self, code: str) -> None:
        """Truncate and rewrite the library's own inode, as cp does."""
        data = self.compile(code)
        with open(self.lib, "r+b") as f:
            f.truncate(0)
            f.write(data)

    def recreate(self, code: str) -> None:
        """Delete the library, then create it anew."""
        data = self.compile(code)
        self.lib.unlink()
        with open(self.lib, "xb") as f:
            f.write(data)

    def copy(self, code: str) -> None:
        """shutil.copyfile: open with O_TRUNC, write, close."""
        src = self.dir / "build" / "copied.so"
        src.write_bytes(self.compile(code))
        shutil.copyfile(src, self.lib)

    def hard_link(self, code: str) -> None:
        """Put a hard link to a finished file in the library's place (`ln -f`, `cp -l`)."""
        self._n += 1
        built = self.dir / "build" / f"linked-{self._n}.so"
        built.write_bytes(self.compile(code))
        self.lib.unlink(missing_ok=True)
        os.link(built, self.lib)

    def write_bytes(self, data: bytes) -> None:
        """Replace the library with arbitrary bytes, atomically (rename)."""
        tmp = self.dir / ".libhot.so.tmp"
        tmp.write_bytes(data)
        os.rename(tmp, self.lib)


WAYS = ["link", "rename", "in_place", "recreate", "copy", "hard_link"]

TAG_MARKER = 0x5EED0000
TAGGED = """
static const volatile int tag = 0x5EED0000;  /* patched to each version's number */
int value(void) { return tag; }
void fill(int *out) { *out = tag; }
void noop(void) {}
"""


def tagged_versions(code: bytes, count: int) -> list[bytes]:
    """`count` distinct libraries made from one build of TAGGED: version n returns n.

    Patching the constant in the file gives a thousand versions for one compiler run.
    """
    marker = TAG_MARKER.to_bytes(4, "little")
    assert code.count(marker) == 1, "the tag constant must appear once in the library"
    at = code.index(marker)
    return [code[:at] + n.to_bytes(4, "little") + code[at + 4 :] for n in range(1, count + 1)]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long", action="store_true", help="run the stress suite at full size (minutes)"
    )


@pytest.fixture(autouse=True)
def _own_object_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Each test builds with an empty object cache of its own, never the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOTR_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture
def builder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Builder:
    monkeypatch.setenv("HOTR_TEST_MARK", str(tmp_path / "mark.txt"))
    monkeypatch.setenv("HOTR_PRIVATE_DIR", str(tmp_path / "private"))
    b = Builder(tmp_path)
    b.lib.write_bytes(b.compile(source(1)))
    return b


@pytest.fixture
def reloader(builder: Builder) -> Iterator[hotr.HotReloader]:
    r = hotr.HotReloader(builder.lib)
    r.update()
    yield r
    r.close()


def reload_next(r: hotr.HotReloader, timeout: float = 5.0) -> hotr.Library:
    """Wait (bounded) for the watch to report a change, then apply it."""
    assert r.watch_for_changes(timeout=timeout) == 1, "no change reported within the deadline"
    return r.update()


def copies(root: Path) -> list[str]:
    """The private copies of versions kept under `root` ($HOTR_PRIVATE_DIR), by name (not the
    empty file made ahead for the next version)."""
    return sorted(p.name for p in root.rglob("v*") if p.is_file() and p.stat().st_size)


def kept(root: Path) -> list[Path]:
    """The contents kept under `root` for rollback()."""
    return sorted(root.rglob("kept-*"))


def mapped(root: Path) -> set[str]:
    """The files under `root` this process has mapped now (from /proc/self/maps)."""
    with open("/proc/self/maps") as f:
        return {line.split()[-1] for line in f if str(root) in line}


def marks(builder: Builder) -> list[str]:
    path = builder.dir / "mark.txt"
    return path.read_text().splitlines() if path.exists() else []


def run_python(
    code: str,
    *,
    timeout: float = 120,
    env: dict[str, str] | None = None,
    argv: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `code` in a child interpreter (it may crash); fail with its output unless it exits 0."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *(argv or [])],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, (
        f"child exited with {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
    return proc


def wait_until_blocked(threads: list[threading.Thread], timeout: float = 10) -> None:
    """Return once each of `threads` is blocked in a wait (its innermost Python frame is a
    function named `wait`), so what it waits for can now be made to happen."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        while True:
            frame = sys._current_frames().get(thread.ident or -1)
            if frame is not None and frame.f_code.co_name == "wait":
                break
            assert time.monotonic() < deadline, f"{thread.name} never started waiting"
            time.sleep(0.001)


class Lines:
    """Lines of a child's stdout, read in a thread so waits can have deadlines."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()  # None: the end of the output
        assert proc.stdout is not None
        threading.Thread(target=self._read, args=(proc.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        with contextlib.suppress(ValueError, OSError):  # the stream closes when the child ends
            for line in stream:
                self._queue.put(line)
        self._queue.put(None)

    def rest(self, timeout: float = 10) -> list[str]:
        """Every line, up to the end of the output (the child has exited or closed it)."""
        while True:
            line = self._queue.get(timeout=timeout)
            if line is None:
                self._queue.put(None)
                return self.seen
            self.seen.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 10) -> None:
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"{text!r} not printed; output so far: {self.seen}") from None
            if line is None:
                self._queue.put(None)
                raise AssertionError(f"{text!r} not printed before the end: {self.seen}")
            self.seen.append(line.rstrip("\n"))
            if text in line:
                return
