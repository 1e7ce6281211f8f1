"""The sandbox, attacked for real from a default container (issue 11): each test first shows
that the attack's precondition holds, then performs it, then checks on the host that its
effect did not happen."""
from __future__ import annotations

import json
import os
import tempfile
import socket
import secrets
import shutil
import stat
import subprocess
import sys

import pytest

from appcontainers.domain.capabilities import DEFAULT

# capabilities(7) numbers of the names we use.
CAP_NUMBERS = {"chown": 0, "dac_override": 1, "fowner": 3, "fsetid": 4, "kill": 5, "setgid": 6, "setuid": 7,
               "setpcap": 8, "net_bind_service": 10, "net_admin": 12, "net_raw": 13, "sys_chroot": 18,
               "sys_admin": 21, "audit_write": 29}


def _mask(names) -> int:
    return sum(1 << CAP_NUMBERS[n] for n in names)


def _ok(c, cmd: str) -> str:
    r = c.run(cmd)
    assert r.exit_code == 0, f"{cmd!r} exited {r.exit_code}: {r.stdout}{r.stderr}"
    return r.stdout


def _as_nobody(*argv) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "nobody", "--", *argv], capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def box(svc):
    """A default container, running."""
    c = svc.provision(name="sandbox-box")
    try:
        c.start()
        yield c
    finally:
        c.destroy()


@pytest.fixture(scope="module")
def python_prefix(svc, box):
    """The host path of the Python the base binds in read-only (the root CLI runs from it)."""
    binds = svc.inspect_image(box.image)["manifest"]["host_binds"]
    assert binds, "the default base binds the host's Python"
    return binds[0]


class TestUserNamespace:
    def test_root_inside_is_host_uid_100000(self, svc, box):
        """uid_map inside maps 0 to 100000 (65536 ids); the container's processes are that host uid."""
        fields = _ok(box, "cat /proc/self/uid_map").split()
        assert fields == ["0", str(svc.settings.idmap_base), str(svc.settings.idmap_size)]
        assert _ok(box, "cat /proc/self/gid_map").split() == fields
        pid = _ok(box, "echo $$").strip()  # a pid inside; the agent's child on the host side:
        host_pids = [p for p in os.listdir("/proc") if p.isdigit() and _in_container(p, box.name)]
        assert host_pids and pid
        assert {os.stat(f"/proc/{p}").st_uid for p in host_pids} == {svc.settings.idmap_base}

    def test_default_is_recorded_and_listed(self, svc, box, settings):
        """ls --json shows each container's privilege, capabilities added and pids limit."""
        env = {**os.environ, "APPCONTAINERS_ROOT": settings["root"], "APPCONTAINERS_BRIDGE": settings["bridge"],
               "APPCONTAINERS_SUBNET": settings["subnet"]}
        out = subprocess.run([sys.executable, "-m", "appcontainers.entrypoints.cli", "ls", "--json"], env=env,
                             capture_output=True, text=True, timeout=60, check=True).stdout
        mine = [i for i in json.loads(out) if i["name"] == box.name]
        assert mine and mine[0]["privileged"] is False and mine[0]["pids"] == 4096 and mine[0]["caps_add"] == []


def _in_container(pid: str, name: str) -> bool:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return f".payload.{name}" in f.read()
    except OSError:
        return False


class TestCapabilities:
    def test_bounding_set_is_the_docker_like_default(self, box):
        """CapBnd of init inside is exactly the default set: no sys_admin, net_admin, net_raw, mknod..."""
        status = _ok(box, "cat /proc/1/status")
        bnd = int(next(line.split()[1] for line in status.splitlines() if line.startswith("CapBnd:")), 16)
        assert bnd == _mask(DEFAULT)

    def test_net_admin_only_when_added(self, svc, box):
        """The default container cannot change eth0's MTU; one provisioned with caps_add=["net_admin"] can."""
        assert _ok(box, "cat /sys/class/net/eth0/mtu").strip() != "1400"
        r = box.run("ip link set eth0 mtu 1400")
        assert r.exit_code != 0
        assert _ok(box, "cat /sys/class/net/eth0/mtu").strip() != "1400"
        admin = svc.provision(caps_add=["net_admin"])
        try:
            status = _ok(admin, "cat /proc/1/status")
            bnd = int(next(line.split()[1] for line in status.splitlines() if line.startswith("CapBnd:")), 16)
            assert bnd == _mask((*DEFAULT, "net_admin"))
            _ok(admin, "ip link set eth0 mtu 1400")
            assert _ok(admin, "cat /sys/class/net/eth0/mtu").strip() == "1400"
        finally:
            admin.destroy()


class TestEscapes:
    def test_remount_of_the_host_python_bind_and_write(self, svc, box, python_prefix):
        """remount,bind,rw of the host Python bind then a write: no marker appears on the host;
        even with sys_admin added the remount fails (the mount is locked read-only in the user
        namespace) and root inside does not own the host's files anyway."""
        marker = f"h7-marker-{secrets.token_hex(4)}"
        assert os.path.isdir(python_prefix) and not os.path.exists(os.path.join(python_prefix, marker))
        mounts = _ok(box, "cat /proc/self/mountinfo")
        assert any(line.split()[4] == python_prefix and " ro," in f" {line.split()[5]}," for line in mounts.splitlines())
        _ok(box, f"ls {python_prefix}/bin")  # the bind works: the agent runs from it
        attack = f"mount -o remount,bind,rw {python_prefix}; touch {python_prefix}/{marker}; echo done"
        assert "done" in box.run(attack).stdout
        assert not os.path.exists(os.path.join(python_prefix, marker))
        admin = svc.provision(caps_add=["sys_admin"])
        try:
            r = admin.run(f"mount -o remount,bind,rw {python_prefix}")
            assert r.exit_code != 0, "remount of a locked read-only bind succeeded with sys_admin"
            r = admin.run(attack)
            assert "done" in r.stdout
            assert not os.path.exists(os.path.join(python_prefix, marker)), r.stdout + r.stderr
            mounts = _ok(admin, "cat /proc/self/mountinfo").splitlines()
            assert any(line.split()[4] == python_prefix and line.split()[5].startswith("ro") for line in mounts)
        finally:
            admin.destroy()

    def test_mount_proc_and_write_core_pattern(self, box):
        """mount -t proc, then a write to its sys/kernel/core_pattern: the host's is unchanged."""
        with open("/proc/sys/kernel/core_pattern") as f:
            before = f.read()
        assert _ok(box, "cat /proc/sys/kernel/core_pattern") == before  # the same kernel value is visible
        r = box.run("mkdir -p /tmp/p && mount -t proc proc /tmp/p && echo mounted;"
                    " echo '|/bin/sh -c touch${IFS}/tmp/owned' > /tmp/p/sys/kernel/core_pattern;"
                    " echo '|/bin/sh' > /proc/sys/kernel/core_pattern; echo done")
        assert "done" in r.stdout and "mounted" not in r.stdout
        with open("/proc/sys/kernel/core_pattern") as f:
            assert f.read() == before

    def test_core_pattern_holds_even_with_sys_admin(self, svc):
        """With sys_admin added, a new proc mount succeeds but its core_pattern (the host's, owned by
        the host's root) still cannot be written: the user namespace holds on its own."""
        with open("/proc/sys/kernel/core_pattern") as f:
            before = f.read()
        admin = svc.provision(caps_add=["sys_admin"])
        try:
            r = admin.run("mkdir -p /tmp/p && mount -t proc proc /tmp/p && echo mounted;"
                          " echo '|/bin/sh' > /tmp/p/sys/kernel/core_pattern && echo written; echo done")
            assert "mounted" in r.stdout and "done" in r.stdout  # the precondition: a proc of its own
            assert "written" not in r.stdout
        finally:
            admin.destroy()
        with open("/proc/sys/kernel/core_pattern") as f:
            assert f.read() == before

    def test_umount_sys(self, box):
        """umount /sys fails; /sys stays mounted read-only."""
        def sys_mount():
            return [line for line in _ok(box, "cat /proc/self/mountinfo").splitlines() if line.split()[4] == "/sys"]

        assert sys_mount()
        assert box.run("umount /sys").exit_code != 0
        assert box.run("umount -l /sys").exit_code != 0
        assert sys_mount() and all(line.split()[5].startswith("ro") for line in sys_mount())

    def test_remount_proc_sys_rw(self, box):
        """mount -o remount,rw /proc/sys fails; it stays read-only and a write to it fails."""
        def proc_sys():
            return [line.split()[5] for line in _ok(box, "cat /proc/self/mountinfo").splitlines()
                    if line.split()[4] == "/proc/sys"]

        assert proc_sys() and all(o.startswith("ro") for o in proc_sys())
        assert box.run("mount -o remount,rw /proc/sys").exit_code != 0
        assert all(o.startswith("ro") for o in proc_sys())
        with open("/proc/sys/kernel/hostname") as f:
            host_name = f.read()
        assert box.run("echo owned > /proc/sys/kernel/hostname").exit_code != 0
        with open("/proc/sys/kernel/hostname") as f:
            assert f.read() == host_name

    def test_module_loading_and_mknod_fail(self, box):
        """Loading a module and making a device node are refused (EPERM), as before."""
        r = box.run("head -c 64 /dev/zero > /tmp/x.ko; insmod /tmp/x.ko")
        assert r.exit_code != 0 and "not permitted" in (r.stdout + r.stderr).lower(), r.stdout + r.stderr
        r = box.run("mknod /tmp/sda b 8 0")
        assert r.exit_code != 0 and "not permitted" in r.stderr.lower(), r.stderr


def _host_pids(name: str, key: str) -> str:
    import glob
    for path in glob.glob(f"/sys/fs/cgroup/pids/*.payload.{name}/{key}") + glob.glob(f"/sys/fs/cgroup/*.payload.{name}/{key}"):
        if os.path.exists(path):
            with open(path) as f:
                return f.read()
    raise AssertionError(f"no pids cgroup for {name}")


class TestPids:
    def test_fork_bomb_is_bounded(self, svc):
        """5000 sleeps in a default container: the limit (4096) holds, counted from the host, and
        the host still forks. (The shell inside dies at its first failed fork.)"""
        c = svc.provision()
        try:
            assert _ok(c, "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max").strip() == "4096"
            c.run("i=0; while [ $i -lt 5000 ]; do sleep 300 & i=$((i+1)); done", timeout=300)
            count = int(_host_pids(c.name, "pids.current"))
            assert 4000 < count < 4097, count  # it reached the limit, and no further
            assert int(_host_pids(c.name, "pids.events").split()[-1]) > 0  # forks were refused
            assert subprocess.run(["true"], timeout=10).returncode == 0
        finally:
            c.destroy()

    def test_pids_override(self, svc):
        """provision(pids=64) limits the container to 64 processes."""
        c = svc.provision(pids=64)
        try:
            c.run("i=0; while [ $i -lt 200 ]; do sleep 300 & i=$((i+1)); done", timeout=60)
            assert 50 < int(_host_pids(c.name, "pids.current")) <= 64
            assert _host_pids(c.name, "pids.max").strip() == "64"
        finally:
            c.destroy()


class TestHostUsers:
    def test_nobody_cannot_read_logs_configs_or_images(self, svc, box, data_root):
        """A host user other than root reads no agent log, agent.json, upper or stored image."""
        _ok(box, "echo secret-output")
        agent = os.path.join(data_root, "run", box.name, "agent")
        files = [os.path.join(agent, f) for f in os.listdir(agent) if f.endswith((".jsonl", ".json"))]
        images = [os.path.join(d, f) for d in (svc.settings.layout.bases, svc.settings.layout.user_images)
                  for f in os.listdir(d) if f.endswith(".aimg")]
        assert any(f.endswith("log.jsonl") for f in files) and any(f.endswith("agent.json") for f in files)
        assert images
        for path in (*files, *images):
            with open(path, "rb") as f:
                assert f.read(1)  # root reads it
            assert _as_nobody("cat", path).returncode != 0, path
        for d in ("overlays", "mnt", "run", os.path.join("images", "bases"), os.path.join("mnt", box.name)):
            assert _as_nobody("ls", os.path.join(data_root, d)).returncode != 0, d
        assert _as_nobody("ls", os.path.join(data_root, "mnt", box.name, "rootfs", "bin")).returncode != 0
        assert _as_nobody("cat", os.path.join(data_root, "resources.json")).returncode != 0
        for path in images:
            assert os.stat(path).st_mode & 0o777 == 0o600
        for d in (svc.settings.layout.bases, svc.settings.layout.user_images):
            assert os.stat(d).st_mode & 0o777 == 0o700
        assert os.stat(data_root).st_mode & 0o777 == 0o711

    def test_nobody_cannot_use_the_agent_socket_or_lxc(self, svc, box, data_root):
        """A host user other than root cannot connect to a container's agent socket or see it with lxc tools."""
        sock = os.path.join(data_root, "run", box.name, "agent", "cmd.sock")
        assert os.path.exists(sock)
        probe = ("import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print('connected')")
        python = "/usr/bin/python3"  # the venv's python lives under /root, which nobody cannot walk
        # Precondition: the probe does connect, as nobody, to a socket nobody may reach.
        with tempfile.TemporaryDirectory(dir="/tmp") as d:
            os.chmod(d, 0o755)
            control = socket.socket(socket.AF_UNIX)
            control.bind(os.path.join(d, "open.sock"))
            os.chmod(os.path.join(d, "open.sock"), 0o777)
            control.listen(1)
            try:
                assert "connected" in _as_nobody(python, "-c", probe, os.path.join(d, "open.sock")).stdout
            finally:
                control.close()
        r = _as_nobody(python, "-c", probe, sock)
        assert r.returncode != 0 and "connected" not in r.stdout and "Permission denied" in r.stderr
        # lxc-info as nobody: root sees the container RUNNING, nobody must not.
        assert "RUNNING" in subprocess.run(["lxc-info", "-P", svc.settings.layout.lxcpath, "-n", box.name, "-s"],
                                           capture_output=True, text=True).stdout
        r = _as_nobody("lxc-info", "-P", svc.settings.layout.lxcpath, "-n", box.name, "-s")
        assert "RUNNING" not in r.stdout


class TestDataRoot:
    def test_a_root_under_a_users_directory_is_refused(self, tmp_path):
        """A data root below a directory another user owns (who could rename it away and put their
        own skeletons in its place) is refused, naming that directory."""
        import appcontainers
        from appcontainers.domain.exceptions import UnsafeHost

        home = tmp_path / "home-of-nobody"
        home.mkdir()
        os.chown(home, 65534, 65534)
        os.chmod(home, 0o755)
        with pytest.raises(UnsafeHost, match=str(home)):
            appcontainers.setup_service(root=str(home / "root"), bridge="actest1", subnet="10.0.203.0/30",
                                        reconcile=False)
        assert not (home / "root").exists()
        os.chown(home, 0, 0)  # the control: the same place, root's, is accepted
        appcontainers.setup_service(root=str(home / "root"), bridge="actest1", subnet="10.0.203.0/30",
                                    reconcile=False)
        assert (home / "root").is_dir()

    def test_world_writable_root_or_skeletons_refused(self, tmp_path):
        """A data root others can write, or whose skeletons/ they can write, is refused naming it."""
        import appcontainers
        from appcontainers.domain.exceptions import UnsafeHost

        root = tmp_path / "open"
        root.mkdir()
        os.chmod(root, 0o777)
        with pytest.raises(UnsafeHost, match=str(root)):
            appcontainers.setup_service(root=str(root), bridge="actest1", subnet="10.0.203.0/30", reconcile=False)
        os.chmod(root, 0o711)
        skel = root / "skeletons"
        skel.mkdir()
        (skel / "lxc.conf.tmpl").write_text("{{py: import os}}\n")
        os.chmod(skel / "lxc.conf.tmpl", 0o666)
        with pytest.raises(UnsafeHost, match="lxc.conf.tmpl"):
            appcontainers.setup_service(root=str(root), bridge="actest1", subnet="10.0.203.0/30", reconcile=False)
        assert not (root / "containers").exists()

    def test_new_root_is_0711(self, tmp_path):
        """A data root setup_service creates is 0711, its images/ and overlays/ 0700."""
        import appcontainers

        root = tmp_path / "new"
        appcontainers.setup_service(root=str(root), bridge="actest1", subnet="10.0.203.0/30", reconcile=False)
        assert os.stat(root).st_mode & 0o777 == 0o711
        for d in ("images", "images/bases", "images/user", "overlays"):
            assert os.stat(root / d).st_mode & 0o777 == 0o700, d


class TestNewuidmap:
    """LXC writes the id map itself, or through newuidmap/newgidmap when a working (set-uid) pair
    is on PATH (the uidmap package); those need root's subordinate range to cover the map.
    The container is started here by lxc-start itself, with a PATH of our choosing and an INFO
    log, so the log shows which way LXC took."""

    def _start_with_path(self, svc, tmp_path, path: str) -> tuple[list[str], str]:
        c = svc.provision(name=f"sandbox-idmap-{secrets.token_hex(3)}")
        try:
            c.start()  # writes agent.json; then stopped and started again by hand
            svc.containers.stop(c.name)
            agent = svc.settings.layout.agent_dir(c.name)
            for stale in ("ready", "cmd.sock", "events.sock"):
                if os.path.lexists(os.path.join(agent, stale)):
                    os.unlink(os.path.join(agent, stale))
            log = tmp_path / "lxc-info.log"
            subprocess.run([shutil.which("lxc-start"), "-P", svc.settings.layout.lxcpath, "-n", c.name, "-d",
                            "-o", str(log), "-l", "TRACE"], env={"PATH": path}, check=True, timeout=60,
                           capture_output=True)
            assert svc.containers.agent(c.name).wait_ready(svc.settings.start_timeout), log.read_text()[-2000:]
            return _ok(c, "cat /proc/self/uid_map").split(), log.read_text()
        finally:
            c.destroy()

    def test_without_newuidmap_on_path(self, svc, tmp_path):
        """With no newuidmap on PATH, LXC writes the map itself: the container runs mapped."""
        empty = tmp_path / "empty"
        empty.mkdir()
        fields, log = self._start_with_path(svc, tmp_path, str(empty))
        assert fields == ["0", str(svc.settings.idmap_base), str(svc.settings.idmap_size)]
        assert "No newuidmap and newgidmap binary found" in log

    def test_with_newuidmap_on_path(self, svc, tmp_path):
        """With the uidmap package's newuidmap on PATH, LXC maps through it, and the map is accepted
        because setup_service gave root the subordinate range in /etc/subuid and /etc/subgid."""
        real = shutil.which("newuidmap")
        if real is None:
            pytest.skip("the uidmap package is not installed (scripts/setup-host installs it)")
        fields, log = self._start_with_path(svc, tmp_path, os.path.dirname(real))
        assert "Functional newuidmap and newgidmap binary found" in log
        assert fields == ["0", str(svc.settings.idmap_base), str(svc.settings.idmap_size)]
        from appcontainers.adapters.host.subids import covers
        for f in ("/etc/subuid", "/etc/subgid"):
            with open(f) as fh:
                assert covers(fh.read(), svc.settings.idmap_base, svc.settings.idmap_size)


class TestRaw:
    def test_raw_container_is_unprivileged_with_unshifted_files(self, svc, data_root):
        """raw=True is unprivileged too: mapped inside, its directory keeps the image's own ids
        (an idmapped bind shows them shifted), and what root inside writes is 0 on disk."""
        c = svc.provision(raw=True)
        try:
            assert svc.containers.get(c.name).mounter == "raw"
            assert _ok(c, "cat /proc/self/uid_map").split() == ["0", str(svc.settings.idmap_base),
                                                                 str(svc.settings.idmap_size)]
            _ok(c, "echo raw > /root/written")
            raw_dir = os.path.join(data_root, "overlays", "raw", c.name)
            st = os.stat(os.path.join(raw_dir, "root", "written"))
            assert (st.st_uid, st.st_gid) == (0, 0)
            assert os.stat(os.path.join(raw_dir, "bin")).st_uid == 0
            shown = os.stat(os.path.join(svc.settings.layout.rootfs(c.name), "root", "written"))
            assert shown.st_uid == svc.settings.idmap_base
            # A device node in the raw tree (as an untrusted image may carry) cannot be opened
            # through the container's rootfs on the host: the bind is nodev.
            os.mknod(os.path.join(raw_dir, "root", "null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
            with open(os.path.join(raw_dir, "root", "null"), "wb") as f:  # precondition: a working node
                f.write(b"x")
            with pytest.raises(PermissionError):
                open(os.path.join(svc.settings.layout.rootfs(c.name), "root", "null"), "wb")
        finally:
            c.destroy()


class TestFuseMounter:
    def test_fuse_mounter_serves_an_unprivileged_container(self, settings):
        """mounter="fuse" (and the auto fallback) still serves the default: fuse-overlayfs shifts the
        ids, the container is mapped, a host-written file is root's inside, and it saves unshifted."""
        import appcontainers

        fuse_svc = appcontainers.setup_service(**{**settings, "mounter": "fuse"}, reconcile=False)
        c = fuse_svc.provision()
        try:
            assert fuse_svc.containers.get(c.name).mounter == "fuse"
            assert _ok(c, "cat /proc/self/uid_map").split()[:2] == ["0", str(fuse_svc.settings.idmap_base)]
            c.create_file("/root/from-host", "x")
            assert _ok(c, "stat -c %u:%g /root/from-host; cat /root/from-host") == "0:0\nx"
            upper = fuse_svc.settings.layout.upper(c.name, False)
            assert os.stat(os.path.join(upper, "root", "from-host")).st_uid == 0
        finally:
            c.destroy()
