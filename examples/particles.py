"""Bouncing particles in C; edit GRAVITY in particles.c and save: the motion goes on.

keep_globals=True copies `position` and `speed` (same name, same size) from the old version into
the new one; hotr logs what it carried and what it did not.  Ctrl-C stops it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time

import hotr

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "particles.c")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    lib = hotr.load(SOURCE, keep_globals=True)
    lib.simulate.argtypes = [ctypes.c_double]
    lib.simulate.restype = None
    lib.height.argtypes = [ctypes.c_int]
    lib.height.restype = ctypes.c_double
    print(f"edit {SOURCE} (change GRAVITY) and save; Ctrl-C to stop", flush=True)
    try:
        while True:
            lib.simulate(0.1)
            heights = "  ".join(f"{lib.height(i):7.2f}" for i in range(4))
            print(f"frame {lib.frames():4d}  heights {heights}", flush=True)
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
