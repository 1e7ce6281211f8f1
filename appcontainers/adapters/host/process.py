"""The one helper that runs external tools: argv only, always a timeout, readable errors.

Every command is logged (logger "appcontainers.process", at debug) once it is over, with its
argv, exit code and duration; the record carries them as `argv`, `exit_code` and `duration`.
"""
from __future__ import annotations

import logging
import os
import selectors
import shlex
import shutil
import subprocess
import threading
import time
from typing import IO, cast

from ...agent.lines import LineSplitter
from ...domain.exceptions import CommandFailed, CommandTimeout, ToolMissing

log = logging.getLogger("appcontainers.process")

# The Debian package that provides each tool we call.
PACKAGES = {
    "lxc-start": "lxc", "lxc-stop": "lxc", "lxc-attach": "lxc", "lxc-info": "lxc", "lxc-ls": "lxc",
    "lxc-destroy": "lxc", "lxc-freeze": "lxc", "lxc-unfreeze": "lxc", "lxc-wait": "lxc",
    "mksquashfs": "squashfs-tools", "unsquashfs": "squashfs-tools",
    "tar2sqfs": "squashfs-tools-ng", "skopeo": "skopeo",
    "squashfuse": "squashfuse", "squashfuse_ll": "squashfuse", "fuse-overlayfs": "fuse-overlayfs",
    "fusermount3": "fuse3", "busybox": "busybox-static", "mmdebstrap": "mmdebstrap",
    "ip": "iproute2", "nft": "nftables", "dnsmasq": "dnsmasq-base", "mount": "mount", "umount": "mount", "losetup": "mount",
}


def which(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolMissing(tool, PACKAGES.get(tool, tool))
    return path


def _command(argv) -> tuple[list[str], list[str]]:
    """(argv as strings, the same with the tool resolved on PATH); ToolMissing names the package."""
    argv = [str(a) for a in argv]
    exe = which(argv[0]) if "/" not in argv[0] else argv[0]
    return argv, [exe, *argv[1:]]


def _log_end(argv: list[str], start: float, code: int | None, outcome: str | None = None) -> None:
    duration = time.monotonic() - start
    log.debug("%s: %s in %.3fs", shlex.join(argv), outcome or f"exit {code}", duration,
              extra={"argv": tuple(argv), "exit_code": code, "duration": duration})


def run(argv, *, timeout: float = 60, check: bool = True, input: bytes | None = None,
        env: dict | None = None) -> subprocess.CompletedProcess:
    """Run argv and collect its output (stdout and stderr apart)."""
    argv, cmd = _command(argv)
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, input=input, capture_output=True,
                              timeout=timeout, env=env, close_fds=True)
    except subprocess.TimeoutExpired as e:
        _log_end(argv, start, None, f"killed after its timeout of {timeout:g}s")
        out = (e.stdout or b"") + (e.stderr or b"")
        raise CommandTimeout(" ".join(argv), timeout, out.decode(errors="replace")) from None
    _log_end(argv, start, proc.returncode)
    if check and proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode,
                            (proc.stdout + proc.stderr).decode(errors="replace"))
    return proc


def chunks(source, size: int = 64 * 1024):
    """Bytes chunks from a binary file object (read) or an iterable of bytes."""
    if hasattr(source, "read"):
        read = getattr(source, "read1", source.read)  # read1: what a pipe has now, not a full block
        while chunk := read(size):
            yield bytes(chunk)
        return
    for item in source:
        data = item.encode() if isinstance(item, str) else bytes(item)
        for i in range(0, len(data), size):
            yield data[i:i + size]


def stream(argv, *, timeout: float | None, on_line=None, input: bytes | None = None,
           env: dict | None = None) -> tuple[int, bytes, bytes]:
    """Run argv, calling on_line(stream, line) for each output line as it comes.

    A line comes without its newline, undecodable bytes replaced; one longer than
    agent.protocol.MAX_LINE comes in pieces of at most that size. Returns (exit code,
    stdout bytes, stderr bytes), byte-exact. A negative exit code is the signal that
    killed it. On timeout the process group is killed and CommandTimeout raised,
    carrying what was printed.
    """
    argv, cmd = _command(argv)
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            close_fds=True, start_new_session=True, preexec_fn=_die_with_parent)
    # Piped above (stdin when there is input): typed as such for mypy, no branch for radon.
    stdin, stdout, stderr = cast(IO[bytes], proc.stdin), cast(IO[bytes], proc.stdout), cast(IO[bytes], proc.stderr)
    if input is not None:
        # Fed from a thread: a child that prints a lot before reading its stdin must not
        # deadlock against us (and the timeout must still fire).
        threading.Thread(target=_feed, args=(proc.stdin, input), daemon=True).start()
    output = _Output(proc, on_line)
    try:
        finished = output.read_until(None if timeout is None else start + timeout)
    except BaseException:
        # Interrupted (an exception in a callback, KeyboardInterrupt): do not leave it running.
        if proc.poll() is None:
            _kill(proc)
        _log_end(argv, start, proc.returncode, "interrupted")
        raise
    finally:
        output.close()
    if not finished:
        _kill(proc)
        _log_end(argv, start, None, f"killed after its timeout of {timeout:g}s")
        raise CommandTimeout(" ".join(argv), cast(float, timeout), output.text())  # only a deadline ends unfinished
    code = proc.wait()
    _log_end(argv, start, code)
    return code, bytes(output.bufs["stdout"]), bytes(output.bufs["stderr"])


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the process that started it dies. The child has its
    own session (so a timeout can kill its group), which a kill of our process group would miss:
    a killed save must not leave mksquashfs reading its view (the view then cannot be unmounted)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL


def _feed(pipe, input) -> None:
    """Write input (bytes, a file object or an iterable of bytes) to pipe, then close it."""
    try:
        if isinstance(input, (bytes, bytearray, memoryview)):
            pipe.write(input)
        else:
            for chunk in chunks(input):
                pipe.write(chunk)
    except (BrokenPipeError, OSError, ValueError):
        pass
    finally:
        try:
            pipe.close()
        except OSError:
            pass


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the command's process group and reap it."""
    try:
        os.killpg(proc.pid, 9)
    except ProcessLookupError:
        pass
    proc.wait()


class _Output:
    """A child's stdout and stderr, read until both close: kept whole, and given line by line
    to on_line when there is one."""

    def __init__(self, proc: subprocess.Popen, on_line):
        self.proc, self.on_line = proc, on_line
        self.bufs = {"stdout": bytearray(), "stderr": bytearray()}
        self.splitters = {name: LineSplitter() for name in self.bufs}
        self.sel = selectors.DefaultSelector()
        # Both piped by stream(): typed as such for mypy.
        self.stdout, self.stderr = cast(IO[bytes], proc.stdout), cast(IO[bytes], proc.stderr)
        self.sel.register(self.stdout, selectors.EVENT_READ, "stdout")
        self.sel.register(self.stderr, selectors.EVENT_READ, "stderr")
        self.open = 2

    def read_until(self, deadline: float | None) -> bool:
        """True once both pipes closed, False when the deadline came first."""
        while self.open:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                return False
            for key, _ in self.sel.select(wait):
                self._read(key)
        return True

    def _read(self, key) -> None:
        name = key.data
        chunk = os.read(key.fd, 65536)
        if chunk:
            self.bufs[name] += chunk
        else:
            self.sel.unregister(key.fileobj)
            self.open -= 1
        if self.on_line is not None:  # nobody wants lines: do not split
            splitter = self.splitters[name]
            for line in splitter.feed(chunk) if chunk else splitter.flush():
                self.on_line(name, line.removesuffix(b"\n").decode(errors="replace"))

    def text(self) -> str:
        return bytes(self.bufs["stdout"] + self.bufs["stderr"]).decode(errors="replace")

    def close(self) -> None:
        self.sel.close()
        self.stdout.close()
        self.stderr.close()
