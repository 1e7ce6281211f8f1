"""Pure plans the container service executes: template context, agent config, argv."""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Collection, Iterable, Sequence

from ..domain.capabilities import kept
from ..domain.exceptions import InvalidValue
from ..domain.image import Image, RunConfig
from ..domain.network import AddressPool
from ..domain.reservation import Reservation

if TYPE_CHECKING:
    from ..config import Layout, Settings

Chain = Sequence[Image]  # an image and its ancestors, top first
from ..domain.firewall import PortForward, PortGuard, RootRules, table_name
from ..domain.resolver import ResolverPlan

# Where the agent's runtime (adapters/bases/runtime.py) is bound, read-only, in a container whose
# image has no init; the agent runs from it through the runtime's own loader (no /bin/sh needed).
RUNTIME_MOUNT = "/.appcontainers"
RUNTIME_INIT = (f"{RUNTIME_MOUNT}/lib/ld.so", "--inhibit-cache", "--library-path", f"{RUNTIME_MOUNT}/lib",
                f"{RUNTIME_MOUNT}/bin/python", "-I", "-S", "-m", "appcontainers_agent",
                "--stderr", "/run/appcontainers/agent.stderr")
DEVICES = ("1:3", "1:5", "1:7", "5:0", "5:1", "5:2", "1:8", "1:9", "136:*", "10:229")


def veth_prefix(root_id: str) -> str:
    """What every host-side veth of one data root starts with ("ac" + 6 hex of its identity)."""
    return "ac" + root_id[:6]


def veth_name(root_id: str, name: str) -> str:
    """Host-side veth name: the root's prefix + 7 hex of the name, within IFNAMSIZ (15)."""
    return veth_prefix(root_id) + hashlib.sha256(name.encode()).hexdigest()[:7]


def stray_veths(root_id: str, veths: Iterable[str], names: Collection[str]) -> list[str]:
    """The veths of this data root (by prefix) that belong to none of its containers; another
    root's veths on the same bridge, and anything not ours, are never among them."""
    ours = {veth_name(root_id, n) for n in names}
    prefix = veth_prefix(root_id)
    return [v for v in veths if v.startswith(prefix) and len(v) == 15 and v not in ours]


def root_rules(settings: Settings, reservations: Iterable[Reservation],
               resolver: str | None = None) -> RootRules:
    """The data root's nftables rules for its containers (every reservation, started or not,
    so a veth is guarded from the instant LXC makes it); resolver: the gateway, where the
    root's DNS resolver listens."""
    reservations = list(reservations)
    guards = [PortGuard(veth=veth_name(settings.root_id, r.name), mac=r.mac, ip=r.ip) for r in reservations]
    return RootRules(table=table_name(settings.root_id), bridge=settings.bridge,
                     isolation=settings.isolation, guards=guards, subnet=settings.subnet,
                     nat=settings.nat, forwards=forwards(reservations), resolver=resolver)


def forwards(reservations: Iterable[Reservation]) -> list[PortForward]:
    """The DNAT of every published port of every reservation (started or not: a port stays
    the container's from provision to destroy, across stop and start)."""
    return [PortForward(host_port=p.host_port, proto=p.proto, ip=r.ip, port=p.port, host_ip=p.host_ip)
            for r in reservations for p in r.published]


def resolver_plan(settings: Settings, gateway: str, reservations: Iterable[Reservation]) -> ResolverPlan:
    """The root's DNS resolver: on the gateway, answering every container's name."""
    return ResolverPlan(listen=gateway, run_dir=settings.layout.dns_dir, upstream=settings.dns_upstream,
                        names=[(r.name, r.ip) for r in reservations])


def has_agent(chain: Chain) -> bool:
    return any(img.manifest.init for img in chain)


def init_argv(chain: Chain) -> list[str]:
    for img in chain:
        if img.manifest.init:
            return list(img.manifest.init)
    return ["/sbin/init"]


def host_binds(chain: Chain) -> list[str]:
    seen: list[str] = []
    for img in reversed(chain):
        for b in img.manifest.host_binds:
            if b not in seen:
                seen.append(b)
    return seen


def run_config(chain: Chain) -> RunConfig | None:
    """How the image wants to be run: the config of the topmost image that has one."""
    for img in chain:
        if img.manifest.config is not None:
            return img.manifest.config
    return None


def environment(chain: Chain) -> dict[str, str]:
    env: dict[str, str] = {}
    for img in reversed(chain):  # the top image wins
        env.update(img.manifest.environment)
    return env


def command_environment(chain: Chain) -> dict[str, str]:
    """The base environment of the container's commands: the images' environment, then the run
    config's env over it."""
    config = run_config(chain)
    return {**environment(chain), **(config.env if config is not None else {})}


def default_command(chain: Chain, args: Sequence[str] | None = None) -> list[str]:
    """The image's default command, entrypoint + cmd; args, if given, replace cmd and keep the
    entrypoint (Docker's `run IMAGE ARGS`). InvalidValue if there is none."""
    config = run_config(chain)
    argv = list(config.entrypoint + (tuple(args) if args else config.cmd)) if config else list(args or ())
    if not argv:
        raise InvalidValue("the image has no default command (no entrypoint or cmd in its config): "
                           "give a command")
    return argv


def run_defaults(chain: Chain, cwd: str | None, user: str | None) -> tuple[str | None, str | None]:
    """cwd and user of a command: as given, else the image's workdir and user (None: / and root)."""
    config = run_config(chain)
    if config is None:
        return cwd, user
    return cwd or config.workdir or None, user or config.user or None


def exposed_ports(chain: Chain) -> list[tuple[int, str]]:
    """(port, protocol) the image exposes that can be published (tcp and udp)."""
    config = run_config(chain)
    found = [p.split("/") for p in (config.exposed_ports if config else ())]
    return [(int(port), proto) for port, proto in found if proto in ("tcp", "udp")]


def context(r: Reservation, layout: Layout, settings: Settings, pool: AddressPool,
            chain: Chain, runtime: str | None = None) -> dict[str, Any]:
    """The skeletons' context; runtime: the agent's runtime tree, for an image without an init."""
    init = RUNTIME_INIT if runtime and not has_agent(chain) else init_argv(chain)
    return {
        "r": r, "layout": layout, "settings": settings, "rootfs": layout.rootfs(r.name),
        "bridge": settings.bridge, "prefixlen": pool.prefixlen, "gateway": pool.gateway,
        "broadcast": pool.broadcast, "veth": veth_name(settings.root_id, r.name), "agent_dir": layout.agent_dir(r.name),
        "host_binds": [(b, b) for b in host_binds(chain)], "init": " ".join(init),
        "devices": DEVICES, "root_id": settings.root_id, "caps": kept(r.caps_add),
        "files": [], "runtime": runtime if not has_agent(chain) else None, "runtime_mount": RUNTIME_MOUNT,
    }


def agent_config(r: Reservation, chain: Chain, settings: Settings,
                 secret_key: str | None = None) -> dict[str, Any]:
    """agent.json; secret_key is the agent's half of the CURVE pair whose public half is
    r.agent_key (the file is root-only and reaches only this container)."""
    config: dict[str, Any] = {"v": 1, "startup_commands": list(r.startup_commands),
                              "environment": command_environment(chain), "log_max_bytes": settings.log_max_bytes,
                              "hostname": r.name}
    if secret_key is not None:
        config["curve_secret_key"] = secret_key
    if r.start_default:
        cwd, user = run_defaults(chain, None, None)
        config["default_command"] = {"argv": default_command(chain), "cwd": cwd or "/",
                                     **({"user": user} if user else {})}
    return config


def command(cmd: object) -> tuple[list[str] | None, str | None]:
    """(argv, shell): a str runs under /bin/sh -c, a list runs as argv."""
    if isinstance(cmd, str):
        if not cmd.strip():
            raise InvalidValue("empty command")
        return None, cmd
    if not isinstance(cmd, (list, tuple)):
        raise InvalidValue(f"invalid command {cmd!r}: a string or a non-empty list of strings")
    argv = list(cmd)
    if not argv or not all(isinstance(a, str) for a in argv):
        raise InvalidValue(f"invalid command {cmd!r}: a string or a non-empty list of strings")
    return argv, None
