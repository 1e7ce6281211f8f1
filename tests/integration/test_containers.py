"""Real LXC containers: provision, network identity, run, files, archives, lifecycle."""
from __future__ import annotations

import io
import os
import re
import tarfile

import pytest

from appcontainers.domain.exceptions import InvalidName, NameTaken, UnknownContainer, UnsafePath
from tests.conftest import TEST_NET


def _ip_addr(c):
    r = c.run(["ip", "addr", "show", "eth0"])
    assert r.exit_code == 0, r.stderr
    inet = re.search(r"inet (\S+)/(\d+) brd (\S+)", r.stdout)
    ether = re.search(r"link/ether (\S+)", r.stdout)
    return inet.group(1), ether.group(1), inet.group(3)


class TestNetworkIdentity:
    def test_two_containers_have_their_reserved_ip_and_mac_inside(self, svc):
        """Inside each container, eth0 carries the reserved IP (with broadcast) and MAC; the two differ."""
        a, b = svc.provision(), svc.provision()
        try:
            ip_a, mac_a, brd = _ip_addr(a)
            ip_b, mac_b, _ = _ip_addr(b)
            assert (ip_a, mac_a) == (a.ip, a.mac)
            assert (ip_b, mac_b) == (b.ip, b.mac)
            assert a.ip != b.ip and a.mac != b.mac
            assert brd == str(TEST_NET.broadcast_address)
            assert int(a.mac[:2], 16) & 0b11 == 0b10  # unicast, locally administered
        finally:
            a.destroy()
            b.destroy()

    def test_container_reaches_its_gateway(self, svc):
        """The static address works from the first instant: the host's bridge answers a ping
        (busybox ping needs a raw socket: net_raw, which the default set drops, is added)."""
        container = svc.provision(caps_add=["net_raw"])
        try:
            r = container.run(f"ping -c 1 -W 2 {TEST_NET.network_address + 1}")
            assert r.exit_code == 0, r.stdout + r.stderr
        finally:
            container.destroy()

    def test_destroy_frees_the_address_for_the_next_provision(self, svc):
        """The lowest free address goes to the next container once destroyed."""
        a = svc.provision()
        ip = a.ip
        a.destroy()
        b = svc.provision()
        try:
            assert b.ip == ip
        finally:
            b.destroy()


class TestRun:
    def test_stdout_stderr_and_exit_code_come_back_exactly(self, container):
        """A shell string runs under /bin/sh -c; stdout and stderr apart; the exit code passed through."""
        r = container.run("echo out; echo err >&2; exit 3")
        assert (r.exit_code, r.stdout, r.stderr) == (3, "out\n", "err\n")

    def test_argv_is_not_reinterpreted_by_a_shell(self, container):
        """A list runs as argv: no word splitting or globbing."""
        r = container.run(["echo", "a  b", "*", "$HOME"])
        assert r.stdout == "a  b * $HOME\n"

    def test_on_output_is_called_per_line(self, container):
        """on_output gets each line with its stream."""
        seen = []
        container.run("echo one; echo two >&2; echo three", on_output=lambda s, l: seen.append((s, l.rstrip("\n"))))
        assert ("stdout", "one") in seen and ("stderr", "two") in seen and ("stdout", "three") in seen

    def test_run_on_a_stopped_container_starts_it(self, container):
        """run() starts a stopped container, which stays running afterwards."""
        container.stop()
        assert container.state == "STOPPED"
        assert container.run("true").exit_code == 0
        assert container.state == "RUNNING"

    def test_start_of_a_running_container_is_a_no_op(self, container):
        """start() twice is not an error."""
        container.start()
        container.start()
        assert container.state == "RUNNING"


class TestFiles:
    def test_create_file_lands_with_its_mode(self, container):
        """create_file writes the text at the path with the mode."""
        container.create_file("/etc/app.conf", "key=value\n", mode=0o600)
        r = container.run("cat /etc/app.conf; stat -c %a /etc/app.conf")
        assert r.stdout == "key=value\n600\n"

    def test_create_file_does_not_follow_a_symlink_out(self, svc, container, data_root):
        """A symlink to / inside the container resolves to the container's /, never the host's."""
        container.run("ln -s / /root/escape && ln -s /etc/passwd /root/pw")
        marker = "/tmp/appcontainers-escape-marker"
        container.create_file("/root/escape" + marker, "inside")
        assert not os.path.exists(marker)
        assert container.run(["cat", marker]).stdout == "inside"
        with pytest.raises(UnsafePath):
            container.create_file("/root/pw", "x")  # a symlink as the file itself is refused
        with pytest.raises(UnsafePath):
            container.create_file("../../etc/shadow", "x")

    def test_load_archive_into_home(self, container, tmp_path):
        """A tar.gz lands in /root with its tree."""
        src = tmp_path / "app"
        (src / "bin").mkdir(parents=True)
        (src / "bin" / "hello").write_text("#!/bin/sh\necho hello from app\n")
        os.chmod(src / "bin" / "hello", 0o755)
        archive = tmp_path / "app.tar.gz"
        with tarfile.open(archive, "w:gz") as tf:
            tf.add(src, arcname="app")
        container.load_archive(str(archive))
        assert container.run("/root/app/bin/hello").stdout == "hello from app\n"

    @pytest.mark.parametrize("member", ["../evil", "/etc/evil", "link-out"])
    def test_escaping_archive_is_refused_before_anything_is_written(self, container, tmp_path, member):
        """Absolute paths, '..' and links out are refused; nothing from the archive lands."""
        archive = tmp_path / "bad.tar"
        with tarfile.open(archive, "w") as tf:
            good = tarfile.TarInfo("good.txt")
            good.size = 2
            tf.addfile(good, io.BytesIO(b"ok"))
            if member == "link-out":
                link = tarfile.TarInfo("link-out")
                link.type, link.linkname = tarfile.SYMTYPE, "/etc"
                tf.addfile(link)
                evil = tarfile.TarInfo("link-out/evil")
            else:
                evil = tarfile.TarInfo(member)
            evil.size = 1
            tf.addfile(evil, io.BytesIO(b"x"))
        with pytest.raises(UnsafePath):
            container.load_archive(str(archive))
        assert container.run("test -e /root/good.txt").exit_code == 1


class TestBadInput:
    def test_unknown_container(self, svc):
        """get() of a name never provisioned says so."""
        with pytest.raises(UnknownContainer):
            svc.get("no-such-container")

    @pytest.mark.parametrize("name", ["", "../x", "a;b", "UPPER", "x" * 41, "-lead"])
    def test_invalid_name(self, svc, name):
        """Invalid names are refused before anything is reserved."""
        before = len(svc.list_containers())
        with pytest.raises(InvalidName):
            svc.provision(name=name)
        assert len(svc.list_containers()) == before

    def test_name_taken(self, svc, container):
        """A second container with the same name is refused; the first is untouched."""
        with pytest.raises(NameTaken):
            svc.provision(name=container.name)
        assert container.run("true").exit_code == 0

    def test_command_on_destroyed_container(self, svc):
        """Running in a destroyed container names the container."""
        c = svc.provision()
        c.destroy()
        with pytest.raises(UnknownContainer):
            c.run("true")


class TestUnprivileged:
    def test_root_inside_is_an_unprivileged_host_uid_and_saves_unshifted(self, svc, tmp_path):
        """unprivileged=True: an id map (0 -> 100000), files owned by root inside, the agent runs
        as host uid 100000, and a saved image keeps the container's own ids."""
        c = svc.provision(unprivileged=True)
        try:
            r = c.run("cat /proc/self/uid_map; stat -c %u /bin/busybox; echo hi > /root/f; stat -c %u /root/f")
            assert r.stdout.split() == ["0", "100000", "65536", "0", "0"], r.stdout
            pid = svc.ports.driver.pid(c.name)
            with open(f"/proc/{pid}/status") as f:
                assert next(line for line in f if line.startswith("Uid:")).split()[1] == "100000"
            assert c.run(["ip", "-4", "-o", "addr", "show", "eth0"]).stdout.split()[3] == f"{c.ip}/24"
            c.create_file("/srv/new/conf", "x")  # written from the host: owned by root inside
            assert c.run("stat -c %u:%g /srv/new /srv/new/conf").stdout == "0:0\n0:0\n"
            binds = os.path.join(svc.settings.root, "mnt", ".binds")
            assert oct(os.stat(binds).st_mode & 0o777) == "0o710" and os.stat(binds).st_gid == 100000
            c.stop()
            c.save_image(str(tmp_path / "unpriv.aimg"))
        finally:
            c.destroy()
        d = svc.load_image(str(tmp_path / "unpriv.aimg"))
        try:
            assert d.run("stat -c %u /root/f; cat /root/f").stdout == "0\nhi\n"
        finally:
            d.destroy()
        from appcontainers.adapters.mounts.mountinfo import mounted_under
        assert mounted_under(binds) == []  # the last unprivileged container's destroy unbinds it
        assert svc.reconcile(dry_run=True) == []
