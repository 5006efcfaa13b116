"""README promises that the other test files do not already pin down, each on the real tools."""

from __future__ import annotations

import ctypes
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Builder, Lines, reload_next, source

import hotr
from hotr.cli import _demo_source, main


def test_include_prints_the_directory_of_hotr_h(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--include"]) == 0
    directory = capsys.readouterr().out.strip()
    assert (Path(directory) / "hotr.h").is_file()


def test_run_with_keep_globals_probe_and_polling(tmp_path: Path) -> None:
    src = tmp_path / "k.c"
    src.write_text('#include <stdio.h>\nint n;\nvoid tick(void) { printf("n=%d\\n", ++n); }\n')
    env = {**os.environ, "HOTR_PRIVATE_DIR": str(tmp_path / "p"), "HOTR_POLL_INTERVAL": "0.05"}
    argv = [
        sys.executable,
        "-m",
        "hotr",
        "run",
        str(src),
        "--call",
        "tick",
        "--keep-globals",
        "--probe",
        "--backend",
        "poll",
    ]
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    ) as proc:
        try:
            lines = Lines(proc)
            lines.wait_for("n=1")
            src.write_text(src.read_text().replace("++n", "n += 10"))
            lines.wait_for("loaded version 2")
            lines.wait_for("n=11")  # n was carried over, then the new code ran
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 0
        finally:
            proc.kill()


def test_in_dll_reads_the_live_version(builder: Builder) -> None:
    builder.write_bytes(builder.compile(source(1, "int answer = 41;\n")))
    with hotr.HotReloader(builder.lib) as r:
        lib = r.update()
        answer = ctypes.c_int.in_dll(lib, "answer")  # type: ignore[arg-type]  # duck-typed: _handle
        assert answer.value == 41
        builder.rename(source(2, "int answer = 42;\n"))
        reload_next(r)
        answer = ctypes.c_int.in_dll(lib, "answer")  # type: ignore[arg-type]  # duck-typed: _handle
        assert answer.value == 42


def test_build_timeout_kills_the_whole_process_group(builder: Builder, tmp_path: Path) -> None:
    src = tmp_path / "k.c"
    src.write_text("int value(void) { return 1; }\n")
    marker = "61.4242"
    with (
        hotr.HotReloader(
            tmp_path / "l.so",
            sources=[src],
            build=["sh", "-c", f"sleep {marker} & wait"],
            build_timeout=0.3,
        ) as r,
        pytest.raises(hotr.BuildError, match="did not finish"),
    ):
        r.update()
    time.sleep(0.1)
    left = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, text=True)
    assert left.stdout == "", "a child of the timed-out build is still running"


def test_private_directory_of_another_user_is_refused(
    builder: Builder, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give a directory to another user")
    root = builder.dir / "theirs"
    root.mkdir(mode=0o700)
    os.chown(root, 65534, 65534)
    monkeypatch.setenv("HOTR_PRIVATE_DIR", str(root))
    with pytest.raises(hotr.HotReloadError, match="belongs to another user"):
        hotr.HotReloader(builder.lib)


def test_demo_copy_keeps_edits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTR_DEMO_DIR", str(tmp_path / "demo"))
    first = Path(_demo_source())
    first.write_text(first.read_text() + "// mine\n")
    assert Path(_demo_source()).read_text().endswith("// mine\n")


def test_diagnostics_are_plain_text_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Colours are the command line's business (hotr run colours its own output on a terminal);
    # a program reading BuildError.diagnostics gets the compiler's words, not escape codes.
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as terminal:
        monkeypatch.setattr(sys, "stderr", terminal)
        monkeypatch.delenv("NO_COLOR", raising=False)
        src = tmp_path / "bad.c"
        src.write_text("int value(void) { return 1 +; }\n")
        with hotr.HotReloader(src) as r, pytest.raises(hotr.BuildError) as info:
            r.update()
    os.close(master)
    assert "error:" in info.value.diagnostics
    assert "\x1b[" not in info.value.diagnostics


def test_statics_of_the_same_name_in_several_files_are_each_carried(
    tmp_path: Path, builder: Builder
) -> None:
    a, b = tmp_path / "a.c", tmp_path / "b.c"
    a.write_text("static int count = 1;\nint bump_a(void) { return ++count; }\n")
    b.write_text("static int count = 10;\nint bump_b(void) { return ++count; }\n")
    with hotr.HotReloader([a, b], keep_globals=True) as r:
        lib = r.update()
        assert (lib.bump_a(), lib.bump_b()) == (2, 11)
        a.write_text(a.read_text() + "int extra(void) { return 0; }\n")
        reload_next(r)
        assert set(r.history[-1].carried) == {"count (a.c)", "count (b.c)"}
        assert (lib.bump_a(), lib.bump_b()) == (3, 12), "a static got the other file's value"
