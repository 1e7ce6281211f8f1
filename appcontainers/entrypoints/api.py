"""The Python API: setup_service() wires the real adapters; Service and Container are thin."""
from __future__ import annotations

import os
import random
from typing import Any, Callable, TypeVar, cast

from ..config import Settings
from ..domain.exceptions import AppContainersError, InvalidValue, NotRoot
from ..domain.reservation import validate_name
from ..services.bases import BaseService
from ..services.containers import ContainerService
from ..services.host_errors import host_errors
from ..services.images import ImageService
from ..services.logs import log_records
from ..domain.ports import Agents, BaseBuilder, DebianBuilder, ImageCodec, OciSource, Registries, Signing
from ..domain.ports import Skeletons as SkeletonsPort
from ..domain.ports import RuntimeBuilder as RuntimeBuilderPort
from ..services.ports import Mounters, Ports

T = TypeVar("T")


class Container:
    """A handle on one container; every attribute reads the current state."""

    def __init__(self, service: "Service", name: str):
        self._svc, self.name = service, name

    def __repr__(self):
        return f"<Container {self.name}>"

    @property
    def _r(self):
        return self._svc.containers.get(self.name)

    @property
    def ip(self) -> str:
        return self._r.ip

    @property
    def mac(self) -> str:
        return self._r.mac

    @property
    def ephemeral(self) -> bool:
        return self._r.ephemeral

    @property
    def image(self) -> str:
        return self._r.image

    @property
    def state(self) -> str:
        return self._svc.containers.state(self.name)

    @property
    def startup_commands(self) -> tuple[str, ...]:
        return self._r.startup_commands

    def info(self, state: str | None = None) -> dict:
        from .cli_lean import reservation_info  # the lean `ls` makes the same from the stored record

        return reservation_info(self._r.to_dict(), state or self.state)

    def start(self) -> None:
        self._svc.containers.start(self.name)

    def stop(self) -> None:
        self._svc.containers.stop(self.name)

    def destroy(self) -> None:
        self._svc.containers.destroy(self.name)

    def run(self, command=None, timeout=None, on_output=None, env=None, cwd=None, stdin=None, *,
            on_data=None, tty=None, controls=None, user=None, args=None, capture=True):
        """Run command (a str under /bin/sh -c, or an argv list); blocks until it ends.

        command None: the image's default command (its config's entrypoint + cmd; args, if given,
        replace cmd and keep the entrypoint, as `docker run IMAGE ARGS`); cwd and user default to
        the image's workdir and user, env adds to the image's env.

        stdin: bytes or a stream (binary file, iterable of bytes) sent as the command reads;
        on_output(stream, line) per line, on_data(stream, bytes) exactly as output comes;
        tty=(rows, cols): on a pseudo-terminal; controls(): signals and sizes to send now;
        user: USER, UID, USER:GROUP or UID:GID of the container's /etc/passwd (default root);
        capture=False: the result's stdout and stderr stay empty (output too big to hold)."""
        return self._svc.containers.run(self.name, command, timeout=timeout, on_output=on_output,
                                        env=env, cwd=cwd, stdin=stdin, on_data=on_data, tty=tty,
                                        controls=controls, user=user, args=args, capture=capture)

    def running_commands(self) -> list[str]:
        """Ids of the commands started by run that still run, oldest first."""
        from ..services.commands import running

        return running(self._svc.containers, self.name)

    def kill(self, command_id: str | None = None, signal: int = 15) -> str:
        """Signal a running command (default: the only one started by run; refused if several
        run, with their ids). The id signalled."""
        from ..services.commands import kill

        return kill(self._svc.containers, self.name, command_id, signal)

    def create_file(self, path: str, content, mode: int = 0o644) -> str:
        return self._svc.containers.create_file(self.name, path, content, mode)

    def load_archive(self, archive: str, dest: str = "/root", *, max_bytes: int | None = None,
                     max_members: int | None = None) -> int:
        """Extract a tar archive into the container's home directory (or dest); refused if it
        unpacks to more than max_bytes (default 1 GiB) or holds more than max_members (100,000)."""
        return self._svc.containers.load_archive(self.name, archive, dest, max_bytes=max_bytes,
                                                 max_members=max_members)

    def read_file(self, path: str, max_bytes: int = 64 << 20) -> bytes:
        """The bytes of the container's file path (a symlink there is refused, never followed);
        refused above max_bytes (copy_out such a file instead)."""
        from ..services.files import read_file

        return read_file(self._svc.containers, self.name, path, max_bytes)

    def copy_out(self, path: str, dest: str) -> str:
        """Copy the container's file or directory path to the host path dest (into it if it is a
        directory); symlinks inside are copied as symlinks, never followed. The host path written."""
        from ..services.files import copy_out

        return copy_out(self._svc.containers, self.name, path, dest)[0]

    def copy_in(self, src: str, dest: str, mode: int | None = None) -> str:
        """Copy the host file or directory src to dest in the container (into it if it is a
        directory there), through the same checks as create_file and load_archive; mode replaces
        a file's own. The path written."""
        from ..services.files import copy_in

        return copy_in(self._svc.containers, self.name, src, dest, mode=mode)[0]

    pull = copy_out  # the names the issue tracker and other tools use
    push = copy_in

    def add_startup_command(self, command: str) -> tuple[str, ...]:
        return self._svc.containers.add_startup_command(self.name, command)

    def remove_startup_command(self, index_or_command) -> tuple[str, ...]:
        return self._svc.containers.remove_startup_command(self.name, index_or_command)

    def logs(self, since: int = 0, follow: bool = False):
        """(offset, record dict) pairs of the agent's log, as the agent wrote them."""
        return self._svc.containers.logs(self.name, since=since, follow=follow)

    def log_records(self, since: int = 0, follow: bool = False):
        """The agent's log as LogRecord values (output decoded to text); follow waits for more."""
        return log_records(self.logs(since=since, follow=follow))

    def save_image(self, path: str, flatten: bool = True, name: str | None = None, progress=None,
                   sign: str | None = None):
        """Squash this container into an .aimg file; returns the Image (id = sha256). sign: a
        private key (file, or a `trust keygen` name) whose signature goes to path + ".sig"."""
        return self._svc.images.save(self.name, path, flatten=flatten, image_name=name, progress=progress,
                                     sign=sign)


class Service:
    def __init__(self, ports: Ports):
        self.ports = ports
        self.settings = ports.settings
        self.containers = ContainerService(ports)
        self.bases = BaseService(ports)
        self.images = ImageService(ports, self.containers, self.bases)
        from ..services.registry import RegistryService  # registry: push, pull (docs/registry.md)

        self.registry = RegistryService(ports, self.images)

    def provision(self, name: str | None = None, base: str | None = None, memory: str | None = None,
                  cpus: float | None = None, raw: bool = False, privileged: bool = False,
                  caps_add=(), pids: int | None = None, unprivileged: bool | None = None,
                  disk: int | str | None = None, publish=(), image: str | None = None,
                  start_default: bool = False, publish_all: bool = False) -> Container:
        """A new container with a static IP and a random MAC, on base (default: the busybox base),
        or on image: any stored image (imported, loaded, pulled or a base) by id, unique id prefix
        or name (a name several images share is refused, naming them).

        Root inside is an unprivileged host uid (settings idmap_base and up) with a Docker-like
        capability set; caps_add (e.g. ["net_admin"], names from capabilities(7)) widens it.
        privileged=True makes root inside the host's root: unsafe for untrusted code.
        memory ("256M"), cpus (cores, e.g. 0.5) and pids (default 4096) set cgroup limits.
        disk ("2G", or bytes) bounds what the container writes (default: settings disk_default,
        10G, or half the data root's free space if less; "0": no bound).
        raw=True unpacks the image into a plain directory in overlays/raw/ (no squashfs, no
        overlay: slow to make). unprivileged=True is accepted (it is the default).
        publish (["8080:80", "127.0.0.1:5353:53/udp"]) forwards host ports to the container's
        (docs/networking.md); a port already in use or published is refused (PortTaken).
        publish_all=True publishes each port the image exposes on a free host port (Docker's -P);
        start_default=True runs the image's default command at every start (docs/oci.md)."""
        if unprivileged is False:
            raise InvalidValue("containers are unprivileged by default; unprivileged=False is ambiguous: "
                               "pass privileged=True (unsafe for untrusted code) to opt out")
        if unprivileged and privileged:
            raise InvalidValue("privileged=True and unprivileged=True contradict each other")
        if name is not None:
            validate_name(name)  # before any slow work, such as building the default base
        found = self._image(image, base)
        r = self.containers.provision(name=name, image_id=found.id, memory=memory, cpus=cpus, raw=raw,
                                      privileged=privileged, caps_add=caps_add, pids=pids, disk=disk,
                                      publish=publish, start_default=start_default, publish_all=publish_all)
        return Container(self, r.name)

    def _image(self, image: str | None, base: str | None):
        """The image a container is made from: a stored image by reference, or a base by name."""
        if image is None:
            return self.bases.resolve(base)
        if base is not None:
            raise InvalidValue("give base= or image=, not both")
        return self.images.resolve(image, unique=True)

    def get(self, name: str) -> Container:
        self.containers.get(name)
        return Container(self, name)

    def list_containers(self) -> list[Container]:
        return [Container(self, r.name) for r in self.containers.list()]

    def container_infos(self) -> list[dict]:
        """info() of every container, with their states read at once."""
        states = self.containers.states()
        return [Container(self, r.name).info(states.get(r.name, "MISSING")) for r in self.containers.list()]

    def inspect(self, name: str) -> dict:
        """Everything the reservation of container name holds (no key material), its state and
        its image's name."""
        from ..domain.image import lineage

        r = self.containers.get(name)
        data = {k: v for k, v in r.to_dict().items() if k != "agent_key"}
        images = self.ports.repo.read().images
        try:
            chain = lineage(images, r.image)
        except AppContainersError:  # a missing parent: inspect still shows the rest
            chain = []
        return {**data, "state": self.containers.state(name), "privileged": r.idmap is None,
                "image_name": images[r.image].name if r.image in images else None,
                "image_chain": [{"id": i.id, "name": i.name, "kind": i.kind} for i in chain],
                "rootfs": self.settings.layout.rootfs(name), "upper": self.containers.upper(r)}

    def stats(self, name: str) -> dict:
        """cpu_seconds, memory_bytes, pids (from the container's cgroup; None when stopped) and
        disk_bytes (what its writable layer holds)."""
        r = self.containers.get(name)
        rel = f"appcontainers-{self.settings.root_id}.payload.{name}"  # lxc.cgroup.dir.container
        monitor = self.ports.monitor
        return {"name": name, "state": self.containers.state(name), **monitor.usage(rel),
                "disk_bytes": monitor.disk_used(self.containers.upper(r))}

    def image_size(self, image) -> int | None:
        """Bytes of a stored image's file (None if it cannot be read)."""
        try:
            return os.path.getsize(self.settings.layout.image_file(image.id, image.kind))
        except OSError:
            return None

    def reconcile(self, dry_run: bool = False) -> list[str]:
        """Compare the state with reality (containers, mounts, veths, dirs, temp files, unfinished
        operations) and repair each difference; returns what was done (or would be, dry_run)."""
        from ..services.reconcile import Reconciler

        return Reconciler(self.ports, self.containers).run(dry_run=dry_run)

    def inspect_image(self, ref: str) -> dict:
        """{"id", "kind", "manifest"} of an .aimg file (verified first) or of a stored image."""
        if os.path.exists(ref):
            image_id, manifest = self.ports.codec.verify(ref)
            return {"id": image_id, "kind": None, "manifest": manifest}
        return self.images.resolve(ref).to_dict()

    @host_errors("mount image")
    def mount_image(self, ref: str, directory: str) -> list[str]:
        """Serve an image (file or stored), its parent layers merged, read-only at directory,
        through the FUSE image reader; returns the layer files. Unmount with unmount_image."""
        files = self.images.layer_files(ref)
        self.ports.viewer.mount(files, directory)
        return files

    @host_errors("unmount image")
    def unmount_image(self, directory: str) -> None:
        self.ports.viewer.unmount(directory)

    def events(self):
        """Live events (a generator; stop iterating to end it): a container created, started,
        stopped or destroyed (seen by the host, checked every half second) and what every
        container's agent publishes (commands started and exited)."""
        from ..services.events import StateWatch

        return self.ports.monitor.watch(self.containers.agent_endpoints, rescan=0.5,
                                        tick=StateWatch(self.containers, self.ports.clock))

    def list_bases(self):
        return self.bases.list()

    def build_base(self, kind: str = "debian", suite: str = "bookworm", include=(), name: str | None = None,
                   force: bool = False, progress=None):
        """Build a base image (kind "debian": mmdebstrap from the mirror this host's apt uses, with
        the agent run by Debian's python3) named name (default debian-SUITE); the same inputs
        return the stored image unless force. progress, if given, gets one line of text per step."""
        return self.bases.build(kind=kind, suite=suite, include=include, name=name, force=force,
                                progress=progress)

    def remove_base(self, name: str):
        """Remove a base image by name; refused while a container or image uses it."""
        return self.bases.remove(name)

    def load_image(self, path: str, ephemeral: bool = False, name: str | None = None,
                   raw: bool = False, move: bool = False, privileged: bool = False,
                   disk: int | str | None = None, caps_add=(), pids: int | None = None,
                   memory: str | None = None, cpus: float | None = None, publish=()) -> Container:
        """A new container from an .aimg file: verified, imported by id, mounted (never extracted,
        unless raw=True); ephemeral=True puts its writes in a throw-away overlay. move=True moves
        the file into the store instead of copying it (same filesystem; put back on failure).
        Unprivileged like provision(), unless privileged=True (unsafe for untrusted code);
        disk=, caps_add=, pids=, memory=, cpus= and publish= as for provision()."""
        r = self.images.load(path, ephemeral=ephemeral, name=name, raw=raw, move=move, privileged=privileged,
                             disk=disk, caps_add=caps_add, pids=pids, memory=memory, cpus=cpus, publish=publish)
        return Container(self, r.name)

    def list_images(self):
        return self.images.list()

    # ---- registry and trust (docs/registry.md) ----------------------------------------
    def push_image(self, image: str, ref: str, sign: str | None = None, tls_verify: bool = True,
                   progress=None):
        """Push a stored image and its parents to ref (HOST[:PORT]/REPO[:TAG], docker:// allowed)
        as an OCI artifact; blobs the registry has are not sent again. sign: a private key (file
        or `trust keygen` name). tls_verify=False: a plain-HTTP or self-signed registry.
        progress(what, bytes done, bytes in all). A PushResult (digest, uploaded, skipped)."""
        return self.registry.push(image, ref, sign=sign, tls_verify=tls_verify, progress=progress)

    def pull_image(self, ref: str, name: str | None = None, tls_verify: bool = True,
                   allow_unsigned_import: bool = False, progress=None):
        """Pull ref (tag or @sha256:DIGEST) into the store: layers already stored are not
        downloaded, each one is verified (digest, then checksum) before it enters, and the
        trust policy is checked first. An ordinary container image is imported instead
        (refused under a key policy unless allow_unsigned_import). The Image."""
        from ..domain.exceptions import NotAnArtifact

        try:
            return self.registry.pull(ref, name=name, tls_verify=tls_verify, progress=progress).image
        except NotAnArtifact as e:
            return self._import_pulled(ref, e, name, tls_verify, allow_unsigned_import)

    def _import_pulled(self, ref: str, why: Exception, name, tls_verify: bool, allow_unsigned: bool):
        source = ref if ref.startswith("docker://") else "docker://" + ref
        return self.import_image(source, name=name, tls_verify=tls_verify, allow_unsigned=allow_unsigned)

    def trust_keygen(self, name: str, directory: str | None = None) -> dict:
        """A new ed25519 key pair NAME.key (0600) and NAME.pub in directory (default: the data
        root's keys/): {"private", "public", "key"}. List NAME.pub in the trust setting to
        accept what NAME.key signs."""
        return self.images.trust.keygen(name, directory)
    def export_image(self, image_or_container: str, dest: str, format: str = "oci", progress=None,
                     tag: str = "latest") -> dict:
        """Write an image (id, id prefix or name), or a container's current tree (its image chain
        with its changes on top), as an OCI image at dest: format "oci" (an image layout
        directory), "oci-archive" or "docker-archive" (`docker load` / `podman load` take it);
        tag names it there. Atomic: nothing is left at dest on failure. progress(percent), if
        given, is called as it goes. Returns the digests written (docs/oci.md, "Export")."""
        import platform

        from ..adapters.oci.export_layout import OciExporter
        from ..services.oci_export import OciExportService

        return OciExportService(self.ports, self.containers, self.images, OciExporter(),
                                platform.machine()).export(image_or_container, dest, format, tag, progress)

    def remove_image(self, ref: str):
        """Remove an image by id, unique id prefix or name; a name two images share is refused
        (give an id)."""
        return self.images.remove(ref)

    def import_image(self, source: str, name: str | None = None, progress=None, *, tls_verify: bool = True,
                     allow_devices: bool = False, allow_setuid: bool = False, allow_unsigned: bool = False):
        """Import an OCI image as a chain of layered images (one per OCI layer); the top Image.

        source: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE, docker://HOST/NAME:TAG
        (tls_verify=False for a plain-HTTP registry) or a rootfs tar (`docker export`). Layers with
        device nodes or setuid files are refused unless allowed (docs/oci.md). Under a trust
        policy of keys an import (it carries no signature of ours) is refused unless
        allow_unsigned (docs/registry.md)."""
        from ..domain.oci import ImportLimits
        from ..services.oci_import import OciImportService

        self.images.trust.admit_import(source, allow_unsigned)  # before anything is read
        limits = ImportLimits(devices=allow_devices, setuid=allow_setuid)
        return OciImportService(self.ports).import_image(source, name, progress, tls_verify, limits)


class _Lazy:
    """Stands for an adapter until first used: `ls` or `gc` never import the image codec, the
    base builders or ZeroMQ (about 14 ms of a CLI call)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make, self._made = make, None

    def _get(self) -> Any:
        if self._made is None:
            self._made = self._make()
        return self._made

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._get()(*args, **kwargs)


def _lazy(make: Callable[[], T]) -> T:
    """A _Lazy typed as what make returns: it forwards every attribute and call to it."""
    return cast(T, _Lazy(make))


def build_ports(settings: Settings) -> Ports:
    from ..adapters.aimg.image_viewer import ImageViewer
    from ..adapters.mounts.sized_dir import SizedDirs
    from ..adapters.mounts.fuse_overlay import FuseMounter
    from ..adapters.host.hostfs import HostFs
    from ..adapters.net.hostnet import HostNetwork
    from ..adapters.net.dns import DnsmasqResolver
    from ..adapters.host.hostproc import HostProcesses
    from ..adapters.store.json_store import JsonStore
    from ..adapters.mounts.kernel_mount import KernelMounter
    from ..adapters.lxc.lxc_cli import LxcDriver
    from ..adapters.lxc.monitor import HostMonitor
    from ..adapters.mounts.raw_mount import RawMounter

    def codec() -> ImageCodec:
        from ..adapters.aimg.squashfs import SquashfsCodec
        return SquashfsCodec()

    def skeletons() -> SkeletonsPort:
        from ..adapters.lxc.skeletons import Skeletons
        return Skeletons(L.skeletons)

    def busybox() -> BaseBuilder:
        from ..adapters.bases.busybox_base import BusyboxBaseBuilder
        return BusyboxBaseBuilder(the_codec, L.tmp, settings.squashfs_level)

    def debian() -> DebianBuilder:
        from ..adapters.bases.debian_base import DebianBaseBuilder
        return DebianBaseBuilder(the_codec, L.tmp, settings.squashfs_level)

    def signing() -> Signing:
        from ..adapters.registry.signing import Ed25519Signing
        return Ed25519Signing()

    def registries() -> Registries:
        from ..adapters.registry.client import HttpRegistries
        return HttpRegistries()
    def runtime() -> RuntimeBuilderPort:
        from ..adapters.bases.runtime import RuntimeBuilder
        return RuntimeBuilder()

    def agents() -> Agents:
        from ..adapters.bus.zmq_bus import AgentClient
        return AgentClient

    def oci() -> OciSource:
        from ..adapters.oci.source import OciSources
        return OciSources()

    import time

    L = settings.layout
    the_codec = _lazy(codec)
    return Ports(
        settings=settings, repo=JsonStore(L.resources, settings.subnet), driver=LxcDriver(L.lxcpath),
        mounters=Mounters(kernel=KernelMounter(), fuse=FuseMounter(), raw=RawMounter()),
        codec=the_codec, net=HostNetwork(), fs=HostFs(), skeletons=_lazy(skeletons),
        base_builder=_lazy(busybox), agents=_lazy(agents), clock=time.time, rng=random.SystemRandom(),
        procs=HostProcesses(), debian_builder=_lazy(debian), viewer=ImageViewer(), disks=SizedDirs(),
        dns=DnsmasqResolver(), registries=_lazy(registries), signing=_lazy(signing),
        runtime=_lazy(runtime), oci=_lazy(oci), monitor=HostMonitor(),
    )


def setup_service(reconcile: bool = True, **settings) -> Service:
    """The Service with real adapters. Keyword settings (root=, bridge=, subnet=, ...) override
    the defaults; APPCONTAINERS_ROOT (and _BRIDGE, _SUBNET, _MOUNTER, _ISOLATION, _NAT, _DNS_UPSTREAM)
    override the defaults too. isolation="default" keeps the containers from the host's own
    services (but DNS to the root's resolver), "open" lets them reach those too, "strict" also
    keeps them from each other but for published ports (docs/security.md, "Network").
    nat=False (APPCONTAINERS_NAT=0): no egress beyond the bridge (docs/networking.md);
    dns_upstream is the resolv.conf whose servers the root's resolver forwards to (docs/dns.md)."""
    if os.geteuid() != 0:
        raise NotRoot()
    s = Settings.from_env(**settings)
    from ..adapters.host import data_root, subids

    data_root.prepare(s)
    subids.ensure_range(s.idmap_base, s.idmap_size)  # for newuidmap, if LXC finds it on PATH
    svc = Service(build_ports(s))
    if reconcile:
        svc.reconcile()  # cheap: what a crashed process or host left behind
    return svc
