"""Building from C sources on save, with the real compiler: sources, headers, errors, bursts."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import reload_next, wait_until_blocked

import hotr


def save(path: Path, text: str) -> None:
    """Save as editors do: write a temporary file, rename it over the original."""
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text)
    os.rename(tmp, path)


@pytest.fixture
def src(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOTR_PRIVATE_DIR", str(tmp_path / "private"))
    path = tmp_path / "kernel.c"
    path.write_text('#include "params.h"\nint value(void) { return BASE + 1; }\n')
    (tmp_path / "params.h").write_text("#define BASE 100\n")
    return path


def test_source_edit_rebuilds_and_reloads(src: Path) -> None:
    with hotr.HotReloader(src) as r:
        lib = r.update()
        assert lib.value() == 101
        save(src, '#include "params.h"\nint value(void) { return BASE + 2; }\n')
        reload_next(r)
        assert lib.value() == 102
        info = r.history[-1]
        assert info.number == 2 and info.changed == (str(src),)
        assert info.build_ms is not None and info.build_ms > 0


def test_header_edit_rebuilds(src: Path) -> None:
    with hotr.HotReloader(src) as r:
        lib = r.update()
        (src.parent / "params.h").write_text("#define BASE 200\n")  # in place
        reload_next(r)
        assert lib.value() == 201


def test_header_added_later_is_watched(src: Path) -> None:
    extra = src.parent / "extra.h"
    extra.write_text("#define EXTRA 5\n")
    with hotr.HotReloader(src) as r:
        lib = r.update()
        save(src, '#include "params.h"\n#include "extra.h"\nint value(void) { return EXTRA; }\n')
        reload_next(r)
        assert lib.value() == 5
        save(extra, "#define EXTRA 6\n")
        reload_next(r)
        assert lib.value() == 6


def test_syntax_error_keeps_old_version_and_shows_diagnostics(src: Path) -> None:
    with hotr.HotReloader(src) as r:
        lib = r.update()
        save(src, "int value(void) { return 1 +; }\n")
        assert r.watch_for_changes(timeout=5) == 1
        with pytest.raises(hotr.BuildError) as info:
            r.update()
        err = info.value
        assert f"{src}:1:" in err.diagnostics and "error" in err.diagnostics
        assert err.returncode not in (0, None)
        assert str(src) in str(err) and err.diagnostics.strip() in str(err)
        assert lib.value() == 101
        assert r.version == 1
        save(src, "int value(void) { return 7; }\n")
        reload_next(r)
        assert lib.value() == 7


def test_burst_of_20_saves_builds_at_most_twice(
    src: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hotr")
    with hotr.HotReloader(src) as r:
        lib = r.update()
        caplog.clear()
        for n in range(1, 21):
            save(src, f"int value(void) {{ return {n}; }}\n")
        deadline = time.monotonic() + 10
        while lib.value() != 20:
            assert time.monotonic() < deadline, "the final save was not loaded"
            if r.watch_for_changes(timeout=1) == 1:
                r.update()
        builds = [rec for rec in caplog.records if rec.getMessage().startswith("built ")]
        assert 1 <= len(builds) <= 2
        assert r.watch_for_changes(timeout=0.3) == 0


def test_save_during_build_leads_to_one_more_build(tmp_path: Path, src: Path) -> None:
    gate = tmp_path / "slow-cc"
    gate.write_text('#!/bin/sh\nsleep 0.3\nexec cc "$@"\n')
    gate.chmod(0o755)
    with hotr.HotReloader(src, cc=str(gate)) as r:
        lib = r.update()
        save(src, "int value(void) { return 1; }\n")
        assert r.watch_for_changes(timeout=5) == 1
        t = threading.Thread(target=r.update)
        t.start()
        time.sleep(0.1)  # the build is running (it takes 0.3 s): save again now
        save(src, "int value(void) { return 2; }\n")
        t.join()
        reload_next(r)
        assert lib.value() == 2


def test_custom_build_command(tmp_path: Path, src: Path) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    (tmp_path / "Makefile").write_text(
        "libk.so: kernel.c params.h\n\tcc -shared -fPIC kernel.c -o libk.so\n"
    )
    with hotr.HotReloader(
        tmp_path / "libk.so",
        sources=[src, tmp_path / "params.h"],
        build=["make", "-s", "-C", str(tmp_path)],
    ) as r:
        lib = r.update()
        assert lib.value() == 101
        save(tmp_path / "params.h", "#define BASE 300\n")
        reload_next(r)
        assert lib.value() == 301


def test_build_timeout_is_reported(tmp_path: Path, src: Path) -> None:
    out = tmp_path / "libnever.so"
    with hotr.HotReloader(out, sources=[src], build=["sleep", "30"], build_timeout=0.3) as r:
        started = time.monotonic()
        with pytest.raises(hotr.BuildError, match=r"did not finish within 0\.3 s") as info:
            r.update()
        assert time.monotonic() - started < 5
        assert info.value.returncode is None


def test_a_build_killed_for_its_time_is_tried_again_by_update(tmp_path: Path, src: Path) -> None:
    """A build killed by build_timeout (a machine busy for a while) is no verdict on the
    sources: the next update() builds them again instead of keeping the old version quietly."""
    slow = tmp_path / "slow"
    wrapper = tmp_path / "cc.sh"
    wrapper.write_text(f'#!/bin/sh\nif [ -e {slow} ]; then sleep 30; fi\nexec cc "$@"\n')
    wrapper.chmod(0o755)
    with hotr.HotReloader(src, cc=str(wrapper), build_timeout=1) as r:
        assert r.update().value() == 101
        slow.touch()
        save(src, '#include "params.h"\nint value(void) { return BASE + 2; }\n')
        with pytest.raises(hotr.BuildError, match="did not finish within 1 s"):
            r.update()
        slow.unlink()
        assert r.update().value() == 102


@pytest.mark.parametrize("then", ["builds", "hangs"])
def test_a_process_the_build_leaves_in_a_session_of_its_own_holds_nothing(
    tmp_path: Path, src: Path, then: str
) -> None:
    # A build server started by the build (its own session, so the timeout's kill of the
    # build's group cannot reach it) keeps the build's output pipe open for as long as it runs.
    # Waiting for that pipe's end held a build that had finished until the server exited
    # (reported as a timeout), and held a timed-out one past its timeout just as long.
    out, pid_file = tmp_path / "libk.so", tmp_path / "server.pid"
    server = (
        "import subprocess, sys\n"
        "server = subprocess.Popen(['sleep', '20'], start_new_session=True)\n"
        f"open({str(pid_file)!r}, 'w').write(str(server.pid))\n"
    )
    if then == "builds":
        server += f"subprocess.run(['cc', '-shared', '-fPIC', {str(src)!r}, '-o', {str(out)!r}])\n"
    else:
        server += "subprocess.run(['sleep', '20'])\n"
    build = [sys.executable, "-c", server]
    try:
        with hotr.HotReloader(out, sources=[src], build=build, build_timeout=2) as r:
            started = time.monotonic()
            if then == "builds":
                assert r.update().value() == 101
            else:
                with pytest.raises(hotr.BuildError, match=r"did not finish within 2 s"):
                    r.update()
            assert time.monotonic() - started < 10
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_missing_build_tool_is_reported(tmp_path: Path, src: Path) -> None:
    with hotr.HotReloader(tmp_path / "l.so", sources=[src], build=["no-such-tool-hotr"]) as r:
        with pytest.raises(hotr.BuildError, match="could not be started") as info:
            r.update()
        assert "no-such-tool-hotr" in info.value.diagnostics


def test_several_sources(tmp_path: Path, src: Path) -> None:
    other = tmp_path / "other.c"
    other.write_text('#include "params.h"\nint other(void) { return BASE * 2; }\n')
    with hotr.HotReloader([src, other], flags=["-O2"]) as r:
        lib = r.update()
        assert (lib.value(), lib.other()) == (101, 200)
        save(tmp_path / "params.h", "#define BASE 10\n")
        reload_next(r)
        assert (lib.value(), lib.other()) == (11, 20)


def test_sources_beside_a_library_path(tmp_path: Path, src: Path) -> None:
    out = tmp_path / "libhot.so"
    with hotr.HotReloader(out, sources=[src]) as r:
        lib = r.update()
        assert out.exists() and lib.value() == 101
        save(src, "int value(void) { return 5; }\n")
        reload_next(r)
        assert lib.value() == 5


def test_flags_and_cflags(src: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFLAGS", "-DBONUS=1000")
    save(src, "#include <math.h>\nint value(void) { return BONUS + (int)sqrt(16.0); }\n")
    with hotr.HotReloader(src, flags=["-lm"]) as r:
        assert r.update().value() == 1004


@pytest.mark.skipif(shutil.which("tcc") is None, reason="tcc is not installed")
def test_tcc_as_compiler(src: Path) -> None:
    with hotr.HotReloader(src, cc="tcc") as r:
        lib = r.update()
        assert lib.value() == 101
        (src.parent / "params.h").write_text("#define BASE 1\n")
        reload_next(r)
        assert lib.value() == 2


@pytest.mark.skipif(shutil.which("tcc") is None, reason="tcc is not installed")
def test_tcc_behind_a_compiler_wrapper_is_known_as_tcc(tmp_path: Path, src: Path) -> None:
    # A stand-in for ccache: it runs the command after it, as ccache and distcc do.
    wrapper = tmp_path / "bin" / "ccache"
    wrapper.parent.mkdir()
    wrapper.write_text('#!/bin/sh\nexec "$@"\n')
    wrapper.chmod(0o755)
    with hotr.HotReloader(src, cc=f"{wrapper} tcc") as r:  # tcc refuses gcc's -MMD
        lib = r.update()
        assert lib.value() == 101
        (src.parent / "params.h").write_text("#define BASE 1\n")  # -MD named it
        reload_next(r)
        assert lib.value() == 2


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
def test_a_c_function_compiled_as_cxx_is_missing_with_the_reason(src: Path) -> None:
    with hotr.HotReloader(src, cc="g++") as r:  # g++ compiles kernel.c as C++
        lib = r.update()
        with pytest.raises(hotr.SymbolNotFoundError) as info:
            lib.value()
        message = str(info.value)
        assert "'value'" in message and "'_Z5valuev'" in message, message
        assert "compiled as C++" in message and 'extern "C"' in message, message
        save(src, '#include "params.h"\nextern "C" int value(void) { return BASE + 2; }\n')
        reload_next(r)
        assert lib.value() == 102


def test_load_rebuilds_in_background(src: Path) -> None:
    with hotr.load(src) as lib:
        assert lib.value() == 101
        save(src, "int value(void) { return 9; }\n")
        deadline = time.monotonic() + 10
        while lib.value() != 9:
            assert time.monotonic() < deadline
            time.sleep(0.01)


def test_arguments_are_checked(tmp_path: Path, src: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothere"):
        hotr.HotReloader(tmp_path / "nothere.c")
    with pytest.raises(ValueError, match="needs sources"):
        hotr.HotReloader(tmp_path / "x.so", build=["make"])
    with pytest.raises(ValueError, match="one shared library"):
        hotr.HotReloader([tmp_path / "a.so", tmp_path / "b.so"])


def test_update_during_another_threads_build_gets_what_was_saved_before_it(
    tmp_path: Path, src: Path
) -> None:
    # It returned at once with the old version live (a build was running elsewhere), so a
    # program that saved and then called update() did not get what it saved.
    hold, started, gate = tmp_path / "hold", tmp_path / "started", tmp_path / "gate"
    os.mkfifo(gate)
    cc = tmp_path / "gated-cc"
    cc.write_text(
        f"#!/bin/sh\nif [ -e {hold} ]; then rm {hold}; touch {started}; read go < {gate}; fi\n"
        'exec cc "$@"\n'
    )
    cc.chmod(0o755)
    with hotr.HotReloader(src, cc=str(cc)) as r:
        assert r.update().value() == 101
        hold.touch()
        save(src, "int value(void) { return 2; }\n")
        other = threading.Thread(target=r.update)  # its build waits at the gate
        other.start()
        deadline = time.monotonic() + 10
        while not started.exists():
            assert time.monotonic() < deadline, "the other thread's build never started"
            time.sleep(0.01)
        save(src, "int value(void) { return 3; }\n")
        seen: list[int] = []
        mine = threading.Thread(target=lambda: seen.append(r.update().value()))
        mine.start()
        wait_until_blocked([mine])  # for the other build (it returned at once, stale)
        with open(gate, "w") as f:
            f.write("go\n")
        other.join(10)
        mine.join(10)
        assert seen == [3]


def test_close_during_a_build_ends_it_as_closed_not_failed(tmp_path: Path, src: Path) -> None:
    slow = tmp_path / "slow-cc"
    slow.write_text('#!/bin/sh\nsleep 30\nexec cc "$@"\n')
    slow.chmod(0o755)
    r = hotr.HotReloader(src, cc=str(slow))
    errors: list[BaseException] = []

    def build() -> None:
        try:
            r.update()
        except BaseException as exc:  # the test inspects what was raised
            errors.append(exc)

    thread = threading.Thread(target=build)
    thread.start()
    time.sleep(0.2)  # the compiler is running
    started = time.monotonic()
    r.close()
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - started < 5, "close() waited for the build"
    (error,) = errors
    assert type(error) is hotr.HotReloadError and "closed" in str(error), repr(error)


def test_a_build_that_writes_the_watched_library_is_one_reload(tmp_path: Path, src: Path) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    (tmp_path / "Makefile").write_text(
        "libk.so: kernel.c\n\tcc -shared -fPIC kernel.c -o libk.so\n"
    )
    with hotr.HotReloader(
        tmp_path / "libk.so", sources=[src], build=["make", "-s", "-C", str(tmp_path)], debounce=0
    ) as r:
        lib = r.update()
        told: list[tuple[int, int]] = []
        r.on_reload(lambda old, new: told.append((old, new)))
        save(src, '#include "params.h"\nint value(void) { return 7; }\n')
        reload_next(r)
        assert lib.value() == 7
        # The library the build wrote is what update() loaded, not one more change to load.
        assert r.watch_for_changes(timeout=0.5) == 0
        assert told == [(1, 2)] and r.version == 2
