"""The seed's main.c in Python: load libhot.so, call hello_world_func, reload on every rebuild.

Run it, edit example.c, rebuild with the command it prints, and see the new output.  Ctrl-C
exits (the library's cleanup() runs, hotr's private copies are removed).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import hotr

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "example.c")
LIBRARY = os.path.join(HERE, "libhot.so")
BUILD = [os.environ.get("CC", "cc"), "-shared", "-fPIC", SOURCE, "-o", LIBRARY]


def call_hello(library: hotr.Library | None) -> None:
    if library is None:
        return
    try:
        library.hello_world_func()
    except hotr.SymbolNotFoundError as exc:
        print(exc, file=sys.stderr)


def main() -> int:
    if not os.path.exists(LIBRARY):  # first run: build it once, as the seed README does by hand
        subprocess.run(BUILD, check=True)
    reloader = hotr.hot_reload_init(LIBRARY)
    if reloader is None:
        print("Failed to initialize hot reloader", file=sys.stderr)
        return 1
    call_hello(hotr.hot_reload_update(reloader))
    print(f"Edit {SOURCE}, then rebuild it:\n  {shlex.join(BUILD)}", flush=True)
    try:
        while True:
            if hotr.watch_for_changes(reloader) > 0:
                print("Detected change, reloading...", flush=True)
                call_hello(hotr.hot_reload_update(reloader))
    except KeyboardInterrupt:
        pass
    finally:
        hotr.hot_reload_cleanup(reloader)
    return 0


if __name__ == "__main__":
    sys.exit(main())
