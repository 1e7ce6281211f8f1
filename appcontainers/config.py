"""Settings and the data root's layout (pure path arithmetic, no I/O)."""
from __future__ import annotations

import hashlib
import os
from typing import Any

import attrs

from .domain.exceptions import InvalidValue
from .domain.firewall import ISOLATION_LEVELS
from .domain.network import parse_network
from .domain.trust import TrustPolicy

DEFAULT_ROOT = "/var/lib/appcontainers"


def _check_root(_inst, _attr, value):
    if not os.path.isabs(value):
        raise InvalidValue(f"data root {value!r} must be an absolute path")
    if any(c.isspace() for c in value) or "\\" in value:
        raise InvalidValue(f"data root {value!r} must not contain whitespace or backslashes "
                           f"(LXC's mount entries cannot carry them)")


def _flag(value: object) -> bool:
    """A bool, or its spelling in an env var: 1/0, true/false, yes/no, on/off."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise InvalidValue(f"invalid flag {value!r}: 1 or 0")


def _trust(value: object) -> str:
    """The trust setting as text: "any", or the key files joined by commas."""
    return str(TrustPolicy.parse(value))


@attrs.frozen
class Settings:
    """Every knob; setup_service(**overrides) builds one. Env vars override the defaults."""

    root: str = attrs.field(default=DEFAULT_ROOT, validator=_check_root)
    bridge: str = attrs.field(default="acbr0")
    subnet: str = attrs.field(default="10.0.100.0/24")
    mac_prefix: str | None = None
    mounter: str = attrs.field(default="auto")
    squashfs_level: int = 3
    start_timeout: float = 15.0
    stop_timeout: float = 10.0
    log_max_bytes: int = 10 * 1024 * 1024
    default_base: str = "default"
    # A container's writes are bounded by this (or, if less, half the data root's free space
    # when it is made); provision(disk=...) overrides it, "0" means no bound.
    disk_default: str = "10G"
    # Containers are unprivileged (unless privileged=True): container ids 0..idmap_size-1 are
    # host ids idmap_base.. (LXC's usual 100000/65536); their layers are idmapped binds under
    # the kernel overlay (or fuse-overlayfs shifts them). Root needs this range in /etc/subuid
    # and /etc/subgid (setup_service adds it) for newuidmap.
    idmap_base: int = 100000
    idmap_size: int = 65536
    # What the root's containers may reach on the host (domain.firewall): "default", the other
    # containers of the root but none of the host's own services; "open", those too.
    isolation: str = attrs.field(default="default")
    # Egress NAT (masquerade of the subnet leaving by any other interface than the bridge, with
    # net.ipv4.ip_forward switched on): off means containers reach nothing beyond the bridge.
    nat: bool = attrs.field(default=True, converter=_flag)
    # Where the root's resolver (dnsmasq on the bridge's gateway) forwards the names that are
    # not its containers': the servers of this resolv.conf-style file (re-read when it changes).
    dns_upstream: str = attrs.field(default="/etc/resolv.conf")
    # Which images pull, load and import accept (domain/trust.py, docs/registry.md): "any" (whose
    # checksums verify), or public key files (commas between them): only images signed by one.
    trust: str = attrs.field(default="any", converter=_trust)
    # gzip level of the layers `export` writes in the OCI forms: 1 takes 0.6x the CPU of 6 for
    # 6% more bytes on the bench tree (docs/oci.md, "Export").
    oci_gzip_level: int = attrs.field(default=1, validator=attrs.validators.in_(range(1, 10)))

    @isolation.validator
    def _check_isolation(self, _attr, value):
        if value not in ISOLATION_LEVELS:
            raise InvalidValue(f"invalid isolation {value!r}: {' or '.join(ISOLATION_LEVELS)}")

    @dns_upstream.validator
    def _check_dns_upstream(self, _attr, value):
        if not isinstance(value, str) or not value.startswith("/") or any(c.isspace() for c in value):
            raise InvalidValue(f"invalid dns_upstream {value!r}: an absolute path without whitespace")

    @mounter.validator
    def _check_mounter(self, _attr, value):
        if value not in ("auto", "kernel", "fuse"):
            raise InvalidValue(f"invalid mounter {value!r}: auto, kernel or fuse")

    @subnet.validator
    def _check_subnet(self, _attr, value):
        parse_network(value)

    @bridge.validator
    def _check_bridge(self, _attr, value):
        if not (1 <= len(value) <= 15) or not all(c.isalnum() or c in "-_" for c in value):
            raise InvalidValue(f"invalid bridge name {value!r}: 1-15 letters, digits, '-' or '_'")

    @classmethod
    def from_env(cls, environ=None, **overrides) -> "Settings":
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for key, field in (("APPCONTAINERS_ROOT", "root"), ("APPCONTAINERS_BRIDGE", "bridge"),
                           ("APPCONTAINERS_SUBNET", "subnet"), ("APPCONTAINERS_MOUNTER", "mounter"),
                           ("APPCONTAINERS_ISOLATION", "isolation"), ("APPCONTAINERS_NAT", "nat"),
                           ("APPCONTAINERS_DNS_UPSTREAM", "dns_upstream"), ("APPCONTAINERS_TRUST", "trust")):
            if env.get(key):
                values[field] = env[key]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def layout(self) -> "Layout":
        return Layout(self.root)

    @property
    def root_id(self) -> str:
        """The data root's identity (8 hex digits): its veths, cgroups and nftables tables
        carry it, so two roots (even on one bridge) never touch each other's."""
        return hashlib.sha256(os.path.normpath(self.root).encode()).hexdigest()[:8]


@attrs.frozen
class Layout:
    """Where everything lives under the data root (the seed's layout plus ours)."""

    root: str

    def _p(self, *parts) -> str:
        return os.path.join(self.root, *parts)

    @property
    def resources(self): return self._p("resources.json")
    @property
    def bases(self): return self._p("images", "bases")
    @property
    def user_images(self): return self._p("images", "user")
    @property
    def skeletons(self): return self._p("skeletons")
    @property
    def lxcpath(self): return self._p("containers")
    @property
    def tmp(self): return self._p("tmp")

    def image_file(self, image_id: str, kind: str) -> str:
        return os.path.join(self.bases if kind == "base" else self.user_images, image_id + ".aimg")

    def signature_file(self, image_id: str, kind: str) -> str:
        """The signatures kept beside a stored image (docs/registry.md, "Trust")."""
        return os.path.join(self.bases if kind == "base" else self.user_images, image_id + ".sig")

    @property
    def keys(self): return self._p("keys")

    def overlay(self, name: str, ephemeral: bool) -> str:
        return os.path.join(self.overlays, "tmp" if ephemeral else "image", name)

    def upper(self, name: str, ephemeral: bool) -> str:
        return os.path.join(self.overlay(name, ephemeral), "upper")

    def work(self, name: str, ephemeral: bool) -> str:
        return os.path.join(self.overlay(name, ephemeral), "work")

    def raw(self, name: str) -> str:
        return os.path.join(self.overlays, "raw", name)

    @property
    def disks(self): return self._p("overlays", "disks")

    def disk_image(self, name: str) -> str:
        """The filesystem image bounding a container's writes (mounted at its overlay dir)."""
        return os.path.join(self.disks, name)

    def mnt(self, name: str) -> str:
        return self._p("mnt", name)

    def rootfs(self, name: str) -> str:
        # Named rootfs so a flatten save can squash it as the image's rootfs/ directly.
        return self._p("mnt", name, "rootfs")

    def layer_mount(self, name: str, index: int) -> str:
        return self._p("mnt", name, "layers", str(index))

    def run_dir(self, name: str) -> str:
        return self._p("run", name)

    def agent_dir(self, name: str) -> str:
        return self._p("run", name, "agent")

    @property
    def overlays(self): return self._p("overlays")
    @property
    def views(self): return self._p("mnt", ".views")

    def view(self, name: str) -> str:
        return os.path.join(self.views, name, "rootfs")

    def host_bind(self, path: str) -> str:
        """Where a host path is re-bound for unprivileged containers (shared by all of them)."""
        import hashlib
        return self._p("mnt", ".binds", hashlib.sha256(path.encode()).hexdigest()[:16])

    @property
    def runtimes(self) -> str:
        """The agent's runtime trees, one per key (adapters/bases/runtime.py)."""
        return self._p("runtime")

    def runtime(self, key: str) -> str:
        return os.path.join(self.runtimes, key[:16])

    @property
    def dns_dir(self) -> str:
        """The resolver's files (pid, hosts): a dot name, which no container can have."""
        return self._p("run", ".dns")

    def lock_file(self, name: str) -> str:
        return self._p("run", ".locks", name + ".lock")

    def skel_dir(self, name: str) -> str:
        return self._p("run", name, "skel")
