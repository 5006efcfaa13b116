"""One lifecycle per version: every version that reached dlopen gets its cleanup() exactly once
before it is unmapped, whatever ends it.  Each scenario runs in a child: a bug is a crash."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from conftest import Builder, run_python, source

import hotr

# A library whose constructor starts a thread that keeps running in the library's code, and
# whose cleanup() stops it: unmapping it without cleanup() crashes the process.
THREADED = r"""
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
static volatile int running = 1;
static pthread_t worker;
static void *spin(void *arg) { while (running) usleep(200); return NULL; }
__attribute__((constructor)) static void start(void) { pthread_create(&worker, NULL, spin, NULL); }
static void mark(const char *what) {
    const char *path = getenv("HOTR_TEST_MARK");
    FILE *f = path ? fopen(path, "a") : NULL;
    if (f) { fprintf(f, "%s %d\n", what, TAG); fclose(f); }
}
void cleanup(void) { running = 0; pthread_join(worker, NULL); mark("cleanup"); }
"""


def threaded(tag: int, extra: str = "") -> str:
    return f"#define TAG {tag}\n" + THREADED + extra


def marks(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def child(builder: Builder, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_python(
        code,
        env={
            "HOTR_PRIVATE_DIR": str(builder.dir / "private"),
            "HOTR_TEST_MARK": str(builder.dir / "mark.txt"),
            **env,
        },
    )


def renamed_in(builder: Builder, versions: list[str]) -> str:
    """Child code, indented as the tests' is: `r` loads version 1 into `lib`, then version 2 is
    renamed over the library (imports os, shutil and hotr are the test's)."""
    lib_path = str(builder.lib)
    code = f"""
        lib_path = {lib_path!r}
        shutil.copyfile({versions[0]!r}, lib_path)
        r = hotr.HotReloader(lib_path)
        lib = r.update()
        shutil.copyfile({versions[1]!r}, lib_path + ".tmp")
        os.rename(lib_path + ".tmp", lib_path)"""
    return textwrap.indent(textwrap.dedent(code), " " * 8)


REFUSE = (
    "int hotr_load(void **s, int v, int r) { return REFUSE; }\nint value(void) { return TAG; }\n"
)


def test_a_version_refused_by_its_hotr_load_gets_its_cleanup(builder: Builder) -> None:
    good = builder.compile_to_file(threaded(1, REFUSE.replace("REFUSE", "0")))
    refused = builder.compile_to_file(threaded(2, REFUSE.replace("REFUSE", "3")))
    child(
        builder,
        f"""
        import os, shutil, time, hotr
        lib_path = {str(builder.lib)!r}
        shutil.copyfile({good!r}, lib_path)
        r = hotr.HotReloader(lib_path)
        lib = r.update()
        shutil.copyfile({refused!r}, lib_path + ".tmp")
        os.rename(lib_path + ".tmp", lib_path)
        assert r.watch_for_changes(timeout=5) == 1
        try:
            r.update()
        except hotr.LoadError as exc:
            assert "hotr_load returned 3" in str(exc), exc
        else:
            raise AssertionError("the refusal was not reported")
        time.sleep(0.05)  # the refused version's thread would crash now if it still ran
        assert lib.value() == 1
        r.close()
        """,
    )
    assert marks(builder.dir / "mark.txt") == ["cleanup 2", "cleanup 1"]


def test_a_version_refused_by_a_check_after_loading_gets_its_cleanup(builder: Builder) -> None:
    good = builder.compile_to_file(threaded(1, "int value(void) { return 1; }\n"))
    # `value` is now a variable: the live function cannot point there; the check after dlopen
    # refuses the version, whose constructor has started its thread already.
    bad = builder.compile_to_file(threaded(2, "int value = 2;\n"))
    child(
        builder,
        f"""
        import os, shutil, time, hotr
        lib_path = {str(builder.lib)!r}
        shutil.copyfile({good!r}, lib_path)
        r = hotr.HotReloader(lib_path)
        lib = r.update()
        assert lib.value() == 1
        shutil.copyfile({bad!r}, lib_path + ".tmp")
        os.rename(lib_path + ".tmp", lib_path)
        assert r.watch_for_changes(timeout=5) == 1
        try:
            r.update()
        except hotr.LoadError as exc:
            assert "not a function" in str(exc), exc
        else:
            raise AssertionError("the bad version was accepted")
        time.sleep(0.05)
        assert lib.value() == 1
        r.close()
        """,
    )
    assert marks(builder.dir / "mark.txt") == ["cleanup 2", "cleanup 1"]


# hotr_load raises a signal in the process while the reload is in progress.
SIGNALLING = """
#include <signal.h>
#include <unistd.h>
int hotr_load(void **s, int v, int r) { if (v == 2) kill(getpid(), SIG); return 0; }
int value(void) { return TAG; }
"""


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_a_signal_during_a_reload_leaves_nothing_half_done(
    builder: Builder, signal_name: str
) -> None:
    versions = [
        builder.compile_to_file(threaded(n, SIGNALLING.replace("SIG", signal_name)))
        for n in (1, 2, 3)
    ]
    child(
        builder,
        f"""
        import os, shutil, signal, hotr

        def stop(signum, frame):
            raise KeyboardInterrupt
        signal.signal(signal.SIGTERM, stop)  # as hotr run does
        lib_path = {str(builder.lib)!r}
        shutil.copyfile({versions[0]!r}, lib_path)
        r = hotr.HotReloader(lib_path)
        lib = r.update()

        def land(path):
            shutil.copyfile(path, lib_path + ".tmp")
            os.rename(lib_path + ".tmp", lib_path)
            assert r.watch_for_changes(timeout=5) == 1

        land({versions[1]!r})
        try:
            r.update()
        except KeyboardInterrupt:
            pass  # raised once the reload was done, not in the middle of it
        else:
            raise AssertionError("the signal was lost")
        assert lib.value() == 2 and r.version == 2
        assert r.poll() is False  # nothing half-done is waiting
        land({versions[2]!r})
        r.update()
        assert lib.value() == 3
        r.close()
        """,
    )
    assert marks(builder.dir / "mark.txt") == ["cleanup 1", "cleanup 2", "cleanup 3"]


BOTH_SIGNALS = """
#include <signal.h>
#include <unistd.h>
int hotr_load(void **s, int v, int r) {
    if (v == 2) { kill(getpid(), SIGINT); kill(getpid(), SIGTERM); }
    return 0;
}
int value(void) { return TAG; }
"""


@pytest.mark.every_python  # deferred() is in C (_deferred.c)
def test_a_sigterm_behind_a_ctrl_c_during_a_reload_is_not_lost(builder: Builder) -> None:
    # Both land during one reload: the Ctrl-C's KeyboardInterrupt, raised on the way out, must
    # not swallow the program's SIGTERM handler (it ran 0 times), and both handlers are back.
    versions = [builder.compile_to_file(threaded(n, BOTH_SIGNALS)) for n in (1, 2)]
    child(
        builder,
        f"""
        import os, shutil, signal, hotr

        terms = []
        def on_term(signum, frame):
            terms.append(signum)
        signal.signal(signal.SIGTERM, on_term)
{renamed_in(builder, versions)}
        try:
            r.update()
        except KeyboardInterrupt:
            pass
        else:
            raise AssertionError("the Ctrl-C was lost")
        assert terms == [signal.SIGTERM], terms
        assert signal.getsignal(signal.SIGTERM) is on_term
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert lib.value() == 2
        r.close()
        """,
    )


# A library that takes Ctrl-C in its constructor, passing it on to the handler it found there,
# and puts that handler back in its cleanup(): both run while hotr holds the signals back.
CHAINS_CTRL_C = r"""
#include <signal.h>
#include <string.h>
static struct sigaction previous;
volatile int seen;
static void mine(int signum) {
    seen++;
    if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN)
        previous.sa_handler(signum);
}
__attribute__((constructor)) static void start(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = mine;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, &previous);
}
void cleanup(void) { sigaction(SIGINT, &previous, NULL); }
int value(void) { return seen; }
"""


@pytest.mark.every_python  # deferred() is in C (_deferred.c)
def test_a_handler_a_library_chains_to_still_raises_ctrl_c(builder: Builder) -> None:
    # What the constructor found in place was hotr's stand-in while it held the signals back.
    # Passed on to after the load, a Ctrl-C must still reach the program's handler; put back by
    # cleanup() in close(), it must neither be lost nor land in the unmapped library.
    lib = builder.compile_to_file(CHAINS_CTRL_C)
    child(
        builder,
        f"""
        import os, signal, time, hotr

        def interrupted():
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
            except KeyboardInterrupt:
                return True
            return False

        r = hotr.HotReloader({lib!r})
        lib = r.update()
        assert interrupted(), "a Ctrl-C passed on by the library was lost"
        assert lib.value() == 1
        r.close()
        assert interrupted(), "a Ctrl-C after close() was lost"
        """,
    )


@pytest.mark.every_python  # deferred() is in C (_deferred.c)
def test_an_ignored_ctrl_c_stays_ignored_through_a_reload(builder: Builder) -> None:
    # SIG_IGN is the program's choice: a reload neither holds it back nor puts a handler there.
    versions = [builder.compile_to_file(threaded(n, BOTH_SIGNALS)) for n in (1, 2)]
    child(
        builder,
        f"""
        import os, shutil, signal, hotr

        terms = []
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda signum, frame: terms.append(signum))
{renamed_in(builder, versions)}
        r.update()  # its hotr_load sends both: the Ctrl-C is ignored, the SIGTERM handled
        assert terms == [signal.SIGTERM], terms
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert lib.value() == 2
        r.close()
        """,
    )


SLOW_LOAD = """
#include <unistd.h>
int hotr_load(void **s, int v, int r) {
    if (v == 2) usleep(400 * 1000);
    return 0;
}
int value(void) { return TAG; }
"""


@pytest.mark.every_python  # deferred() is in C (_deferred.c)
def test_a_child_forked_during_a_reload_in_another_thread_still_answers_ctrl_c(
    builder: Builder,
) -> None:
    # The main thread holds Ctrl-C back for the whole reload (version 2's hotr_load sleeps);
    # another thread forks meanwhile.  The child's main thread is the forking one, and no
    # reload runs there: its Ctrl-C must raise KeyboardInterrupt, not stay noted for good.
    versions = [builder.compile_to_file(threaded(n, SLOW_LOAD)) for n in (1, 2)]
    child(
        builder,
        f"""
        import os, shutil, signal, threading, time, hotr
{renamed_in(builder, versions)}
        assert r.watch_for_changes(timeout=5) == 1
        status = []

        def fork_during_the_reload():
            time.sleep(0.15)  # the main thread is in version 2's hotr_load by now
            pid = os.fork()
            if pid == 0:
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(2)
                except KeyboardInterrupt:
                    os._exit(0)
                os._exit(3)
            status.append(os.waitpid(pid, 0)[1])

        thread = threading.Thread(target=fork_during_the_reload)
        thread.start()
        started = time.monotonic()
        r.update()
        assert time.monotonic() - started > 0.3, "the reload did not run while the fork came"
        thread.join()
        assert status and os.waitstatus_to_exitcode(status[0]) == 0, status
        assert lib.value() == 2
        r.close()
        """,
    )


def test_ctrl_c_during_a_build_is_retried_by_the_next_update(tmp_path: Path) -> None:
    # A compiler that, the first time, interrupts hotr (as a Ctrl-C would) and hangs.
    cc = tmp_path / "cc-interrupts-once"
    cc.write_text(
        "#!/bin/sh\n"
        f'if [ ! -e "{tmp_path}/interrupted" ]; then\n'
        f'  touch "{tmp_path}/interrupted"; kill -INT $PPID; sleep 30\n'
        "fi\n"
        'exec cc "$@"\n'
    )
    cc.chmod(0o755)
    src = tmp_path / "k.c"
    src.write_text("int value(void) { return 1; }\n")
    run_python(
        f"""
        import os, time, hotr
        src = {str(src)!r}
        r = hotr.HotReloader(src, cc={str(cc)!r})
        started = time.monotonic()
        try:
            r.update()
        except KeyboardInterrupt:
            pass
        else:
            raise AssertionError("the interrupt did not reach the program")
        assert time.monotonic() - started < 10, "the interrupted build was not killed"
        lib = r.update()  # the interrupted build is run again
        assert lib.value() == 1
        r.close()
        """,
        env={"HOTR_PRIVATE_DIR": str(tmp_path / "private")},
    )
    assert list((tmp_path / "private").iterdir()) == []


def test_ctrl_c_at_any_moment_of_starting_a_build_leaves_no_compiler_running(
    tmp_path: Path,
) -> None:
    # SIGINT lands 0-8 ms into update(), while the compiler is being started (its wrapper sleeps
    # first): the compiler's whole group is killed and reaped every time.
    cc = tmp_path / "slow-cc"
    cc.write_text('#!/bin/sh\nsleep 1\nexec cc "$@"\n')
    cc.chmod(0o755)
    src = tmp_path / "k.c"
    src.write_text("int value(void) { return 0; }\n")
    run_python(
        f"""
        import os, random, signal, threading, time, hotr
        src = {str(src)!r}

        def children():
            found = []
            for task in os.listdir("/proc/self/task"):
                with open(f"/proc/self/task/{{task}}/children") as f:
                    found += f.read().split()
            return found

        r = hotr.HotReloader(src, cc={str(cc)!r})
        r.update()
        interrupted = 0
        for n in range(1, 16):
            with open(src, "w") as f:
                f.write(f"int value(void) {{{{ return {{n}}; }}}}\\n")
            timer = threading.Timer(random.random() * 0.008, os.kill, (os.getpid(), signal.SIGINT))
            try:
                timer.start()
                r.update()
                timer.join()
            except KeyboardInterrupt:
                interrupted += 1
                timer.join()
            assert children() == [], f"save {{n}}: compilers left: {{children()}}"
        assert interrupted >= 10, interrupted
        r.close()
        """,
        env={"HOTR_PRIVATE_DIR": str(tmp_path / "private")},
    )


def test_dropping_everything_while_a_call_runs_in_a_retired_version(builder: Builder) -> None:
    slow = "#include <unistd.h>\nint slow(int us) { usleep(us); return TAG; }\n"
    versions = [builder.compile_to_file(threaded(n, slow)) for n in (1, 2)]
    child(
        builder,
        f"""
        import ctypes, gc, os, shutil, threading, time, hotr
        lib_path = {str(builder.lib)!r}
        shutil.copyfile({versions[0]!r}, lib_path)
        r = hotr.HotReloader(lib_path, debounce=0)
        slow = r.update().slow
        canary = [1.5 * n for n in range(10000)]
        result = []
        thread = threading.Thread(target=lambda: result.append(slow(300_000)))
        thread.start()
        time.sleep(0.05)  # the call is inside version 1
        shutil.copyfile({versions[1]!r}, lib_path + ".tmp")
        os.rename(lib_path + ".tmp", lib_path)
        assert r.watch_for_changes(timeout=5) == 1
        r.update()  # version 1 retires with the call still running in it
        del r, slow
        gc.collect()
        thread.join()
        gc.collect()
        assert result == [1], result
        assert canary == [1.5 * n for n in range(10000)], "memory was written after free"
        """,
    )
    assert marks(builder.dir / "mark.txt") == ["cleanup 1", "cleanup 2"]


def test_a_reloader_collected_unclosed_ends_its_versions(builder: Builder) -> None:
    code = builder.compile_to_file(threaded(1, "int value(void) { return 1; }\n"))
    child(
        builder,
        f"""
        import gc, shutil, hotr
        shutil.copyfile({code!r}, {str(builder.lib)!r})
        value = hotr.HotReloader({str(builder.lib)!r}).update().value
        gc.collect()
        assert value() == 1, "a function held keeps its reloader alive"
        del value
        gc.collect()
        import os
        assert open({str(builder.dir / "mark.txt")!r}).read() == "cleanup 1\\n"
        """,
    )


def test_close_with_a_call_running_ends_that_version_when_it_returns(builder: Builder) -> None:
    slow = "#include <unistd.h>\nint slow(int us) { usleep(us); return TAG; }\n"
    code = builder.compile_to_file(threaded(1, slow))
    child(
        builder,
        f"""
        import shutil, threading, time, hotr
        shutil.copyfile({code!r}, {str(builder.lib)!r})
        r = hotr.HotReloader({str(builder.lib)!r})
        lib = r.update()
        result = []
        thread = threading.Thread(target=lambda: result.append(lib.slow(200_000)))
        thread.start()
        time.sleep(0.05)
        r.close()
        mark = {str(builder.dir / "mark.txt")!r}
        import os
        assert not os.path.exists(mark), "cleanup() ran with a call inside the version"
        thread.join()
        assert result == [1]
        assert open(mark).read() == "cleanup 1\\n", "the version was never ended"
        """,
    )


def test_exit_runs_every_cleanup_once(builder: Builder) -> None:
    versions = [builder.compile_to_file(threaded(n, REFUSE.replace("REFUSE", "0"))) for n in (1, 2)]
    child(
        builder,
        f"""
        import os, shutil, hotr
        lib_path = {str(builder.lib)!r}
        shutil.copyfile({versions[0]!r}, lib_path)
        lib = hotr.load(lib_path)
        r = hotr.reloader_of(lib)
        shutil.copyfile({versions[1]!r}, lib_path + ".tmp")
        os.rename(lib_path + ".tmp", lib_path)
        import time
        deadline = time.monotonic() + 5
        while lib.value() != 2:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        """,
    )
    assert sorted(marks(builder.dir / "mark.txt")) == ["cleanup 1", "cleanup 2"]
    assert list((builder.dir / "private").iterdir()) == []


def test_fork_while_a_thread_reloads_leaves_a_child_that_can_load(builder: Builder) -> None:
    versions = [
        builder.compile_to_file(threaded(n, "int value(void) { return TAG; }\n")) for n in (1, 2)
    ]
    child(
        builder,
        f"""
        import ctypes, faulthandler, os, shutil, threading, hotr
        lib_path = {str(builder.lib)!r}
        shutil.copyfile({versions[0]!r}, lib_path)
        lib = hotr.load(lib_path, debounce=0)
        stop = threading.Event()

        def writer():
            n = 0
            while not stop.is_set():
                shutil.copyfile([{versions[0]!r}, {versions[1]!r}][n % 2], lib_path + ".tmp")
                os.rename(lib_path + ".tmp", lib_path)
                n += 1

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            for _ in range(30):
                pid = os.fork()
                if pid == 0:
                    faulthandler.dump_traceback_later(10, exit=True)  # a hang fails, not hangs
                    ctypes.CDLL({versions[1]!r})  # dlopen in the child
                    assert lib.value() in (1, 2)
                    os._exit(0)
                _, status = os.waitpid(pid, 0)
                assert os.waitstatus_to_exitcode(status) == 0, status
        finally:
            stop.set()
            thread.join()
        assert hotr.reloader_of(lib).version > 3, "no reloads happened around the forks"
        """,
    )


def test_a_watcher_made_before_a_fork_refuses_add_and_closes_in_the_child(
    builder: Builder,
) -> None:
    # Forked right after add(), while the watcher's thread may hold its lock: the child's
    # add() and close() never wait for a thread that is not in the child.
    other = builder.compile_to_file(source(2))
    child(
        builder,
        f"""
        import faulthandler, os, hotr
        for n in range(20):
            watcher = hotr.Watcher()
            lib = watcher.add({str(builder.lib)!r})
            pid = os.fork()
            if pid == 0:
                faulthandler.dump_traceback_later(10, exit=True)  # a hang fails, not hangs
                try:
                    watcher.add({other!r})
                except hotr.HotReloadError as exc:
                    assert "belongs to the parent process" in str(exc), exc
                else:
                    os._exit(3)  # a library no thread in this child would ever reload
                assert lib.value() == 1
                watcher.close()
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, (n, status)
            watcher.close()
        """,
    )


@pytest.mark.skipif(shutil.which("chattr") is None, reason="needs chattr")
def test_a_copy_that_cannot_be_removed_never_stops_the_watcher(
    builder: Builder, caplog: pytest.LogCaptureFixture
) -> None:
    with hotr.load(builder.lib, debounce=0) as lib:
        (first,) = (builder.dir / "private").rglob("v1-libhot.so")
        if subprocess.run(["chattr", "+i", str(first)], capture_output=True).returncode:
            pytest.skip("this file system cannot make a file immutable")
        try:
            for n in (2, 3, 4):
                builder.rename(source(n))
                deadline = time.monotonic() + 5
                while lib.value() != n:
                    assert time.monotonic() < deadline, f"reloading stopped at version {n}"
                    time.sleep(0.005)
            assert hotr.reloader_of(lib).poll() is False  # housekeeping raises nothing
            assert first.exists()
            assert "cannot remove private copy" in caplog.text
        finally:
            subprocess.run(["chattr", "-i", str(first)], check=True)
        hotr.reloader_of(lib).poll()  # the next housekeeping removes it
        assert not first.exists()


# cleanup() raises SIGINT in the process: close() must still end every version and remove every
# copy, then let the Ctrl-C through.
INTERRUPTS_CLEANUP = """
#include <signal.h>
#include <unistd.h>
int value(void) { return TAG; }
__attribute__((destructor)) static void bye(void) { }
void hotr_unload(void **s, int v) { kill(getpid(), SIGINT); }
"""


def test_ctrl_c_from_a_cleanup_during_close_ends_every_version(builder: Builder) -> None:
    versions = [builder.compile_to_file(threaded(n, INTERRUPTS_CLEANUP)) for n in (1, 2)]
    child(
        builder,
        f"""
        import os, shutil, hotr
{renamed_in(builder, versions)}
        assert r.watch_for_changes(timeout=5) == 1
        try:
            r.update()  # version 1's hotr_unload interrupts, after the reload is done
        except KeyboardInterrupt:
            pass
        assert lib.value() == 2
        try:
            r.close()
        except KeyboardInterrupt:
            pass
        else:
            raise AssertionError("the Ctrl-C raised in hotr_unload was lost")
        assert r.closed
        """,
    )
    assert marks(builder.dir / "mark.txt") == ["cleanup 1", "cleanup 2"]
    assert list((builder.dir / "private").iterdir()) == []


def test_a_reload_in_one_thread_holds_a_ctrl_c_raised_in_another(builder: Builder) -> None:
    # Thread X's hotr_load takes its time; meanwhile the main thread reloads Y, whose hotr_load
    # raises SIGINT.  Both reloads complete; the Ctrl-C reaches the main thread afterwards.
    slow = [
        builder.compile_to_file(
            "#include <unistd.h>\nint hotr_load(void **s, int v, int r) {"
            f" if (v == 2) usleep(300000); return 0; }}\nint value(void) {{ return {n}; }}\n"
        )
        for n in (11, 12)
    ]
    loud = [
        builder.compile_to_file(threaded(n, SIGNALLING.replace("SIG", "SIGINT"))) for n in (1, 2)
    ]
    child(
        builder,
        f"""
        import os, shutil, threading, hotr
        d = {str(builder.dir)!r}
        x_path, y_path = d + "/libx.so", d + "/liby.so"
        shutil.copyfile({slow[0]!r}, x_path)
        shutil.copyfile({loud[0]!r}, y_path)
        x, y = hotr.HotReloader(x_path), hotr.HotReloader(y_path)
        lx, ly = x.update(), y.update()
        for new, path in (({slow[1]!r}, x_path), ({loud[1]!r}, y_path)):
            shutil.copyfile(new, path + ".tmp")
            os.rename(path + ".tmp", path)
        assert x.watch_for_changes(timeout=5) == 1 and y.watch_for_changes(timeout=5) == 1
        done = []
        thread = threading.Thread(target=lambda: done.append(x.update().value()))
        thread.start()
        try:
            y.update()
        except KeyboardInterrupt:
            pass
        else:
            raise AssertionError("the Ctrl-C was lost")
        thread.join()
        assert done == [12] and x.version == 2 and y.version == 2
        assert ly.value() == 2
        x.close()
        y.close()
        """,
    )


def test_a_child_forked_while_a_reload_holds_ctrl_c_gets_its_handler_back(
    builder: Builder,
) -> None:
    # The main thread is inside a reload (hotr_load sleeps) when another thread forks: in the
    # child, that thread is the main thread and Ctrl-C must raise KeyboardInterrupt there.
    slow = [
        builder.compile_to_file(
            "#include <unistd.h>\nint hotr_load(void **s, int v, int r) {"
            f" if (v == 2) usleep(400000); return 0; }}\nint value(void) {{ return {n}; }}\n"
        )
        for n in (1, 2)
    ]
    child(
        builder,
        f"""
        import os, shutil, signal, threading, time, hotr
        lib_path = {str(builder.lib)!r}
        shutil.copyfile({slow[0]!r}, lib_path)
        r = hotr.HotReloader(lib_path)
        r.update()
        shutil.copyfile({slow[1]!r}, lib_path + ".tmp")
        os.rename(lib_path + ".tmp", lib_path)
        assert r.watch_for_changes(timeout=5) == 1
        status = []

        def fork_midway():
            time.sleep(0.15)  # the main thread is in hotr_load by now
            pid = os.fork()
            if pid == 0:
                code = 4
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(1)
                except KeyboardInterrupt:
                    code = 0
                os._exit(code)
            status.append(os.waitpid(pid, 0)[1])

        thread = threading.Thread(target=fork_midway)
        thread.start()
        r.update()
        thread.join()
        assert r.version == 2
        assert os.waitstatus_to_exitcode(status[0]) == 0, "Ctrl-C was held in the child"
        r.close()
        """,
    )


def test_on_reload_runs_when_a_held_ctrl_c_follows_the_reload(builder: Builder) -> None:
    versions = [
        builder.compile_to_file(threaded(n, SIGNALLING.replace("SIG", "SIGINT"))) for n in (1, 2)
    ]
    child(
        builder,
        f"""
        import os, shutil, hotr
        lib_path = {str(builder.lib)!r}
        shutil.copyfile({versions[0]!r}, lib_path)
        r = hotr.HotReloader(lib_path)
        told = []
        r.on_reload(lambda old, new: told.append((old, new)))
        r.update()
        shutil.copyfile({versions[1]!r}, lib_path + ".tmp")
        os.rename(lib_path + ".tmp", lib_path)
        assert r.watch_for_changes(timeout=5) == 1
        try:
            r.update()
        except KeyboardInterrupt:
            pass
        assert (1, 2) in told, told
        r.close()
        """,
    )


def test_a_closed_library_says_it_was_closed(builder: Builder) -> None:
    r = hotr.HotReloader(builder.lib)
    lib = r.update()
    r.close()
    with pytest.raises(hotr.HotReloadError, match="closed"):
        lib.value()
    with hotr.Watcher() as watcher:
        other = watcher.add(builder.lib)
        watcher.remove(other)
        with pytest.raises(hotr.HotReloadError, match="closed"):
            other.value()


def test_ctrl_c_taken_by_another_thread_still_ends_a_wait_in_the_main_thread(
    builder: Builder,
) -> None:
    """A signal whose C handler ran elsewhere (another thread took it, or it landed just before
    poll() began) interrupts no system call of the main thread's; its wait still ends, with the
    KeyboardInterrupt, soon after."""
    lib = builder.compile_to_file(source(1))
    run_python(
        f"""
        import signal, threading, time, hotr
        r = hotr.HotReloader({lib!r})
        r.update()
        def interrupt():
            time.sleep(0.3)  # the main thread is blocked in its wait by now
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # taken by this thread
        threading.Thread(target=interrupt).start()
        started = time.monotonic()
        try:
            r.watch_for_changes()
        except KeyboardInterrupt:
            pass
        else:
            raise AssertionError("the wait ended without the KeyboardInterrupt")
        assert time.monotonic() - started < 5, time.monotonic() - started
        r.close()
        """,
        timeout=30,
    )


def test_hotrs_own_thread_blocks_ctrl_c_and_sigterm(builder: Builder) -> None:
    """The thread that reads events never takes SIGINT or SIGTERM sent to the process: the
    kernel gives them to a thread that can act on them (the main thread, at once)."""
    lib = builder.compile_to_file(source(1))
    run_python(
        f"""
        import signal, threading, hotr
        lib = hotr.load({lib!r})
        assert lib.value() == 1
        ours = [t for t in threading.enumerate() if t.name == "hotr"]
        assert ours, [t.name for t in threading.enumerate()]
        with open(f"/proc/self/task/{{ours[0].native_id}}/status") as f:
            blocked = int(next(l for l in f if l.startswith("SigBlk:")).split()[1], 16)
        held = {{signal.SIGINT, signal.SIGTERM}}
        assert {{s for s in held if blocked >> (s - 1) & 1}} == held, hex(blocked)
        hotr.reloader_of(lib).close()
        """
    )
