"""Running a build's processes: each in a session of its own, so that a timeout, Ctrl-C or a
cancel kills what it started; its output read and its exit waited for on a pidfd (also the
probe's, _pipeline.py, and the prototypes' preprocessor's, _catalog.py)."""

from __future__ import annotations

import contextlib
import os
import selectors
import shlex
import signal
import subprocess
import threading
import time

from ._exceptions import BuildError
from ._signals import deferred
from ._threads import LONGEST_WAIT


class Commands:
    """Runs one build's processes in the directory `cwd`, each in a session of its own so that
    a timeout, Ctrl-C or cancel() kills what it started (make, a compiler driver's children)."""

    def __init__(self, output: str, timeout: float, cwd: str) -> None:
        self.output = output
        self.timeout = timeout
        self.cwd = cwd
        self._running: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self._cancelled = False

    def run(self, argv: list[str]) -> str:
        """Run `argv` to the end; return what it printed (its warnings), or raise BuildError
        with its output unless it succeeded."""
        proc = None
        try:
            with deferred():  # a Ctrl-C between starting it and owning it would leave it running
                proc = self._start(argv)
            output, expired = communicate(proc, self.timeout)
        except BaseException:  # Ctrl-C: the build is in its own session, so stop it here
            if proc is not None:
                kill_group(proc)
                proc.wait()
            raise
        finally:
            if proc is not None:
                with self._lock:
                    self._running.discard(proc)
        if expired:
            raise BuildError(self.output, shlex.join(argv), None, output, timeout=self.timeout)
        if proc.returncode != 0:
            raise BuildError(self.output, shlex.join(argv), proc.returncode, output)
        return output

    def kill_running(self) -> None:
        """Kill the processes running now (their process groups); they fail with BuildError."""
        with self._lock:
            running = list(self._running)
        for proc in running:
            kill_group(proc)

    def cancel(self) -> None:
        """Kill the processes running now and start no more (the reloader is closing)."""
        with self._lock:
            self._cancelled = True
        self.kill_running()

    def _start(self, argv: list[str]) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._cancelled:
                raise BuildError(self.output, shlex.join(argv), None, "", reason="cancelled")
            try:
                proc = start_in_session(argv, self.cwd)
            except OSError as exc:
                raise BuildError(
                    self.output, shlex.join(argv), None, f"cannot run {argv[0]!r}: {exc.strerror}"
                ) from exc
            self._running.add(proc)
        return proc


def start_in_session(argv: list[str], cwd: str | None = None) -> subprocess.Popen[bytes]:
    """Start `argv` (in the directory `cwd`, default this process's) in a session of its own,
    its output (and errors) on one pipe: a kill of its group (kill_group) then ends whatever
    it started.  Also the probe's (_pipeline.py)."""
    return subprocess.Popen(
        argv,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def communicate(proc: subprocess.Popen[bytes], timeout: float) -> tuple[str, bool]:
    """Read everything `proc` prints and wait for its exit, within `timeout` seconds (else kill
    its process group: start it in a session of its own); return (its output, whether it was
    killed for taking too long).  Also the probe's (_pipeline.py).

    The exit is waited for on a pidfd, beside the output: communicate(timeout=...) polls for
    it with growing sleeps, which adds milliseconds to every compiler run.
    """
    assert proc.stdout is not None
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfd (Linux before 5.3)
        deadline = time.monotonic() + timeout
        while True:
            try:
                return _text(proc.communicate(timeout=min(timeout, LONGEST_WAIT))[0]), False
            except subprocess.TimeoutExpired:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    kill_group(proc)
                    return _text(proc.communicate()[0]), True
    out = proc.stdout.fileno()
    chunks: list[bytes] = []
    expired = False
    deadline = time.monotonic() + timeout
    try:
        with selectors.DefaultSelector() as waiting:
            waiting.register(out, selectors.EVENT_READ)
            waiting.register(pidfd, selectors.EVENT_READ)
            while pidfd in waiting.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0 and not expired:
                    expired = True
                    kill_group(proc)  # then wait for its exit: the whole group is going
                for key, _ in waiting.select(None if expired else min(remaining, LONGEST_WAIT)):
                    data = os.read(out, 65536) if key.fd == out else b""
                    if data:
                        chunks.append(data)
                    else:
                        waiting.unregister(key.fd)
            if out in waiting.get_map():
                chunks.extend(_printed(out))
    finally:
        os.close(pidfd)
    proc.wait()
    proc.stdout.close()
    return _text(b"".join(chunks)), expired


def _printed(out: int) -> list[bytes]:
    """What is in the pipe `out` of a process that has exited, without waiting for its end.

    Everything the process printed is there by now.  A process it left running in a session
    of its own (a build server, `setsid ... &`) may hold the pipe open for as long as it runs:
    waiting for the end would hold the build (and a timeout's kill, which cannot reach that
    session) until it exits.
    """
    os.set_blocking(out, False)
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while data := os.read(out, 65536):
            chunks.append(data)
    return chunks


def _text(data: bytes | str | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill a process's whole group; it may have ended already."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
