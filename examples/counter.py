"""Count forever in C; edit counter.c (STEP) and save: hotr rebuilds, the count carries on.

The count lives in hotr's state slot (hotr_load / hotr_unload in counter.c), so every version
finds the memory the first one allocated.  Ctrl-C stops it.
"""

from __future__ import annotations

import ctypes
import os
import time

import hotr

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "counter.c")


def main() -> None:
    lib = hotr.load(SOURCE)
    lib.step.restype = ctypes.c_long
    print(f"edit {SOURCE} (change STEP) and save; Ctrl-C to stop", flush=True)
    try:
        while True:
            print("count", lib.step(), flush=True)
            time.sleep(1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
