"""Every error appcontainers raises on purpose: one base, one line each."""
from __future__ import annotations

import errno
from typing import Sequence


class AppContainersError(Exception):
    """Base of every appcontainers error; str() is one clear line for people."""


class InvalidName(AppContainersError):
    """A container or image name outside the allowed charset or length."""

    def __init__(self, name: object, reason: str) -> None:
        self.name, self.reason = name, reason
        super().__init__(f"invalid name {name!r}: {reason}")


class InvalidValue(AppContainersError):
    """A value (address, MAC, path, setting) that is malformed."""


class PoolExhausted(AppContainersError):
    """No free address is left in the pool."""

    def __init__(self, network: str) -> None:
        self.network = network
        super().__init__(f"address pool {network} is exhausted: destroy a container or widen the subnet")


class NameTaken(AppContainersError):
    """A container of that name already exists."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"a container named {name!r} already exists")


class UnknownContainer(AppContainersError):
    """No container of that name exists."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no container named {name!r}")


class UnknownImage(AppContainersError):
    """No image of that id, name or path exists."""

    def __init__(self, ref: str) -> None:
        self.ref = ref
        super().__init__(f"no image {ref!r}")


class ImageCorrupt(AppContainersError):
    """An image file that fails verification."""

    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"image {path} is not usable: {reason}")


class InUse(AppContainersError):
    """A resource still used by something else."""


class StateCorrupt(AppContainersError):
    """The state file cannot be read; it is kept as it is for inspection."""

    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"state file {path} is unreadable ({reason}); it was left untouched: "
                         f"inspect or move it aside")


class UnsafePath(AppContainersError):
    """A path or archive member that would escape the container's filesystem."""


class CommandFailed(AppContainersError):
    """An external tool failed; keeps the argv, exit code and output."""

    def __init__(self, argv: Sequence[str], returncode: int, output: str = "") -> None:
        self.argv, self.returncode, self.output = tuple(argv), returncode, output
        tail = output.strip().splitlines()[-3:]
        detail = (": " + " | ".join(tail)) if tail else ""
        super().__init__(f"{argv[0]} exited with {returncode}{detail} (command: {' '.join(self.argv)})")


class CommandTimeout(AppContainersError):
    """An external tool or container command ran past its timeout and was killed."""

    def __init__(self, what: str, timeout: float, output: str = "") -> None:
        self.what, self.timeout, self.output = what, timeout, output
        super().__init__(f"{what} did not finish within {timeout:g}s and was killed")


class ToolMissing(AppContainersError):
    """A required host tool is not installed."""

    def __init__(self, tool: str, package: str) -> None:
        self.tool, self.package = tool, package
        super().__init__(f"{tool} not found: install {package} (e.g. `apt-get install {package}` "
                         f"or run scripts/setup-host)")


class NotRoot(AppContainersError):
    """The operation needs root."""

    def __init__(self, what: str = "appcontainers") -> None:
        super().__init__(f"{what} needs root (LXC, mounts and loop devices): run it as root or with sudo")


class ContainerStateError(AppContainersError):
    """The container is not in a state that allows the operation."""


class AgentUnavailable(AppContainersError):
    """The in-container agent did not answer."""


class BaseBuildFailed(AppContainersError):
    """Building a base image failed (mirror unreachable, unknown suite or package); keeps the output."""

    def __init__(self, reason: str, output: str = "") -> None:
        self.reason, self.output = reason, output
        super().__init__(f"cannot build the base image: {reason}")


class BaseNameTaken(AppContainersError):
    """A base of that name exists and was built from other inputs."""

    def __init__(self, name: str, image_id: str) -> None:
        self.name, self.image_id = name, image_id
        super().__init__(f"base {name!r} exists ({image_id[:12]}) and was built from other inputs: "
                         f"give another name, or force (--force) to replace it")


class IdmapFailed(AppContainersError):
    """The kernel refused an idmapped mount (the caller may fall back to FUSE)."""


class UnsafeHost(AppContainersError):
    """The host is not set up so that containers stay confined (data root, subordinate ids)."""


class HostError(AppContainersError):
    """A host system call failed (a full disk, a file that went away, ...); keeps the OSError."""

    def __init__(self, action: str, error: OSError) -> None:
        self.action, self.error = action, error
        where = f" ({error.filename})" if error.filename else ""
        full = error.errno in (errno.ENOSPC, errno.EDQUOT)
        hint = ": the data root's filesystem is full, free some space" if full else ""
        super().__init__(f"{action} failed: {error.strerror or error}{where}{hint}")


class PortTaken(AppContainersError):
    """A host port asked for publishing is already published or in use on the host."""

    def __init__(self, spec: str, reason: str) -> None:
        self.spec, self.reason = spec, reason
        super().__init__(f"cannot publish {spec}: {reason}")


class RegistryError(AppContainersError):
    """A registry refused or failed a push or pull (unreachable, 401, unknown manifest, bad digest)."""

    def __init__(self, where: str, reason: str) -> None:
        self.where, self.reason = where, reason
        super().__init__(f"registry {where}: {reason}")


class NotAnArtifact(RegistryError):
    """The reference names an ordinary container image, not an appcontainers artifact (import it)."""


class Untrusted(AppContainersError):
    """An image the trust policy refuses (unsigned, or signed by no trusted key)."""

    def __init__(self, what: str, reason: str) -> None:
        self.what, self.reason = what, reason
        super().__init__(f"{what} refused by the trust policy: {reason}")
class SourceUnreadable(AppContainersError):
    """An import source could not be read (skopeo failed: a registry down, a missing tag)."""

    def __init__(self, source: str, reason: str) -> None:
        self.source, self.reason = source, reason
        super().__init__(f"cannot read {source}: {reason}")
