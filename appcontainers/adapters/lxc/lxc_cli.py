"""ContainerDriver over the lxc-* tools, with our own lxcpath so /var/lib/lxc is untouched."""
from __future__ import annotations

import os
import shutil
import time

from ...agent.retry import attempts
from ...domain.exceptions import ContainerStateError, CommandTimeout
from ..host import process
from . import cgroups

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class LxcDriver:
    def __init__(self, lxcpath: str):
        self.lxcpath = lxcpath

    def _dir(self, name: str) -> str:
        return os.path.join(self.lxcpath, name)

    def _base(self, tool: str, name: str) -> list[str]:
        return [tool, "-P", self.lxcpath, "-n", name]

    def create(self, name: str, config: str) -> None:
        """Write the container's config (atomically); LXC needs nothing else."""
        d = self._dir(name)
        os.makedirs(d, mode=0o700, exist_ok=True)
        tmp = os.path.join(d, ".config.tmp")
        with open(tmp, "w") as f:
            f.write(config)
        os.replace(tmp, os.path.join(d, "config"))

    def exists(self, name: str) -> bool:
        return os.path.exists(os.path.join(self._dir(name), "config"))

    def state(self, name: str) -> str:
        if not self.exists(name):
            return "MISSING"
        proc = process.run([*self._base("lxc-info", name), "-s", "-H"], timeout=10, check=False)
        out = proc.stdout.decode().strip()
        return self._settled(name, out) if proc.returncode == 0 and out else "STOPPED"

    def _settled(self, name: str, reported: str) -> str:
        """LXC keeps reporting FREEZING, its monitor's word, after an lxc-freeze died before it
        finished, even once the cgroup is thawed: then the cgroup says it runs."""
        if reported != "FREEZING":
            return reported
        for key, thawed in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
            proc = process.run([*self._base("lxc-cgroup", name), key], timeout=10, check=False)
            if proc.returncode == 0:
                return "RUNNING" if proc.stdout.decode().strip() == thawed else reported
        return reported

    def states(self) -> dict[str, str]:
        """{name: state} of every container under our lxcpath, from one lxc-ls."""
        names = self.list()
        if not names:
            return {}
        proc = process.run(["lxc-ls", "-P", self.lxcpath, "-f", "-F", "NAME,STATE"], timeout=30, check=False)
        if proc.returncode != 0:
            return {n: self.state(n) for n in names}  # ask each one rather than guess
        found = {}
        for line in proc.stdout.decode().splitlines()[1:]:
            parts = line.split()
            if len(parts) == 2:
                found[parts[0]] = parts[1]
        return {n: self._settled(n, found.get(n, "STOPPED")) for n in names}

    def pid(self, name: str) -> int | None:
        proc = process.run([*self._base("lxc-info", name), "-p", "-H"], timeout=10, check=False)
        out = proc.stdout.decode().strip()
        return int(out) if proc.returncode == 0 and out.isdigit() else None

    def _wait(self, name: str, want: str, timeout: float) -> None:
        for _ in attempts(0.02, time.monotonic() + timeout):
            current = self.state(name)
            if current == want:
                return
        raise CommandTimeout(f"waiting for container {name} to be {want} (it is {current})", timeout)

    def start(self, name: str, timeout: float) -> None:
        log = os.path.join(self._dir(name), "lxc.log")
        with open(os.path.join(self._dir(name), "config")) as f:
            cgroups.remove_stale(cgroups.configured_dirs(f.read()))  # a dead monitor's, or LXC refuses
        argv = [*self._base("lxc-start", name), "-d", "-o", log, "-l", "WARN"]
        try:
            process.run(argv, timeout=timeout)
        except Exception as e:
            raise ContainerStateError(f"container {name} failed to start: {e}; see {log}") from None
        self._wait(name, "RUNNING", timeout)

    def stop(self, name: str, timeout: float) -> None:
        """Ask init to halt (SIGPWR), kill after the timeout."""
        if self.state(name) in ("STOPPED", "MISSING"):
            return
        if self.state(name) in ("FREEZING", "FROZEN"):
            self.unfreeze(name)
        proc = process.run([*self._base("lxc-stop", name), "-t", str(int(max(1, timeout)))],
                           timeout=timeout + 10, check=False)
        if proc.returncode != 0 and self.state(name) != "STOPPED":
            process.run([*self._base("lxc-stop", name), "-k"], timeout=30, check=False)
        self._wait(name, "STOPPED", 10)

    def kill(self, name: str) -> None:
        if self.state(name) not in ("STOPPED", "MISSING"):
            process.run([*self._base("lxc-stop", name), "-k"], timeout=30, check=False)
            self._wait(name, "STOPPED", 10)

    def destroy(self, name: str) -> None:
        """Remove the container's LXC dir (config and log). Never lxc-destroy: it
        would delete the rootfs through our overlay mount."""
        self.kill(name)
        shutil.rmtree(self._dir(name), ignore_errors=True)

    def list(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.lxcpath) if self.exists(n))
        except FileNotFoundError:
            return []

    def freeze(self, name: str) -> None:
        process.run(self._base("lxc-freeze", name), timeout=30)

    def unfreeze(self, name: str) -> None:
        process.run(self._base("lxc-unfreeze", name), timeout=30)
        if self.state(name) == "FREEZING":
            self._thaw_cgroup(name)

    def _thaw_cgroup(self, name: str) -> None:
        """lxc-unfreeze acts only on a FROZEN container: one whose freezing never finished (an
        lxc-freeze killed while a task could not freeze yet) is thawed through its cgroup,
        freezer.state on cgroup v1, cgroup.freeze on v2."""
        for key, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
            proc = process.run([*self._base("lxc-cgroup", name), key, value], timeout=30, check=False)
            if proc.returncode == 0:
                return
        raise ContainerStateError(f"container {name} is FREEZING and its cgroup could not be thawed: "
                                  f"{proc.stderr.decode(errors='replace').strip()}")

    def attach(self, name, argv, env=None, cwd=None, timeout=None, on_output=None, stdin=None):
        """Run argv inside the container via lxc-attach; (exit code, stdout, stderr)."""
        cmd = [*self._base("lxc-attach", name), "--clear-env"]
        for k, v in {"PATH": DEFAULT_PATH, "HOME": "/root", **(env or {})}.items():
            cmd += ["-v", f"{k}={v}"]
        if cwd:
            # lxc-attach has no --cwd: go through the container's own sh, argv kept intact.
            argv = ["/bin/sh", "-c", 'cd "$0" && exec "$@"', cwd, *argv]
        return process.stream([*cmd, "--", *argv], timeout=timeout, on_line=on_output, input=stdin)
