"""The hotr command, end to end in a subprocess, and its argument handling in-process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Lines

from hotr.cli import main


def start(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "HOTR_PRIVATE_DIR": str(tmp_path / "private"),
        "HOTR_DEMO_DIR": str(tmp_path / "demo"),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "hotr", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def save(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.rename(tmp, path)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_demo_reloads_on_save_and_stops_cleanly(tmp_path: Path, stop: signal.Signals) -> None:
    with start(tmp_path, "run") as proc:
        try:
            lines = Lines(proc)
            lines.wait_for("demo: edit")
            source = tmp_path / "demo" / "example.c"
            assert str(source) in lines.seen[-1]
            lines.wait_for("loaded version 1")
            lines.wait_for("hello world!")
            save(source, source.read_text().replace("hello world!", "hello again!"))
            lines.wait_for("example.c: built in")
            assert "loaded version 2" in lines.seen[-1]
            lines.wait_for("hello again!")
            save(source, "this is not C\n")
            lines.wait_for("the build failed")
            assert "version 2 stays live" in lines.seen[-1]
            lines.wait_for("example.c:1")
            proc.send_signal(stop)
            assert proc.wait(timeout=10) == 0
            lines.wait_for("hotr: stopped")
            assert "cleanup" in lines.seen
        finally:
            proc.kill()
    assert list((tmp_path / "private").iterdir()) == []


def test_run_calls_named_functions_of_a_library(tmp_path: Path) -> None:
    src = tmp_path / "k.c"
    src.write_text('#include <stdio.h>\nvoid tick(void) { puts("tick 1"); }\n')
    with start(tmp_path, "run", str(src), "--call", "tick", "--call", "nope", "--", "-O2") as proc:
        try:
            lines = Lines(proc)
            lines.wait_for("loaded version 1")
            lines.wait_for("tick 1")
            lines.wait_for("has no symbol 'nope'")
            save(src, '#include <stdio.h>\nvoid tick(void) { puts("tick 2"); }\n')
            lines.wait_for("tick 2")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 0
        finally:
            proc.kill()


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("hotr ")
    with pytest.raises(SystemExit) as info:
        main(["run", "--help"])
    assert info.value.code == 0
    assert "--call SYMBOL" in capsys.readouterr().out
    assert main([]) == 2


def test_user_errors_exit_1_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(tmp_path / "missing.so")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.so" in err
    assert main(["run", str(tmp_path / "k.c"), "--build", "make"]) == 1
    assert "--build needs --output" in capsys.readouterr().err


def test_unknown_option_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--bogus"])
    assert info.value.code == 2
