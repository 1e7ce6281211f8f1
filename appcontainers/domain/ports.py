"""The ports the services need, as small Protocols. No adapter is imported here.

services/ports.Ports is typed field by field with them, so mypy checks every service call
against its port; the real adapters and the fakes in tests/fakes.py implement them without
inheriting from them, and tests/contract runs one suite per port against both.
A power only some adapters have (a read-only bind, a FUSE view, shifted ids) is its own port.
"""
from __future__ import annotations

import builtins
from contextlib import AbstractContextManager
from typing import Any, Callable, Iterable, Iterator, Protocol

from .firewall import RootRules
from .oci import ImportLimits, ImportSource, OciImage, OciLayer
from .resolver import ResolverPlan
from .state import State

LineCallback = Callable[[str, str], None]  # (stream name "stdout"/"stderr", line without newline)
DataCallback = Callable[[str, bytes], None]  # (stream name, output bytes exactly as they came)
# What a running command's caller sends it now: signals (int) and terminal sizes ((rows, cols)).
Controls = Callable[[], "list[int | tuple[int, int]]"]
Progress = Callable[[int], None]           # percent done
JsonDict = dict[str, Any]                  # a manifest, an agent config or record, as JSON has it
IdMap = tuple[int, int]                    # (first host id, count): container id 0 is host id first
FileOwner = tuple[int, int, int]           # (uid, gid, mode) of a file moved into the store
Clock = Callable[[], float]                # seconds since the epoch


class ResourceRepository(Protocol):
    def transaction(self) -> AbstractContextManager[State]:
        """Exclusive, atomic: the yielded State is saved on a clean exit, dropped on an error."""

    def read(self) -> State:
        """A consistent snapshot, without holding the lock afterwards."""


class ContainerDriver(Protocol):
    def create(self, name: str, config: str) -> None:
        """Write (or replace) the container's config."""
    def start(self, name: str, timeout: float) -> None: ...
    def stop(self, name: str, timeout: float) -> None: ...
    def destroy(self, name: str) -> None:
        """Kill it if it runs and forget it; never touches its rootfs. No error if missing."""
    def state(self, name: str) -> str:
        """'RUNNING', 'STOPPED', 'FROZEN', ... or 'MISSING'."""
    def states(self) -> dict[str, str]:
        """{name: state} of every container at once."""
    def list(self) -> builtins.list[str]:
        """The names of every container, sorted."""
    def freeze(self, name: str) -> None: ...
    def unfreeze(self, name: str) -> None: ...
    def attach(self, name: str, argv: builtins.list[str], env: dict[str, str] | None = None, cwd: str | None = None,
               timeout: float | None = None, on_output: LineCallback | None = None,
               stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
        """Run argv inside a running container: (exit code, stdout, stderr)."""


class RootfsMounter(Protocol):
    @property
    def name(self) -> str:
        """"kernel", "fuse" or "raw": what a reservation records as its mounter."""
    def available(self) -> bool: ...
    def mount(self, layers: list[str], lower_mounts: list[str], upper: str, work: str, target: str,
              idmap: IdMap | None = None) -> None:
        """layers: image files, top first, each mounted read-only at its lower mount point;
        the writable upper (and work) dir over them, merged at target. Rolls back on failure.
        idmap (host base, count): an unprivileged container's; the files stay unshifted on disk
        and show shifted at target (kernel: idmapped binds; FUSE: fuse-overlayfs' mapping)."""
    def unmount(self, target: str, lower_mounts: list[str]) -> None:
        """target (if mounted), then each lower mount point; also a bind with no lowers."""
    def is_mounted(self, target: str) -> bool: ...
    def mounted(self, prefix: str) -> list[str]:
        """This mounter's kind of mount points under prefix."""


class Binder(Protocol):
    """Read-only binds of host paths (the kernel mounter's): an unprivileged container's
    root cannot walk the host's path to a bind source, so it is re-bound under the data root."""
    def bind_ro(self, src: str, target: str) -> None:
        """A read-only bind of src at target, if not there yet; unmount(target, []) undoes it."""
    def bind_points(self, prefix: str) -> list[str]:
        """The bind points under prefix (not among mounted(): a bind's kind is its source's)."""


class ViewMounter(Protocol):
    """Read-only merged views of directories (a save of an unprivileged container packs one)."""
    def mount_view(self, dirs: list[str], target: str) -> None:
        """dirs merged (top first) read-only at target, ids as stored, no suid or devices."""
    def unmount_view(self, target: str) -> None: ...
    def is_mounted(self, target: str) -> bool: ...
    def mounted(self, prefix: str) -> list[str]: ...


class KernelMounterPort(RootfsMounter, Binder, ViewMounter, Protocol):
    """The kernel path: loop-mounted squashfs under overlayfs (idmapped binds for an unprivileged
    container), the host-path re-binds, and read-only views for saves."""
    def is_mounted(self, target: str) -> bool: ...


class FuseMounterPort(RootfsMounter, ViewMounter, Protocol):
    """The FUSE path: squashfuse under fuse-overlayfs, which can shift ids and make views."""
    def is_mounted(self, target: str) -> bool: ...


class ImageCodec(Protocol):
    def pack(self, source: str, manifest: JsonDict, dest: str, level: int | None = None,
             progress: Progress | None = None, excludes: Iterable[str] = ()) -> str:
        """Squash source with the manifest into dest (temp file, then rename); returns the id."""
    def verify(self, path: str) -> tuple[str, JsonDict]:
        """(id, manifest dict) of a valid image; raises ImageCorrupt otherwise."""
    def image_id(self, path: str) -> str:
        """The id the file's trailer claims (cheap; verify() checks it). ImageCorrupt if none."""
    def read_manifest(self, path: str) -> JsonDict:
        """The manifest, without checking the whole file."""
    def copy_verified(self, src: str, dest: str) -> tuple[str, JsonDict]:
        """Copy src to dest, checking what is written: verify() of the copy, which cannot change
        after; dest is removed if the check fails."""
    def pack_tar(self, members: Iterable[bytes], manifest: JsonDict, dest: str,
                 level: int | None = None) -> str:
        """Squash a tar stream (members already under rootfs/, no end marker) with the manifest
        into dest, never extracting it; returns the id. An error raised by members is raised."""


class OciSource(Protocol):
    """OCI import sources (adapters/oci/source.py): an image's layers and config, and each
    layer's blob as the tar members of an .aimg layer."""
    def fetch(self, source: ImportSource, work_dir: str, tls_verify: bool = True) -> OciImage:
        """The image at source; what is not an OCI layout or a tar is copied into work_dir first."""
    def members(self, image: OciImage, layer: OciLayer, limits: ImportLimits,
                on_read: Callable[[int], None] | None = None) -> Iterator[bytes]:
        """layer's tar members under rootfs/, whiteouts mapped; its digest and diff_id are checked
        at its end (ImageCorrupt), members checked as untrusted (UnsafePath)."""


class AgentClient(Protocol):
    """The host side of one container's agent (adapters/bus/zmq_bus.py)."""
    def alive(self) -> bool:
        """The agent answers now (so the container runs)."""
    def wait_ready(self, timeout: float) -> bool: ...
    def run(self, argv: list[str] | None = None, shell: str | None = None, env: dict[str, str] | None = None,
            cwd: str | None = None, stdin: Any = None, timeout: float | None = None,
            on_output: LineCallback | None = None, *, on_data: DataCallback | None = None,
            tty: tuple[int, int] | None = None,
            controls: Controls | None = None, user: str | None = None,
            capture: bool = True) -> tuple[int, bytes, bytes, JsonDict]:
        """(exit code, stdout, stderr, the agent's result record). stdin: bytes or a stream
        (a binary file, an iterable of bytes); tty=(rows, cols): on a pseudo-terminal;
        user: USER, UID, USER:GROUP or UID:GID of the container (default root); capture=False:
        stdout and stderr come back empty (the output went to on_data/on_output only)."""
    def kill(self, command_id: str, signal: int = 15) -> None:
        """Send signal to a running command's process group (nothing if it has ended)."""
    def logs(self, since: int = 0, follow: bool = False) -> Iterator[tuple[int, JsonDict]]:
        """(offset, record) pairs of the agent's log from since; follow waits for more."""


class Agents(Protocol):
    """The agent client of a container, from its agent directory and the public CURVE key its
    agent must prove it holds (None: a container started before keys; every call refuses)."""
    def __call__(self, run_dir: str, *, server_key: str | None) -> AgentClient: ...
    def new_keys(self) -> tuple[str, str]:
        """A fresh key pair for one agent: (public, secret)."""


class HostFs(Protocol):
    """Plain host file operations (adapters/host/hostfs.py)."""
    def make_dirs(self, *paths: str, mode: int = 0o755) -> None: ...
    def remove_tree(self, path: str) -> None:
        """path and all below it; no error if missing."""
    def remove_file(self, path: str) -> None:
        """No error if missing."""
    def closed_ancestor(self, path: str) -> str | None:
        """The first directory on the way to path that others may not search, or None."""
    def chmod(self, path: str, mode: int) -> None: ...
    def chown(self, path: str, uid: int, gid: int) -> None: ...
    def list_dir(self, path: str) -> list[str]:
        """Sorted names in path; [] if it is missing."""
    def mtime(self, path: str) -> float: ...
    def exists(self, path: str) -> bool: ...
    def is_dir(self, path: str) -> bool: ...
    def is_file(self, path: str) -> bool: ...
    def write_text(self, path: str, text: str, mode: int = 0o644) -> None:
        """Atomically replace path's content (its directory made if needed)."""
    def write_json(self, path: str, data: Any) -> None: ...
    def move(self, src: str, dest: str) -> None: ...
    def try_move(self, src: str, dest: str) -> FileOwner | None:
        """Rename a plain file into dest if it can be (one filesystem): its (uid, gid, mode),
        for put_back; None when it was not moved (copy instead)."""
    def put_back(self, staged: str, path: str, owner: FileOwner) -> None:
        """Undo try_move: the file goes back to path with its owner and mode."""
    def write_in_root(self, root: str, path: str, data: bytes, mode: int, shift: int = 0) -> None:
        """Write a file at path inside root, never leaving it."""
    def extract_in_root(self, root: str, dest: str, archive: str, shift: int = 0, *,
                        max_bytes: int | None = None, max_members: int | None = None) -> int:
        """Extract a tar archive into dest inside root, every member checked; the member count.
        max_bytes / max_members bound the unpacked size and the member count (None: the
        adapter's defaults)."""
    def kind_in_root(self, root: str, path: str) -> str | None:
        """"dir", "file", "link" or "other" for path inside root (a final link not followed); None if missing."""
    def read_in_root(self, root: str, path: str, max_bytes: int) -> bytes:
        """The regular file path inside root (a final symlink refused); InvalidValue if missing,
        not a regular file or larger than max_bytes."""
    def copy_out_of_root(self, root: str, path: str, dest: str) -> int:
        """Copy path inside root (file, symlink as a symlink, or tree) to the host path dest; the entry count."""
    def copy_into_root(self, root: str, src: str, dest: str, tmp_dir: str, shift: int = 0,
                       mode: int | None = None) -> int:
        """Copy the host file or tree src to dest inside root (through the checked writers); the entry count."""
    def lock(self, path: str, wait: bool = True) -> AbstractContextManager[object]:
        """An exclusive cross-process lock; wait=False raises ContainerStateError if held."""


class HostNetwork(Protocol):
    def ensure_bridge(self, name: str, gateway: str, prefixlen: int) -> None:
        """The bridge exists, up, with the gateway address; idempotent."""
    def host_macs(self) -> set[str]: ...
    def veths_on(self, bridge: str) -> list[str]: ...
    def delete_link(self, name: str) -> None: ...
    def apply_rules(self, rules: RootRules) -> None:
        """Make the data root's nftables tables say exactly rules (none: no tables); atomic;
        then switch on the sysctls they need (rules.sysctls(), never switched off)."""
    def ports_taken(self, own_table: str) -> set[tuple[str, str | None, int]]:
        """(protocol, host address or None for all, port) held by a host socket or published by
        another data root (not own_table)."""


class Resolver(Protocol):
    """The data root's DNS resolver (one per run directory): container names, forwarding."""
    def ensure(self, plan: ResolverPlan) -> None:
        """Running as plan says, its names re-read; started if not, a stale one restarted."""
    def update(self, plan: ResolverPlan) -> None:
        """A running resolver re-reads plan's names (a stale one is restarted); none is started."""
    def stop(self, run_dir: str) -> None:
        """No resolver of run_dir runs, and its files are gone; idempotent."""
    def pids(self, run_dir: str) -> builtins.list[int]:
        """The processes of run_dir's resolver (none or one)."""


class Skeletons(Protocol):
    def render_config(self, context: dict[str, Any]) -> str:
        """The LXC config text."""
    def render_files(self, context: dict[str, Any]) -> dict[str, str]:
        """{container path: text} of the files bind-mounted into the container."""


class BaseBuilder(Protocol):
    """The default (busybox) base."""
    def key(self) -> str:
        """What the base is made from: a changed key means a rebuild."""
    def build(self, dest: str, name: str, created: float) -> tuple[str, JsonDict]:
        """Build the base image at dest: (id, manifest)."""


class RuntimeBuilder(Protocol):
    """The agent's runtime tree (adapters/bases/runtime.py), bound into containers whose image
    has no init of its own."""
    def key(self) -> str:
        """What the runtime is made from: a changed key means a new tree."""
    def build(self, dest: str) -> None:
        """Make the tree at dest (absent before; appears whole or not at all)."""


class DebianBuilder(Protocol):
    """Debian bases, built on request."""
    def key(self, suite: str, include: Iterable[str] = ()) -> str:
        """Validates suite and package names; a changed key means a rebuild."""
    def build(self, dest: str, name: str, created: float, suite: str = "bookworm",
              include: Iterable[str] = (), progress: Callable[[str], None] | None = None
              ) -> tuple[str, JsonDict]: ...


class SizedDirs(Protocol):
    """A directory on a filesystem of its own, of a fixed size: what is written there can never
    take more (adapters/mounts/sized_dir.py: a sparse ext4 image, loop-mounted)."""
    def mount(self, image: str, size: int, target: str) -> None:
        """Mount the filesystem in the file image (made, size bytes, if missing) at target."""
    def unmount(self, target: str) -> None:
        """Unmount target if a sized filesystem is mounted there (else nothing)."""
    def is_mounted(self, target: str) -> bool: ...
    def free_bytes(self, path: str) -> int:
        """Bytes free for root's use on the filesystem holding path."""


class Processes(Protocol):
    """Who does an operation, and whether they still live (adapters/host/hostproc.py)."""
    def token(self) -> str: ...
    def alive(self, token: str | None) -> bool: ...
    def boot_id(self) -> str | None: ...


class Rng(Protocol):
    def getrandbits(self, k: int, /) -> int: ...


class ImageViewer(Protocol):
    """An image with its parent layers merged read-only at a directory, no container
    (adapters/aimg/image_viewer.py)."""
    def mount(self, files: list[str], directory: str) -> None:
        """files: the image file and its ancestors, top first; returns once the view is up."""
    def unmount(self, directory: str) -> None: ...


ByteProgress = Callable[[int, int], None]  # (bytes done, bytes in all) of a transfer


class RegistryClient(Protocol):
    """The distribution API of one registry (adapters/registry/client.py). Every failure is a
    RegistryError of one line (unreachable, 401, unknown manifest, digest mismatch)."""
    def push_file(self, repo: str, path: str, progress: ByteProgress | None = None) -> tuple[str, int, bool]:
        """Upload the file as a blob unless the registry has it (HEAD): (digest, size, uploaded)."""
    def push_bytes(self, repo: str, data: bytes) -> str:
        """Upload a small blob unless the registry has it; its digest."""
    def fetch_file(self, repo: str, digest: str, size: int, dest: str,
                   progress: ByteProgress | None = None) -> None:
        """Download a blob to dest (a new file), checking its size and digest as it comes; on a
        mismatch dest is removed and RegistryError raised."""
    def fetch_bytes(self, repo: str, digest: str, max_bytes: int) -> bytes:
        """A small blob, its digest checked."""
    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str:
        """Store a manifest under a tag; its digest."""
    def get_manifest(self, repo: str, reference: str, accept: Iterable[str]) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest by tag or digest; by digest, it is checked."""


class Registries(Protocol):
    """A client for host[:port]; tls_verify=False: https without verification, or plain http."""
    def __call__(self, host: str, tls_verify: bool = True) -> RegistryClient: ...


class Signing(Protocol):
    """ed25519 keys and signatures, and the signature files kept beside images
    (adapters/registry/signing.py)."""
    def generate(self, private_path: str, public_path: str) -> str:
        """A new key pair: the private key file 0600 (refused if either file exists); its key id."""
    def sign(self, private_path: str, data: bytes) -> tuple[str, str]:
        """(key id, base64 signature) of data with the private key file."""
    def verify(self, public_path: str, data: bytes, key_id: str, signature: str) -> bool:
        """Whether signature is the key file's (and key_id its id) over data."""
    def read_signatures(self, path: str) -> list[bytes]:
        """The signature documents of a signature file (none if it does not exist)."""
    def write_signatures(self, path: str, docs: list[bytes]) -> None:
        """Replace the signature file with docs (atomically)."""
class Monitor(Protocol):
    """What containers use and what their agents publish: `stats` and `events`
    (adapters/lxc/monitor.py: the cgroup files, the upper's blocks, the agents' event sockets)."""
    def usage(self, cgroup: str) -> JsonDict:
        """{"cpu_seconds", "memory_bytes", "pids"} of the cgroup (relative to the cgroup root,
        lxc.cgroup.dir.container); each None where it cannot be read (a stopped container)."""
    def disk_used(self, path: str) -> int | None:
        """Bytes the files under path take (links not followed); None if path is missing."""
    def watch(self, agents: Callable[[], dict[str, tuple[str, str | None]]], rescan: float,
              tick: Callable[[], list[JsonDict]] | None = None) -> Iterator[JsonDict]:
        """Live events, each with its "container": tick()'s first at every rescan (seconds),
        then what the agents agents() lists ({name: (agent dir, key)}) publish; never ends."""
