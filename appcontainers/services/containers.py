"""Use cases on containers: provision, start, stop, run, files, destroy."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from typing import Any, Callable, Collection, Iterable, Iterator, Sequence

import attrs

from ..domain.exceptions import (AgentUnavailable, AppContainersError, ContainerStateError, InvalidValue,
                                 NameTaken, UnknownContainer, UnknownImage)
from ..domain.image import Image, lineage
from ..domain.network import MacGenerator
from ..domain.paths import container_path
from ..domain.ports import AgentClient, Controls, DataCallback, JsonDict, LineCallback
from ..domain.reservation import DESTROYING, PIDS_DEFAULT, PROVISIONING, READY, Reservation, validate_name
from ..domain.sizes import MIN_DISK, parse_size
from ..domain.firewall import table_name
from ..domain.publish import Published
from .faults import checkpoint
from .host_errors import host_errors, host_errors_in
from .ports import Ports
from .result import RunResult
from . import plans, publish as published

log = logging.getLogger("appcontainers.containers")

log = logging.getLogger("appcontainers.containers")

EditCommands = Callable[[list[str]], list[str]]  # a container's startup commands -> the new ones


class ContainerService:
    """Every container operation; the Python API's Service and Container call these."""

    def __init__(self, ports: Ports):
        self.p = ports
        self._held = threading.local()  # container locks this thread holds, with their depth
        self.settings = ports.settings
        self.layout = ports.settings.layout

    # ---- provisioning -------------------------------------------------------------
    def _new_name(self, taken: Collection[str]) -> str:
        while True:
            name = "ac-%08x" % self.p.rng.getrandbits(32)
            if name not in taken:
                return name

    def reserve(self, name: str | None, image_id: str, ephemeral: bool = False,
                startup_commands: Iterable[str] = (), new_image: Image | None = None, raw: bool = False,
                privileged: bool = False, caps_add: Iterable[str] = (), publish: Iterable[str] = (),
                start_default: bool = False, publish_all: bool = False, **limits: Any) -> Reservation:
        """Claim a name, an address and a MAC in one transaction (status provisioning).

        Unprivileged (root inside is host uid idmap_base) unless privileged=True. new_image,
        if given, is registered in the same transaction (a loaded image). limits: memory,
        cpus, pids. publish: host ports ("8080:80", "127.0.0.1:5353:53/udp"), refused with
        PortTaken before anything is reserved if a host socket, another data root or another
        container holds one. start_default: the image's default command runs at every start;
        publish_all: each port the image exposes is published on a free host port (Docker's -P)."""
        if name is not None:
            validate_name(name)
        ports = self._free_ports(publish)
        taken = self.p.net.ports_taken(table_name(self.settings.root_id)) if publish_all else set()
        idmap = None if privileged else self._idmap()
        pids = limits.get("pids")
        disk = self._disk_bound(limits.get("disk"), raw)
        host_macs = self.p.net.host_macs()
        macgen = MacGenerator(self.p.rng, self.settings.mac_prefix)
        with self.p.repo.transaction() as state:
            if new_image is not None and new_image.id not in state.images:
                state.images[new_image.id] = new_image
            if image_id not in state.images:
                raise UnknownImage(image_id)
            name = name or self._new_name(state.reservations)
            if name in state.reservations:
                raise NameTaken(name)
            published.refuse_published(ports, state.reservations.values())
            ports += self._image_run_options(state.images, image_id, start_default, taken if publish_all else None,
                                             state.reservations.values(), ports)
            ip = state.pool.allocate(name)
            mac = macgen.generate(state.macs() | host_macs)
            r = Reservation(name=name, ip=ip, mac=mac, image=image_id, ephemeral=ephemeral,
                            startup_commands=startup_commands, created=self.p.clock(),
                            status=PROVISIONING, mounter="raw" if raw else self._mounter_name(),
                            idmap=idmap, caps_add=caps_add,
                            pids=PIDS_DEFAULT if pids is None else pids,
                            owner=self.p.procs.token(), boot=self.p.procs.boot_id(),
                            memory=limits.get("memory"), cpus=limits.get("cpus"), disk=disk,
                            publish=[p.spec for p in ports], start_default=start_default)
            state.add(r)
            return r

    def _image_run_options(self, images: dict[str, Image], image_id: str, start_default: bool,
                           taken: set[published.Taken] | None, others: Iterable[Reservation],
                           ports: tuple[Published, ...]) -> tuple[Published, ...]:
        """Checks start_default against the image (it needs a default command) and, if taken is
        given (publish_all), the ports its exposed ones are published on."""
        chain = lineage(images, image_id)
        if start_default:
            plans.default_command(chain)
        if taken is None:
            return ()
        def pick(lo: int, hi: int) -> int:
            return lo + self.p.rng.getrandbits(32) % (hi - lo + 1)

        return published.publish_all(plans.exposed_ports(chain), taken, others, pick, ports)

    def _free_ports(self, publish: Iterable[str] | None) -> tuple[Published, ...]:
        """The ports asked for, checked against the host's sockets and other data roots."""
        ports = published.wanted(publish)
        if ports:
            published.refuse_taken(ports, self.p.net.ports_taken(table_name(self.settings.root_id)))
        return ports

    def _idmap(self) -> tuple[int, int]:
        """The id map of an unprivileged container, once its root can reach the data root."""
        closed = self.p.fs.closed_ancestor(self.settings.root)
        if closed is not None:
            raise InvalidValue(f"an unprivileged container's root cannot reach {self.settings.root}: "
                               f"{closed} is not searchable by others (chmod o+x {closed}, or "
                               f"privileged=True, unsafe for untrusted code)")
        return (self.settings.idmap_base, self.settings.idmap_size)

    def _disk_bound(self, requested: int | str | None, raw: bool) -> int | None:
        """The bound on the container's writes, in bytes, or None: none asked ("0"), no way to
        bound (a raw container's directory, or no SizedDirs port). By default disk_default, or
        half the data root's free space if that is less, never under MIN_DISK."""
        if requested is not None:
            size = parse_size(requested, "disk bound")
            if size and (raw or self.p.disks is None):
                raise InvalidValue("a disk bound needs an overlay container (not raw) on a host that "
                                   "can loop-mount a filesystem image")
            return size or None
        if raw or self.p.disks is None:
            return None
        default = parse_size(self.settings.disk_default, "disk_default")
        if not default:
            return None
        return max(MIN_DISK, min(default, self.p.disks.free_bytes(self.settings.root) // 2))

    def _mounter_name(self) -> str:
        """kernel or fuse as configured; auto takes the kernel path when it is there."""
        if self.settings.mounter != "auto":
            return self.settings.mounter
        if self.p.mounters.fuse is not None and not self.p.mounters.kernel.available():
            return "fuse"
        return "kernel"

    @host_errors("provision")
    def provision(self, name: str | None, image_id: str, ephemeral: bool = False,
                  startup_commands: Iterable[str] = (), memory: str | None = None, cpus: float | None = None,
                  raw: bool = False, privileged: bool = False, caps_add: Iterable[str] = (),
                  pids: int | None = None, disk: int | str | None = None,
                  publish: Iterable[str] = (), start_default: bool = False,
                  publish_all: bool = False) -> Reservation:
        r = self.reserve(name, image_id, ephemeral, startup_commands, raw=raw, memory=memory, cpus=cpus,
                         privileged=privileged, caps_add=caps_add, pids=pids, disk=disk, publish=publish,
                         start_default=start_default, publish_all=publish_all)
        checkpoint("provision.reserved")
        with self.locked(r.name):
            return self._provision(r)

    def _provision(self, r: Reservation) -> Reservation:
        try:
            self.materialize(r)
            checkpoint("provision.materialized")
        except BaseException:
            self.roll_back(r.name)
            raise
        return self.mark_ready(r.name)

    def mark_ready(self, name: str) -> Reservation:
        with self.p.repo.transaction() as state:
            ready = attrs.evolve(state.get(name), status=READY, owner=None)
            state.put(ready)
        return ready

    def materialize(self, r: Reservation) -> None:
        """Dirs, mounts and the LXC config for a reservation (idempotent)."""
        self.p.net.ensure_bridge(self.settings.bridge, *self._gateway())
        self.ensure_mounted(r)
        self.render(r)

    def _gateway(self) -> tuple[str, int]:
        state = self.p.repo.read()
        return state.pool.gateway, state.pool.prefixlen

    def _layers(self, r: Reservation, images: dict[str, Image] | None = None) -> list[Image]:
        images = images if images is not None else self.p.repo.read().images
        return lineage(images, r.image)

    def ensure_mounted(self, r: Reservation) -> None:
        with self.locked(r.name):
            self._ensure_mounted(r)

    def _ensure_mounted(self, r: Reservation) -> None:
        L = self.layout
        chain = self._layers(r)
        files = [L.image_file(img.id, img.kind) for img in chain]
        points = [L.layer_mount(r.name, i) for i in range(len(chain))]
        upper, work, target = self.upper(r), L.work(r.name, r.ephemeral), L.rootfs(r.name)
        mounter = self.p.mounters.by_name(r.mounter)
        if mounter.is_mounted(target):
            return
        if r.mounter == "raw":
            self.p.fs.make_dirs(target)  # the raw mounter unpacks into upper itself
        else:
            self._mount_disk(r)
            self.p.fs.make_dirs(upper, work, target)
        # Only root walks to a container's merged tree (its set-uid files must not be runnable by
        # host users); an unprivileged container's root reaches its own through the group.
        if r.idmap is not None:
            self.p.fs.chown(L.mnt(r.name), 0, r.idmap[0])
        self.p.fs.chmod(L.mnt(r.name), 0o710 if r.idmap else 0o700)
        try:
            mounter.mount(files, points, upper, work, target, idmap=r.idmap)
        except AppContainersError:
            fuse = self.p.mounters.fuse
            if not (r.mounter == "kernel" and self.settings.mounter == "auto" and fuse is not None):
                raise
            # The kernel path failed (no loop devices, no overlay or no idmapped mounts in this
            # kernel): FUSE instead.
            fuse.mount(files, points, upper, work, target, idmap=r.idmap)
            with self.p.repo.transaction() as state:
                if r.name in state.reservations:
                    state.put(attrs.evolve(state.reservations[r.name], mounter="fuse"))
        checkpoint("mount.done")

    def _mount_disk(self, r: Reservation) -> None:
        """The upper and work dirs on a filesystem of r.disk bytes, mounted at their parent."""
        where = self.layout.overlay(r.name, r.ephemeral)
        if r.disk is None or self.p.disks is None or self.p.disks.is_mounted(where):
            return
        self.p.fs.make_dirs(self.layout.disks, mode=0o700)
        self.p.disks.mount(self.layout.disk_image(r.name), r.disk, where)

    def upper(self, r: Reservation) -> str:
        """Where the container's writes live: an overlay upper, or the whole raw directory."""
        return self.layout.raw(r.name) if r.mounter == "raw" else self.layout.upper(r.name, r.ephemeral)

    def render(self, r: Reservation) -> None:
        """Skeleton files and the LXC config, re-rendered so the skeletons' current text applies."""
        L, state = self.layout, self.p.repo.read()
        chain = self._layers(r, state.images)
        runtime = self.runtime_dir() if self._runs_agent(chain) and not plans.has_agent(chain) else None
        context = plans.context(r, L, self.settings, state.pool, chain, runtime)
        if r.idmap is not None:
            # Root inside cannot walk the host's path to a bind source (e.g. /root, mode 0700):
            # bind each one where it can, once, under the data root.
            staged = []
            with self.p.fs.lock(L.lock_file(".binds")):  # reconcile unmounts unused ones under it
                for src, dst in context["host_binds"]:
                    point = L.host_bind(src)
                    self.p.mounters.kernel.bind_ro(src, point)
                    staged.append((point, dst))
                    # Reachable by the containers' root group only, not by every host user.
                    self.p.fs.chown(os.path.dirname(point), 0, r.idmap[0])
                    self.p.fs.chmod(os.path.dirname(point), 0o710)
            context["host_binds"] = staged
        files = self.p.skeletons.render_files(context)
        mounts = []
        for path, text in files.items():
            src = L.skel_dir(r.name) + path
            self.p.fs.write_text(src, text)
            mounts.append((src, path))
        self.p.fs.make_dirs(L.agent_dir(r.name))
        # The agent's log holds command output, agent.json its configuration: container root only.
        self.p.fs.chmod(L.agent_dir(r.name), 0o700)
        if r.idmap is not None:  # root inside must be able to make its sockets and log there
            self.p.fs.chown(L.agent_dir(r.name), r.idmap[0], r.idmap[0])
        context["files"] = mounts
        self.p.driver.create(r.name, self.p.skeletons.render_config(context))

    def _runs_agent(self, chain: Sequence[Image]) -> bool:
        """Whether the container's init is the agent: the image's own, or the agent's runtime
        for an image without an init (where this host has one)."""
        return plans.has_agent(chain) or self.p.runtime is not None

    def runtime_dir(self) -> str:
        """The agent's runtime tree of this data root, built once per key (one build at a time)."""
        builder = self.p.runtime
        if builder is None:
            raise InvalidValue("this host has no agent runtime for images without an init")
        path = self.layout.runtime(builder.key())
        if self.p.fs.exists(path):
            return path
        self.p.fs.make_dirs(self.layout.runtimes)
        with self.p.fs.lock(self.layout.lock_file(".runtime")):
            if not self.p.fs.exists(path):  # another process built it meanwhile
                builder.build(path)
        return path

    def roll_back(self, name: str) -> None:
        """Remove a half-made container (a failed provision or load); call it from an error
        handler: it never raises over the original error."""
        try:
            self.teardown(name)
        except (AppContainersError, OSError):
            pass

    # ---- lookup ---------------------------------------------------------------------
    def get(self, name: str) -> Reservation:
        return self.p.repo.read().get(name)

    def list(self) -> list[Reservation]:
        return sorted(self.p.repo.read().reservations.values(), key=lambda r: r.name)

    def states(self) -> dict[str, str]:
        """Every container's LXC state at once (one lxc-ls, not one lxc-info each)."""
        return self.p.driver.states()

    def state(self, name: str) -> str:
        self.get(name)
        return self.p.driver.state(name)

    # ---- lifecycle ------------------------------------------------------------------
    @host_errors("start")
    def start(self, name: str) -> None:
        with self.locked(name):
            self._start(name)

    def _start(self, name: str) -> None:
        r = self.get(name)
        if r.status != READY:
            raise ContainerStateError(f"container {name} is {r.status}, not ready; run `appcontainers gc`")
        if self.p.driver.state(name) == "RUNNING":
            return
        self.materialize(r)
        agent_dir = self.layout.agent_dir(name)
        chain = self._layers(r)
        secret = self._new_agent_key(name) if self._runs_agent(chain) else None
        self._write_agent_config(r, chain, secret)
        for stale in ("ready", "cmd.sock", "events.sock"):
            self.p.fs.remove_file(f"{agent_dir}/{stale}")
        self.sync_rules()  # before LXC makes the veth: it is guarded from its first frame
        self._dns(start=True)
        try:
            self.p.driver.start(name, self.settings.start_timeout)
            if self._runs_agent(chain) and not self.agent(name).wait_ready(self.settings.start_timeout):
                raise AgentUnavailable(f"container {name} started but its agent did not answer within "
                                       f"{self.settings.start_timeout:g}s; see {self.layout.lxcpath}/{name}/lxc.log")
        except BaseException:
            self._stop_after_failed_start(name)
            raise
        if r.ephemeral and not r.started:
            # From now on, finding it stopped means it ended without stop(): reconcile removes it.
            with self.p.repo.transaction() as state:
                current = state.reservations.get(name)
                if current is not None:
                    state.put(attrs.evolve(current, started=True))

    def _new_agent_key(self, name: str) -> str:
        """A fresh CURVE key pair for the agent about to start: the public half stays with the
        host (in the reservation, which the container cannot reach), the secret half goes to
        the container only (in agent.json); returns the secret half."""
        public, secret = self.p.agents.new_keys()
        with self.p.repo.transaction() as state:
            state.put(attrs.evolve(state.get(name), agent_key=public))
        return secret

    def _write_agent_config(self, r: Reservation, chain: Sequence[Image], secret: str | None) -> None:
        """agent.json, readable by root inside only (it holds the agent's secret key)."""
        path = self.layout.agent_dir(r.name) + "/agent.json"
        config = plans.agent_config(r, chain, self.settings, secret)
        self.p.fs.write_text(path, json.dumps(config, indent=1, sort_keys=True) + "\n", mode=0o600)
        if r.idmap is not None:  # root inside is the map's first host id
            self.p.fs.chown(path, r.idmap[0], r.idmap[0])

    def agent(self, name: str) -> AgentClient:
        """The container's AgentClient; it talks only to the agent holding the key the host
        made at the container's last start."""
        return self.p.agents(self.layout.agent_dir(name), server_key=self.get(name).agent_key)

    def _stop_after_failed_start(self, name: str) -> None:
        """A start that failed stops what it started (never left RUNNING); called from an error
        handler, so it never raises over the original error."""
        try:
            self.p.driver.stop(name, self.settings.stop_timeout)
        except (AppContainersError, OSError):
            pass

    @host_errors("stop")
    def stop(self, name: str) -> bool:
        """Stop the container; an ephemeral one is then destroyed (returns True if it was)."""
        with self.locked(name):
            r = self.get(name)
            self.p.driver.stop(name, self.settings.stop_timeout)
            if r.ephemeral:
                self.teardown(name)
                return True
            return False

    def teardown(self, name: str, expect: Callable[[Reservation | None], bool] | None = None,
                 wait: bool = True) -> bool:
        """Stop, unmount and remove everything of a container, then its reservation.

        The intent is recorded first (status destroying), so a crash at any step leaves
        something reconcile finishes. expect(reservation or None), checked under the
        container's lock, lets reconcile act only if what it saw still holds."""
        with self.locked(name, wait=wait):
            with self.p.repo.transaction() as state:
                r = state.reservations.get(name)
                if expect is not None and not expect(r):
                    return False
                if r is not None:
                    r = attrs.evolve(r, status=DESTROYING, owner=self.p.procs.token())
                    state.put(r)
            self._teardown(name, r)
            return True

    def _teardown(self, name: str, r: Reservation | None) -> None:
        checkpoint("destroy.marked")
        L = self.layout
        self.p.driver.destroy(name)
        checkpoint("destroy.stopped")
        self.unmount_view(name)  # a save's view, left by a crash, holds the layers
        # The container's own mounter first, then any other kind left from a fallback; the
        # lower mounts in reverse mount order.
        order = sorted(self.p.mounters.values(), key=lambda m: m.name != (r.mounter if r else "kernel"))
        for mounter in order:
            points = [p for p in mounter.mounted(L.mnt(name)) if p != L.rootfs(name)]
            mounter.unmount(L.rootfs(name), points[::-1])
        checkpoint("destroy.unmounted")
        for ephemeral in ((r.ephemeral,) if r else (False, True)):
            if self.p.disks is not None:
                self.p.disks.unmount(L.overlay(name, ephemeral))
            self.p.fs.remove_tree(L.overlay(name, ephemeral))
        self.p.fs.remove_file(L.disk_image(name))
        self.p.fs.remove_tree(L.raw(name))
        self.p.fs.remove_tree(L.mnt(name))
        self.p.fs.remove_tree(L.run_dir(name))
        if r is not None:
            with self.p.repo.transaction() as state:
                # Only the record this teardown marked: a new container of the same name, reserved
                # meanwhile by another process, is not ours to remove.
                if state.reservations.get(name) == r:
                    state.remove(name)
            self._dns()  # first: the last container's resolver stops before its guard rule goes
            self._sync_rules_after_teardown(name)
            if r.idmap is not None:
                self.release_binds()

    def _sync_rules_after_teardown(self, name: str) -> None:
        """The container is gone whatever the rules do: a failure to drop its rules is logged,
        not raised, and reconcile (which syncs the rules too) retries."""
        try:
            self.sync_rules()
        except (AppContainersError, OSError) as e:
            log.warning("container %s destroyed, but the nftables rules were not updated (%s); "
                        "`appcontainers gc` retries", name, e)

    def sync_rules(self) -> None:
        """Make the data root's nftables rules match its containers (no tables once none is
        left); start, teardown and reconcile call it. Read and applied under one lock, so two
        processes cannot apply what each saw in the wrong order."""
        with self.p.fs.lock(self.layout.lock_file(".rules")):
            state = self.p.repo.read()
            resolver = state.pool.gateway if self.p.dns is not None else None
            self.p.net.apply_rules(plans.root_rules(self.settings, state.reservations.values(), resolver))

    def _dns(self, start: bool = False) -> None:
        """sync_dns for a start (the bridge is up: the resolver can bind the gateway) or a
        teardown. A resolver that fails (dnsmasq missing, the address taken, a full disk) fails
        neither: the containers lack names until gc or the next start repairs it; logged."""
        try:
            self.sync_dns(start=start)
        except (AppContainersError, OSError) as e:
            log.warning("the DNS resolver of this data root could not be %s (containers' names "
                        "are wrong until gc repairs it): %s", "started" if start else "updated", e)

    def sync_dns(self, start: bool = False) -> None:
        """Make the root's resolver answer its containers' names: started if start (a container
        is starting), else only told the names; stopped, its files gone, once the root has no
        container. Under one lock, like the rules."""
        if self.p.dns is None:
            return
        with self.p.fs.lock(self.layout.lock_file(".dns")):
            state = self.p.repo.read()
            if not state.reservations:
                self.p.dns.stop(self.layout.dns_dir)
                return
            plan = plans.resolver_plan(self.settings, state.pool.gateway, state.reservations.values())
            if start:
                self.p.dns.ensure(plan)
            else:
                self.p.dns.update(plan)

    def release_binds(self) -> None:
        """Unmount the host path re-binds (mnt/.binds) once no unprivileged container is left.

        Under the lock a start takes to re-bind them, after this container's record is gone: the
        last of several concurrent destroys sees none left and unbinds."""
        binds = os.path.join(self.layout.mnt(""), ".binds")
        with self.p.fs.lock(self.layout.lock_file(".binds")):
            if any(r.idmap for r in self.p.repo.read().reservations.values()):
                return
            kernel = self.p.mounters.kernel
            for point in kernel.bind_points(binds):
                kernel.unmount(point, [])

    def unmount_view(self, name: str) -> None:
        view = self.layout.view(name)
        for mounter in self.p.mounters.viewers():  # fuse-overlayfs or a kernel overlay
            if view in mounter.mounted(os.path.dirname(view)):
                mounter.unmount_view(view)
        self.p.fs.remove_tree(os.path.dirname(self.layout.view(name)))

    @host_errors("destroy")
    def destroy(self, name: str) -> None:
        def not_busy(r: Reservation | None) -> bool:
            if r is None:
                raise UnknownContainer(name)
            if r.status != READY and r.owner != self.p.procs.token() and self.p.procs.alive(r.owner):
                raise ContainerStateError(f"container {name} is {r.status} by another process; "
                                          f"try again when it is done")
            return True

        self.teardown(name, expect=not_busy)

    @contextlib.contextmanager
    def locked(self, name: str, wait: bool = True) -> Iterator[None]:
        """Serialize work on one container across processes (re-entrant in this thread).

        wait=False raises ContainerStateError at once if another process holds it."""
        validate_name(name)  # it names the lock file
        held = self._held.__dict__
        if held.get(name):
            held[name] += 1
            try:
                yield
            finally:
                held[name] -= 1
            return
        with self.p.fs.lock(self.layout.lock_file(name), wait=wait):
            held[name] = 1
            try:
                yield
            finally:
                del held[name]

    # ---- commands and files ---------------------------------------------------------
    @host_errors("run")
    def run(self, name: str, command: str | Sequence[str] | None = None, timeout: float | None = None,
            on_output: LineCallback | None = None, env: dict[str, str] | None = None,
            cwd: str | None = None, stdin: Any = None, *, on_data: DataCallback | None = None,
            tty: tuple[int, int] | None = None, controls: Controls | None = None,
            user: str | None = None, args: Sequence[str] | None = None, capture: bool = True) -> RunResult:
        """on_data, tty, controls and user need the agent (every base has it); without one they
        are refused, except on_data, which then gets the output once the command has ended.

        command None: the image's default command (its config's entrypoint + cmd; args, if given,
        replace cmd and keep the entrypoint). cwd and user default to the image's workdir and user."""
        argv, shell = plans.command(command) if command is not None else (None, None)
        state = self.p.repo.read()
        r = state.get(name)
        chain = lineage(state.images, r.image)
        if command is None:
            argv = plans.default_command(chain, args)
        cwd, user = plans.run_defaults(chain, cwd, user)
        if self._runs_agent(chain):
            client = self.p.agents(self.layout.agent_dir(name), server_key=r.agent_key)
            # A live agent is the proof the container runs (cheaper than asking lxc-info).
            if not client.alive():
                self.start(name)
                client = self.agent(name)  # the start made a new key
            code, out, err, _ = client.run(argv=argv, shell=shell, env=env, cwd=cwd, stdin=stdin,
                                           timeout=timeout, on_output=on_output, on_data=on_data,
                                           tty=tty, controls=controls, user=user, capture=capture)
            return RunResult(exit_code=code, stdout=out, stderr=err)
        if tty is not None or controls is not None or user is not None:
            raise InvalidValue(f"container {name} has no agent: no terminal, no signals and no user for its commands")
        if self.p.driver.state(name) != "RUNNING":
            self.start(name)
        code, out, err = self.p.driver.attach(name, argv or ["/bin/sh", "-c", shell or ""], env, cwd,  # one of the two is set
                                              timeout, on_output, _whole(stdin))
        for stream, data in (("stdout", out), ("stderr", err)):
            if on_data is not None and data:
                on_data(stream, data)
        return RunResult(exit_code=code, stdout=out, stderr=err)

    def _ready(self, name: str) -> Reservation:
        r = self.get(name)
        if r.status != READY:
            raise ContainerStateError(f"container {name} is {r.status}, not ready")
        return r

    @host_errors("create file")
    def create_file(self, name: str, path: str, content: str | bytes, mode: int = 0o644) -> str:
        full = container_path(path)
        if isinstance(content, str):
            data = content.encode()
        elif isinstance(content, (bytes, bytearray, memoryview)):
            data = bytes(content)
        else:  # bytes(5) would silently write five NUL bytes
            raise InvalidValue(f"file content must be str or bytes, not {type(content).__name__}")
        with self.locked(name):
            r = self._ready(name)  # read under the lock: it may have gone while we waited
            self.ensure_mounted(r)
            shift = r.idmap[0] if r.idmap else 0  # through the shifted view: root inside is shift
            self.p.fs.write_in_root(self.layout.rootfs(name), full, data, mode, shift=shift)
        return full

    @host_errors("load-archive")
    def load_archive(self, name: str, archive: str, dest: str = "/root", *,
                     max_bytes: int | None = None, max_members: int | None = None) -> int:
        """Extract a tar archive into dest in the container; every member is checked first.

        max_bytes / max_members bound the unpacked size and the member count (None: the
        adapter's defaults, 1 GiB and 100,000). A running container is frozen meanwhile."""
        full = container_path(dest)
        with self.locked(name):
            r = self._ready(name)
            self.ensure_mounted(r)
            frozen = self.p.driver.state(name) == "RUNNING"
            if frozen:
                self.p.driver.freeze(name)
            try:
                return self.p.fs.extract_in_root(self.layout.rootfs(name), full, archive,
                                                 shift=r.idmap[0] if r.idmap else 0,
                                                 max_bytes=max_bytes, max_members=max_members)
            finally:
                if frozen:
                    self.p.driver.unfreeze(name)

    @host_errors("set startup commands")
    def set_startup_commands(self, name: str, commands: Iterable[str]) -> tuple[str, ...]:
        return self._edit_startup_commands(name, lambda _old: list(commands))

    @host_errors("add startup command")
    def add_startup_command(self, name: str, command: str) -> tuple[str, ...]:
        if not isinstance(command, str):
            raise InvalidValue("a startup command is one shell string")
        return self._edit_startup_commands(name, lambda old: [*old, command])

    @host_errors("remove startup command")
    def remove_startup_command(self, name: str, index_or_command: int | str) -> tuple[str, ...]:
        def remove(cmds: list[str]) -> list[str]:
            if isinstance(index_or_command, int):
                if not 0 <= index_or_command < len(cmds):
                    raise InvalidValue(f"container {name} has no startup command #{index_or_command}")
                del cmds[index_or_command]
            elif index_or_command in cmds:
                cmds.remove(index_or_command)
            else:
                raise InvalidValue(f"container {name} has no startup command {index_or_command!r}")
            return cmds

        return self._edit_startup_commands(name, remove)

    def _edit_startup_commands(self, name: str, edit: EditCommands) -> tuple[str, ...]:
        """Read, change and write the commands in one transaction: two processes editing at
        once both keep their change (an edit raising leaves the state as it was)."""
        with self.p.repo.transaction() as state:
            old: Reservation = state.get(name)
            new = attrs.evolve(old, startup_commands=edit(list(old.startup_commands)))
            state.put(new)
            return new.startup_commands

    # ---- monitoring -----------------------------------------------------------------
    def logs(self, name: str, since: int = 0, follow: bool = False) -> Iterator[tuple[int, JsonDict]]:
        """(offset, record) pairs from the container's agent log; follow waits for more."""
        return host_errors_in(f"reading the log of container {name}",
                              self.agent(name).logs(since=since, follow=follow))

    def agent_endpoints(self) -> dict[str, tuple[str, str | None]]:
        """{name: (agent dir, the key its agent must hold)} of every container."""
        return {r.name: (self.layout.agent_dir(r.name), r.agent_key) for r in self.list()}


def _whole(stdin: Any) -> bytes | None:
    """A streamed stdin read to its end (lxc-attach takes bytes)."""
    if stdin is None or isinstance(stdin, (bytes, bytearray, memoryview)):
        return None if stdin is None else bytes(stdin)
    if hasattr(stdin, "read"):
        return bytes(stdin.read())
    return b"".join(x.encode() if isinstance(x, str) else bytes(x) for x in stdin)
