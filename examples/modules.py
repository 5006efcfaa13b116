"""Call an extension module forever; edit fastmath.c (SCALE, norm) and save: hotr rebuilds it
and the running loop calls the new code, through `fastmath.norm` and through the `norm` it
imported at the start alike.  `calls` is carried over by fastmath.c's __hotr_reload__.
Ctrl-C stops it.
"""

from __future__ import annotations

import os
import time
from typing import Any

import hotr

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fastmath.c")


def main() -> None:
    fastmath: Any = hotr.load_module(SOURCE)  # builds it, imports it, reloads it on every save
    from fastmath import norm  # type: ignore[import-not-found]  # registered by load_module

    print(f"edit {SOURCE} (change SCALE) and save; Ctrl-C to stop", flush=True)
    try:
        while True:
            fastmath.calls += 1
            point = fastmath.Point(3.0, 4.0)
            print(
                f"norm {norm(3.0, 4.0)}  Point.norm {point.norm()}  calls {fastmath.calls}  "
                f"version {hotr.reloader_of(fastmath).version}",
                flush=True,
            )
            time.sleep(1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
