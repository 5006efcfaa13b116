"""The HOTR_* environment variables, each read by one helper whose error names the variable."""

from __future__ import annotations

import os

BACKENDS = ("auto", "inotify", "poll")
DEFAULT_POLL_INTERVAL = 0.5  # seconds
_INF, _NAN = float("inf"), float("nan")  # not math's: one import less


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
        value = _NAN
    if not 0 < value < _INF:  # NaN is not either
        raise ValueError(
            f"HOTR_POLL_INTERVAL={text!r} is not a number of seconds greater than 0 (e.g. 0.5)"
        )
    return value


def private_root() -> str:
    """``$HOTR_PRIVATE_DIR``: where the private copies live (default ``$TMPDIR/hotr-<uid>``,
    ``/tmp/hotr-<uid>`` without TMPDIR), made absolute: the program may chdir later."""
    configured = os.environ.get("HOTR_PRIVATE_DIR", "")
    tmp = os.environ.get("TMPDIR") or "/tmp"
    return os.path.abspath(configured or os.path.join(tmp, f"hotr-{os.getuid()}"))


DEFAULT_CACHE_SIZE = 1 << 30  # bytes: a few thousand objects of a typical project
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def cache_root() -> str:
    """``$HOTR_CACHE_DIR``: where compiled objects are kept between runs (default
    ``$XDG_CACHE_HOME/hotr``, else ``~/.cache/hotr``)."""
    configured = os.environ.get("HOTR_CACHE_DIR", "")
    if configured:
        return os.path.abspath(configured)
    base = os.environ.get("XDG_CACHE_HOME", "") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.path.abspath(base), "hotr")


def cache_size() -> int:
    """``$HOTR_CACHE_SIZE``: the object cache's size limit in bytes, with an optional K, M, G or
    T suffix (default 1G); 0 turns the cache off."""
    text = os.environ.get("HOTR_CACHE_SIZE", "").strip()
    if not text:
        return DEFAULT_CACHE_SIZE
    number, unit = text.rstrip("kKmMgGtTiIbB"), text[len(text.rstrip("kKmMgGtTiIbB")) :]
    unit = unit.upper().removesuffix("B").removesuffix("I")
    try:
        value = float(number)
    except ValueError:
        value = _NAN
    if unit not in _UNITS or not 0 <= value < _INF:
        raise ValueError(
            f"HOTR_CACHE_SIZE={text!r} is not a size: give bytes, optionally with K, M, G or T "
            "(e.g. 500M), or 0 to turn the cache off"
        )
    return int(value * _UNITS[unit])


def demo_dir() -> str:
    """``$HOTR_DEMO_DIR``: where ``hotr run`` keeps its copy of the demo (default
    ``$TMPDIR/hotr-demo-<uid>``, ``/tmp/hotr-demo-<uid>`` without TMPDIR)."""
    configured = os.environ.get("HOTR_DEMO_DIR", "")
    tmp = os.environ.get("TMPDIR") or "/tmp"
    return configured or os.path.join(tmp, f"hotr-demo-{os.getuid()}")


def guard() -> bool:
    """``$HOTR_GUARD``: 1 guards the calls of every reloader not given guard= (default 0)."""
    value = os.environ.get("HOTR_GUARD", "").strip() or "0"
    if value not in ("0", "1"):
        raise ValueError(f"HOTR_GUARD={value!r} is not 0 or 1")
    return value == "1"
