"""A real Debian base: mmdebstrap from the mirror this host's apt uses, built once for the module,
then containers on it, the cache, save/load, removal, and bad input."""
from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
import time

import attrs
import pytest

from appcontainers.domain.exceptions import (AppContainersError, BaseBuildFailed, BaseNameTaken, InUse,
                                             InvalidValue)
from tests.conftest import TEST_NET

pytestmark = pytest.mark.slow

NAME = "debian-bookworm"
CLI = [sys.executable, "-m", "appcontainers.entrypoints.cli"]


def _leftovers(svc, name):
    """Build debris: stage directories in tmp/, temp files of name in the bases store."""
    L = svc.settings.layout
    stages = [e for e in os.listdir(L.tmp) if e.startswith("debian-")] if os.path.isdir(L.tmp) else []
    temps = [e for e in os.listdir(L.bases) if e.startswith((f".{name}.", f"..{name}."))
             ] if os.path.isdir(L.bases) else []
    return stages + temps


@pytest.fixture(scope="module")
def debian(svc):
    """The Debian base, built once (about 20-60 s); (image, seconds, progress lines)."""
    lines = []
    start = time.monotonic()
    image = svc.build_base("debian", suite="bookworm", progress=lines.append)
    elapsed = time.monotonic() - start
    try:
        yield image, elapsed, lines
    finally:
        try:
            svc.remove_base(image.name)
        except AppContainersError:
            pass


def _poll_logs(c, pred, timeout=15):
    deadline = time.monotonic() + timeout
    while True:
        recs = [rec for _, rec in c.logs()]
        if pred(recs) or time.monotonic() > deadline:
            return recs
        time.sleep(0.1)


class TestBuild:
    def test_build_registers_a_self_contained_base(self, svc, debian):
        """A base named debian-SUITE, run by its own python (no host binds), with progress told
        and no build debris left behind."""
        image, elapsed, lines = debian
        assert (image.name, image.kind) == (NAME, "base")
        assert image.manifest.host_binds == () and image.manifest.init == ("/sbin/appcontainers-init",)
        assert len(image.manifest.build_key) == 64
        assert image.id in {b.id for b in svc.list_bases()}
        path = svc.settings.layout.image_file(image.id, "base")
        assert svc.ports.codec.image_id(path) == image.id
        assert os.path.getsize(path) < 100 * 2**20  # docs, man pages and locales are left out
        assert any("mmdebstrap" in line for line in lines) and any("packing" in line for line in lines)
        assert _leftovers(svc, NAME) == []

    def test_same_inputs_return_the_same_image_fast(self, svc, debian):
        """A second build with the same inputs reuses the stored image without building."""
        image = debian[0]
        start = time.monotonic()
        again = svc.build_base("debian", suite="bookworm", include=["python3"])
        assert again.id == image.id
        assert time.monotonic() - start < 2

    def test_cli_build_reuses_and_lists(self, svc, settings, debian):
        """`base build debian --json` returns the stored base; `base ls` lists it; a bad rm is one line."""
        env = {**os.environ, "APPCONTAINERS_ROOT": settings["root"], "APPCONTAINERS_BRIDGE": settings["bridge"],
               "APPCONTAINERS_SUBNET": settings["subnet"]}

        def cli(*args):
            return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120)

        proc = cli("base", "build", "debian", "--suite", "bookworm", "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["id"] == debian[0].id
        assert NAME in cli("base", "ls").stdout
        proc = cli("base", "rm", "no-such-base")
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "no-such-base" in proc.stderr


class TestContainer:
    def test_network_identity_and_debians_python_as_init(self, svc, debian):
        """eth0 has the reserved IP and MAC; pid 1 is the agent under Debian's /usr/bin/python3."""
        c = svc.provision(base=debian[0].name)
        try:
            r = c.run(["ip", "addr", "show", "eth0"])
            assert r.exit_code == 0, r.stderr
            inet = re.search(r"inet (\S+)/(\d+) brd (\S+)", r.stdout)
            ether = re.search(r"link/ether (\S+)", r.stdout)
            assert (inet.group(1), ether.group(1), inet.group(3)) == (c.ip, c.mac, str(TEST_NET.broadcast_address))
            assert c.run(["cat", "/proc/1/cmdline"]).stdout == "/usr/bin/python3\0-m\0appcontainers_agent\0"
            r = c.run("cat /etc/debian_version; "
                      "/usr/bin/python3 -c 'import zmq, sys; print(sys.version_info[:2])'")
            assert re.fullmatch(r"12\.\d+\n\(3, 11\)\n", r.stdout), r.stdout + r.stderr
        finally:
            c.destroy()

    def test_trimmed_tree(self, svc, debian):
        """No man pages or docs but copyrights, no apt lists, and the container's own /etc/hostname."""
        c = svc.provision(base=debian[0].name)
        try:
            r = c.run("ls /usr/share/doc/bash; ls -A /var/lib/apt/lists | wc -l; "
                      "test -e /usr/share/man/man1 || echo no-man; cat /etc/hostname")
            assert r.stdout == f"copyright\n0\nno-man\n{c.name}\n", r.stdout + r.stderr
        finally:
            c.destroy()

    def test_resolv_conf_is_an_empty_placeholder_and_the_container_gets_the_gateway(self, svc, debian):
        """The image's /etc/resolv.conf is an empty regular 0644 file (never the build host's); a
        container's is the skeleton's, naming the gateway (the root's resolver)."""
        path = svc.settings.layout.image_file(debian[0].id, "base")
        listing = subprocess.run(["unsquashfs", "-lls", path, "rootfs/etc/resolv.conf"], capture_output=True,
                                 text=True, check=True).stdout
        assert re.search(r"^-rw-r--r-- root/root +0 .* squashfs-root/rootfs/etc/resolv\.conf$", listing, re.M), listing
        c = svc.provision(base=debian[0].name)
        try:
            c.start()
            gateway = next(ipaddress.ip_network(svc.settings.subnet).hosts())
            assert f"nameserver {gateway}\n" in c.run("cat /etc/resolv.conf").stdout
        finally:
            c.destroy()

    def test_startup_command_runs_at_start_and_is_logged(self, svc, debian):
        """A startup command runs at every start; its output is in the logs."""
        c = svc.provision(base=debian[0].name)
        try:
            c.add_startup_command("echo hello-from-debian; cat /etc/debian_version")
            c.start()
            recs = _poll_logs(c, lambda recs: any(r.get("type") == "exit" and r.get("id") == "startup-0"
                                                  for r in recs))
            out = [r["data"] for r in recs if r.get("type") == "output" and r.get("id") == "startup-0"]
            assert out[0] == "hello-from-debian\n" and out[1].startswith("12."), recs
            assert [r["code"] for r in recs if r.get("type") == "exit" and r.get("id") == "startup-0"] == [0]
        finally:
            c.destroy()

    def test_save_and_load_round_trip(self, svc, debian, tmp_path):
        """A container on the Debian base saved to a file loads back with its files and the same init."""
        c = svc.provision(base=debian[0].name)
        loaded, saved = None, None
        try:
            c.create_file("/root/marker", "made on debian\n")
            saved = c.save_image(str(tmp_path / "deb.aimg"))
            assert saved.manifest.host_binds == () and saved.manifest.init == ("/sbin/appcontainers-init",)
            loaded = svc.load_image(str(tmp_path / "deb.aimg"))
            r = loaded.run("cat /root/marker; tr '\\0' ' ' < /proc/1/cmdline")
            assert r.stdout == "made on debian\n/usr/bin/python3 -m appcontainers_agent ", r.stdout + r.stderr
        finally:
            if loaded is not None:
                loaded.destroy()
            c.destroy()
            if saved is not None:
                try:
                    svc.remove_image(saved.id)
                except AppContainersError:
                    pass

    def test_removing_the_base_while_a_container_uses_it_is_refused(self, svc, debian):
        """InUse names the container; the base stays."""
        c = svc.provision(base=debian[0].name)
        try:
            with pytest.raises(InUse, match=c.name):
                svc.remove_base(debian[0].name)
            assert debian[0].id in {b.id for b in svc.list_bases()}
        finally:
            c.destroy()


class TestBadInput:
    def test_unreachable_mirror_is_a_clear_error_and_leaves_nothing(self, svc, tmp_path):
        """With the mirror unreachable: BaseBuildFailed saying so; no stage, temp file or record left."""
        from appcontainers.adapters.bases.debian_base import DebianBaseBuilder
        from appcontainers.services.bases import BaseService

        apt = tmp_path / "apt"
        (apt / "sources.list.d").mkdir(parents=True)
        (apt / "sources.list.d" / "debian.sources").write_text(
            "Types: deb\nURIs: http://127.0.0.1:9/debian\nSuites: bookworm bookworm-updates\nComponents: main\n")
        (tmp_path / "os-release").write_text("VERSION_CODENAME=bookworm\n")
        builder = DebianBaseBuilder(svc.ports.codec, svc.settings.layout.tmp, apt_etc=str(apt),
                                    os_release=str(tmp_path / "os-release"))
        bases = BaseService(attrs.evolve(svc.ports, debian_builder=builder))
        with pytest.raises(BaseBuildFailed, match="unreachable") as e:
            bases.build("debian", name="unreachable")
        assert "127.0.0.1:9" in str(e.value)
        assert _leftovers(svc, "unreachable") == []
        assert "unreachable" not in {b.name for b in svc.list_bases()}

    def test_unknown_package_surfaces_apts_error(self, svc):
        """An unknown package: mmdebstrap's own line about it, nothing left."""
        with pytest.raises(BaseBuildFailed, match="Unable to locate package nosuchpkg-appcontainers"):
            svc.build_base("debian", include=["nosuchpkg-appcontainers"], name="bad-package")
        assert _leftovers(svc, "bad-package") == []

    def test_unknown_suite_surfaces_apts_error(self, svc):
        """An unknown suite: apt's missing Release file, naming it."""
        with pytest.raises(BaseBuildFailed, match="nosuchsuite"):
            svc.build_base("debian", suite="nosuchsuite")
        assert _leftovers(svc, "debian-nosuchsuite") == []

    def test_name_taken_by_other_inputs_is_refused(self, svc, debian):
        """The base's name with other packages and no force: refused at once."""
        start = time.monotonic()
        with pytest.raises(BaseNameTaken, match=NAME):
            svc.build_base("debian", include=["less"], name=NAME)
        assert time.monotonic() - start < 2

    @pytest.mark.parametrize("kw", [{"name": "bad/name"}, {"suite": "Bad"}, {"include": ["a;b"]},
                                    {"kind": "alpine"}])
    def test_invalid_input(self, svc, kw):
        """Invalid names, suites, packages and kinds are refused before anything runs."""
        with pytest.raises(InvalidValue):
            svc.build_base(**{"kind": "debian", **kw})


@pytest.mark.slow
def test_readme_example_runs_with_debian(settings, svc, debian, tmp_path):
    """The whole README Python block, Debian base builds included, runs to the end; with this
    module's Debian base present, the README's first build is the cached one (the same inputs),
    so only its other build (with curl) costs a build."""
    from tests.integration.test_readme import run_readme_with_debian

    assert any(b.id == debian[0].id for b in svc.list_bases()), "precondition: the base is built"
    run_readme_with_debian(settings, svc, tmp_path)
