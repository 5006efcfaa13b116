"""The bundled example works as the seed README describes: start, rebuild, see the new output."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CC, Lines

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(tmp_path: Path, *files: str) -> subprocess.Popen[str]:
    """Copy example `files` into `tmp_path` and start the last (a script), with hotr's private
    files and cache there too; its output is read line by line."""
    for name in files:
        shutil.copy(EXAMPLES / name, tmp_path / name)
    env = {
        "HOTR_PRIVATE_DIR": str(tmp_path / "private"),
        "HOTR_CACHE_DIR": str(tmp_path / "cache"),
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.Popen(
        [sys.executable, str(tmp_path / files[-1])],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def test_example_reloads_after_rebuild(tmp_path: Path) -> None:
    with run_example(tmp_path, "example.c", "main.py") as proc:
        try:
            lines = Lines(proc)
            lines.wait_for("hello world!")
            lines.wait_for("rebuild it")
            source = tmp_path / "example.c"
            source.write_text(source.read_text().replace("hello world!", "hello hotr!"))
            subprocess.run(
                [CC, "-shared", "-fPIC", str(source), "-o", str(tmp_path / "libhot.so")], check=True
            )
            lines.wait_for("Detected change, reloading...")
            lines.wait_for("hello hotr!")
            lines.wait_for("cleanup")  # the old version, unloaded once the loop waits again
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 0
            lines.wait_for("cleanup")
        finally:
            proc.kill()
    assert list((tmp_path / "private").iterdir()) == []


def test_cxx_example_keeps_its_tally_across_a_rebuild(tmp_path: Path) -> None:
    if shutil.which("c++") is None:
        pytest.skip("no C++ compiler")
    with run_example(tmp_path, "tally.cpp", "tally.py") as proc:
        try:
            lines = Lines(proc)
            lines.wait_for("report 2: apple seen 1 pear seen 1")
            source = tmp_path / "tally.cpp"
            edited = source.read_text().replace('#define LABEL "seen"', '#define LABEL "counted"')
            (tmp_path / "tally.tmp").write_text(edited)
            (tmp_path / "tally.tmp").rename(source)
            lines.wait_for("version 2 reloaded")
            # The tally carried on; the inline function's static counter started again.
            lines.wait_for("report 1: apple counted")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 0
        finally:
            proc.kill()


def test_module_example_reloads_on_save(tmp_path: Path) -> None:
    with run_example(tmp_path, "fastmath.c", "modules.py") as proc:
        try:
            lines = Lines(proc)
            lines.wait_for("norm 5.0  Point.norm 5.0  calls 1  version 1")
            source = tmp_path / "fastmath.c"
            source.write_text(source.read_text().replace("SCALE 1.0", "SCALE 2.0"))
            lines.wait_for("norm 10.0  Point.norm 10.0", timeout=60)
            lines.wait_for("version 2")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 0
        finally:
            proc.kill()
    assert list((tmp_path / "private").iterdir()) == []
