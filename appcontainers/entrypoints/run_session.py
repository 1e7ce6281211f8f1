"""The local side of `appcontainers run`: stdin, exact output, signals and the terminal.

The command runs through the service (Container.run); this module only ties it to this
process: stdin is streamed when it is not a terminal (or with -i), output bytes go to
stdout/stderr as they come, SIGINT/SIGTERM/SIGHUP/SIGQUIT are forwarded to the command (a
second SIGINT kills it), and with -t the local terminal is raw while the command runs on a
pseudo-terminal in the container, its window size followed on SIGWINCH.
"""
from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import termios
import tty as ttymod
from collections.abc import Iterator
from typing import NamedTuple

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def exit_status(code: int) -> int:
    """The CLI's exit status for a command's exit code (-N: killed by signal N -> 128+N)."""
    return code if 0 <= code < 256 else 128 + (-code if code < 0 else 0)


class Controls:
    """Signals and window sizes waiting to go to the command; controls() takes them."""

    def __init__(self) -> None:
        self.pending: list[int | tuple[int, int]] = []
        self.interrupts = 0

    def on_signal(self, signum: int, frame) -> None:
        if signum == signal.SIGINT:
            self.interrupts += 1
            if self.interrupts > 1:
                signum = signal.SIGKILL  # a second Ctrl-C: the user means it
        self.pending.append(signum)

    def on_winch(self, signum: int, frame) -> None:
        self.pending.append(window_size())

    def __call__(self) -> list[int | tuple[int, int]]:
        taken, self.pending = self.pending, []
        return taken


def window_size() -> tuple[int, int]:
    """(rows, cols) of the terminal on stdout or stdin, (0, 0) when there is none."""
    for fd in (1, 0):
        with contextlib.suppress(OSError):
            size = os.get_terminal_size(fd)
            return size.lines, size.columns
    return 0, 0


@contextlib.contextmanager
def forwarding(controls: Controls, tty: bool) -> Iterator[None]:
    """Our handlers for the forwarded signals (and SIGWINCH with a tty) while the command runs."""
    old = {sig: signal.signal(sig, controls.on_signal) for sig in FORWARDED}
    if tty:
        old[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, controls.on_winch)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """The terminal on fd in raw mode (every key goes to the command), restored on any exit."""
    saved = termios.tcgetattr(fd)
    try:
        ttymod.setraw(fd, termios.TCSADRAIN)  # keep what was typed ahead
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _stdin_is_tty() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


class Output:
    """Writes the command's output bytes to our fds 1 and 2 as they come, with os.write (no
    buffering, no decoding). When the reader of our stdout goes away (`run ... | head -1`),
    the command gets SIGPIPE, as it would in a local pipe, instead of running on in the
    container with nobody reading."""

    def __init__(self, controls: Controls) -> None:
        self.controls, self.broken = controls, False
        self.out = {"stdout": _writer(sys.stdout), "stderr": _writer(sys.stderr)}

    def __call__(self, stream: str, data: bytes) -> None:
        if self.broken and stream == "stdout":
            return
        try:
            self.out[stream](data)
        except BrokenPipeError:
            if stream == "stdout" and not self.broken:
                self.broken = True
                self.controls.pending.append(signal.SIGPIPE)
                # what is still buffered must not fail again at exit
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _writer(f):
    """How to write bytes to f: straight to its descriptor once what Python buffered is out,
    or through its binary buffer when it has no descriptor (a test runner's capture)."""
    try:
        f.flush()
        fd = f.fileno()
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is both
        buffer = f.buffer

        def write(data: bytes) -> None:
            buffer.write(data)
            buffer.flush()
        return write
    return lambda data: _write_all(fd, data)


def _write_all(fd: int, data: bytes) -> None:
    """All of data to fd (a pipe may take part of it; a non-blocking one may say EAGAIN)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [])


class How(NamedTuple):
    """How `run` runs its command: the CLI's options."""
    timeout: float | None = None
    interactive: bool = False
    tty: bool = False
    env: dict[str, str] | None = None
    cwd: str | None = None
    user: str | None = None


def run(container, command: list[str], how: How) -> int:
    """Run command in container, tied to this process; the command's exit code."""
    stdin_tty = _stdin_is_tty()
    forward = sys.stdin is not None and (how.interactive or not stdin_tty)
    size = window_size() if how.tty else None
    env = {**({"TERM": os.environ.get("TERM", "xterm")} if how.tty else {}), **(how.env or {})}
    controls = Controls()
    with contextlib.ExitStack() as stack:
        stack.enter_context(forwarding(controls, how.tty))
        if how.tty and forward and stdin_tty:
            stack.enter_context(raw_terminal(sys.stdin.fileno()))
        r = container.run(command, timeout=how.timeout, env=env or None, cwd=how.cwd, user=how.user,
                          stdin=sys.stdin.buffer if forward else None, on_data=Output(controls), tty=size,
                          controls=controls, capture=False)  # written out as it comes, never held
    return r.exit_code
