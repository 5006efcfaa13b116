"""Crashing constructors, odd files, permissions, security and shutdown: the host survives."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import Builder, copies, reload_next, run_python, source

import hotr

CONSTRUCTOR = "__attribute__((constructor)) static void boom(void) { %s; }\n"
CRASHES = {
    "abort": ("#include <stdlib.h>\n", "abort()", "SIGABRT"),
    "segfault": ("#include <signal.h>\n", "raise(SIGSEGV)", "SIGSEGV"),
}


@pytest.mark.parametrize("crash", sorted(CRASHES))
def test_probe_refuses_a_crashing_constructor(builder: Builder, crash: str) -> None:
    include, statement, name = CRASHES[crash]
    with hotr.HotReloader(builder.lib, probe=True) as r:
        lib = r.update()
        builder.write_bytes(builder.compile(include + source(2, CONSTRUCTOR % statement)))
        assert r.watch_for_changes(timeout=5) == 1
        with pytest.raises(hotr.LoadError, match=f"crashed a probe process \\({name}\\)"):
            r.update()
        assert lib.value() == 1
        assert copies(builder.dir / "private") == ["v1-libhot.so"]
        builder.rename(source(3))
        reload_next(r)
        assert lib.value() == 3


def test_probe_reports_loader_errors(builder: Builder) -> None:
    with hotr.HotReloader(builder.lib, probe=True) as r:
        r.update()
        code = source(2, "int missing_fn(void);\nint use(void) { return missing_fn(); }\n")
        builder.write_bytes(builder.compile(code))
        assert r.watch_for_changes(timeout=5) == 1
        with pytest.raises(hotr.LoadError, match="undefined symbol: missing_fn"):
            r.update()


HELPER = r"""#include <fcntl.h>
#include <unistd.h>
/* A constructor that starts a helper process: it inherits the probe's output and outlives it. */
__attribute__((constructor)) static void helper(void) {
    if (fork() == 0) {
        char digits[16], *p = digits + sizeof digits;
        int fd = open("%s", O_WRONLY | O_APPEND | O_CREAT, 0600);
        *--p = '\n';
        for (pid_t pid = getpid(); pid; pid /= 10) *--p = (char)('0' + pid %% 10);
        write(fd, p, (size_t)(digits + sizeof digits - p));
        close(fd);
        sleep(15);
        _exit(0);
    }
}
"""


def test_probe_is_done_when_it_exits_though_a_helper_holds_its_output(builder: Builder) -> None:
    # The probe waited for the end of its output pipe, which the helper held for 15 s: the
    # version, which loads fine, was refused after 10 s ("did not finish").
    pids = builder.dir / "helpers"
    try:
        with hotr.HotReloader(builder.lib, probe=True) as r:
            lib = r.update()
            builder.write_bytes(builder.compile(HELPER % pids + source(2)))
            assert r.watch_for_changes(timeout=5) == 1
            started = time.monotonic()
            r.update()
            assert lib.value() == 2
            assert time.monotonic() - started < 5
    finally:
        for pid in pids.read_text().split() if pids.exists() else []:
            os.kill(int(pid), signal.SIGKILL)


def test_without_probe_a_crashing_constructor_kills_the_host(builder: Builder) -> None:
    # The documented limit: dlopen runs constructors in-process.
    include, statement, _ = CRASHES["abort"]
    bad = builder.compile_to_file(include + source(2, CONSTRUCTOR % statement))
    proc = subprocess.run(
        [sys.executable, "-c", f"import hotr; hotr.HotReloader({bad!r}).update()"],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGABRT


def test_fifo_or_directory_in_place_of_the_library(builder: Builder) -> None:
    with hotr.HotReloader(builder.lib) as r:
        lib = r.update()
        fifo = builder.dir / "fifo"
        os.mkfifo(fifo)  # opening a FIFO for reading would block: it must not
        os.rename(fifo, builder.lib)
        assert r.watch_for_changes(timeout=5) == 1
        with pytest.raises(hotr.LoadError, match="not a regular file"):
            r.update()
        builder.lib.unlink()
        directory = builder.dir / "a-directory"
        directory.mkdir()
        os.rename(directory, builder.lib)
        assert r.watch_for_changes(timeout=5) == 1
        with pytest.raises(hotr.LoadError, match="not a regular file"):
            r.update()
        assert lib.value() == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(builder: Builder) -> None:
    with hotr.HotReloader(builder.lib) as r:
        lib = r.update()
        builder.rename(source(2))
        builder.lib.chmod(0)
        assert r.watch_for_changes(timeout=5) == 1
        with pytest.raises(hotr.LoadError, match="cannot read it"):
            r.update()
        assert lib.value() == 1


def test_unusable_private_directory(builder: Builder, monkeypatch: pytest.MonkeyPatch) -> None:
    not_a_dir = builder.dir / "plain-file"
    not_a_dir.write_text("x")
    monkeypatch.setenv("HOTR_PRIVATE_DIR", str(not_a_dir / "private"))
    with pytest.raises(hotr.HotReloadError, match="HOTR_PRIVATE_DIR") as info:
        hotr.HotReloader(builder.lib)
    assert str(not_a_dir) in str(info.value)


def test_copies_never_follow_a_planted_symlink(builder: Builder) -> None:
    with hotr.HotReloader(builder.lib) as r:
        lib = r.update()
        (first,) = (builder.dir / "private").rglob("v1-libhot.so")
        victim = builder.dir / "victim"
        victim.write_text("untouched")
        (first.parent / "v2-libhot.so").symlink_to(victim)  # the name the next copy takes
        builder.rename(source(2))
        reload_next(r)
        assert victim.read_text() == "untouched"
        assert lib.value() == 2, "the planted name was followed, or stopped the reload"


def test_loads_only_bytes_it_checked_while_the_file_is_torn(builder: Builder) -> None:
    # A writer rewrites the library in place (as cp does) as fast as it can, alternating two
    # versions and garbage: a read may see any mix.  hotr checks its own copy, so whatever it
    # loads is a whole version; a torn copy is refused.  A bug here crashes: run in a child.
    good = [builder.compile_to_file(source(n)) for n in (2, 3)]
    run_python(
        f"""
        import os, threading, time, hotr
        lib_path = {str(builder.lib)!r}
        versions = [open(p, "rb").read() for p in {good!r}]
        garbage = versions[0][: len(versions[0]) // 3] + os.urandom(4096)
        r = hotr.HotReloader(lib_path, debounce=0)
        lib = r.update()
        stop = threading.Event()

        def writer():
            n = 0
            while not stop.is_set():
                with open(lib_path, "r+b") as f:
                    f.truncate(0)
                    f.write((versions + [garbage])[n % 3])
                n += 1

        thread = threading.Thread(target=writer)
        thread.start()
        loaded = refused = changes = 0
        # 300 changes at least, more until 3 versions loaded: the main thread, woken by the
        # truncate, often copies an empty file (up to 260 of 300 refused in a row here)
        deadline = time.monotonic() + 60
        while changes < 300 or (r.version < 3 and time.monotonic() < deadline):
            changes += 1
            if r.watch_for_changes(timeout=5) != 1:
                continue
            try:
                r.update()
                loaded += 1
            except hotr.LoadError:
                refused += 1
            assert lib.value() in (1, 2, 3), lib.value()
        stop.set()
        thread.join()
        assert r.version >= 3, f"only {{r.version}} versions in {{changes}} changes: proves nothing"
        r.close()
        print(r.version, "versions loaded,", refused, "refused")
        """,
        env={"HOTR_PRIVATE_DIR": str(builder.dir / "private")},
    )


def test_no_shell_anywhere() -> None:
    package = pathlib.Path(hotr.__file__).parent
    for path in package.rglob("*.py"):
        text = path.read_text()
        for needle in ("shell=True", "os.system(", "os.popen("):
            assert needle not in text, f"{path.name} uses {needle}"


def test_close_from_another_thread_wakes_a_waiting_watcher(reloader: hotr.HotReloader) -> None:
    result: list[int] = []
    waiter = threading.Thread(target=lambda: result.append(reloader.watch_for_changes()))
    waiter.start()
    time.sleep(0.1)
    started = time.monotonic()
    reloader.close()
    waiter.join(timeout=1)
    assert not waiter.is_alive(), "the waiting watcher did not wake up"
    assert result == [-1]
    assert time.monotonic() - started < 1


def test_exit_with_background_reloader_running(builder: Builder) -> None:
    root = builder.dir / "private"
    started = time.monotonic()
    run_python(
        f"""
        import threading, hotr
        lib = hotr.load({str(builder.lib)!r})
        busy = threading.Thread(target=lambda: [lib.value() for _ in iter(int, 1)], daemon=True)
        busy.start()
        """,
        env={"HOTR_PRIVATE_DIR": str(root)},
    )
    assert time.monotonic() - started < 10
    assert list(root.iterdir()) == []


def test_fork_after_start(builder: Builder) -> None:
    root = builder.dir / "private"
    run_python(
        f"""
        import faulthandler, os, hotr
        lib = hotr.load({str(builder.lib)!r})
        for _ in range(10):  # the background thread may hold a lock at the moment of a fork
            pid = os.fork()
            if pid == 0:
                faulthandler.dump_traceback_later(5, exit=True)  # a deadlock fails, not hangs
                assert lib.value() == 1  # the child keeps the loaded code...
                r = hotr.reloader_of(lib)
                assert r.closed  # ...but does not reload or touch the parent's files
                raise SystemExit(0)  # normal exit: atexit runs in the child
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        (own,) = os.listdir({str(root)!r})
        left = os.listdir(os.path.join({str(root)!r}, own, "r1"))
        assert "v1-libhot.so" in left, left
        assert lib.value() == 1
        """,
        env={"HOTR_PRIVATE_DIR": str(root)},
    )
    assert list(root.iterdir()) == []
