"""Resources stay bounded over many reloads, and the private directory is private and cleaned."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

from conftest import Builder, copies, kept, mapped, run_python, source

import hotr


def test_1000_reloads_keep_resources_bounded(builder: Builder) -> None:
    variants = [builder.compile(source(n)) for n in (1, 2)]
    private = builder.dir / "private"
    with hotr.HotReloader(builder.lib, debounce=0) as r:
        lib = r.update()
        value = lib.value

        def reload(n: int) -> None:
            builder.write_bytes(variants[n % 2])
            assert r.watch_for_changes(timeout=5) == 1
            r.update()
            assert value() == n % 2 + 1

        for n in range(1, 11):
            reload(n)
        r.poll()  # as at the end: the next version's private file is made (one descriptor)
        fds = len(os.listdir("/proc/self/fd"))
        for n in range(11, 1001):
            reload(n)
        assert r.version == 1001
        r.poll()  # unloads the version the last update() replaced
        assert len(os.listdir("/proc/self/fd")) <= fds
        assert copies(private) == ["v1001-libhot.so"]
        assert len(kept(private)) <= 9, "rollback keeps the live content and 8 earlier, no more"
        assert len(mapped(private)) == 1
    assert list(private.iterdir()) == []
    assert mapped(private) == set()


def test_private_directory_is_owner_only(reloader: hotr.HotReloader, builder: Builder) -> None:
    root = builder.dir / "private"
    (process_dir,) = root.iterdir()
    (reloader_dir,) = process_dir.iterdir()
    for path in (root, process_dir, reloader_dir):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    (copy,) = reloader_dir.glob("v*")
    assert not copy.stat().st_mode & 0o077


def test_private_directory_open_to_others_is_refused(builder: Builder) -> None:
    root = builder.dir / "private"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    try:
        hotr.HotReloader(builder.lib)
    except hotr.HotReloadError as exc:
        assert "chmod 700" in str(exc) and str(root) in str(exc)
    else:
        raise AssertionError("a world-readable private directory was accepted")


def test_close_removes_copies_and_is_idempotent(builder: Builder) -> None:
    r = hotr.HotReloader(builder.lib)
    r.update()
    root = builder.dir / "private"
    assert len(list(root.iterdir())) == 1
    r.close()
    r.close()
    assert list(root.iterdir()) == []
    assert r.closed
    assert r.watch_for_changes(timeout=0) == -1


def test_interpreter_exit_removes_copies_and_runs_cleanup(builder: Builder) -> None:
    root = builder.dir / "private"
    run_python(
        f"""
        import hotr
        lib = hotr.load({str(builder.lib)!r})
        assert lib.value() == 1
        """,
        env={"HOTR_PRIVATE_DIR": str(root), "HOTR_TEST_MARK": str(builder.dir / "mark.txt")},
    )
    assert list(root.iterdir()) == []
    assert (builder.dir / "mark.txt").read_text() == "cleanup 1\n"


def test_copies_of_dead_process_are_swept(builder: Builder) -> None:
    root = builder.dir / "private"
    root.mkdir(mode=0o700)
    dead = root / "99999-dead"
    dead.mkdir()
    (dead / "v1-libhot.so").write_bytes(b"old")
    run_python(  # a live process holds its directory's lock: it must survive the sweep
        f"""
        import os, subprocess, sys
        import hotr
        r = hotr.HotReloader({str(builder.lib)!r})
        r.update()
        mine = os.listdir({str(root)!r})
        assert {dead.name!r} not in mine, mine
        (own,) = mine
        other = "import hotr; hotr.HotReloader({str(builder.lib)!r})"
        subprocess.run([sys.executable, "-c", other], check=True)
        assert own in os.listdir({str(root)!r}), "a live process's copies were swept"
        r.close()
        """,
        env={"HOTR_PRIVATE_DIR": str(root)},
    )
    assert list(root.iterdir()) == []


def test_a_killed_process_is_swept_at_once(builder: Builder) -> None:
    root = builder.dir / "private"
    script = (
        f"import hotr, os; hotr.HotReloader({str(builder.lib)!r}).update(); os.kill(os.getpid(), 9)"
    )
    killed = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, "HOTR_PRIVATE_DIR": str(root)}
    )
    assert killed.returncode == -9
    assert len(list(root.iterdir())) == 1, "kill -9 left nothing behind: the test proves nothing"
    with hotr.HotReloader(builder.lib) as r:  # within a second of the death, not 10 s later
        r.update()
        (mine,) = root.iterdir()
        assert mine.name.startswith(f"{os.getpid()}-")


def test_forked_child_leaves_parent_copies(builder: Builder) -> None:
    root = builder.dir / "private"
    run_python(
        f"""
        import os, hotr
        r = hotr.HotReloader({str(builder.lib)!r})
        lib = r.update()
        pid = os.fork()
        if pid == 0:
            assert lib.value() == 1
            raise SystemExit(0)  # a normal exit: atexit runs in the child
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        (own,) = os.listdir({str(root)!r})
        left = os.listdir(os.path.join({str(root)!r}, own, "r1"))
        assert "v1-libhot.so" in left, left
        assert lib.value() == 1
        r.close()
        """,
        env={"HOTR_PRIVATE_DIR": str(root), "HOTR_TEST_MARK": str(builder.dir / "mark.txt")},
    )
    assert (builder.dir / "mark.txt").read_text() == "cleanup 1\n", "cleanup ran in the child"
    assert list(root.iterdir()) == []
