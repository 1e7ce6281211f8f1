"""Images: what a .aimg file's manifest says, and the record the store keeps."""
from __future__ import annotations

import math
import re
from typing import Any

import attrs

from .exceptions import InvalidValue, UnknownImage
from .reservation import _commands, _one_of

FORMAT_VERSION = 1
_ID_RE = re.compile(r"^[0-9a-f]{64}$")
_TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
KINDS = ("base", "user", "layer")  # layer: a lower layer of an imported OCI image (docs/oci.md)


def validate_image_name(name: object) -> str:
    if not isinstance(name, str) or not _TAG_RE.fullmatch(name) or ".." in name:
        raise InvalidValue(f"invalid image name {name!r}: use letters, digits, '_', '.' and '-' "
                           f"(at most 64, starting with a letter or digit)")
    return name


def _check_id(_inst: object, _attr: object, value: Any) -> None:
    if value is not None and not (isinstance(value, str) and _ID_RE.fullmatch(value)):
        raise InvalidValue(f"invalid image id {value!r}: expected 64 lowercase hex digits (sha256)")


def _check_required_id(inst: object, attr: object, value: Any) -> None:
    # An image always has an id; only a manifest's parent may be None.
    if value is None:
        raise InvalidValue("invalid image id None: expected 64 lowercase hex digits (sha256)")
    _check_id(inst, attr, value)


def _check_env(_inst: object, _attr: object, value: dict[Any, Any]) -> None:
    for k, v in value.items():
        if not isinstance(k, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
            raise InvalidValue(f"invalid environment variable name {k!r}")
        if not isinstance(v, str) or "\x00" in v:
            raise InvalidValue(f"invalid value for environment variable {k!r}")


def _strings(what: str, value: Any) -> tuple[str, ...]:
    """A tuple, refusing a lone string (which tuple() would split into characters); the
    validators check the items."""
    if isinstance(value, (str, bytes)):
        raise InvalidValue(f"{what} must be a list of strings, not one string")
    try:
        return tuple(value)
    except TypeError:
        raise InvalidValue(f"{what} must be a list of strings, not {value!r}") from None


def _host_binds(value: Any) -> tuple[str, ...]:  # named converters: mypy's attrs plugin reads them
    return _strings("host_binds", value)


def _init(value: Any) -> tuple[str, ...]:
    return _strings("init", value)


# These end up in LXC config lines: a conservative charset, so no value can start a new line.
_PATH_RE = re.compile(r"^/[A-Za-z0-9_.+@/-]*$")
_ARG_RE = re.compile(r"^[A-Za-z0-9_.+@/=:,-]+$")


def _check_binds(_inst: object, _attr: object, value: tuple[Any, ...]) -> None:
    for p in value:
        if (not isinstance(p, str) or not _PATH_RE.fullmatch(p) or "/../" in p + "/"
                or "/./" in p + "/" or p.rstrip("/") == ""):
            raise InvalidValue(f"invalid host bind path {p!r}: an absolute path of letters, digits "
                               f"and _ . + @ - /")


def _check_init(_inst: object, _attr: object, value: tuple[Any, ...]) -> None:
    for n, arg in enumerate(value):
        if not isinstance(arg, str) or not _ARG_RE.fullmatch(arg) or (n == 0 and not _PATH_RE.fullmatch(arg)):
            raise InvalidValue(f"invalid init argument {arg!r}: the init is an absolute path and plain "
                               f"words (letters, digits and _ . + @ / = : , -)")


def _check_time(_inst: Any, _attr: Any, value: float) -> None:
    # float("nan") and float("inf") parse, and would end up in resources.json as NaN/Infinity.
    if not math.isfinite(value) or value < 0:
        raise InvalidValue(f"invalid creation time {value!r}: seconds since the epoch")


_DIFF_ID_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_PORT_RE = re.compile(r"^[0-9]{1,5}/(tcp|udp|sctp)$")
_LABEL_LIMIT = 4096


def _check_diff_id(_inst: object, _attr: object, value: Any) -> None:
    if value is not None and not (isinstance(value, str) and _DIFF_ID_RE.fullmatch(value)):
        raise InvalidValue(f"invalid diff_id {value!r}: expected 'sha256:' and 64 lowercase hex digits")


def _argv(value: Any) -> tuple[str, ...]:
    return _strings("entrypoint/cmd", value)


def _check_argv(_inst: object, attr: Any, value: tuple[Any, ...]) -> None:
    for arg in value:
        if not isinstance(arg, str) or "\x00" in arg:
            raise InvalidValue(f"invalid {attr.name} argument {arg!r}: a string without NUL")


def _ports(value: Any) -> tuple[str, ...]:
    return tuple(sorted(set(_strings("exposed_ports", value))))


def _check_ports(_inst: object, _attr: object, value: tuple[Any, ...]) -> None:
    for p in value:
        if not isinstance(p, str) or not _PORT_RE.fullmatch(p) or not 0 < int(p.split("/")[0]) < 65536:
            raise InvalidValue(f"invalid exposed port {p!r}: expected PORT/tcp, PORT/udp or PORT/sctp")


def _check_labels(_inst: object, _attr: object, value: dict[Any, Any]) -> None:
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str) or len(k) + len(v) > _LABEL_LIMIT:
            raise InvalidValue(f"invalid label {k!r}: keys and values are strings of at most "
                               f"{_LABEL_LIMIT} characters")


def _check_text(_inst: object, attr: Any, value: Any) -> None:
    if not isinstance(value, str) or "\x00" in value or "\n" in value or len(value) > 4096:
        raise InvalidValue(f"invalid {attr.name} {value!r}: one line of text")


def _check_workdir(inst: object, attr: Any, value: Any) -> None:
    _check_text(inst, attr, value)
    if value and not value.startswith("/"):
        raise InvalidValue(f"invalid workdir {value!r}: an absolute path")


@attrs.frozen
class RunConfig:
    """How an image wants to be run (an OCI image's config, or what export writes as one).

    The command an image runs by default is entrypoint + cmd (as in OCI: `run NAME` with a
    command replaces cmd, keeps entrypoint). `env` is the image's environment for that command
    and for `run`; `user` is OCI's "user[:group]" text ("" = root); `workdir` "" means "/".
    """

    env: dict[str, str] = attrs.field(factory=dict, converter=dict, validator=_check_env)
    entrypoint: tuple[str, ...] = attrs.field(default=(), converter=_argv, validator=_check_argv)
    cmd: tuple[str, ...] = attrs.field(default=(), converter=_argv, validator=_check_argv)
    workdir: str = attrs.field(default="", validator=_check_workdir)
    user: str = attrs.field(default="", validator=_check_text)
    exposed_ports: tuple[str, ...] = attrs.field(default=(), converter=_ports, validator=_check_ports)
    labels: dict[str, str] = attrs.field(factory=dict, converter=dict, validator=_check_labels)

    @property
    def default_command(self) -> tuple[str, ...]:
        return self.entrypoint + self.cmd

    def to_dict(self) -> dict[str, Any]:
        return {"env": dict(self.env), "entrypoint": list(self.entrypoint), "cmd": list(self.cmd),
                "workdir": self.workdir, "user": self.user,
                "exposed_ports": list(self.exposed_ports), "labels": dict(self.labels)}

    @classmethod
    def from_dict(cls, data: Any) -> "RunConfig":
        if not isinstance(data, dict):
            raise InvalidValue("run config is not a JSON object")
        known = ("env", "entrypoint", "cmd", "workdir", "user", "exposed_ports", "labels")
        try:
            return cls(**{k: data[k] for k in known if k in data and data[k] is not None})
        except (TypeError, ValueError) as e:
            raise InvalidValue(f"malformed run config: {e}") from None


def _run_config(value: Any) -> RunConfig | None:
    if value is None or isinstance(value, RunConfig):
        return value
    return RunConfig.from_dict(value)


@attrs.frozen
class Manifest:
    """What an image says about itself (manifest.json inside the .aimg)."""

    name: str = attrs.field(validator=lambda i, a, v: validate_image_name(v))
    created: float = attrs.field(converter=float, validator=_check_time)
    parent: str | None = attrs.field(default=None, validator=_check_id)
    startup_commands: tuple[str, ...] = attrs.field(default=(), converter=_commands)
    environment: dict[str, str] = attrs.field(factory=dict, converter=dict, validator=_check_env)
    # Host paths bind-mounted read-only at the same place (the default base borrows the host's Python).
    host_binds: tuple[str, ...] = attrs.field(default=(), converter=_host_binds,
                                            validator=_check_binds)
    base: str | None = attrs.field(default=None)
    init: tuple[str, ...] = attrs.field(default=(), converter=_init, validator=_check_init)
    build_key: str | None = None
    # An OCI layer's diff_id ("sha256:<hex>" of its uncompressed tar), when the layer came from one:
    # how a layer shared by two imported images is found and stored once.
    diff_id: str | None = attrs.field(default=None, validator=_check_diff_id)
    # How the image wants to be run (OCI config): on the top image of a chain; None = not said.
    config: RunConfig | None = attrs.field(default=None, converter=_run_config)
    format_version: int = attrs.field(default=FORMAT_VERSION)

    @format_version.validator
    def _check_version(self, _attr: object, value: object) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidValue(f"invalid manifest format version {value!r}")
        if value > FORMAT_VERSION:
            raise InvalidValue(f"manifest format version {value} is newer than this appcontainers "
                               f"understands ({FORMAT_VERSION}): upgrade appcontainers")

    def to_dict(self) -> dict[str, Any]:
        d = attrs.asdict(self)
        for k in ("startup_commands", "host_binds", "init"):
            d[k] = list(d[k])
        d["config"] = None if self.config is None else self.config.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        if not isinstance(data, dict):
            raise InvalidValue("manifest is not a JSON object")
        missing = [k for k in ("format_version", "name", "created") if k not in data]
        if missing:
            raise InvalidValue(f"manifest lacks {', '.join(missing)}")
        try:
            return cls(
                name=data["name"], created=data["created"], parent=data.get("parent"),
                startup_commands=data.get("startup_commands", ()),
                environment=data.get("environment", {}), host_binds=data.get("host_binds", ()),
                base=data.get("base"), init=data.get("init", ()), build_key=data.get("build_key"),
                diff_id=data.get("diff_id"), config=data.get("config"),
                format_version=data["format_version"],
            )
        except (TypeError, ValueError) as e:
            raise InvalidValue(f"malformed manifest: {e}") from None


@attrs.frozen
class Image:
    """An image in the store: its id (sha256 of the file), manifest and kind.

    kind and origin are the store's own record, never read from an image file: origin "import"
    marks the top image an OCI import converted itself (with kind "layer", what import may reuse:
    a loaded or pulled image's manifest can claim any diff_id)."""

    id: str = attrs.field(validator=_check_required_id)
    manifest: Manifest
    kind: str = attrs.field(default="user", validator=_one_of(KINDS))
    origin: str | None = attrs.field(default=None, validator=_one_of((None, "import")))

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def parent(self) -> str | None:
        return self.manifest.parent

    @property
    def created(self) -> float:
        return self.manifest.created

    @property
    def startup_commands(self) -> tuple[str, ...]:
        return self.manifest.startup_commands

    @property
    def environment(self) -> dict[str, str]:
        return self.manifest.environment

    @property
    def format_version(self) -> int:
        return self.manifest.format_version

    def to_dict(self) -> dict[str, Any]:
        d = {"id": self.id, "kind": self.kind, "manifest": self.manifest.to_dict()}
        if self.origin is not None:
            d["origin"] = self.origin
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Image":
        if not isinstance(data, dict):
            raise InvalidValue("image record is not a JSON object")
        try:
            return cls(id=data["id"], manifest=Manifest.from_dict(data["manifest"]),
                       kind=data.get("kind", "user"), origin=data.get("origin"))
        except KeyError as e:
            raise InvalidValue(f"image record lacks {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise InvalidValue(f"malformed image record: {e}") from None


def lineage(images: dict[str, Image], image_id: str) -> list[Image]:
    """The image and its ancestors, top first; raises if a parent is missing or loops."""
    chain: list[Image] = []
    seen: set[str] = set()
    current: str | None = image_id
    while current is not None:
        if current in seen:
            raise InvalidValue(f"image {current[:12]} has a parent loop")
        seen.add(current)
        img = images.get(current)
        if img is None:
            raise UnknownImage(current)
        chain.append(img)
        current = img.parent
    return chain
