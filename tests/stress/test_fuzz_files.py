"""Thousands of bad libraries: each one a clear LoadError, the old version answering, no leaks.

A fixed-seed set of at least 1,000 cases (random bytes, truncations at every section boundary,
mutated ELF, program and section headers) plus a hypothesis search over the header bytes.  A
mutation that leaves a loadable library may load; anything else must be refused in words.  The
loop runs in a child interpreter, since a file that slipped through would crash the loader.
"""

from __future__ import annotations

import pytest
from conftest import Builder, run_python, source

FUZZ = """
import glob, os, random, struct, sys
import hotr
from hypothesis import HealthCheck, given, settings, strategies as st

lib_path, good_path, examples = sys.argv[1], sys.argv[2], int(sys.argv[3])
good = open(good_path, "rb").read()
private = os.environ["HOTR_PRIVATE_DIR"]
rng = random.Random(20261124)
shoff, = struct.unpack_from("<Q", good, 0x28)
phoff, = struct.unpack_from("<Q", good, 0x20)
phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", good, 0x36)

cases = [("empty", b"")]
cases += [(f"random {n}", rng.randbytes(rng.choice([1, 16, 63, 64, 500, 4096, len(good)])))
          for n in range(200)]
cuts = {0x40, phoff + phnum * phentsize, shoff, len(good) - 1}
for i in range(shnum):
    off, size = struct.unpack_from("<QQ", good, shoff + i * shentsize + 0x18)
    cuts.update((off, off + size, off + size // 2))
cuts.update(rng.randrange(1, len(good)) for _ in range(150))
cases += [(f"cut at {c}", good[:c]) for c in sorted(cuts) if 0 < c < len(good)]
regions = [(0, 0x40), (phoff, phnum * phentsize), (shoff, shnum * shentsize)]
for n in range(1000 - len(cases) + 100):
    start, size = regions[n % 3]
    data = bytearray(good)
    for _ in range(rng.randint(1, 4)):
        data[start + rng.randrange(size)] = rng.randrange(256)
    cases.append((f"mutant {n}", bytes(data)))
assert len(cases) >= 1000, len(cases)

with open(lib_path, "wb") as f:
    f.write(good)
r = hotr.HotReloader(lib_path, debounce=0)
lib = r.update()
r.poll()  # housekeeping makes the next version's private file ahead: one file, one descriptor
fds = len(os.listdir("/proc/self/fd"))
outcomes = {"refused": 0, "loaded": 0}

def place(data):
    tmp = lib_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, lib_path)

trace = os.environ.get("HOTR_FUZZ_TRACE")  # set it to keep the case being tried (to debug a crash)

def attempt(name, data):
    if trace:
        with open(trace, "wb") as f:
            f.write(name.encode() + b"\\n" + data)
    place(data)
    assert r.watch_for_changes(timeout=5) == 1, name
    try:
        r.update()
    except hotr.LoadError as exc:
        assert exc.reason and exc.path == lib_path, (name, exc)
        outcomes["refused"] += 1
    else:
        outcomes["loaded"] += 1
    assert lib.value() == 1, name  # every case keeps value() == 1 whatever loaded
    r.poll()
    copies = glob.glob(os.path.join(private, "*", "*", "v*"))
    assert len([c for c in copies if os.path.getsize(c)]) == 1, (name, copies)
    assert len(copies) <= 2, (name, copies)  # the live version's, the next one's (empty)
    assert len(os.listdir("/proc/self/fd")) <= fds, name
    place(good)  # back to a known good version between cases
    r.watch_for_changes(timeout=5)
    try:
        r.update()
    except hotr.LoadError:
        pass

for name, data in cases:
    attempt(name, data)
print("fixed-seed cases", len(cases), outcomes)

header = st.integers(0, 0x3F) | st.integers(phoff, phoff + phnum * phentsize - 1) \\
    | st.integers(shoff, shoff + shnum * shentsize - 1)

@settings(max_examples=examples, deadline=None, database=None,
          derandomize="HOTR_FUZZ_RANDOM" not in os.environ,  # set it to explore new inputs
          suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(header, st.integers(0, 255)), min_size=1, max_size=8))
def fuzz(edits):
    data = bytearray(good)
    for offset, value in edits:
        data[offset] = value
    attempt(f"hypothesis {edits}", bytes(data))

fuzz()
print("after hypothesis", outcomes)
r.close()
"""


def test_thousand_bad_files(builder: Builder, request: pytest.FixtureRequest) -> None:
    pytest.importorskip("hypothesis")
    examples = 3000 if request.config.getoption("--long") else 300
    good = builder.compile_to_file(source(1))
    proc = run_python(
        FUZZ,
        argv=[str(builder.lib), good, str(examples)],
        timeout=900,
        env={"HOTR_PRIVATE_DIR": str(builder.dir / "private")},
    )
    print(proc.stdout)
