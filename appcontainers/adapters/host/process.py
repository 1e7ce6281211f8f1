"""The one helper that runs external tools: argv only, always a timeout, readable errors."""
from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import threading
import time

from ...domain.exceptions import CommandFailed, CommandTimeout, ToolMissing

# The Debian package that provides each tool we call.
PACKAGES = {
    "lxc-start": "lxc", "lxc-stop": "lxc", "lxc-attach": "lxc", "lxc-info": "lxc", "lxc-ls": "lxc",
    "lxc-destroy": "lxc", "lxc-freeze": "lxc", "lxc-unfreeze": "lxc", "lxc-wait": "lxc",
    "mksquashfs": "squashfs-tools", "unsquashfs": "squashfs-tools",
    "squashfuse": "squashfuse", "squashfuse_ll": "squashfuse", "fuse-overlayfs": "fuse-overlayfs",
    "fusermount3": "fuse3", "busybox": "busybox-static", "mmdebstrap": "mmdebstrap",
    "ip": "iproute2", "nft": "nftables", "mount": "mount", "umount": "mount", "losetup": "mount",
}


def which(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolMissing(tool, PACKAGES.get(tool, tool))
    return path


def run(argv, *, timeout: float = 60, check: bool = True, input: bytes | None = None,
        env: dict | None = None) -> subprocess.CompletedProcess:
    """Run argv and collect its output (stdout and stderr apart)."""
    argv = [str(a) for a in argv]
    exe = which(argv[0]) if "/" not in argv[0] else argv[0]
    try:
        proc = subprocess.run([exe, *argv[1:]], input=input, capture_output=True,
                              timeout=timeout, env=env, close_fds=True)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"") + (e.stderr or b"")
        raise CommandTimeout(" ".join(argv), timeout, out.decode(errors="replace")) from None
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

    Returns (exit code, stdout bytes, stderr bytes). A negative exit code is the
    signal that killed it. On timeout the process group is killed and
    CommandTimeout raised, carrying what was printed.
    """
    argv = [str(a) for a in argv]
    exe = which(argv[0]) if "/" not in argv[0] else argv[0]
    proc = subprocess.Popen([exe, *argv[1:]], stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            close_fds=True, start_new_session=True)
    if input is not None:
        # Fed from a thread: a child that prints a lot before reading its stdin must not
        # deadlock against us (and the timeout must still fire).
        def feed():
            try:
                if isinstance(input, (bytes, bytearray, memoryview)):
                    proc.stdin.write(input)
                else:
                    for chunk in chunks(input):
                        proc.stdin.write(chunk)
            except (BrokenPipeError, OSError, ValueError):
                pass
            finally:
                try:
                    proc.stdin.close()
                except OSError:
                    pass

        threading.Thread(target=feed, daemon=True).start()
    bufs = {"stdout": bytearray(), "stderr": bytearray()}
    partial = {"stdout": b"", "stderr": b""}
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
    sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
    deadline = None if timeout is None else time.monotonic() + timeout
    open_streams = 2
    finished = False
    try:
        while open_streams:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                os.killpg(proc.pid, 9)
                proc.wait()
                out = bytes(bufs["stdout"] + bufs["stderr"]).decode(errors="replace")
                raise CommandTimeout(" ".join(argv), timeout, out)
            for key, _ in sel.select(wait):
                name = key.data
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    open_streams -= 1
                    if partial[name] and on_line:
                        on_line(name, partial[name].decode(errors="replace"))
                    continue
                bufs[name] += chunk
                if on_line:
                    data = partial[name] + chunk
                    *lines, partial[name] = data.split(b"\n")
                    for line in lines:
                        on_line(name, line.decode(errors="replace"))
        finished = True
    finally:
        sel.close()
        proc.stdout.close()
        proc.stderr.close()
        if not finished and proc.poll() is None:
            # Interrupted (an exception in a callback, KeyboardInterrupt): do not leave it running.
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            proc.wait()
    code = proc.wait()
    return code, bytes(bufs["stdout"]), bytes(bufs["stderr"])
