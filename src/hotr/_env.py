"""The HOTR_* environment variables, each read by one helper whose error names the variable."""

from __future__ import annotations

import math
import os

BACKENDS = ("auto", "inotify", "poll")
DEFAULT_POLL_INTERVAL = 0.5  # seconds


def backend() -> str:
    """``$HOTR_BACKEND``: the watching backend ``backend="auto"`` stands for (default auto)."""
    value = os.environ.get("HOTR_BACKEND", "").strip() or "auto"
    if value not in BACKENDS:
        raise ValueError(
            f"HOTR_BACKEND={value!r} is not a backend: use one of {', '.join(BACKENDS)}"
        )
    return value


def poll_interval() -> float:
    """``$HOTR_POLL_INTERVAL``: seconds between two scans of the polling backend (default 0.5)."""
    text = os.environ.get("HOTR_POLL_INTERVAL", "").strip()
    if not text:
        return DEFAULT_POLL_INTERVAL
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"HOTR_POLL_INTERVAL={text!r} is not a number of seconds greater than 0 (e.g. 0.5)"
        )
    return value


def private_root() -> str:
    """``$HOTR_PRIVATE_DIR``: where the private copies live (default ``$TMPDIR/hotr-<uid>``,
    ``/tmp/hotr-<uid>`` without TMPDIR)."""
    configured = os.environ.get("HOTR_PRIVATE_DIR", "")
    tmp = os.environ.get("TMPDIR") or "/tmp"
    return configured or os.path.join(tmp, f"hotr-{os.getuid()}")
