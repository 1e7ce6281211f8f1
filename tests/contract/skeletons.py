"""Skeletons: the LXC config and the rootfs files, rendered from the context plans.context
builds, hold what the services rely on (network, ids, capabilities, limits, mounts)."""
from __future__ import annotations

from typing import Any

from appcontainers.config import Settings
from appcontainers.domain.capabilities import kept
from appcontainers.domain.image import Image, Manifest
from appcontainers.domain.network import AddressPool
from appcontainers.domain.reservation import Reservation
from appcontainers.services import plans

SETTINGS = Settings(root="/srv/contract", bridge="actest9", subnet="10.0.99.0/24")
SKEL = "/srv/contract/run/web/skel/etc/hostname"
BASE = Image(id="a" * 64, kind="base", manifest=Manifest(
    name="default", created=0.0, init=("/sbin/appcontainers-init", "--quiet"), host_binds=("/usr/lib/python3",)))


def sample(**fields: Any) -> tuple[Reservation, dict[str, Any]]:
    """A reservation on SETTINGS' network over BASE, and its template context (a rendered
    /etc/hostname among its files, as render() passes it to render_config)."""
    pool = AddressPool(SETTINGS.subnet)
    r = Reservation(name="web", ip=pool.allocate("web"), mac="02:00:00:00:00:2a", image=BASE.id, **fields)
    context = plans.context(r, SETTINGS.layout, SETTINGS, pool, [BASE])
    context["files"] = [(SKEL, "/etc/hostname")]
    return r, context


class SkeletonsContract:
    """Fixture: `skeletons`, with no overrides (the packaged templates)."""

    def test_network_lines(self, skeletons):
        """The veth (the name the firewall guards), bridge, MAC, address and gateway are set."""
        r, context = sample()
        lines = skeletons.render_config(context).splitlines()
        assert f"lxc.net.0.veth.pair = {plans.veth_name(SETTINGS.root_id, 'web')}" in lines
        assert "lxc.net.0.link = actest9" in lines
        assert "lxc.net.0.hwaddr = 02:00:00:00:00:2a" in lines
        assert f"lxc.net.0.ipv4.address = {r.ip}/24 10.0.99.255" in lines
        assert "lxc.net.0.ipv4.gateway = 10.0.99.1" in lines

    def test_name_rootfs_init_and_cgroups(self, skeletons):
        """The name, the rootfs, the chain's init and the root's own cgroup directory are set."""
        _r, context = sample()
        lines = skeletons.render_config(context).splitlines()
        assert "lxc.uts.name = web" in lines
        assert f"lxc.rootfs.path = dir:{SETTINGS.layout.rootfs('web')}" in lines
        assert "lxc.init.cmd = /sbin/appcontainers-init --quiet" in lines
        assert f"lxc.cgroup.dir.container = appcontainers-{SETTINGS.root_id}.payload.web" in lines

    def test_idmap_lines(self, skeletons):
        """An unprivileged container maps uids and gids; a privileged one maps none."""
        lines = skeletons.render_config(sample(idmap=(100000, 65536))[1]).splitlines()
        assert "lxc.idmap = u 0 100000 65536" in lines and "lxc.idmap = g 0 100000 65536" in lines
        privileged = skeletons.render_config(sample()[1])
        assert "lxc.idmap" not in privileged

    def test_caps_and_pids(self, skeletons):
        """Only the default capabilities and the added ones are kept; the pids limit is set."""
        lines = skeletons.render_config(sample(caps_add=("net_admin",), pids=64)[1]).splitlines()
        assert f"lxc.cap.keep = {' '.join(kept(('net_admin',)))}" in lines
        assert "lxc.cgroup2.pids.max = 64" in lines

    def test_mount_entries(self, skeletons):
        """The agent directory, the chain's host binds (read-only) and the rendered files are
        mounted at their targets inside."""
        _r, context = sample()
        lines = skeletons.render_config(context).splitlines()
        agent = SETTINGS.layout.agent_dir("web")
        assert f"lxc.mount.entry = {agent} run/appcontainers none bind,create=dir 0 0" in lines
        assert "lxc.mount.entry = /usr/lib/python3 usr/lib/python3 none ro,bind,create=dir 0 0" in lines
        assert f"lxc.mount.entry = {SKEL} etc/hostname none bind,optional,create=file 0 0" in lines

    def test_runtime_mount_and_init(self, skeletons):
        """An image without an init gets the agent's runtime read-only at /.appcontainers and
        runs the agent through the runtime's loader; an image with an init gets neither."""
        pool = AddressPool(SETTINGS.subnet)
        plain = Image(id="b" * 64, manifest=Manifest(name="plain", created=0.0))
        r = Reservation(name="web", ip=pool.allocate("web"), mac="02:00:00:00:00:2a", image=plain.id)
        lines = skeletons.render_config(plans.context(r, SETTINGS.layout, SETTINGS, pool, [plain],
                                                      runtime="/srv/contract/runtime/k")).splitlines()
        assert ("lxc.mount.entry = /srv/contract/runtime/k .appcontainers none ro,bind,nosuid,nodev,create=dir 0 0"
                in lines)
        assert f"lxc.init.cmd = {' '.join(plans.RUNTIME_INIT)}" in lines
        _r, context = sample()
        assert ".appcontainers" not in skeletons.render_config(context)

    def test_rootfs_files(self, skeletons):
        """The files are /etc/hostname (the name), /etc/hosts (localhost and the name at its address)
        and /etc/resolv.conf (the gateway, where the root's resolver listens, as the only nameserver)."""
        r, context = sample()
        files = skeletons.render_files(context)
        assert sorted(files) == ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"]
        assert [line for line in files["/etc/resolv.conf"].splitlines() if not line.startswith("#")] == [
            f"nameserver {context['gateway']}"]
        assert files["/etc/hostname"] == "web\n"
        hosts = files["/etc/hosts"].splitlines()
        assert "127.0.0.1\tlocalhost" in hosts and f"{r.ip}\tweb" in hosts
