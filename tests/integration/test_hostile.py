"""Hostile input catalogue: each refused with a clear error, and nothing changed.

"Nothing changed" is checked on the state file's bytes, the container list and the
mounts under the data root, before and after each case.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile

import pytest

from appcontainers.adapters.mounts.mountinfo import mounted_under
from appcontainers.domain.exceptions import AppContainersError


@pytest.fixture(scope="module")
def victim(svc):
    """One container every case aims at; created once, removed at the end."""
    c = svc.provision(name="hostile-target")
    c.run("ln -s / /root/rootlink")
    yield c
    c.destroy()


def _snapshot(svc, data_root):
    try:
        with open(os.path.join(data_root, "resources.json"), "rb") as f:
            state = f.read()
    except FileNotFoundError:
        state = None
    return state, sorted(c.name for c in svc.list_containers()), sorted(mounted_under(data_root))


def _tar(tmp_path, *members, name="bad.tar"):
    """members: (TarInfo-field dict, bytes or None)."""
    path = tmp_path / name
    with tarfile.open(path, "w") as tf:
        for fields, data in members:
            info = tarfile.TarInfo(fields.pop("name"))
            for k, v in fields.items():
                setattr(info, k, v)
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return str(path)


NAMES = ["", "x" * 41, "../x", "a;b", "\u0430pp", "a\u200bb", "a b", "-a", "a-", "Upper", "a/b", "a\x00b",
         "a.b", "$(reboot)", 123]


def _archive_cases(tmp_path):
    return {
        "absolute": _tar(tmp_path, ({"name": "/etc/evil"}, b"x")),
        "dotdot": _tar(tmp_path, ({"name": "../../evil"}, b"x")),
        "symlink-then-file": _tar(tmp_path, ({"name": "l", "type": tarfile.SYMTYPE, "linkname": "/etc"}, None),
                                  ({"name": "l/evil"}, b"x")),
        "hardlink-out": _tar(tmp_path, ({"name": "h", "type": tarfile.LNKTYPE, "linkname": "../../etc/passwd"}, None)),
        "device": _tar(tmp_path, ({"name": "dev", "type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 1}, None)),
        "setuid": _tar(tmp_path, ({"name": "suid", "mode": 0o4755}, b"#!/bin/sh\n")),
        "huge-sparse": _huge(tmp_path),
        "not-a-tar": _garbage(tmp_path),
        "missing": str(tmp_path / "nope.tar"),
    }


def _huge(tmp_path):
    path = tmp_path / "huge.tar"
    info = tarfile.TarInfo("huge")
    info.size = 1 << 50  # a member claiming a petabyte: refused before a byte is written
    with open(path, "wb") as f:
        f.write(info.tobuf(format=tarfile.GNU_FORMAT))
    return str(path)


def _garbage(tmp_path):
    path = tmp_path / "garbage.tar"
    path.write_bytes(os.urandom(4096))
    return str(path)


class TestHostileApi:
    @pytest.mark.parametrize("name", NAMES, ids=[repr(n) for n in NAMES])
    def test_bad_names(self, svc, data_root, name):
        """Names outside a-z, 0-9 and inner '-' (or too long, or not text) are refused."""
        before = _snapshot(svc, data_root)
        with pytest.raises(AppContainersError, match="name"):
            svc.provision(name=name)
        assert _snapshot(svc, data_root) == before

    @pytest.mark.parametrize("path", ["../etc/passwd", "/root/../../x", "", "/", "a\x00b", "/root/rootlink"])
    def test_bad_file_paths(self, svc, data_root, victim, path):
        """'..', empty, root, NUL and a path that is a symlink are refused."""
        before = _snapshot(svc, data_root)
        with pytest.raises(AppContainersError):
            victim.create_file(path, "x")
        assert _snapshot(svc, data_root) == before

    @pytest.mark.parametrize("case", ["absolute", "dotdot", "symlink-then-file", "hardlink-out", "device",
                                      "setuid", "huge-sparse", "not-a-tar", "missing"])
    def test_bad_archives(self, svc, data_root, victim, tmp_path, case):
        """Every escaping, dangerous or broken archive is refused and nothing lands in the container."""
        archive = _archive_cases(tmp_path)[case]
        listing = victim.run("find / -xdev | sort").stdout
        before = _snapshot(svc, data_root)
        with pytest.raises(AppContainersError):
            victim.load_archive(archive)
        assert _snapshot(svc, data_root) == before
        assert victim.run("find / -xdev | sort").stdout == listing
        assert not os.path.exists("/etc/evil")

    @pytest.mark.parametrize("kwargs", [{"memory": "lots"}, {"memory": "0"}, {"cpus": -1}, {"cpus": "two"},
                                        {"base": "no-such-base"}, {"pids": 0}, {"pids": "many"},
                                        {"caps_add": ["cap_sys_admin"]}, {"caps_add": ["sys_admn"]},
                                        {"caps_add": "net_admin"}, {"unprivileged": False}])
    def test_bad_provision_options(self, svc, data_root, kwargs):
        """Bad limits and unknown bases are refused before anything is reserved."""
        before = _snapshot(svc, data_root)
        with pytest.raises(AppContainersError):
            svc.provision(**kwargs)
        assert _snapshot(svc, data_root) == before

    @pytest.mark.parametrize("command", ["", "   ", [], [1, 2], None])
    def test_bad_commands(self, svc, data_root, victim, command):
        """Empty or non-text commands are refused."""
        before = _snapshot(svc, data_root)
        with pytest.raises(AppContainersError):
            victim.run(command)
        assert _snapshot(svc, data_root) == before

    @pytest.mark.parametrize("command", ["", ["echo", "x"], "a\x00b"])
    def test_bad_startup_commands(self, svc, data_root, victim, command):
        """Startup commands are non-empty shell strings."""
        before = _snapshot(svc, data_root)
        with pytest.raises(AppContainersError):
            victim.add_startup_command(command)
        assert _snapshot(svc, data_root) == before

    @pytest.mark.parametrize("settings", [{"subnet": "10.0.0.0/31"}, {"subnet": "fe80::/64"},
                                          {"bridge": "way-too-long-bridge-name"}, {"root": "relative/root"},
                                          {"root": "/tmp/with space"}, {"mounter": "magic"}])
    def test_bad_settings(self, settings):
        """Bad settings are refused when the service is set up."""
        import appcontainers
        with pytest.raises(AppContainersError):
            appcontainers.setup_service(**settings)

    def test_unprivileged_under_a_closed_data_root(self, tmp_path):
        """An unprivileged container under a root its uid cannot search: refused, naming the dir."""
        import appcontainers
        root = tmp_path / "closed"
        root.mkdir(mode=0o700)
        small = appcontainers.setup_service(root=str(root), bridge="actest1", subnet="10.0.203.0/30")
        with pytest.raises(AppContainersError, match="not searchable"):
            small.provision(unprivileged=True)
        assert small.list_containers() == []

    def test_bad_mode(self, svc, data_root, victim):
        """A file mode beyond 0o7777 is refused."""
        before = _snapshot(svc, data_root)
        with pytest.raises(AppContainersError):
            victim.create_file("/root/m", "x", mode=0o77777)
        assert _snapshot(svc, data_root) == before

    def test_pool_exhaustion(self, data_root, tmp_path):
        """A /30 holds one container; the second provision is refused with PoolExhausted, nothing held."""
        import shutil
        import tempfile

        import appcontainers
        from appcontainers.domain.exceptions import PoolExhausted
        # Under /var/tmp, searchable by others (tmp_path's parents are 0700): the default container
        # is unprivileged and its root must reach its rootfs.
        root = tempfile.mkdtemp(prefix="appcontainers-test-pool-", dir="/var/tmp")
        os.chmod(root, 0o711)
        small = appcontainers.setup_service(root=root, bridge="actest1", subnet="10.0.203.0/30")
        try:
            c = small.provision()
            before = _snapshot(small, root)
            with pytest.raises(PoolExhausted):
                small.provision()
            assert _snapshot(small, root) == before
            c.destroy()
        finally:
            for c in small.list_containers():
                c.destroy()
            small.reconcile()  # the host Python re-bind under mnt/.binds
            subprocess.run(["ip", "link", "del", "actest1"], capture_output=True)
            shutil.rmtree(root, ignore_errors=True)


class TestHostileCli:
    def _cli(self, settings, *args, env=None, user=None):
        env = {**os.environ, "APPCONTAINERS_ROOT": settings["root"], "APPCONTAINERS_BRIDGE": settings["bridge"],
               "APPCONTAINERS_SUBNET": settings["subnet"], **(env or {})}
        argv = [sys.executable, "-m", "appcontainers.entrypoints.cli", *args]
        if user:
            argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)

    @pytest.mark.parametrize("args", [("provision", "--name", "../x"), ("run", "no-such", "--", "true"),
                                      ("put", "hostile-target", "/etc/hostname", "../x"),
                                      ("load", "/etc/hostname"), ("rmi", "no-such-image"),
                                      ("put", "hostile-target", "/etc/hostname", "/x", "--mode", "9z")])
    def test_cli_refuses_with_one_line(self, svc, settings, data_root, victim, args):
        """The CLI prints one line naming the problem and exits non-zero; nothing changed."""
        svc.reconcile()  # settle what earlier tests left for gc (an unused host-path re-bind), which the CLI's own set-up would repair
        before = _snapshot(svc, data_root)
        proc = self._cli(settings, *args)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr and proc.stderr.strip()
        assert _snapshot(svc, data_root) == before

    def test_missing_tools_say_what_to_install(self, svc, settings, data_root):
        """With the lxc tools off PATH, the error says which package to install."""
        before = _snapshot(svc, data_root)
        proc = self._cli(settings, "start", "hostile-target", env={"PATH": os.path.dirname(sys.executable)})
        assert proc.returncode == 1 and "install" in proc.stderr, proc.stderr
        assert _snapshot(svc, data_root) == before

    def test_not_root(self, settings):
        """A non-root user is told that root is needed."""
        proc = self._cli(settings, "ls", user=65534)
        assert proc.returncode == 1 and "needs root" in proc.stderr, proc.stderr


class TestIsolation:
    def test_container_sees_only_its_own_agent_sockets_and_no_host_paths(self, svc, data_root, victim):
        """Another container's sockets and the host's data root are not reachable from inside."""
        other = svc.provision()
        try:
            other.start()
            inside = victim.run(f"ls /run/appcontainers; test -e {data_root} && echo ROOT-VISIBLE;"
                                f" test -e {data_root}/run/{other.name} && echo OTHER-VISIBLE;"
                                " test -e /work && echo WORK-VISIBLE; cat /etc/hostname")
            assert "ROOT-VISIBLE" not in inside.stdout and "OTHER-VISIBLE" not in inside.stdout
            assert "WORK-VISIBLE" not in inside.stdout
            assert "cmd.sock" in inside.stdout and inside.stdout.strip().endswith("hostile-target")
            own = os.stat(os.path.join(data_root, "run", "hostile-target", "agent", "cmd.sock")).st_ino
            seen = victim.run("stat -c %i /run/appcontainers/cmd.sock").stdout.strip()
            assert int(seen) == own
        finally:
            other.destroy()

    def test_image_layers_are_mounted_nodev_nosuid(self, svc, data_root, victim):
        """The read-only image layers carry nodev and nosuid."""
        with open("/proc/self/mountinfo") as f:
            layers = [line for line in f if f"/mnt/{victim.name}/layers/" in line.split()[4]]
        assert layers and all("nosuid" in line and "nodev" in line for line in layers)
