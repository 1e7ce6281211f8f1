"""Starting a command: on pipes, or on a pseudo-terminal it has as its controlling terminal."""
from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import termios

from .users import User

PIPE_SIZE = 1 << 20  # the pipes' capacity: a fast command writes ahead while we relay


def _as(user: User | None) -> dict:
    """Popen's arguments to run as user (None: as the agent, root)."""
    if user is None:
        return {}
    return {"user": user.uid, "group": user.gid, "extra_groups": list(user.groups)}


def spawn_pipes(argv, env, cwd, piped_stdin, user: User | None = None):
    """(Popen, stdout read fd, stderr read fd, stdin write fd or None); on failure no fd leaks."""
    fds: list[int] = []
    try:
        for _ in range(3 if piped_stdin else 2):
            fds.extend(os.pipe2(os.O_CLOEXEC))
        out_r, out_w, err_r, err_w, *stdin_pipe = fds
        in_r, in_w = stdin_pipe or (subprocess.DEVNULL, None)
        proc = subprocess.Popen(argv, stdin=in_r, stdout=out_w, stderr=err_w, env=env, cwd=cwd,
                                start_new_session=True, close_fds=True, **_as(user))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    for fd in (out_w, err_w, *stdin_pipe[:1]):
        os.close(fd)  # the child has its copies
    for grown in (out_r, err_r, in_w):
        _grow(grown)
    return proc, out_r, err_r, in_w


def _grow(fd: int | None) -> None:
    """Best effort: a bigger pipe (the kernel may refuse past the user's pipe quota)."""
    if fd is not None:
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass


def spawn_pty(argv, env, cwd, rows: int, cols: int, user: User | None = None):
    """(Popen, the terminal's master to read, a copy of it to write stdin to).

    The command gets the slave as stdin, stdout and stderr, in a new session whose
    controlling terminal it is: Ctrl-C typed into it becomes SIGINT for its foreground group."""
    master, slave = os.openpty()
    writer = None
    try:
        set_size(master, rows, cols)
        writer = os.dup(master)
        proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                                start_new_session=True, close_fds=True, preexec_fn=_controlling_tty,
                                **_as(user))
    except BaseException:
        for fd in (master, writer):
            if fd is not None:
                os.close(fd)
        raise
    finally:
        os.close(slave)  # the child has its copies; the master reads EIO once they are all gone
    return proc, master, writer


def set_size(fd: int, rows: int, cols: int) -> None:
    """Set a terminal's window size (the kernel tells its foreground group with SIGWINCH)."""
    if rows and cols:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _controlling_tty() -> None:  # in the child, after setsid
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
