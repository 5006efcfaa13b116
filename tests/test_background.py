"""Controlling the background reloader: callbacks, stop(), and manual (chosen-point) loads."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import Builder, mapped, run_python, source

import hotr


def wait_until(check: object, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_load_callbacks(builder: Builder) -> None:
    reloads: list[tuple[int, int]] = []
    errors: list[hotr.HotReloadError] = []
    with hotr.load(
        builder.lib, on_reload=lambda o, n: reloads.append((o, n)), on_error=errors.append
    ) as lib:
        builder.write_bytes(b"junk")
        wait_until(lambda: errors, "on_error was not called")
        assert isinstance(errors[0], hotr.LoadError)
        builder.rename(source(2))
        wait_until(lambda: reloads, "on_reload was not called")
        assert reloads == [(1, 2)] and lib.value() == 2


def test_a_callback_that_raises_system_exit_leaves_the_thread_reloading(builder: Builder) -> None:
    # SystemExit (sys.exit() in a callback) is no Exception: it ended hotr.load's thread, and
    # the library silently never reloaded again.
    def on_reload(old: int, new: int) -> None:
        if new == 2:
            sys.exit(1)

    with hotr.load(builder.lib, on_reload=on_reload) as lib:
        builder.rename(source(2))
        wait_until(lambda: lib.value() == 2, "no reload to version 2")
        builder.rename(source(3))
        wait_until(lambda: lib.value() == 3, "the thread ended with the callback's SystemExit")


def test_the_thread_unloads_the_old_version_by_itself_after_a_reload(builder: Builder) -> None:
    # It puts that off a moment (the program, just told, calls the new code first), but does
    # it without the program calling the reloader or anything else happening.
    private = builder.dir / "private"
    reloaded = threading.Event()
    with hotr.load(builder.lib, on_reload=lambda old, new: reloaded.set()) as lib:
        builder.rename(source(2))
        assert reloaded.wait(10) and lib.value() == 2
        wait_until(lambda: len(mapped(private)) == 1, "the old version stayed mapped")
        assert hotr.reloader_of(lib).history[0].status == "unloaded"


def test_stop_keeps_the_version_and_ends_the_thread(builder: Builder) -> None:
    lib = hotr.load(builder.lib)
    reloader = hotr.reloader_of(lib)
    thread = next(t for t in threading.enumerate() if t.name == "hotr:libhot.so")
    reloader.stop()
    thread.join(timeout=1)
    assert not thread.is_alive()
    assert reloader.stopped and not reloader.closed
    builder.rename(source(2))
    time.sleep(0.2)
    assert lib.value() == 1, "a stopped reloader still reloaded"
    assert reloader.poll() is False
    reloader.close()


def test_a_program_that_never_imports_threading(builder: Builder) -> None:
    """hotr.load's thread then starts without threading (hotr does not import it): it
    reloads, the kernel knows it by name, stop() ends it, and a forked child's close() does not
    wait for the parent's thread."""
    builder.rename(source(1))
    second = builder.compile_to_file(source(2))
    run_python(
        f"""
        import os, select, sys, time

        import hotr

        assert "threading" not in sys.modules, "import hotr imported threading"
        read_end, write_end = os.pipe()
        lib = hotr.load({str(builder.lib)!r}, on_reload=lambda old, new: os.write(write_end, b"!"))
        assert lib.value() == 1

        def names():
            found = []
            for task in os.listdir("/proc/self/task"):
                try:
                    with open(f"/proc/self/task/{{task}}/comm") as comm:
                        found.append(comm.read().strip())
                except FileNotFoundError:
                    pass  # a thread that just ended
            return found

        def wait_until(check, what):
            deadline = time.monotonic() + 10
            while not check():
                assert time.monotonic() < deadline, what
                time.sleep(0.01)

        wait_until(lambda: "hotr:libhot.so" in names(), f"no thread named so: {{names()}}")
        os.rename({second!r}, {str(builder.lib)!r})
        assert select.select([read_end], [], [], 10)[0], "no reload within 10 s"
        assert lib.value() == 2
        pid = os.fork()
        if pid == 0:
            hotr.reloader_of(lib).close()  # returns at once: the parent's thread is not here
            os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
        assert lib.value() == 2, "the child's close() touched the parent's version"
        hotr.reloader_of(lib).stop()
        wait_until(lambda: "hotr:libhot.so" not in names(), "stop() left the thread running")
        assert "threading" not in sys.modules, "hotr imported threading on the way"
        print("ok")
        """,
        timeout=60,
    )


def test_a_record_from_a_thread_started_before_threading_was_imported_names_it(
    builder: Builder,
) -> None:
    """hotr.load's thread, started by _thread, logs a failed reload after the program imported
    logging (and with it threading): the record's threadName is the thread's own name, not
    the "Dummy-1" threading would give a thread it did not start."""
    builder.rename(source(1))
    run_python(
        f"""
        import os, sys, time

        import hotr

        lib = hotr.load({str(builder.lib)!r})
        assert "threading" not in sys.modules
        import logging

        names = []

        class Keep(logging.Handler):
            def emit(self, record):
                names.append(record.threadName)

        logging.getLogger("hotr").addHandler(Keep())
        with open({str(builder.lib)!r} + ".new", "wb") as f:
            f.write(b"not an ELF file")
        os.rename({str(builder.lib)!r} + ".new", {str(builder.lib)!r})
        deadline = time.monotonic() + 10
        while not names:
            assert time.monotonic() < deadline, "no record of the failed reload"
            time.sleep(0.01)
        assert names[0] == "hotr:libhot.so", names
        assert lib.value() == 1
        print("ok")
        """,
        timeout=60,
    )


@pytest.mark.every_python  # how the main thread is known differs from 3.13 on (_deferred.c)
def test_hotr_first_imported_in_a_thread_started_by_thread_module(builder: Builder) -> None:
    """The main thread is the interpreter's, whichever thread imported hotr: that thread loads
    and reloads (its deferral must not call signal.signal), and a Ctrl-C to the main thread,
    waiting for a change, still ends its wait."""
    builder.rename(source(1))
    second = builder.compile_to_file(source(2))
    run_python(
        f"""
        import _thread, os, signal, sys, time

        done = _thread.allocate_lock()
        done.acquire()
        found = []

        def worker():
            try:
                import hotr

                reloader = hotr.HotReloader({str(builder.lib)!r})
                lib = reloader.update()
                first = lib.value()
                os.rename({second!r}, {str(builder.lib)!r})
                assert reloader.watch_for_changes(timeout=10) > 0, "no change seen"
                found.append((first, reloader.update().value(), reloader))
            except BaseException as error:
                found.append(error)
            finally:
                done.release()

        _thread.start_new_thread(worker, ())
        assert done.acquire(timeout=30), "the worker did not finish"
        assert "threading" not in sys.modules
        assert not isinstance(found[0], BaseException), repr(found[0])
        first, second_value, reloader = found[0]
        assert (first, second_value) == (1, 2), found[0]
        _thread.start_new_thread(lambda: (time.sleep(0.3), os.kill(os.getpid(), signal.SIGINT)), ())
        start = time.monotonic()
        try:
            reloader.watch_for_changes(timeout=20)
        except KeyboardInterrupt:
            waited = time.monotonic() - start
            assert waited < 5, f"Ctrl-C ended the wait only after {{waited:.1f}} s"
        else:
            raise AssertionError("Ctrl-C did not end the wait")
        print("ok")
        """,
        timeout=60,
    )


@pytest.mark.every_python  # from 3.13 on the main thread is known by its ident (_deferred.c)
def test_a_subinterpreter_in_the_main_thread_holds_no_signals_back() -> None:
    """Only the main interpreter's main thread holds signals back: a subinterpreter running in
    the main thread cannot set handlers (signal.signal raises ValueError there), so its
    deferral leaves them alone, as _PyOS_IsMainThread has it before 3.13."""
    pytest.importorskip("_testcapi")
    sub = (
        "import os\n"
        "import hotr._shim\n"
        "from hotr._signals import deferred\n"
        "try:\n"
        "    with deferred():\n"
        "        pass\n"
        "    os.write(1, b'sub: main=%d\\n' % hotr._shim.is_main_thread())\n"
        "except BaseException as error:\n"
        "    os.write(1, b'sub: ' + repr(error).encode() + b'\\n')\n"
    )
    proc = run_python(
        f"""
        import _testcapi, signal

        import hotr._shim

        assert hotr._shim.is_main_thread()
        assert _testcapi.run_in_subinterp({sub!r}) == 0
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        """,
        timeout=60,
    )
    assert proc.stdout == "sub: main=0\n", proc.stdout


def test_manual_loads_at_the_chosen_point_with_builds_in_background(tmp_path: Path) -> None:
    slow_cc = tmp_path / "slow-cc"
    slow_cc.write_text('#!/bin/sh\nsleep 0.3\nexec cc "$@"\n')
    slow_cc.chmod(0o755)
    src = tmp_path / "k.c"
    src.write_text("int value(void) { return 1; }\n")
    with hotr.load(src, manual=True, cc=str(slow_cc)) as lib:
        reloader = hotr.reloader_of(lib)
        src.write_text("int value(void) { return 2; }\n")
        frames = 0
        longest = 0.0
        deadline = time.monotonic() + 10
        while lib.value() != 2:  # the "game loop": one update() per frame
            assert time.monotonic() < deadline, "the new version never loaded"
            started = time.perf_counter()
            reloader.update()
            longest = max(longest, time.perf_counter() - started)
            frames += 1
            time.sleep(0.005)
        assert frames > 10, "the change loaded before the build could have finished"
        assert longest < 0.2, f"an update() waited for the build ({longest * 1000:.0f} ms)"
