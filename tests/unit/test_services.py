"""The use cases (provision, lifecycle, files, images, bases) through the Service API, over fakes."""
import json
import os

import pytest

from appcontainers.domain.exceptions import (AgentUnavailable, CommandFailed, ContainerStateError,
                                             ImageCorrupt, InUse, InvalidName, InvalidValue,
                                             NameTaken, PoolExhausted, UnknownContainer,
                                             UnknownImage, UnsafePath)
from tests.fakes import encode_image, make_service


@pytest.fixture
def out(svc):
    """A directory that exists on the fake host, for image files."""
    import pathlib
    svc.ports.fs.dirs.add("/out")
    return pathlib.PurePosixPath("/out")


@pytest.fixture
def svc():
    return make_service()


def snapshot(svc):
    """What provisioning may change: the state, the mounts, the LXC configs and the files."""
    p = svc.ports
    return (p.repo.read().to_dict(), dict(p.mounters.kernel.mounts), dict(p.driver.configs),
            dict(p.fs.files), set(p.fs.dirs))


def manifest(name="app", **kw):
    return {"format_version": 1, "name": name, "created": 1_600_000_000.0, "parent": None,
            "startup_commands": [], "environment": {}, "host_binds": [], "base": "default",
            "init": [], **kw}


def put_image(svc, path, **kw) -> str:
    """Write a fake .aimg at path in the fake fs; returns its id."""
    image_id, data = encode_image(manifest(**kw))
    svc.ports.fs.files[path] = data
    return image_id


def user_files(svc):
    """The files (not dirs) in the user image store, temp files included."""
    return [p for p in svc.ports.fs.under(svc.settings.layout.user_images) if svc.ports.fs.is_file(p)]


class TestProvision:
    def test_unique_address_and_mac_ready(self, svc):
        """Each container gets its own address and MAC from the pool, and its reservation is ready."""
        a, b = svc.provision("a"), svc.provision("b")
        state = svc.ports.repo.read()
        assert (a.ip, b.ip) == ("10.0.100.2", "10.0.100.3")
        assert a.mac != b.mac
        assert state.pool.allocations() == {"a": a.ip, "b": b.ip}
        assert {r.status for r in state.reservations.values()} == {"ready"}

    def test_config_rendered_with_address_and_mac(self, svc):
        """The LXC config is rendered with the container's address, prefix, gateway and MAC."""
        c = svc.provision("web")
        config = svc.ports.driver.configs["web"].splitlines()
        assert f"lxc.net.0.ipv4.address = {c.ip}/24 10.0.100.255" in config
        assert f"lxc.net.0.hwaddr = {c.mac}" in config
        assert "lxc.net.0.ipv4.gateway = 10.0.100.1" in config
        assert svc.ports.net.bridges == {"actest0": ("10.0.100.1", 24)}

    def test_skeleton_files_written_and_bind_mounted(self, svc):
        """Rendered skeleton files land in the run dir and appear as mounts in the config."""
        svc.provision("web")
        src = svc.settings.layout.skel_dir("web") + "/etc/hostname"
        assert svc.ports.fs.files[src] == "web\n"
        assert f"lxc.mount.entry = {src} etc/hostname none bind,optional,create=file 0 0" in svc.ports.driver.configs["web"].splitlines()

    def test_base_layer_mounted(self, svc):
        """The rootfs is an overlay on the default base's image file."""
        c = svc.provision("web")
        L = svc.settings.layout
        assert svc.ports.mounters.kernel.mounts == {L.rootfs("web"): [L.image_file(c.image, "base")]}
        assert {L.upper("web", False), L.work("web", False)} <= svc.ports.fs.dirs

    def test_host_mac_never_handed_out(self):
        """A MAC already on a host interface is skipped."""
        first = make_service().provision("web").mac
        svc = make_service()
        svc.ports.net.macs.add(first)
        assert svc.provision("web").mac != first

    def test_generated_name(self, svc):
        """Without a name a container gets a valid generated one."""
        c = svc.provision()
        assert c.name.startswith("ac-") and len(c.name) == 11
        assert svc.ports.repo.read().get(c.name).ip == c.ip

    def test_name_taken(self, svc):
        """A taken name raises NameTaken and changes nothing."""
        svc.provision("web")
        before = snapshot(svc)
        with pytest.raises(NameTaken):
            svc.provision("web")
        assert snapshot(svc) == before

    @pytest.mark.parametrize("name", ["Web", "-web", "web-", "we_b", "we.b", "a" * 41, ""])
    def test_invalid_name(self, svc, name):
        """An invalid name raises InvalidName and reserves nothing."""
        with pytest.raises(InvalidName):
            svc.provision(name)
        state = svc.ports.repo.read()
        assert state.reservations == {} and len(state.pool) == 0
        assert svc.ports.mounters.kernel.mounts == {} and svc.ports.driver.configs == {}

    def test_pool_exhausted(self):
        """A full pool raises PoolExhausted and changes nothing (a /30 holds one container)."""
        svc = make_service(subnet="10.0.7.0/30")
        svc.provision("one")
        before = snapshot(svc)
        with pytest.raises(PoolExhausted):
            svc.provision("two")
        assert snapshot(svc) == before

    def test_mount_failure_rolls_back(self, svc):
        """A failure while mounting removes the reservation, its files and config; the address is free again."""
        svc.ports.mounters.kernel.fail = CommandFailed(["mount"], 32, "no loop device")
        with pytest.raises(CommandFailed):
            svc.provision("web")
        state = svc.ports.repo.read()
        assert state.reservations == {} and state.pool.holder_of("10.0.100.2") is None
        assert svc.ports.fs.under(svc.settings.layout.mnt("web")) == []
        assert svc.ports.fs.under(svc.settings.layout.overlay("web", False)) == []
        svc.ports.mounters.kernel.fail = None
        assert svc.provision("db").ip == "10.0.100.2"

    def test_config_failure_unmounts(self, svc):
        """A failure after the mount (writing the config) unmounts and forgets the container."""
        svc.ports.driver.fail = OSError(28, "No space left on device")
        from appcontainers.domain.exceptions import HostError
        with pytest.raises(HostError, match="^provision failed: No space left on device: the data root's"):
            svc.provision("web")
        assert svc.ports.mounters.kernel.mounts == {}
        assert svc.ports.repo.read().reservations == {}
        assert svc.ports.fs.under(svc.settings.layout.run_dir("web")) == []


class TestDestroy:
    def test_frees_address_and_mac(self, svc):
        """Destroy releases the address and the MAC."""
        c = svc.provision("web")
        ip, mac = c.ip, c.mac
        c.destroy()
        state = svc.ports.repo.read()
        assert state.reservations == {} and state.pool.holder_of(ip) is None
        assert mac not in state.macs()
        assert svc.provision("db").ip == ip

    def test_unmounts_and_removes_dirs(self, svc):
        """Destroy removes the LXC container, the mounts and every directory of the container."""
        c = svc.provision("web")
        c.start()
        c.destroy()
        L = svc.settings.layout
        assert svc.ports.driver.list() == [] and svc.ports.mounters.kernel.mounts == {}
        assert svc.ports.mounters.kernel.points == set()
        for path in (L.mnt("web"), L.overlay("web", False), L.run_dir("web")):
            assert svc.ports.fs.under(path) == []

    def test_leaves_other_containers(self, svc):
        """Destroying one container keeps the others' mounts and reservations."""
        svc.provision("web")
        other = svc.provision("web2")
        svc.get("web").destroy()
        assert list(svc.ports.mounters.kernel.mounts) == [svc.settings.layout.rootfs("web2")]
        assert svc.ports.repo.read().get("web2").ip == other.ip

    def test_rules_failure_still_releases_binds_and_is_logged(self, svc, caplog):
        """nftables failing after the container is gone: destroy succeeds, the host-path binds
        are still released, and a warning says reconcile retries."""
        import logging
        from appcontainers.domain.exceptions import CommandFailed
        svc.ports.base_builder.host_binds = ["/opt/python"]
        binds = svc.settings.layout.mnt("") + ".binds"
        c = svc.provision("web")
        c.start()
        assert svc.ports.mounters.kernel.bind_points(binds) and svc.ports.net.rules.guards
        svc.ports.net.fail = CommandFailed(["nft", "-f", "-"], 1, "Error: Could not process rule")
        with caplog.at_level(logging.WARNING, logger="appcontainers.containers"):
            c.destroy()
        assert svc.ports.repo.read().reservations == {} and svc.ports.driver.list() == []
        assert svc.ports.mounters.kernel.bind_points(binds) == []
        warnings = [r for r in caplog.records if r.name == "appcontainers.containers"]
        assert [r.levelno for r in warnings] == [logging.WARNING]
        assert "web" in warnings[0].getMessage() and "Could not process rule" in warnings[0].getMessage()
        svc.ports.net.fail = None
        svc.reconcile()
        assert svc.ports.net.rules.guards == ()  # reconcile applied what destroy could not

    def test_unknown(self, svc):
        """Destroying an unknown container raises UnknownContainer."""
        with pytest.raises(UnknownContainer):
            svc.containers.destroy("nope")


class TestStartStop:
    def test_start_writes_agent_config_and_waits(self, svc):
        """Start writes agent.json with the startup commands, starts LXC and waits for the agent."""
        c = svc.provision("web")
        c.add_startup_command("echo one")
        c.start()
        agent_dir = svc.settings.layout.agent_dir("web")
        config = json.loads(svc.ports.fs.files[agent_dir + "/agent.json"])
        assert config["startup_commands"] == ["echo one"]
        assert config["hostname"] == "web" and config["environment"] == {"LANG": "C.UTF-8"}
        assert svc.ports.driver.state("web") == "RUNNING"
        assert svc.ports.agents.clients[agent_dir].waits == [svc.settings.start_timeout]

    def test_start_removes_stale_agent_files(self, svc):
        """Start removes a previous run's ready file and sockets."""
        svc.provision("web")
        agent_dir = svc.settings.layout.agent_dir("web")
        for f in ("ready", "cmd.sock"):
            svc.ports.fs.files[f"{agent_dir}/{f}"] = ""
        svc.get("web").start()
        assert svc.ports.fs.under(agent_dir) == [agent_dir, agent_dir + "/agent.json"]

    def test_start_running_is_noop(self, svc):
        """Starting a running container does nothing."""
        c = svc.provision("web")
        c.start()
        c.start()
        assert svc.ports.driver.events.count(("start", "web")) == 1

    def test_agent_not_ready(self, svc):
        """An agent that never answers raises AgentUnavailable."""
        c = svc.provision("web")
        svc.ports.agents(svc.settings.layout.agent_dir("web")).ready = False
        with pytest.raises(AgentUnavailable):
            c.start()

    def test_start_unfinished_reservation_refused(self, svc):
        """A reservation still provisioning cannot be started."""
        base = svc.bases.ensure_default()
        svc.containers.reserve("web", base.id)
        with pytest.raises(ContainerStateError):
            svc.containers.start("web")
        assert svc.ports.driver.events == []

    def test_stop_keeps_container(self, svc):
        """Stopping a persistent container keeps it and its reservation."""
        c = svc.provision("web")
        c.start()
        c.stop()
        assert svc.ports.driver.state("web") == "STOPPED"
        assert svc.ports.repo.read().get("web").status == "ready"

    def test_stop_ephemeral_destroys(self, svc):
        """Stopping an ephemeral container destroys it and frees its address."""
        base = svc.bases.ensure_default()
        svc.containers.provision("tmp", base.id, ephemeral=True)
        assert svc.ports.fs.exists(svc.settings.layout.upper("tmp", True))
        svc.containers.start("tmp")
        svc.containers.stop("tmp")
        assert svc.ports.repo.read().reservations == {} and len(svc.ports.repo.read().pool) == 0
        assert svc.ports.driver.list() == [] and svc.ports.mounters.kernel.mounts == {}
        assert svc.ports.fs.under(svc.settings.layout.overlay("tmp", True)) == []


class TestRun:
    def test_starts_stopped_container(self, svc):
        """run() on a stopped container starts it first."""
        c = svc.provision("web")
        c.run("true")
        assert svc.ports.driver.state("web") == "RUNNING"

    def test_uses_agent_when_image_has_init(self, svc):
        """With an agent in the image, commands go to the agent, not lxc-attach."""
        c = svc.provision("web")
        client = svc.ports.agents(svc.settings.layout.agent_dir("web"))
        client.reply = (3, b"out", b"err")
        result = c.run("echo hi", env={"A": "1"}, cwd="/tmp")
        assert (result.exit_code, result.stdout, result.stderr) == (3, "out", "err")
        assert client.runs == [{"argv": None, "shell": "echo hi", "env": {"A": "1"}, "cwd": "/tmp",
                                "stdin": None}]
        assert svc.ports.driver.attached == []

    def test_uses_lxc_attach_without_init(self, svc):
        """Without an agent (an image without init, on a host without the agent's runtime), a
        shell string runs via lxc-attach under /bin/sh -c, a list as argv."""
        svc.ports.runtime = None
        put_image(svc, "/in/plain.aimg", name="plain")
        c = svc.load_image("/in/plain.aimg", name="plain")
        svc.ports.driver.reply = (0, b"hi\n", b"")
        assert c.run("echo hi").stdout == "hi\n"
        c.run(["ls", "-l"], stdin=b"x")
        assert [a["argv"] for a in svc.ports.driver.attached] == [["/bin/sh", "-c", "echo hi"], ["ls", "-l"]]
        assert svc.ports.driver.attached[1]["stdin"] == b"x"
        assert svc.ports.agents.clients == {}

    def test_empty_command_refused(self, svc):
        """An empty command raises InvalidValue and runs nothing."""
        c = svc.provision("web")
        with pytest.raises(InvalidValue):
            c.run("  ")
        assert svc.ports.driver.events == []


class TestStartupCommands:
    def test_add_and_remove_persist_in_order(self, svc):
        """Added commands are kept in order; removal by index or text keeps the rest in order."""
        c = svc.provision("web")
        for cmd in ("a", "b", "c", "d"):
            c.add_startup_command(cmd)
        assert svc.ports.repo.read().get("web").startup_commands == ("a", "b", "c", "d")
        assert c.remove_startup_command(1) == ("a", "c", "d")
        assert c.remove_startup_command("d") == ("a", "c")
        assert svc.ports.repo.read().get("web").startup_commands == ("a", "c")

    def test_unknown_removal_refused(self, svc):
        """Removing a command that is not there raises InvalidValue and keeps the list."""
        c = svc.provision("web")
        c.add_startup_command("a")
        for ref in (1, -1, "b"):
            with pytest.raises(InvalidValue):
                c.remove_startup_command(ref)
        assert c.startup_commands == ("a",)

    def test_non_string_refused(self, svc):
        """A startup command must be one shell string."""
        c = svc.provision("web")
        with pytest.raises(InvalidValue):
            c.add_startup_command(["echo", "hi"])
        assert c.startup_commands == ()


class TestFiles:
    def test_create_file_writes_in_root(self, svc):
        """create_file writes through the fs port into the container's rootfs; relative paths are under /root."""
        c = svc.provision("web")
        assert c.create_file("app/run.sh", "echo hi", mode=0o755) == "/root/app/run.sh"
        target = svc.settings.layout.rootfs("web") + "/root/app/run.sh"
        assert svc.ports.fs.files[target] == b"echo hi"
        assert svc.ports.fs.modes[target] == 0o755

    @pytest.mark.parametrize("path", ["../etc/passwd", "/root/../../etc/shadow", "a/.."])
    def test_create_file_refuses_dotdot(self, svc, path):
        """A path with '..' raises UnsafePath and nothing is written."""
        c = svc.provision("web")
        files = dict(svc.ports.fs.files)
        with pytest.raises(UnsafePath):
            c.create_file(path, "x")
        assert svc.ports.fs.files == files

    @pytest.mark.parametrize("content", [5, None, ["x"]])
    def test_create_file_refuses_non_bytes(self, svc, content):
        """Content other than str or bytes raises InvalidValue (bytes(5) would be five NULs)."""
        c = svc.provision("web")
        with pytest.raises(InvalidValue):
            c.create_file("/root/f", content)
        assert svc.settings.layout.rootfs("web") + "/root/f" not in svc.ports.fs.files

    def test_load_archive_extracts_in_root(self, svc):
        """load_archive extracts through the fs port into /root of the container's rootfs."""
        c = svc.provision("web")
        svc.ports.fs.files["/in/app.tar"] = b"tar"
        assert c.load_archive("/in/app.tar") == 1
        assert svc.ports.fs.extracted == [(svc.settings.layout.rootfs("web"), "/root", "/in/app.tar")]

    def test_load_archive_limits_reach_the_port(self, svc):
        """max_bytes and max_members are passed to the fs port as given; None leaves its defaults."""
        c = svc.provision("web")
        svc.ports.fs.files["/in/app.tar"] = b"tar"
        c.load_archive("/in/app.tar", max_bytes=1 << 20, max_members=7)
        c.load_archive("/in/app.tar")
        assert svc.ports.fs.limits == [{"max_bytes": 1 << 20, "max_members": 7},
                                       {"max_bytes": None, "max_members": None}]

    def test_load_archive_missing(self, svc):
        """A missing archive is refused before anything is extracted."""
        c = svc.provision("web")
        with pytest.raises(InvalidValue):
            c.load_archive("/in/missing.tar")
        assert svc.ports.fs.extracted == []


class TestSaveImage:
    def test_flatten_packs_merged_rootfs(self, svc, out):
        """A flattened save of a privileged container packs the merged rootfs with no parent and the base's init."""
        c = svc.provision("web", privileged=True)
        c.add_startup_command("serve")
        image = c.save_image(str(out / "web.aimg"))
        packed = svc.ports.codec.packed[-1]
        assert packed["source"] == svc.settings.layout.rootfs("web")
        assert packed["manifest"]["parent"] is None
        assert packed["manifest"]["startup_commands"] == ["serve"]
        assert packed["manifest"]["init"] == ["/sbin/appcontainers-init"]
        assert image.id == encode_image(packed["manifest"])[0] and image.parent is None
        assert svc.ports.fs.is_file(str(out / "web.aimg"))

    def test_flatten_of_unprivileged_packs_an_unshifted_view(self, svc, out):
        """A default (unprivileged) container's flattened save packs a read-only view of its upper
        over its layers (ids as stored), unmounted afterwards; not the shifted merged rootfs."""
        c = svc.provision("web")
        c.save_image(str(out / "web.aimg"))
        L = svc.settings.layout
        packed = svc.ports.codec.packed[-1]
        assert packed["source"] == L.view("web")
        kernel = svc.ports.mounters.kernel
        assert L.view("web") not in kernel.mounts
        assert kernel.idmaps[L.rootfs("web")] == (svc.settings.idmap_base, svc.settings.idmap_size)

    def test_layered_packs_upper_with_parent(self, svc, out):
        """A layered save packs only the upper layer and records the container's image as parent."""
        c = svc.provision("web")
        image = c.save_image(str(out / "web.aimg"), flatten=False, name="web-layer")
        packed = svc.ports.codec.packed[-1]
        assert packed["source"] == svc.settings.layout.upper("web", False)
        assert packed["manifest"]["parent"] == c.image == image.parent
        assert image.name == "web-layer"

    def test_running_container_frozen_during_pack(self, svc, out):
        """A running container is frozen for the pack and thawed afterwards."""
        c = svc.provision("web")
        c.start()
        c.save_image(str(out / "web.aimg"))
        assert svc.ports.driver.events[-2:] == [("freeze", "web"), ("unfreeze", "web")]
        assert svc.ports.driver.state("web") == "RUNNING"
        assert svc.ports.repo.read().operations == {}

    def test_failed_pack_thaws(self, svc, out):
        """A pack that fails thaws the container and leaves no save operation recorded."""
        c = svc.provision("web")
        c.start()
        svc.ports.codec.fail = CommandFailed(["mksquashfs"], 1, "no space left")
        with pytest.raises(CommandFailed):
            c.save_image(str(out / "web.aimg"))
        assert svc.ports.driver.state("web") == "RUNNING"
        assert svc.ports.repo.read().operations == {}

    def test_destroyed_container(self, svc, out):
        """Saving a destroyed container raises UnknownContainer and packs nothing."""
        c = svc.provision("web")
        c.destroy()
        with pytest.raises(UnknownContainer):
            c.save_image(str(out / "web.aimg"))
        assert svc.ports.codec.packed == []


class TestLoadImage:
    def test_registers_image_and_provisions(self, svc):
        """load registers the image in the store and provisions a ready container with its startup commands."""
        image_id = put_image(svc, "/in/app.aimg", startup_commands=["serve", "log"])
        c = svc.load_image("/in/app.aimg", name="app")
        L = svc.settings.layout
        state = svc.ports.repo.read()
        assert state.images[image_id].kind == "user"
        assert c.image == image_id and c.startup_commands == ("serve", "log")
        assert state.get("app").status == "ready"
        assert user_files(svc) == [L.image_file(image_id, "user")]
        assert svc.ports.mounters.kernel.mounts[L.rootfs("app")] == [L.image_file(image_id, "user")]
        assert "app" in svc.ports.driver.configs

    def test_layered_mounts_parent_below(self, svc):
        """A layered image is mounted over its parent's file."""
        base = svc.bases.ensure_default()
        child = put_image(svc, "/in/child.aimg", parent=base.id)
        svc.load_image("/in/child.aimg", name="child")
        L = svc.settings.layout
        assert svc.ports.mounters.kernel.mounts[L.rootfs("child")] == [
            L.image_file(child, "user"), L.image_file(base.id, "base")]

    def test_unknown_parent(self, svc):
        """A layered image whose parent is not in the store raises UnknownImage and imports nothing."""
        put_image(svc, "/in/child.aimg", parent="b" * 64)
        with pytest.raises(UnknownImage):
            svc.load_image("/in/child.aimg")
        assert svc.ports.repo.read().images == {} and user_files(svc) == []

    def test_loaded_twice_stored_once(self, svc):
        """Loading the same file twice keeps one stored copy and gives two containers."""
        image_id = put_image(svc, "/in/app.aimg")
        a, b = svc.load_image("/in/app.aimg"), svc.load_image("/in/app.aimg")
        assert a.image == b.image == image_id and a.name != b.name
        assert user_files(svc) == [svc.settings.layout.image_file(image_id, "user")]

    @pytest.mark.parametrize("damage", [lambda d: d.replace(b'"app"', b'"apq"'), lambda d: b"junk"])
    def test_corrupt_file(self, svc, damage):
        """A corrupt file raises ImageCorrupt; nothing is imported or reserved."""
        put_image(svc, "/in/app.aimg")
        svc.ports.fs.files["/in/app.aimg"] = damage(svc.ports.fs.files["/in/app.aimg"])
        with pytest.raises(ImageCorrupt):
            svc.load_image("/in/app.aimg")
        state = svc.ports.repo.read()
        assert state.images == {} and state.reservations == {}
        assert user_files(svc) == []

    def test_missing_file(self, svc):
        """A file that is not there raises ImageCorrupt."""
        with pytest.raises(ImageCorrupt, match="no such file"):
            svc.load_image("/in/none.aimg")

    def test_pool_exhausted(self):
        """With the pool full, load imports no image and leaves no temp file."""
        svc = make_service(subnet="10.0.7.0/30")
        svc.provision("one")
        put_image(svc, "/in/app.aimg")
        images = svc.ports.repo.read().images
        with pytest.raises(PoolExhausted):
            svc.load_image("/in/app.aimg")
        assert svc.ports.repo.read().images == images
        assert user_files(svc) == []

    def test_name_taken_keeps_existing(self, svc):
        """Loading under a taken name raises NameTaken and leaves that container as it was."""
        svc.provision("web")
        before = snapshot(svc)
        put_image(svc, "/in/app.aimg")
        with pytest.raises(NameTaken):
            svc.load_image("/in/app.aimg", name="web")
        svc.ports.fs.files.pop("/in/app.aimg")
        assert snapshot(svc)[:3] == before[:3]
        assert user_files(svc) == []


class TestRemoveImage:
    def test_refused_while_used(self, svc):
        """An image a container uses cannot be removed; once the container is gone it can."""
        image_id = put_image(svc, "/in/app.aimg")
        c = svc.load_image("/in/app.aimg")
        with pytest.raises(InUse):
            svc.remove_image(image_id)
        assert image_id in svc.ports.repo.read().images and len(user_files(svc)) == 1
        c.destroy()
        assert svc.remove_image(image_id[:8]).id == image_id
        assert svc.ports.repo.read().images == {} and user_files(svc) == []

    def test_parent_refused_while_child_stored(self, svc):
        """A base with a layered child image in the store cannot be removed."""
        base = svc.bases.ensure_default()
        put_image(svc, "/in/child.aimg", parent=base.id)
        svc.load_image("/in/child.aimg").destroy()
        with pytest.raises(InUse):
            svc.remove_image(base.id)


class TestDefaultBase:
    def test_built_once_and_reused(self, svc):
        """The default base is built on first use and reused while its key is unchanged."""
        a, b = svc.provision("a"), svc.provision("b")
        assert svc.ports.base_builder.builds == ["key-1"]
        assert a.image == b.image
        assert svc.ports.fs.is_file(svc.settings.layout.image_file(a.image, "base"))
        assert svc.ports.fs.under(svc.settings.layout.bases) == [
            svc.settings.layout.bases, svc.settings.layout.image_file(a.image, "base")]

    def test_rebuilt_when_key_changes(self, svc):
        """A changed build key rebuilds the base; new containers use the new one."""
        old = svc.provision("a").image
        svc.ports.base_builder.current_key = "key-2"
        new = svc.provision("b").image
        assert svc.ports.base_builder.builds == ["key-1", "key-2"]
        assert new != old
        assert svc.ports.repo.read().images[new].manifest.build_key == "key-2"
        assert svc.provision("c").image == new

    def test_rebuilt_when_file_missing(self, svc):
        """A registered base whose file is gone is built again."""
        old = svc.provision("a").image
        svc.ports.fs.remove_file(svc.settings.layout.image_file(old, "base"))
        svc.provision("b")
        assert svc.ports.base_builder.builds == ["key-1", "key-1"]

    def test_unknown_base(self, svc):
        """Provisioning on a base that does not exist raises UnknownImage."""
        with pytest.raises(UnknownImage):
            svc.provision("a", base="nope")
        assert svc.ports.repo.read().reservations == {}


class TestListing:
    def test_container_infos_carry_each_state_read_at_once(self):
        """container_infos() gives name, ip, mac and the LXC state of every container."""
        from tests.fakes import make_service
        svc = make_service()
        a, b = svc.provision(name="a"), svc.provision(name="b")
        a.start()
        infos = {i["name"]: i for i in svc.container_infos()}
        assert (infos["a"]["state"], infos["b"]["state"]) == ("RUNNING", "STOPPED")
        assert infos["a"]["ip"] == a.ip and infos["b"]["mac"] == b.mac


class TestFusePaths:
    """The FUSE mounter's paths: unprivileged containers (shifted ids, host-path re-binds, the
    save view) and the fallback when the kernel path is missing or fails."""

    IDMAP = (100000, 65536)

    def test_default_is_unprivileged_without_fuse(self):
        """Without a FUSE mounter the default (unprivileged) container takes the kernel path, id-mapped."""
        svc = make_service()
        svc.provision("u")
        r = svc.ports.repo.read().get("u")
        assert (r.mounter, r.idmap) == ("kernel", self.IDMAP)
        assert svc.ports.mounters.kernel.idmaps == {svc.settings.layout.rootfs("u"): self.IDMAP}

    def test_unprivileged_raw_refused(self):
        """An unprivileged container cannot be raw (only fuse-overlayfs shifts ids)."""
        svc = make_service(fuse=True)
        with pytest.raises(InvalidValue):
            svc.provision("u", unprivileged=True, raw=True)
        assert svc.ports.repo.read().reservations == {}

    def test_unprivileged_mounted_shifted(self):
        """With mounter fuse, an unprivileged container is mounted by the FUSE mounter with its id map,
        never the kernel's; its agent dir belongs to its root, its mount dir reachable by its group."""
        svc = make_service(fuse=True, mounter="fuse")
        svc.provision("u", unprivileged=True)
        p, L = svc.ports, svc.settings.layout
        r = p.repo.read().get("u")
        assert (r.mounter, r.idmap) == ("fuse", self.IDMAP)
        assert p.mounters.fuse.idmaps == {L.rootfs("u"): self.IDMAP}
        assert list(p.mounters.fuse.mounts) == [L.rootfs("u")] and p.mounters.kernel.mounts == {}
        assert p.fs.owners[L.agent_dir("u")] == (100000, 100000)
        assert p.fs.modes[L.mnt("u")] == 0o710 and p.fs.owners[L.mnt("u")] == (0, 100000)

    def test_privileged_not_shifted(self):
        """A privileged container keeps the kernel path, its mount dir root-only."""
        svc = make_service(fuse=True)
        svc.provision("k", privileged=True)
        p, L = svc.ports, svc.settings.layout
        assert p.repo.read().get("k").mounter == "kernel" and p.mounters.fuse.mounts == {}
        assert p.fs.modes[L.mnt("k")] == 0o700

    def test_unprivileged_host_binds_rebound(self):
        """The base's host paths are re-bound read-only under the data root, reachable by the
        containers' root group only."""
        svc = make_service(fuse=True)
        svc.ports.base_builder.host_binds = ["/usr/lib/python3"]
        svc.provision("u", unprivileged=True)
        p, L = svc.ports, svc.settings.layout
        point = L.host_bind("/usr/lib/python3")
        assert p.mounters.kernel.binds == {point: "/usr/lib/python3"}
        assert p.fs.owners[os.path.dirname(point)] == (0, 100000)
        assert p.fs.modes[os.path.dirname(point)] == 0o710

    def test_privileged_host_binds_not_rebound(self):
        """A privileged container binds the host paths directly: no re-bind."""
        svc = make_service(fuse=True)
        svc.ports.base_builder.host_binds = ["/usr/lib/python3"]
        svc.provision("k", privileged=True)
        assert svc.ports.mounters.kernel.binds == {}

    def test_auto_takes_fuse_without_kernel(self):
        """mounter auto on a host without the kernel path mounts through FUSE."""
        svc = make_service(fuse=True, kernel=False)
        svc.provision("f")
        assert svc.ports.repo.read().get("f").mounter == "fuse"
        assert list(svc.ports.mounters.fuse.mounts) == [svc.settings.layout.rootfs("f")]

    def test_kernel_failure_falls_back_to_fuse(self):
        """A kernel mount that fails under mounter auto is retried through FUSE, and recorded."""
        svc = make_service(fuse=True)
        svc.ports.mounters.kernel.fail = CommandFailed(["mount"], 32, "no loop device")
        svc.provision("f")
        assert svc.ports.repo.read().get("f").mounter == "fuse"
        assert list(svc.ports.mounters.fuse.mounts) == [svc.settings.layout.rootfs("f")]

    def test_kernel_failure_without_fuse_is_an_error(self):
        """mounter kernel (no fallback) reports the kernel failure and rolls back."""
        svc = make_service(fuse=True, mounter="kernel")
        svc.ports.mounters.kernel.fail = CommandFailed(["mount"], 32, "no loop device")
        with pytest.raises(CommandFailed):
            svc.provision("k")
        assert svc.ports.repo.read().reservations == {} and svc.ports.mounters.fuse.mounts == {}

    def test_destroy_unmounts_fuse(self):
        """Destroying an unprivileged container unmounts its FUSE rootfs and layers."""
        svc = make_service(fuse=True)
        svc.provision("u", unprivileged=True).destroy()
        fuse = svc.ports.mounters.fuse
        assert fuse.mounts == {} and fuse.points == set() and fuse.idmaps == {}

    def test_save_unprivileged_packs_unshifted_view(self):
        """A flattened save of an unprivileged container packs a view of its upper and layers
        (ids as stored) made by its own mounter (here FUSE), unmounted after."""
        svc = make_service(fuse=True, mounter="fuse")
        svc.ports.fs.dirs.add("/out")
        c = svc.provision("u", unprivileged=True)
        c.start()
        c.save_image("/out/u.aimg")
        L, fuse = svc.settings.layout, svc.ports.mounters.fuse
        assert svc.ports.codec.packed[-1]["source"] == L.view("u")
        assert fuse.viewed == [(L.view("u"), [L.upper("u", False), L.layer_mount("u", 0) + "/rootfs"])]
        assert fuse.views == {} and svc.ports.driver.state("u") == "RUNNING"

    def test_failed_save_unmounts_view(self):
        """A pack that fails still unmounts the view and thaws the container."""
        svc = make_service(fuse=True)
        svc.ports.fs.dirs.add("/out")
        c = svc.provision("u", unprivileged=True)
        c.start()
        svc.ports.codec.fail = CommandFailed(["mksquashfs"], 1, "no space left")
        with pytest.raises(CommandFailed):
            c.save_image("/out/u.aimg")
        assert svc.ports.mounters.fuse.views == {} and svc.ports.driver.state("u") == "RUNNING"
        assert svc.ports.repo.read().operations == {}

    def test_destroy_unmounts_a_left_view(self):
        """A view left by a crashed save is unmounted when the container is destroyed."""
        svc = make_service(fuse=True)
        c = svc.provision("u", unprivileged=True)
        L = svc.settings.layout
        svc.ports.mounters.fuse.mount_view([L.upper("u", False)], L.view("u"))
        c.destroy()
        assert svc.ports.mounters.fuse.views == {}
