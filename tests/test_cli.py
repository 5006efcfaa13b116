"""The hotr command, end to end in a subprocess, and its argument handling in-process."""

from __future__ import annotations

import os
import pty
import random
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import CC, Lines

from hotr.cli import USAGE, _parser, main

HOOKS = """
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <hotr.h>
static void mark(const char *what, int version) {
    FILE *f = fopen(getenv("HOTR_TEST_MARK"), "a");
    fprintf(f, "%s %d\\n", what, version);
    fclose(f);
}
int hotr_load(void **state, int version, int reloading) {
    mark("load", version);
    if (getenv("HOTR_TEST_SLOW_LOAD")) usleep(400000);
    mark("loaded", version);
    return 0;
}
int hotr_unload(void **state, int version, int reloading) { mark("unload", version); return 0; }
void tick(void) { puts("tick"); fflush(stdout); }
"""


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "HOTR_PRIVATE_DIR": str(tmp_path / "private"),
        "HOTR_DEMO_DIR": str(tmp_path / "demo"),
        "HOTR_TEST_MARK": str(tmp_path / "mark.txt"),
        **extra,
    }


def start(tmp_path: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hotr", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment(tmp_path, **env),
    )


def hotr(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run hotr to its end (it must end by itself: a refusal never keeps running)."""
    return subprocess.run(
        [sys.executable, "-m", "hotr", *args],
        capture_output=True,
        text=True,
        env=environment(tmp_path, **env),
        timeout=60,
    )


def save(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.rename(tmp, path)


def marks(tmp_path: Path) -> list[str]:
    path = tmp_path / "mark.txt"
    return path.read_text().splitlines() if path.exists() else []


def wait_for_file(path: Path, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)
    return path.read_text()


def stopped_cleanly(proc: subprocess.Popen[str], lines: Lines, tmp_path: Path) -> None:
    """The stop signal was sent: exit status 0, no traceback, no private file left."""
    assert proc.wait(timeout=20) == 0
    output = "\n".join(lines.rest())
    assert "Traceback" not in output, output
    private = tmp_path / "private"
    assert not private.exists() or list(private.iterdir()) == [], list(private.rglob("*"))


def interrupted_cleanly(proc: subprocess.Popen[str], lines: Lines, tmp_path: Path) -> None:
    """Ctrl-C: `hotr run` says it stopped, then stopped_cleanly()."""
    proc.send_signal(signal.SIGINT)
    lines.wait_for("stopped")
    stopped_cleanly(proc, lines, tmp_path)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_demo_reloads_on_save_and_stops_cleanly(tmp_path: Path, stop: signal.Signals) -> None:
    with start(tmp_path, "run") as proc:
        try:
            lines = Lines(proc)
            lines.wait_for("demo: edit")
            source = tmp_path / "demo" / "example.c"
            assert str(source) in lines.seen[-1]
            assert (tmp_path / "demo").stat().st_mode & 0o777 == 0o700
            lines.wait_for("loaded version 1")
            lines.wait_for("hello world!")
            save(source, source.read_text().replace("hello world!", "hello again!"))
            lines.wait_for("example.c: built in")
            assert "loaded version 2" in lines.seen[-1]
            lines.wait_for("hello again!")
            save(source, "this is not C\n")
            lines.wait_for("the build failed")
            assert lines.seen[-1].startswith("hotr: example.c: the build failed (exit status 1)")
            assert lines.seen[-1].endswith("; version 2 stays live")
            lines.wait_for("$ ")
            lines.wait_for("example.c:1")
            proc.send_signal(stop)
            lines.wait_for("hotr: stopped")
            lines.wait_for("cleanup")
            stopped_cleanly(proc, lines, tmp_path)
        finally:
            proc.kill()
    assert sum("the build failed" in line for line in lines.seen) == 1  # once for one change


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_during_a_build_kills_it_and_exits_0(tmp_path: Path, stop: signal.Signals) -> None:
    src = tmp_path / "k.c"
    src.write_text("void f(void) {}\n")
    started = tmp_path / "build-pid"
    script = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(99)"
    build = f'{sys.executable} -c "{script}" {started}'

    with start(
        tmp_path, "run", str(src), "--build", build, "--output", str(tmp_path / "l.so")
    ) as p:
        try:
            lines = Lines(p)
            pid = int(wait_for_file(started))
            p.send_signal(stop)
            p.send_signal(stop)  # an impatient second one must not cut the cleanup short
            lines.wait_for("hotr: stopped")
            stopped_cleanly(p, lines, tmp_path)
        finally:
            p.kill()
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left running
        os.kill(pid, 0)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_during_a_hook_lets_it_finish_and_unloads(
    tmp_path: Path, stop: signal.Signals
) -> None:
    src = tmp_path / "hooks.c"
    src.write_text(HOOKS)
    args = ("run", str(src), "--call", "tick")
    with start(tmp_path, *args, HOTR_TEST_SLOW_LOAD="1") as proc:
        try:
            lines = Lines(proc)
            deadline = time.monotonic() + 20
            while "load 1" not in marks(tmp_path):
                assert time.monotonic() < deadline, "hotr_load never ran"
                time.sleep(0.005)
            proc.send_signal(stop)  # while hotr_load sleeps: it is held back until the hook ends
            time.sleep(0.05)
            proc.send_signal(stop)
            lines.wait_for("hotr: stopped")
            stopped_cleanly(proc, lines, tmp_path)
        finally:
            proc.kill()
    assert marks(tmp_path) == ["load 1", "loaded 1", "unload 1"]


def test_a_stop_at_any_moment_exits_0_and_leaves_nothing(tmp_path: Path) -> None:
    # Signals at random moments after start-up: during the build, the load, the call, the wait.
    rng = random.Random(11)
    for n in range(8):
        with start(tmp_path, "run") as proc:
            try:
                lines = Lines(proc)
                lines.wait_for("demo: edit", timeout=30)
                time.sleep(rng.uniform(0, 0.15))
                proc.send_signal(rng.choice([signal.SIGINT, signal.SIGTERM]))
                stopped_cleanly(proc, lines, tmp_path)
            finally:
                proc.kill()
        if "hello world!" in lines.seen:
            assert "cleanup" in lines.seen, f"run {n}: a loaded version was never cleaned up"


def test_run_calls_named_functions_and_reports_a_missing_one_once(tmp_path: Path) -> None:
    src = tmp_path / "k.c"
    src.write_text('#include <stdio.h>\nvoid tick(void) { puts("tick 1"); }\n')
    with start(tmp_path, "run", str(src), "--call", "tick", "--call", "nope", "--", "-O2") as proc:
        try:
            lines = Lines(proc)
            lines.wait_for("loaded version 1")
            lines.wait_for("tick 1")
            lines.wait_for("hotr: k.c (version 1) has no function 'nope': check --call nope")
            save(src, '#include <stdio.h>\nvoid tick(void) { puts("tick 2"); }\n')
            lines.wait_for("tick 2")
            save(src, '#include <stdio.h>\nvoid tick(void) { puts("tick 3"); }\n')
            lines.wait_for("tick 3")
            interrupted_cleanly(proc, lines, tmp_path)
        finally:
            proc.kill()
    assert sum("no function 'nope'" in line for line in lines.seen) == 1


def test_a_called_function_a_new_version_drops_is_reported_once(tmp_path: Path) -> None:
    # hotr run --call tick ended with a SymbolNotFoundError traceback when a save removed
    # tick (or renamed it): only a name no version ever had was reported.
    src = tmp_path / "k.c"
    src.write_text('#include <stdio.h>\nvoid tick(void) { puts("tick 1"); }\n')
    with start(tmp_path, "run", str(src), "--call", "tick") as proc:
        try:
            lines = Lines(proc)
            lines.wait_for("tick 1")
            save(src, "void tock(void) { }\n")
            lines.wait_for("hotr: k.c (version 2) has no function 'tick': check --call tick")
            save(src, "void tock(void) { }\nint x;\n")
            lines.wait_for("loaded version 3")
            save(src, '#include <stdio.h>\nvoid tick(void) { puts("tick 4"); }\n')
            lines.wait_for("tick 4")
            save(src, "void tock(void) { }\n")
            lines.wait_for("hotr: k.c (version 5) has no function 'tick'")
            interrupted_cleanly(proc, lines, tmp_path)
        finally:
            proc.kill()
    assert sum("has no function 'tick'" in line for line in lines.seen) == 2, lines.seen
    assert "Traceback" not in "\n".join(lines.seen)


def test_call_of_a_function_that_takes_arguments_is_an_error_not_a_crash(tmp_path: Path) -> None:
    src = tmp_path / "k.c"
    src.write_text("int twice(int x) { return 2 * x; }\nint count = 3;\n")
    with start(tmp_path, "run", str(src), "--call", "twice", "--call", "count") as proc:
        try:
            lines = Lines(proc)
            lines.wait_for("--call twice calls it with no arguments")
            lines.wait_for("'count' in")  # a variable: "... is not a function ...: check --call"
            save(src, "int twice(int x) { return 3 * x; }\n")
            lines.wait_for("loaded version 2")
            interrupted_cleanly(proc, lines, tmp_path)
        finally:
            proc.kill()
    assert not any("Traceback" in line for line in lines.seen)


def test_no_default_function_hints_at_call_once(tmp_path: Path) -> None:
    src = tmp_path / "k.c"
    src.write_text("int f(void) { return 1; }\n")
    with start(tmp_path, "run", str(src)) as proc:
        try:
            lines = Lines(proc)
            lines.wait_for("has no hello_world_func() to call")
            assert "--call NAME" in lines.seen[-1]
            save(src, "int f(void) { return 2; }\n")
            lines.wait_for("loaded version 2")
            interrupted_cleanly(proc, lines, tmp_path)
        finally:
            proc.kill()
    assert sum("--call NAME" in line for line in lines.seen) == 1


def test_a_builds_warnings_are_shown_after_its_load(tmp_path: Path) -> None:
    # hotr run -- -Wall printed no warning: the builder kept them to itself.
    src = tmp_path / "k.c"
    unused = '#include <stdio.h>\nvoid f(void) { int unused; puts("ran"); }\n'
    src.write_text(unused)
    with start(tmp_path, "run", str(src), "--call", "f", "--", "-Wall") as proc:
        try:
            lines = Lines(proc)
            lines.wait_for("ran")
            save(src, '#include <stdio.h>\nint g(int a) { if (a = 2) puts("g"); return 0; }\n')
            lines.wait_for("loaded version 2")
            lines.wait_for("warning: suggest parentheses")
            interrupted_cleanly(proc, lines, tmp_path)
        finally:
            proc.kill()
    warned = [i for i, line in enumerate(lines.seen) if "warning: unused variable" in line]
    loaded = [i for i, line in enumerate(lines.seen) if "loaded version 1" in line]
    assert warned and loaded and loaded[0] < warned[0] < lines.seen.index("ran"), lines.seen
    assert sum("unused" in line for line in lines.seen) == 2, lines.seen  # shown once
    src.write_text(unused)
    with start(tmp_path, "run", str(src), "--call", "f", "--quiet", "--", "-Wall") as proc:
        try:
            lines = Lines(proc)
            lines.wait_for("ran")
            proc.send_signal(signal.SIGINT)
            stopped_cleanly(proc, lines, tmp_path)
        finally:
            proc.kill()
    assert not any("warning" in line for line in lines.seen), lines.seen


def test_a_build_failing_at_start_waits_for_the_fix(tmp_path: Path) -> None:
    src = tmp_path / "k.c"
    src.write_text("this is not C\n")
    with start(tmp_path, "run", str(src), "--call", "f") as proc:
        try:
            lines = Lines(proc)
            lines.wait_for("the build failed")
            assert lines.seen[-1].endswith("; nothing is loaded yet")
            save(src, '#include <stdio.h>\nvoid f(void) { puts("fixed"); }\n')
            lines.wait_for("loaded version 1")
            lines.wait_for("fixed")
            proc.send_signal(signal.SIGTERM)
            lines.wait_for("stopped")
            stopped_cleanly(proc, lines, tmp_path)
        finally:
            proc.kill()
    assert sum("the build failed" in line for line in lines.seen) == 1


def test_a_fix_back_to_the_live_version_says_so(tmp_path: Path) -> None:
    src = tmp_path / "k.c"
    good = '#include <stdio.h>\nvoid f(void) { puts("good"); }\n'
    src.write_text(good)
    with start(tmp_path, "run", str(src), "--call", "f") as proc:
        try:
            lines = Lines(proc)
            lines.wait_for("loaded version 1")
            save(src, "this is not C\n")
            lines.wait_for("the build failed")
            save(src, good)  # the same library as version 1: nothing to reload
            lines.wait_for("k.c: fixed: the same as version 1, which stays live")
            proc.send_signal(signal.SIGTERM)
            lines.wait_for("stopped")
            stopped_cleanly(proc, lines, tmp_path)
        finally:
            proc.kill()


def test_keep_globals_status_line_says_what_was_carried(tmp_path: Path) -> None:
    src = tmp_path / "k.c"
    src.write_text('#include <stdio.h>\nint n;\nvoid tick(void) { printf("n=%d\\n", ++n); }\n')
    with start(tmp_path, "run", str(src), "--call", "tick", "--keep-globals") as proc:
        try:
            lines = Lines(proc)
            lines.wait_for("n=1")
            save(src, src.read_text().replace("int n;", "int n;\nlong big[4];"))
            lines.wait_for("loaded version 2")
            assert lines.seen[-1].endswith("; carried: n; not carried: big (new in this version)")
            lines.wait_for("n=2")
            interrupted_cleanly(proc, lines, tmp_path)
        finally:
            proc.kill()


def test_quiet_prints_only_errors_and_verbose_the_log(tmp_path: Path) -> None:
    src = tmp_path / "k.c"
    src.write_text('#include <stdio.h>\nvoid f(void) { puts("ran"); }\n')
    seen = {}
    for flag in ("--quiet", "--verbose"):
        with start(tmp_path, "run", str(src), "--call", "f", flag) as proc:
            try:
                lines = Lines(proc)
                lines.wait_for("ran")
                proc.send_signal(signal.SIGINT)
                stopped_cleanly(proc, lines, tmp_path)
            finally:
                proc.kill()
        seen[flag] = lines.seen
    assert seen["--quiet"] == ["ran", "cleanup"] or seen["--quiet"] == ["ran"], seen
    assert any(line.startswith("hotr: built ") for line in seen["--verbose"]), seen  # hotr's log
    assert any("loaded version 1" in line for line in seen["--verbose"]), seen


def test_debounce_and_polling_options_reload(tmp_path: Path) -> None:
    src = tmp_path / "k.c"
    src.write_text('#include <stdio.h>\nvoid f(void) { puts("one"); }\n')
    args = ("--backend", "poll", "--poll-interval", "0.05", "--debounce", "0")
    with start(tmp_path, "run", str(src), "--call", "f", *args) as proc:
        try:
            lines = Lines(proc)
            lines.wait_for("one")
            save(src, '#include <stdio.h>\nvoid f(void) { puts("two"); }\n')
            lines.wait_for("two")
            proc.send_signal(signal.SIGINT)
            stopped_cleanly(proc, lines, tmp_path)
        finally:
            proc.kill()


def test_colours_only_on_a_terminal(tmp_path: Path) -> None:
    src = tmp_path / "k.c"
    src.write_text("int f(void) { return 1 +; }\n")
    plain = start(tmp_path, "run", str(src))
    master, slave = pty.openpty()
    env = {k: v for k, v in environment(tmp_path, TERM="xterm").items() if k != "NO_COLOR"}
    coloured = subprocess.Popen(
        [sys.executable, "-m", "hotr", "run", str(src)],
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    try:
        lines = Lines(plain)
        lines.wait_for("error:")
        assert not any("\x1b[" in line for line in lines.seen)
        seen = b""
        deadline = time.monotonic() + 20
        while b"error:" not in seen.replace(b"\x1b[1;31m", b""):
            assert select.select([master], [], [], max(0, deadline - time.monotonic()))[0], seen
            seen += os.read(master, 4096)
        assert b"\x1b[1;31merror:\x1b[0m" in seen  # the compiler's message, coloured by hotr
        assert b"\x1b[1;31mhotr: k.c: the build failed" in seen
    finally:
        for proc in (plain, coloured):
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=20)
        plain.stdout.close()  # type: ignore[union-attr]
        os.close(master)


def executable(tmp_path: Path) -> Path:
    src, out = tmp_path / "prog.c", tmp_path / "prog"
    src.write_text("int main(void) { return 0; }\n")
    subprocess.run([CC, "-fPIE", "-pie", str(src), "-o", str(out)], check=True)
    return out


USER_ERRORS: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "directory": (
        lambda t: ["run", str(t)],
        "is a directory: TARGET is a .so library or C sources",
    ),
    "text file": (lambda t: ["run", str(t / "notes.txt")], "notes.txt is neither a shared library"),
    "missing": (lambda t: ["run", str(t / "gone.so")], "gone.so: no such file: check the path"),
    "executable": (
        lambda t: ["run", str(executable(t))],
        "not a shared object; link it with -shared",
    ),
    "compiler": (
        lambda t: ["run", "--cc", "no-such-cc"],
        "compiler 'no-such-cc' (from --cc) not found",
    ),
    "build": (
        lambda t: ["run", str(t / "notes.txt"), "--build", "no-such-make", "--output", "l.so"],
        "build command 'no-such-make' (--build) not found",
    ),
}


@pytest.mark.parametrize("case", USER_ERRORS, ids=list(USER_ERRORS))
def test_user_errors_exit_1_with_one_line(tmp_path: Path, case: str) -> None:
    (tmp_path / "notes.txt").write_text("not code\n")
    argv, message = USER_ERRORS[case]
    result = hotr(tmp_path, *argv(tmp_path))
    assert result.returncode == 1, result
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert result.stderr.startswith("hotr: ")
    assert not (tmp_path / "private").exists() or list((tmp_path / "private").iterdir()) == []


def test_bad_environment_values_name_the_variable(tmp_path: Path) -> None:
    src = tmp_path / "k.c"
    src.write_text("void f(void) {}\n")
    result = hotr(tmp_path, "run", str(src), "--backend", "poll", HOTR_POLL_INTERVAL="abc")
    assert (result.returncode, result.stderr.count("\n")) == (1, 1), result
    assert "HOTR_POLL_INTERVAL='abc' is not a number of seconds" in result.stderr
    result = hotr(tmp_path, "run", str(src), HOTR_BACKEND="fsevents")
    assert (result.returncode, result.stderr.count("\n")) == (1, 1), result
    assert "HOTR_BACKEND='fsevents' is not a backend" in result.stderr
    result = hotr(tmp_path, "run", str(src), CC="no-such-cc")
    assert "compiler 'no-such-cc' (from $CC) not found" in result.stderr


@pytest.mark.parametrize("unsafe", ["open", "symlink", "foreign"])
def test_a_demo_directory_others_control_is_refused(tmp_path: Path, unsafe: str) -> None:
    # Whatever is in the demo directory gets compiled and run: another user's example.c must
    # never be.  (hotr would also create its own file only if none is there.)
    demo = tmp_path / "demo"
    if unsafe == "symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        demo.symlink_to(tmp_path / "elsewhere")
        demo = tmp_path / "elsewhere"
    else:
        demo.mkdir()
        os.chmod(demo, 0o777 if unsafe == "open" else 0o700)
    planted = demo / "example.c"
    planted.write_text(
        '#include <stdlib.h>\n__attribute__((constructor)) void p(void) { system("touch x"); }\n'
    )
    if unsafe == "foreign":
        if os.geteuid() != 0:
            pytest.skip("only root can give a directory to another user")
        os.chown(tmp_path / "demo", 65534, 65534)
    result = subprocess.run(
        [sys.executable, "-m", "hotr", "run"],
        capture_output=True,
        text=True,
        env=environment(tmp_path),
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 1, result
    expected = {
        "open": "is open to other users (mode 777); run chmod 700 on it",
        "symlink": "is not a directory (a symlink or a file); set HOTR_DEMO_DIR",
        "foreign": "belongs to another user (uid 65534); set HOTR_DEMO_DIR",
    }[unsafe]
    assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
    assert "demo directory" in result.stderr
    assert not (tmp_path / "x").exists(), "the planted code ran"


USAGE_ERRORS = {
    "output without build": (["run", "k.c", "--output", "l.so"], "give --build CMD as well"),
    "build without output": (["run", "k.c", "--build", "make"], "--build needs --output PATH"),
    "build without targets": (["run", "--build", "make", "--output", "l.so"], "needs TARGETs"),
    "source after --": (["run", "--", "-lz", "needz.c"], "needz.c comes after --"),
    "flags with build": (
        ["run", "k.c", "--build", "make", "--output", "l.so", "--", "-O2"],
        "with --build",
    ),
    "flags for a library": (["run", "l.so", "--", "-O2"], "l.so is a library"),
    "two libraries": (["run", "a.so", "b.so"], "a.so is not a C source: give one .so library"),
    "a header": (["run", "k.c", "k.h"], "k.h is not a C source: give one .so library, or C"),
    "negative timeout": (["run", "--timeout", "-1"], "'-1' is not a number of seconds > 0"),
    "bad debounce": (["run", "--debounce", "soon"], "'soon' is not a number of seconds >= 0"),
    "zero poll interval": (["run", "--poll-interval", "0"], "'0' is not a number of seconds > 0"),
    "infinite timeout": (["run", "--timeout", "inf"], "'inf' is not a finite number of seconds"),
    "empty call": (["run", "--call", ""], "argument --call: '' is not a function's name"),
    "quiet and verbose": (["run", "-q", "-v"], "not allowed with"),
    "no jobs": (["run", "--jobs", "0"], "'0' is not a whole number of at least 1"),
    "unbalanced quote": (
        ["run", "k.c", "--build", "make 'x", "--output", "l.so"],
        "cannot be split like a shell would",
    ),
    "empty build": (["run", "k.c", "--build", "", "--output", "l.so"], "--build is empty"),
    "unknown option": (["run", "--bogus"], "unrecognized arguments: --bogus"),
    "a source twice": (["run", "v.c", "v.c"], "v.c is given twice: give each TARGET once"),
    "two spellings": (["run", "v.c", "./v.c"], "v.c and ./v.c are the same file: give each"),
}


@pytest.mark.parametrize("case", USAGE_ERRORS, ids=list(USAGE_ERRORS))
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], case: str) -> None:
    argv, message = USAGE_ERRORS[case]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: hotr run") and message in err, err


def test_one_source_by_two_names_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "v.c").write_text("int value(void) { return 1; }\n")
    (tmp_path / "link.c").symlink_to(tmp_path / "v.c")
    for other in (tmp_path / "link.c", tmp_path / "sub" / ".." / "v.c"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(SystemExit) as info:
            main(["run", str(tmp_path / "v.c"), str(other)])
        assert info.value.code == 2  # it was 1, from the reloader's check
        assert f"v.c and {other} are the same file" in capsys.readouterr().err


def test_usage_errors_from_the_command(tmp_path: Path) -> None:
    result = hotr(tmp_path, "run", "--", "x.c")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert not (tmp_path / "demo").exists(), "a usage error must not set up the demo"


def test_usage_line_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    _, run = _parser()
    options = [a.option_strings[-1] for a in run._actions if a.option_strings and a.help]
    usage = re.sub(r"\s+", " ", USAGE)
    for option in options:
        if option != "--help":
            assert option in usage, f"{option} is missing from the usage line"
    with pytest.raises(SystemExit) as info:
        main(["run", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--call SYMBOL" in out and "void SYMBOL(void)" in out


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("hotr ")
    assert main([]) == 2


def test_main_puts_the_signal_handlers_back() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit):
        main(["run", "--bogus"])
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_a_ctrl_c_that_lands_in_string_code_still_exits_0(tmp_path: Path) -> None:
    # The cause of test_a_stop_at_any_moment_exits_0_and_leaves_nothing's rare -2: a Ctrl-C
    # that lands while a lazily imported module makes a dataclass (exec of generated source)
    # leaves CPython's "unhandled KeyboardInterrupt" flag set although `hotr run` caught it,
    # and `python -m` then kills itself with SIGINT after exiting 0.  The Ctrl-C is sent from
    # such string code here, so that it lands there every time.
    (tmp_path / "stringcode.py").write_text(
        "import sys\n"
        "from hotr import cli\n"
        "ctrl_c = 'import signal\\nsignal.raise_signal(signal.SIGINT)\\nx = 1'\n"
        "cli._main = lambda args: exec(ctrl_c)\n"
        "sys.exit(cli.main())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "stringcode"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=environment(tmp_path, PYTHONPATH=str(tmp_path)),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
