"""Guarded calls under load: 8 threads mix crashing and normal calls while reloads land, and the
memory a caught crash costs does not grow (100,000 crashes with --long, 10,000 in CI).

Every call either returns the right value or raises CrashError; none takes the process down.
The child interpreter runs the storm: a bug here is a segfault, which must not take the suite
down.
"""

from __future__ import annotations

import pytest
from conftest import TAGGED, Builder, run_python, tagged_versions

pytestmark = pytest.mark.every_python

CRASHY = TAGGED + (
    "int add(int a, int b) { return a + b; }\n"
    "int crash_if(int x) { if (x) *(volatile int *)0 = x; return x; }\n"
)


def test_threads_mix_crashes_and_calls_while_reloads_land(
    builder: Builder, request: pytest.FixtureRequest
) -> None:
    reloads = 300 if request.config.getoption("--long") else 40
    versions = tagged_versions(builder.compile(CRASHY), reloads + 1)
    blob = builder.dir / "versions.bin"
    blob.write_bytes(b"".join(versions))
    proc = run_python(
        f"""
        import os, sys, threading, time, hotr
        sys.setswitchinterval(1e-4)
        lib_path, size, reloads = {str(builder.lib)!r}, {len(versions[0])}, {reloads}
        blob = open({str(blob)!r}, "rb").read()
        versions = [blob[i:i + size] for i in range(0, len(blob), size)]
        open(lib_path, "wb").write(versions[0])
        r = hotr.HotReloader(lib_path, debounce=0, guard=True)
        lib = r.update()
        stop = threading.Event()
        problems, calls, crashes = [], [0] * 8, [0] * 8

        def storm(i):
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    if (n + i) % 3 == 0:
                        lib.crash_if(1)
                        problems.append((i, "crash_if(1) returned"))
                    elif (n + i) % 3 == 1:
                        if lib.add(n, i) != n + i:
                            problems.append((i, "add", n, i))
                    else:
                        seen = lib.value()
                        if not 1 <= seen <= reloads + 1:
                            problems.append((i, "value", seen))
                    calls[i] += 1
                except hotr.CrashError as exc:
                    if exc.function != "crash_if":
                        problems.append((i, "crashed", str(exc)))
                    crashes[i] += 1

        threads = [threading.Thread(target=storm, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for n in range(1, reloads + 1):
            tmp = lib_path + ".tmp"
            with open(tmp, "wb") as f:
                f.write(versions[n])
            os.rename(tmp, lib_path)
            assert r.watch_for_changes(timeout=30) == 1
            r.update()
        stop.set()
        for t in threads:
            t.join()
        assert not problems, problems[:5]
        assert all(calls) and all(crashes), (calls, crashes)
        rollbacks = sum(v.rollback for v in r.history)
        assert lib.add(2, 2) == 4
        r.poll()
        r.close()
        print(f"{{reloads}} reloads, {{rollbacks}} rollbacks, {{sum(calls)}} calls, "
              f"{{sum(crashes)}} crashes from 8 threads")
        """,
        timeout=900,
        env={"HOTR_PRIVATE_DIR": str(builder.dir / "private")},
    )
    print(proc.stdout)
    assert not list((builder.dir / "private").rglob("v*"))  # every version unloaded


def test_memory_over_many_crashes(builder: Builder, request: pytest.FixtureRequest) -> None:
    crashes = 100_000 if request.config.getoption("--long") else 10_000
    path = builder.compile_to_file(CRASHY)
    proc = run_python(
        f"""
        import hotr, threading
        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096
        lib = hotr.HotReloader({path!r}, guard=True).update()
        def crash(n):
            for _ in range(n):
                try:
                    lib.crash_if(1)
                except hotr.CrashError:
                    pass
        crash(2000)  # warm-up: caches, the first thread's signal stack
        before = rss()
        crash({crashes})
        t = threading.Thread(target=crash, args=(1000,))
        t.start()
        t.join()
        growth = rss() - before
        print(f"{crashes} crashes: RSS grew by {{growth / 1024:.0f}} KiB")
        assert growth < 2 * 1024 * 1024, growth
        """,
        timeout=900,
    )
    print(proc.stdout)
