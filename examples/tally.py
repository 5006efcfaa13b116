"""Tally words in C++; edit tally.cpp (LABEL) and save: hotr rebuilds it, the tally carries on.

hotr builds ``.cpp`` sources with ``$CXX`` (else ``c++``).  The tally lives in hotr's state
slot (hotr_load / hotr_unload in tally.cpp).  Ctrl-C stops it.
"""

from __future__ import annotations

import itertools
import os
import time

import hotr

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tally.cpp")
WORDS = ("apple", "pear", "plum")


def main() -> None:
    lib = hotr.load(SOURCE)
    print(f"edit {SOURCE} (change LABEL) and save; Ctrl-C to stop", flush=True)
    try:
        for word in itertools.cycle(WORDS):
            lib.add(word.encode())
            lib.report()
            time.sleep(1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
