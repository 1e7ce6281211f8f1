"""A command run by process.stream dies with the process that started it (it has its own session,
so killing the caller's process group alone would leave it running: a killed save's mksquashfs
kept its view busy)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

CALLER = ("import sys; from appcontainers.adapters.host import process; "
          "process.stream(['sleep', '30'], timeout=60)")


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def test_the_command_dies_with_its_caller():
    """SIGKILL to the caller's process group: its sleep (in a session of its own) goes too."""
    caller = subprocess.Popen([sys.executable, "-c", CALLER], start_new_session=True,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        deadline = time.monotonic() + 10
        while not (kids := _children(caller.pid)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert kids, "precondition: the caller started its command"
        assert os.getsid(kids[0]) != os.getsid(caller.pid)  # precondition: not in the caller's session
        os.killpg(caller.pid, signal.SIGKILL)
        caller.wait(10)
        deadline = time.monotonic() + 5
        while _alive(kids[0]) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(kids[0])
    finally:
        for k in _children(caller.pid):
            os.kill(k, signal.SIGKILL)
        if caller.poll() is None:
            caller.kill()
