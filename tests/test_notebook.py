"""The IPython extension: %%hotr cells and %hotr commands, in IPython's InteractiveShell (in a
child process) and in a real Jupyter kernel driven through jupyter_client."""

from __future__ import annotations

import json
import os
import queue
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import run_python

SHELL = """
import os, sys, time
import numpy as np
from IPython.core.interactiveshell import InteractiveShell

shell = InteractiveShell.instance()
ns = shell.user_ns
ns["np"] = np

def run(code):
    result = shell.run_cell(code)
    return result

def ok(code):
    result = run(code)
    assert result.success, (code, result.error_in_exec, result.error_before_exec)

def cell(name, text, *options):
    return run(f"%%hotr {name} {' '.join(options)}\\n{text}")

shell.run_line_magic("load_ext", "hotr")
"""

KERNEL_V1 = (
    "#include <stddef.h>\n"
    "double scale(double x) { return x * 2; }\n"
    "void fill(double *out, size_t n) { for (size_t i = 0; i < n; i++) out[i] = i; }\n"
)
KERNEL_V2 = KERNEL_V1.replace("x * 2", "x * 3").replace("= i;", "= 10 * i;")


def test_a_cell_edited_and_rerun_reloads_in_place(tmp_path: Path) -> None:
    out = run_python(
        SHELL
        + f"""
assert "IPython" in sys.modules
assert cell("kern", {KERNEL_V1!r}).success
ok("a = np.zeros(4); fill(a, 4); f = scale; refs = [scale]; twice = lambda x: scale(x)")
ok("assert a.tolist() == [0, 1, 2, 3] and scale(1.5) == 3.0")
first = ns["scale"]
assert cell("kern", {KERNEL_V2!r}).success
ok("assert scale(1.0) == 3.0 and f(1.0) == 3.0 and refs[0](1.0) == 3.0 and twice(1.0) == 3.0")
ok("assert a.tolist() == [0, 1, 2, 3]")  # the array kept its data
ok("fill(a, 4); assert a.tolist() == [0, 10, 20, 30]")
assert ns["scale"] is first  # the same live function, not a new one

# An unchanged cell does not rebuild.
assert cell("kern", {KERNEL_V2!r}).success
ok("import hotr")
shell.run_line_magic("hotr", "")

# A compile error: diagnostics shown, the previous version stays.
result = cell("kern", "double scale(double x) {{ return x * ; }}")
assert not result.success
ok("assert scale(1.0) == 3.0")
rerun = cell("kern", "double scale(double x) {{ return x * ; }}")
assert not rerun.success  # the same broken cell shows the same diagnostics again

# A new function appears, a removed one leaves the namespace.
assert cell("kern", "int only(int x) {{ return x + 1; }}").success
ok("assert only(1) == 2 and 'fill' not in dir()")
ok("import ctypes")
shell.run_line_magic("hotr", "rollback kern")
ok("assert scale(1.0) == 3.0 and 'only' not in dir()")
shell.run_line_magic("hotr", "close kern")
ok("assert 'scale' not in dir()")
try:
    ns["f"](1.0)
except Exception as exc:
    assert "closed" in str(exc), exc
else:
    raise AssertionError("a closed library's function still ran")
print("done")
""",
        env={"HOTR_PRIVATE_DIR": str(tmp_path / "private")},
    )
    assert "kern: version 1, built in" in out.stdout
    assert "kern: version 2, built in" in out.stdout
    assert "kern: unchanged, version 2" in out.stdout
    assert "error: expected expression before" in out.stdout + out.stderr
    assert "version 2 stays live" in out.stdout + out.stderr
    assert out.stderr.count("error: expected expression") == 2
    assert "NAME  VERSION  SOURCE  FUNCTIONS" in out.stdout
    assert "kern  2        cell    scale, fill" in out.stdout
    assert "kern: rolled back, now version 4" in out.stdout
    assert out.stdout.rstrip().endswith("done")


def test_bad_input_is_a_usage_error_and_ipython_is_imported_only_when_loaded(
    tmp_path: Path,
) -> None:
    out = run_python(
        """
import sys
import hotr
assert "IPython" not in sys.modules
"""
        + SHELL
        + """
for line in ("%%hotr\\nint f(void) { return 1; }", "%%hotr 1bad\\nint f(void) { return 1; }",
             "%%hotr k --bogus\\nint f(void) { return 1; }", "%hotr frobnicate",
             "%hotr rollback nothing", "%hotr load", "%hotr load /no/such/file.c",
             "%hotr rollback", "%%hotr k --cc\\nint f(void) { return 1; }",
             "%%hotr k --cc -- -O2\\nint f(void) { return 1; }", "%hotr load k.c --name"):
    result = run(line)
    assert not result.success, line
    print("refused:", line.splitlines()[0])
assert cell("k", "int f(void) { return 1; }").success
result = run("%hotr rollback k")
assert not result.success  # nothing to roll back to
ok("assert f() == 1")
ok("%hotr help")
print("done")
""",
        env={"HOTR_PRIVATE_DIR": str(tmp_path / "private")},
    )
    assert out.stdout.count("refused:") == 11
    assert "%%hotr needs a NAME" in out.stdout + out.stderr
    assert "must be an identifier" in out.stdout + out.stderr
    assert "unknown option '--bogus'" in out.stdout + out.stderr
    assert "unknown option '--cc'" not in out.stdout + out.stderr  # it needs a value
    assert "%hotr: --cc needs a value (--cc CC)" in out.stdout + out.stderr
    assert "%hotr: --name needs a value (--name NAME)" in out.stdout + out.stderr
    assert "no library named 'nothing'" in out.stdout + out.stderr
    assert "No such source file" in out.stdout + out.stderr
    assert "has no earlier version" in out.stdout + out.stderr
    assert out.stdout.rstrip().endswith("done")


def test_hotr_load_applies_changes_between_cells_never_inside_one(tmp_path: Path) -> None:
    source = tmp_path / "kernel.c"
    source.write_text("int value(void) { return 1; }\n")
    out = run_python(
        SHELL
        + f"""
import hotr
path = {str(source)!r}

def save(text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)

def wait_for_build():
    reloader = hotr.reloader_of(ns["kernel"])
    deadline = time.monotonic() + 30
    while not reloader.poll():
        assert time.monotonic() < deadline, "the background build never finished"
        time.sleep(0.01)

ns["save"], ns["wait_for_build"] = save, wait_for_build
shell.run_line_magic("hotr", "load " + path + " -- -O1")
ok("v = value; assert v() == 1 and kernel.value() == 1")
# Inside a cell nothing changes, even when the new build is ready.
ok("before = v(); save('int value(void) {{ return 2; }}\\\\n'); wait_for_build(); "
   "assert v() == before == 1")
ok("assert v() == 2")  # applied before this cell ran
# A failed background build is shown before the next cell; the version stays.
import threading
failed = threading.Event()
hotr.reloader_of(ns["kernel"]).on_error(lambda error: failed.set())
ok("save('int value(void) {{ return 1 +; }}\\\\n')")
assert failed.wait(30), "the broken build never failed"
ok("assert v() == 2")
shell.run_line_magic("hotr", "")
print("done")
""",
        env={"HOTR_PRIVATE_DIR": str(tmp_path / "private")},
    )
    assert "kernel: version 1, built in" in out.stdout
    assert "kernel: version 2, built in" in out.stdout
    assert "kernel: the build failed" in out.stderr
    assert f"kernel  2        {source}  value" in out.stdout
    assert out.stdout.rstrip().endswith("done")


def test_a_changed_header_or_an_interrupted_build_makes_a_rerun_build(tmp_path: Path) -> None:
    (tmp_path / "params.h").write_text("#define GAIN 2\n")
    slow = tmp_path / "slowcc"
    slow.write_text('#!/bin/sh\nsleep 1\nexec cc "$@"\n')
    slow.chmod(0o755)
    out = run_python(
        SHELL
        + f"""
import signal, threading
os.chdir({str(tmp_path)!r})  # the notebook's directory: on the include path
body = '#include "params.h"\\nint gain(int x) {{ return GAIN * x; }}'
assert cell("k", body).success
ok("assert gain(1) == 2")
with open("params.h", "w") as f:
    f.write("#define GAIN 5\\n")
assert cell("k", body).success  # the same cell, but its header changed
ok("assert gain(1) == 5")

threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
result = cell("s", "int slow(void) {{ return 9; }}", "--cc", {str(slow)!r})
assert isinstance(result.error_in_exec, KeyboardInterrupt), result.error_in_exec
assert cell("s", "int slow(void) {{ return 9; }}", "--cc", {str(slow)!r}).success
ok("assert slow() == 9")
print("done")
""",
        env={"HOTR_PRIVATE_DIR": str(tmp_path / "private")},
    )
    assert "k: version 2, built in" in out.stdout
    assert "s: version 1, built in" in out.stdout
    assert out.stdout.rstrip().endswith("done")


@pytest.mark.skipif(shutil.which("tcc") is None, reason="tcc is not installed")
def test_cells_run_back_to_back_each_build(tmp_path: Path) -> None:
    # tcc builds in a few milliseconds: the runs come faster than a debounce would let through.
    out = run_python(
        SHELL
        + """
for n in range(1, 21):
    assert cell("fast", f"int v(void) {{ return {n}; }}", "--cc", "tcc").success
    assert ns["v"]() == n, (n, ns["v"]())
print("done")
""",
        env={"HOTR_PRIVATE_DIR": str(tmp_path / "private")},
    )
    assert "fast: version 20" in out.stdout


# -- a real kernel -------------------------------------------------------------------------


EXAMPLE = json.loads(
    (Path(__file__).resolve().parent.parent / "examples" / "notebook.ipynb").read_text()
)


def test_the_example_notebook_is_small_with_outputs_cleared() -> None:
    assert len(EXAMPLE["cells"]) <= 8
    for cell in EXAMPLE["cells"]:
        assert not cell.get("outputs") and cell.get("execution_count") is None


def _execute(client: Any, code: str, timeout: float = 30) -> tuple[str, str, str]:
    """Run `code` in the kernel; return (stdout, stderr, error text) of that execution."""
    msg_id = client.execute(code)
    stdout: list[str] = []
    stderr: list[str] = []
    error: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            msg = client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no reply to {code!r} within {timeout} s") from None
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            (stdout if content["name"] == "stdout" else stderr).append(content["text"])
        elif kind == "error":
            error.append("\n".join(content["traceback"]) + content["evalue"])
        elif kind == "status" and content["execution_state"] == "idle":
            return "".join(stdout), "".join(stderr), "".join(error)


def test_in_a_real_jupyter_kernel(tmp_path: Path) -> None:
    from jupyter_client.manager import start_new_kernel

    env = {**os.environ, "HOTR_PRIVATE_DIR": str(tmp_path / "private"), "NO_COLOR": "1"}
    manager, client = start_new_kernel(
        kernel_name="python3", env=env, startup_timeout=60, extra_arguments=[]
    )
    try:
        assert manager.kernel_spec is not None
        _, _, error = _execute(client, "%load_ext hotr\nimport numpy as np, sys")
        assert not error, error
        out, _, error = _execute(client, f"%%hotr kern\n{KERNEL_V1}")
        assert not error and "kern: version 1" in out, (out, error)
        _, _, error = _execute(client, "a = np.zeros(3); fill(a, 3); f = scale")
        assert not error, error
        out, _, error = _execute(client, f"%%hotr kern\n{KERNEL_V2}")
        assert "kern: version 2" in out, (out, error)
        out, _, error = _execute(client, "fill(a, 3); print(f(1.0), a.tolist())")
        assert out.strip() == "3.0 [0.0, 10.0, 20.0]", (out, error)
        shown = "".join(_execute(client, "%%hotr kern\ndouble scale(double x) { return x * ; }"))
        assert "expected expression" in shown and "version 2 stays live" in shown, shown
        out, _, _ = _execute(client, "print(f(2.0))\n%hotr")
        assert out.startswith("6.0") and "kern  2" in out, out
        # The example notebook runs as it is, and its kernel cell can be edited and rerun.
        cells = [c for c in EXAMPLE["cells"] if c["cell_type"] == "code"]
        for code in ["%unload_ext hotr", *("".join(c["source"]) for c in cells)]:
            out, _, error = _execute(client, code)
            assert not error, (code, error)
        kernel = next(
            "".join(c["source"]) for c in cells if "".join(c["source"]).startswith("%%hotr")
        )
        _, _, error = _execute(client, kernel.replace("out[i] = s / m;", "out[i] = -1;"))
        assert not error, error
        out, _, _ = _execute(client, "f(signal, out, len(signal), 5); print(set(out.tolist()))")
        assert out.strip() == "{-1.0}", out
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_a_crash_in_a_cell_is_an_exception_and_the_kernel_lives(tmp_path: Path) -> None:
    out = run_python(
        SHELL
        + """
assert cell("crashy", "int get(int *p) { return p ? *p : 7; }").success
ok("assert get(None) == 7")
assert cell("crashy", "int get(int *p) { return *(volatile int *)0; }").success
result = run("get(None)")
assert isinstance(result.error_in_exec, __import__("hotr").CrashError), result.error_in_exec
ok("assert get(None) == 7")  # rolled back to the version that worked
assert cell("crashy2", "int boom(void) { return *(volatile int *)0; }", "--no-guard").success
print("done")
""",
        env={"HOTR_PRIVATE_DIR": str(tmp_path / "private")},
    )
    assert out.stdout.rstrip().endswith("done")


def test_the_namespace_follows_a_crashs_rollback_and_the_crash_is_shown_once(
    tmp_path: Path,
) -> None:
    source = tmp_path / "loaded.c"
    source.write_text("int one(void) { return 1; }\nint boom(void) { return 0; }\n")
    out = run_python(
        SHELL
        + f"""
import hotr
assert cell("kern", "int a(void) {{ return 1; }}").success
crashing = "int a(void) {{ return 2; }}\\nint b(void) {{ return *(volatile int *)0; }}"
assert cell("kern", crashing).success
assert isinstance(run("b()").error_in_exec, hotr.CrashError)
ok("assert a() == 1 and 'b' not in globals()")  # version 3 is the first cell's code: no b
path = {str(source)!r}
shell.run_line_magic("hotr", "load " + path)
reloader = hotr.reloader_of(ns["loaded"])
with open(path + ".tmp", "w") as f:
    f.write("int two(void) {{ return 2; }}\\nint boom(void) {{ return *(volatile int *)0; }}\\n")
os.replace(path + ".tmp", path)
deadline = time.monotonic() + 30
while not reloader.poll():
    assert time.monotonic() < deadline, "the background build never finished"
    time.sleep(0.01)
ok("assert two() == 2 and 'one' not in globals()")
assert isinstance(run("boom()").error_in_exec, hotr.CrashError)
ok("assert one() == 1 and 'two' not in globals()")  # rolled back to the first version
shell.run_line_magic("hotr", "")
print("done")
""",
        env={"HOTR_PRIVATE_DIR": str(tmp_path / "private")},
    )
    rows = [line.split() for line in out.stdout.splitlines()]
    assert ["kern", "3", "cell", "a"] in rows, out.stdout  # what %hotr lists follows it too
    assert "crashed" not in out.stderr, out.stderr  # the cell raised it; not shown again
    assert out.stdout.rstrip().endswith("done")


def test_a_cell_function_never_replaces_a_variable_of_the_users(tmp_path: Path) -> None:
    source = tmp_path / "signal.c"
    source.write_text("int filtered(void) { return 3; }\n")
    out = run_python(
        SHELL
        + """
ok("signal = np.arange(4.0)")
assert cell("sg", "int signal(void) { return 1; }\\nint other(void) { return 2; }").success
ok("assert isinstance(signal, np.ndarray) and signal.tolist() == [0, 1, 2, 3]")
ok("assert other() == 2")
# %hotr load binds the library to its NAME: not over the user's variable either.
assert not run("%hotr load " + sys.argv[1]).success
ok("assert isinstance(signal, np.ndarray) and signal.tolist() == [0, 1, 2, 3]")
shell.run_line_magic("hotr", "")
print("done")
""",
        argv=[str(source)],
        env={"HOTR_PRIVATE_DIR": str(tmp_path / "private")},
    )
    assert "'signal' already names your ndarray object; the function is not" in out.stdout
    assert "'signal' already names your ndarray object: load it under another name" in (
        out.stdout + out.stderr
    )
    assert str(source) not in out.stdout  # %hotr lists no library loaded from it
    assert "sg: version 1, built in" in out.stdout and ": other\n" in out.stdout, out.stdout
    assert "sg    1        cell    other\n" in out.stdout  # what is in the namespace
    assert out.stdout.rstrip().endswith("done")


def test_a_cell_rerun_after_a_rollback_makes_its_code_live_again(tmp_path: Path) -> None:
    out = run_python(
        SHELL
        + """
assert cell("k", "int v(void) { return 1; }").success
assert cell("k", "int v(void) { return 2; }").success
shell.run_line_magic("hotr", "rollback k")
ok("assert v() == 1")
assert cell("k", "int v(void) { return 2; }").success  # the cell's code, not version 3's
ok("assert v() == 2")
assert cell("k", "int v(void) { return 2; }").success
ok("assert v() == 2")

# A crash's rollback, the same: running the cell again loads what it says.
assert cell("c", "int w(int crash) { return 1; }").success
crashing = "int w(int crash) { return crash ? *(volatile int *)0 : 2; }"
assert cell("c", crashing).success
assert isinstance(run("w(1)").error_in_exec, __import__("hotr").CrashError)
ok("assert w(0) == 1")
assert cell("c", crashing).success
ok("assert w(0) == 2")
print("done")
""",
        env={"HOTR_PRIVATE_DIR": str(tmp_path / "private")},
    )
    assert "k: version 4, built in" in out.stdout
    assert "k: unchanged, version 4" in out.stdout
    assert "c: version 4, built in" in out.stdout
    assert out.stdout.rstrip().endswith("done")


def test_a_cells_compiler_warnings_are_shown(tmp_path: Path) -> None:
    out = run_python(
        SHELL
        + """
assert cell("w", "int q(void) { int unused; return 1; }", "-- -Wall").success
print("rerun", file=sys.stderr)
assert cell("w", "int q(void) { int unused; return 1; }", "-- -Wall").success
assert cell("w", "int q(void) { return 2; }", "-- -Wall").success
print("done")
""",
        env={"HOTR_PRIVATE_DIR": str(tmp_path / "private")},
    )
    first, rerun = out.stderr.split("rerun\n")
    assert "warning: unused variable" in first and "[-Wunused-variable]" in first, out.stderr
    assert "warning" not in rerun, out.stderr  # nothing was compiled, or nothing to say
    assert "w: version 2, built in" in out.stdout
    assert out.stdout.rstrip().endswith("done")


def test_hotr_load_shows_the_compiler_warnings_of_each_build(tmp_path: Path) -> None:
    # %hotr load showed the warnings of no build, first or later (%%hotr cells did).
    source = tmp_path / "w.c"
    source.write_text("int q(void) { int unused; return 1; }\n")
    out = run_python(
        SHELL
        + f"""
import hotr
path = {str(source)!r}
shell.run_line_magic("hotr", "load " + path + " -- -Wall")
print("saved", file=sys.stderr)
with open(path + ".tmp", "w") as f:
    f.write("int q(int a) {{ if (a = 2) return 1; return 0; }}\\n")
os.replace(path + ".tmp", path)
reloader = hotr.reloader_of(ns["w"])
deadline = time.monotonic() + 30
while not reloader.poll():
    assert time.monotonic() < deadline, "the background build never finished"
    time.sleep(0.01)
ok("assert q(0) == 1")
print("done")
""",
        env={"HOTR_PRIVATE_DIR": str(tmp_path / "private")},
    )
    first, later = out.stderr.split("saved\n")
    assert "warning: unused variable" in first, out.stderr
    assert "warning: suggest parentheses" in later and "unused" not in later, out.stderr
    assert "w: version 2, built in" in out.stdout
    assert out.stdout.rstrip().endswith("done")


def test_two_cells_defining_one_function_the_last_run_holds_the_name(tmp_path: Path) -> None:
    out = run_python(
        SHELL
        + """
import hotr
assert cell("a", "int same(void) { return 1; }\\nint boom(int c) { return 0; }").success
crashing = "int same(void) { return 1; }\\nint boom(int c) { return c ? *(volatile int *)0 : 0; }"
assert cell("a", crashing).success
assert cell("b", "int same(void) { return 2; }").success
ok("assert same() == 2")
assert isinstance(run("boom(1)").error_in_exec, hotr.CrashError)
ok("assert same() == 2 and boom(0) == 0")  # a's rollback took the name back: same() was 1
assert cell("a", "int same(void) { return 3; }").success  # running a cell takes it
ok("assert same() == 3")
print("done")
""",
        env={"HOTR_PRIVATE_DIR": str(tmp_path / "private")},
    )
    assert "b: 'same' is b's function now, no longer a's" in out.stdout
    assert "a: 'same' is a's function now, no longer b's" in out.stdout
    assert out.stdout.rstrip().endswith("done")
