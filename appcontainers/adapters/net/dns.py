"""The data root's DNS resolver: one dnsmasq on the bridge's gateway address.

It answers the root's container names from a hosts file under the root's run/ (re-read on
SIGHUP) and forwards every other name to the servers of the host's resolv.conf (dnsmasq runs on
the host, so a 127.0.0.53-style stub there works too). A dnsmasq is ours when its command line
names our pid file and its executable is the host's dnsmasq binary (the same inode: a local
user can name any program "dnsmasq" and give it our flags, not make /proc/PID/exe that file):
found by that, not by the pid file alone, so a lost or stale pid file never leaves one running
nor makes us signal a stranger.
"""
from __future__ import annotations

import os
import shutil
import signal
import time

from ...agent.retry import attempts
from ...domain.resolver import ResolverPlan
from ..host import process


def _cmdline(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _binary() -> tuple[int, int] | None:
    """(device, inode) of the dnsmasq a plan's argv runs (found on PATH, as process.run finds it)."""
    path = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _runs(pid: int, binary: tuple[int, int] | None) -> bool:
    """The process's executable is that very file (stat follows /proc/PID/exe to its inode)."""
    try:
        st = os.stat(f"/proc/{pid}/exe")
    except OSError:
        return False
    return binary is not None and (st.st_dev, st.st_ino) == binary


def running(run_dir: str) -> list[int]:
    """The pids of every dnsmasq whose pid file is run_dir's (normally none or one)."""
    marker = f"--pid-file={run_dir}/dnsmasq.pid"
    binary = _binary()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            argv = _cmdline(int(entry))
            if (argv and os.path.basename(argv[0]) == "dnsmasq" and marker in argv
                    and _runs(int(entry), binary)):
                pids.append(int(entry))
    return sorted(pids)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _gone(pid: int) -> bool:
    """Exited for good: no such process, or a zombie. (An empty cmdline is not enough: an
    exiting process drops its memory before its files, so its sockets may still be bound.)"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    return state in ("Z", "X")


def _end(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it is still there after timeout."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        _signal(pid, sig)
        for _left in attempts(0.02, deadline=time.monotonic() + timeout):
            if _gone(pid):
                return


def _write(path: str, text: str) -> None:
    """Atomically; readable by others: dnsmasq re-reads it after dropping root for nobody."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


class DnsmasqResolver:
    """Resolver port: dnsmasq processes, one per data root's run directory."""

    def ensure(self, plan: ResolverPlan) -> None:
        """Running as plan says, with its names re-read; started if not (idempotent)."""
        if not self._refresh(plan):
            process.run(plan.argv(), timeout=30)

    def update(self, plan: ResolverPlan) -> None:
        """The names re-read by a running resolver; none is started. A stale one (another
        configuration) is restarted, a dead one's pid file removed."""
        if not self._refresh(plan) and os.path.isdir(plan.run_dir):
            self._remove_pid_file(plan.run_dir)

    def stop(self, run_dir: str) -> None:
        """No resolver of run_dir runs any more, and its files are gone (idempotent)."""
        for pid in running(run_dir):
            _end(pid)
        for name in ("hosts", "hosts.tmp", "dnsmasq.pid"):
            try:
                os.unlink(os.path.join(run_dir, name))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(run_dir)
        except FileNotFoundError:
            pass

    def pids(self, run_dir: str) -> list[int]:
        return running(run_dir)

    def _refresh(self, plan: ResolverPlan) -> bool:
        """Write the hosts file and signal a matching running resolver; True if one runs now.

        Resolvers of this run dir with another command line (a changed gateway or upstream)
        are ended, as are all but one matching."""
        os.makedirs(plan.run_dir, mode=0o711, exist_ok=True)
        os.chmod(plan.run_dir, 0o711)
        _write(plan.hosts_file, plan.hosts_text())
        keep = None
        for pid in running(plan.run_dir):
            if keep is None and (_cmdline(pid) or [])[1:] == plan.argv()[1:]:
                keep = pid
            else:
                _end(pid)
        if keep is None:
            self._remove_pid_file(plan.run_dir)
            return False
        _signal(keep, signal.SIGHUP)
        return True

    @staticmethod
    def _remove_pid_file(run_dir: str) -> None:
        try:
            os.unlink(os.path.join(run_dir, "dnsmasq.pid"))
        except FileNotFoundError:
            pass
