"""A container's claim on the host: its name, address, MAC and image."""
from __future__ import annotations

import ipaddress
import re
from typing import Any, Callable, Collection

import attrs

from .capabilities import validate_caps
from .exceptions import InvalidName, InvalidValue
from .network import normalize_mac
from .publish import Published, parse_all
from .sizes import MIN_DISK

NAME_MAX = 40
PIDS_DEFAULT = 4096  # a container's process limit unless provision(pids=...) says otherwise
PIDS_MAX = 4194304  # the kernel's highest pid_max
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")

# Where an operation stands; anything but READY is an intent a crash may leave behind.
PROVISIONING, READY, DESTROYING = "provisioning", "ready", "destroying"
STATUSES = (PROVISIONING, READY, DESTROYING)

Validator = Callable[[Any, Any, Any], None]


def validate_name(name: object) -> str:
    """A container name is a DNS label (it becomes the hostname): a-z, 0-9 and '-'."""
    if not isinstance(name, str):
        raise InvalidName(name, "a name must be a string")
    if not name:
        raise InvalidName(name, "a name cannot be empty")
    if len(name) > NAME_MAX:
        raise InvalidName(name, f"at most {NAME_MAX} characters")
    if not _NAME_RE.fullmatch(name):
        raise InvalidName(name, "use lowercase letters a-z, digits and '-', starting and ending "
                                "with a letter or digit")
    return name


def _check_name(_inst: object, _attr: object, value: Any) -> None:
    validate_name(value)


def _check_ip(_inst: object, _attr: object, value: Any) -> None:
    # A string only: ipaddress also takes ints and packed bytes, which would end up in the JSON.
    try:
        if not isinstance(value, str):
            raise ValueError
        ipaddress.IPv4Address(value)
    except ValueError:
        raise InvalidValue(f"invalid IPv4 address {value!r}") from None


def _one_of(choices: Collection[object]) -> Validator:
    """An attrs validator raising InvalidValue (not attrs' ValueError) for a value outside choices."""
    def check(_inst: object, attr: "attrs.Attribute[Any]", value: object) -> None:
        if value not in choices:
            raise InvalidValue(f"invalid {attr.name} {value!r}: expected one of {', '.join(map(repr, choices))}")
    return check


def _instance_of(kind: type) -> Validator:
    def check(_inst: object, attr: "attrs.Attribute[Any]", value: object) -> None:
        if not isinstance(value, kind):
            raise InvalidValue(f"invalid {attr.name} {value!r}: expected a {kind.__name__}")
    return check


def _commands(value: Any) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)):
        raise InvalidValue("startup commands must be a list of strings, not one string")
    try:
        out = tuple(value)
    except TypeError:
        raise InvalidValue(f"startup commands must be a list of strings, not {value!r}") from None
    for c in out:
        if not isinstance(c, str) or not c.strip():
            raise InvalidValue(f"invalid startup command {c!r}: a non-empty string is needed")
        if "\x00" in c:
            raise InvalidValue("a startup command cannot contain a NUL byte")
    return out



def _idmap(value: Any) -> tuple[int, int] | None:
    return None if value is None else tuple(value)  # checked by _check_idmap


@attrs.frozen
class Reservation:
    """Everything the host holds for one container."""

    name: str = attrs.field(validator=_check_name)
    ip: str = attrs.field(validator=_check_ip)
    mac: str = attrs.field(converter=normalize_mac)
    image: str = attrs.field(validator=_instance_of(str))
    ephemeral: bool = attrs.field(default=False, validator=_instance_of(bool))
    startup_commands: tuple[str, ...] = attrs.field(default=(), converter=_commands)
    created: float = attrs.field(default=0.0, converter=float)
    status: str = attrs.field(default=READY, validator=_one_of(STATUSES))
    mounter: str = attrs.field(default="kernel", validator=_one_of(("kernel", "fuse", "raw")))
    # The process doing an unfinished operation (status provisioning/destroying), as hostproc tokens.
    owner: str | None = attrs.field(default=None)
    boot: str | None = attrs.field(default=None)  # boot id when reserved: an ephemeral one dies with the boot
    started: bool = attrs.field(default=False)  # has run since it was reserved (ephemeral clean-up)
    memory: str | None = attrs.field(default=None)  # cgroup memory limit, e.g. "256M"
    # Root inside is an unprivileged host uid: (first host id, count) of its id map, or None.
    idmap: tuple[int, int] | None = attrs.field(default=None, converter=_idmap)
    cpus: float | None = attrs.field(default=None)  # CPU quota in cores
    # The CURVE public key (Z85) the container's agent must prove it holds; made at each start.
    agent_key: str | None = attrs.field(default=None, validator=attrs.validators.optional(_instance_of(str)))
    # Capabilities kept on top of the default set (capabilities(7) names, lowercase, no cap_).
    caps_add: tuple[str, ...] = attrs.field(default=(), converter=validate_caps)
    pids: int = attrs.field(default=PIDS_DEFAULT)  # cgroup pids.max

    @pids.validator
    def _check_pids(self, _attr: object, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= PIDS_MAX:
            raise InvalidValue(f"invalid pids limit {value!r}: a whole number of processes, 1 to {PIDS_MAX}")
    # Bound on what the container writes, in bytes (its upper on a filesystem of that size), or None.
    disk: int | None = attrs.field(default=None)
    # Published ports, canonical specs ("8080:80/tcp", "127.0.0.1:5353:53/udp"): domain.publish.
    publish: tuple[str, ...] = attrs.field(default=(), converter=parse_all)
    # The image's default command (its RunConfig: entrypoint + cmd) runs at every start, like a
    # startup command, after the others.
    start_default: bool = attrs.field(default=False, validator=_instance_of(bool))

    @property
    def published(self) -> tuple[Published, ...]:
        return tuple(Published.parse(s) for s in self.publish)

    @memory.validator
    def _check_memory(self, _attr: object, value: object) -> None:
        if value is not None and not re.fullmatch(r"[1-9][0-9]*[KMG]?", str(value)):
            raise InvalidValue(f"invalid memory limit {value!r}: a size like 512M or 2G")

    @idmap.validator
    def _check_idmap(self, _attr: object, value: tuple[Any, ...] | None) -> None:
        if value is not None and (len(value) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                                             for v in value)
                                  or value[0] < 1 or value[1] < 1 or value[0] + value[1] > 2 ** 32 - 1):
            raise InvalidValue(f"invalid id map {value!r}: (first host id >= 1, count >= 1)")

    @cpus.validator
    def _check_cpus(self, _attr: object, value: object) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0.01 <= value <= 1024):
            raise InvalidValue(f"invalid cpus limit {value!r}: a number of cores like 0.5 or 2")

    @disk.validator
    def _check_disk(self, _attr: object, value: object) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < MIN_DISK):
            raise InvalidValue(f"invalid disk bound {value!r}: at least {MIN_DISK >> 20}M")

    def to_dict(self) -> dict[str, Any]:
        d = attrs.asdict(self)
        d["startup_commands"] = list(self.startup_commands)
        d["idmap"] = None if self.idmap is None else list(self.idmap)
        d["caps_add"] = list(self.caps_add)
        d["publish"] = list(self.publish)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Reservation":
        if not isinstance(data, dict):
            raise InvalidValue("reservation record is not a JSON object")
        try:
            return cls(
                name=data["name"], ip=data["ip"], mac=data["mac"], image=data["image"],
                ephemeral=data.get("ephemeral", False),
                startup_commands=data.get("startup_commands", ()),
                created=data.get("created", 0.0), status=data.get("status", READY),
                mounter=data.get("mounter", "kernel"), owner=data.get("owner"),
                boot=data.get("boot"), started=bool(data.get("started", False)),
                memory=data.get("memory"), cpus=data.get("cpus"), idmap=data.get("idmap"),
                agent_key=data.get("agent_key"),
                caps_add=data.get("caps_add", ()), pids=data.get("pids", PIDS_DEFAULT),
                disk=data.get("disk"), publish=data.get("publish", ()),
                start_default=data.get("start_default", False),
            )
        except KeyError as e:
            raise InvalidValue(f"reservation record lacks {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise InvalidValue(f"malformed reservation record: {e}") from None
