"""In-memory fakes of every port the services use; they record state for tests to assert on."""
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import posixpath
import random
from typing import Any

from appcontainers.config import Settings
from appcontainers.domain.exceptions import (AgentUnavailable, AppContainersError, CommandFailed,
                                             ContainerStateError, ImageCorrupt, InvalidValue)
from appcontainers.domain.exceptions import RegistryError
from appcontainers.domain.image import Manifest
from appcontainers.domain.state import State
from appcontainers.entrypoints.api import Service
from appcontainers.services.ports import Mounters, Ports


def encode_image(manifest: dict) -> tuple[str, bytes]:
    """(id, file bytes) of a fake .aimg: the manifest, then a trailer holding its sha256."""
    body = json.dumps(manifest, sort_keys=True).encode()
    image_id = hashlib.sha256(body).hexdigest()
    return image_id, body + b"\n#" + image_id.encode()


class FakeRepo:
    """The State kept as its dict, like JsonStore: a transaction commits only on a clean exit."""

    def __init__(self, network: str):
        self._saved = State.empty(network).to_dict()
        self.fail: Exception | None = None  # raised as a transaction commits (the state unchanged)

    @contextlib.contextmanager
    def transaction(self):
        state = State.from_dict(self._saved)
        yield state
        if self.fail:
            raise self.fail
        self._saved = state.to_dict()

    def read(self) -> State:
        return State.from_dict(self._saved)


class FakeDriver:
    def __init__(self):
        self.containers: dict[str, str] = {}   # name -> 'RUNNING', 'STOPPED', 'FROZEN'
        self.configs: dict[str, str] = {}
        self.events: list[tuple[str, str]] = []  # (action, name)
        self.attached: list[dict] = []
        self.reply = (0, b"", b"")
        self.fail: Exception | None = None    # raised by create()
        self.faults: dict[str, Exception] = {}  # action (stop, destroy, attach, ...) -> error it raises

    def create(self, name, config):
        if self.fail:
            raise self.fail
        self.configs[name] = config
        self.containers.setdefault(name, "STOPPED")

    def _fault(self, action):
        if action in self.faults:
            raise self.faults[action]

    def _set(self, action, name, state):
        self._fault(action)
        if name not in self.containers:
            raise ContainerStateError(f"no container {name}")
        self.events.append((action, name))
        self.containers[name] = state

    def start(self, name, timeout): self._set("start", name, "RUNNING")
    def stop(self, name, timeout):
        if self.containers.get(name, "STOPPED") != "STOPPED":  # stopped or missing: nothing to do
            self._set("stop", name, "STOPPED")
    def freeze(self, name): self._set("freeze", name, "FROZEN")
    def unfreeze(self, name): self._set("unfreeze", name, "RUNNING")

    def destroy(self, name):
        self._fault("destroy")
        self.events.append(("destroy", name))
        self.containers.pop(name, None)
        self.configs.pop(name, None)

    def state(self, name): return self.containers.get(name, "MISSING")
    def states(self): return dict(self.containers)
    def list(self): return sorted(self.containers)

    def attach(self, name, argv, env=None, cwd=None, timeout=None, on_output=None, stdin=None):
        self._fault("attach")
        if self.state(name) != "RUNNING":
            raise ContainerStateError(f"container {name} is not running")
        self.attached.append({"name": name, "argv": list(argv), "env": env, "cwd": cwd, "stdin": stdin})
        return self.reply


class FakeMounter:
    """A RootfsMounter that records its mounts; kernel-like by default (bind_ro: the Binder port)."""

    def __init__(self, name: str = "kernel", available: bool = True):
        self.name = name
        self.mounts: dict[str, list[str]] = {}  # merged target (or bind point) -> image files / source
        self.points: set[str] = set()           # lower mount points
        self.fail: Exception | None = None      # raised by mount()
        self.works = available                  # what available() says
        self.binds: dict[str, str] = {}          # bind point -> host source (bind_ro)
        self.idmaps: dict[str, tuple | None] = {}  # merged target -> id map it was mounted with
        self.views: dict[str, list[str]] = {}   # view target -> dirs, top first (mount_view)
        self.viewed: list[tuple[str, list[str]]] = []  # every view mounted, (target, dirs)

    def mount(self, layers, lower_mounts, upper, work, target, idmap=None):
        if self.fail:
            raise self.fail
        self.idmaps[target] = idmap
        self.mounts[target] = list(layers)
        self.points.update(lower_mounts)

    def unmount(self, target, lower_mounts):
        self.mounts.pop(target, None)
        self.binds.pop(target, None)
        self.idmaps.pop(target, None)
        self.points.difference_update(lower_mounts)

    def is_mounted(self, target):
        return target in self.mounts or target in self.points or target in self.binds or target in self.views

    def available(self): return self.works
    def bind_ro(self, src, target): self.binds.setdefault(target, src)

    def bind_points(self, prefix):
        return sorted(b for b in self.binds if b.startswith(prefix.rstrip("/") + "/"))

    def mount_view(self, dirs, target):
        self.views[target] = list(dirs)
        self.viewed.append((target, list(dirs)))

    def unmount_view(self, target): self.views.pop(target, None)

    def mounted(self, prefix):
        prefix = prefix.rstrip("/") + "/"
        return sorted(p for p in {*self.mounts, *self.points, *self.views} if p.startswith(prefix))


class FakeFuseMounter(FakeMounter):
    """The FUSE mounter: the same powers (shifted ids, views), named fuse; it records only the
    id maps it was given."""

    def __init__(self, available: bool = True):
        super().__init__("fuse", available)

    def mount(self, layers, lower_mounts, upper, work, target, idmap=None):
        super().mount(layers, lower_mounts, upper, work, target, idmap)
        if idmap is None:
            self.idmaps.pop(target, None)


class FakeCodec:
    """Reads and writes fake .aimg bytes (see encode_image) in a FakeFs."""

    def __init__(self, fs: "FakeFs"):
        self.fs = fs
        self.packed: list[dict] = []
        self.fail: Exception | None = None  # raised by pack()

    def pack(self, source, manifest, dest, level=None, progress=None, excludes=()):
        if self.fail:
            raise self.fail
        Manifest.from_dict(manifest)  # never write an image that verify() would refuse
        image_id, data = encode_image(manifest)
        self.packed.append({"source": source, "manifest": manifest, "dest": dest, "level": level})
        self.fs.files[dest] = data
        return image_id

    def pack_tar(self, members, manifest, dest, level=None):
        """Reads every member (their errors are raised, as tar2sqfs's feeder raises them)."""
        if self.fail:
            raise self.fail
        Manifest.from_dict(manifest)
        size = sum(len(chunk) for chunk in members)
        image_id, data = encode_image(manifest)
        self.packed.append({"tar_bytes": size, "manifest": manifest, "dest": dest, "level": level})
        self.fs.files[dest] = data
        return image_id

    def _split(self, path) -> tuple[bytes, str]:
        data = self.fs.files.get(path)
        if not isinstance(data, bytes) or b"\n#" not in data:
            raise ImageCorrupt(path, "no such file" if data is None else "no trailer")
        body, _, image_id = data.rpartition(b"\n#")
        return body, image_id.decode()

    def image_id(self, path): return self._split(path)[1]

    def read_manifest(self, path): return json.loads(self._split(path)[0])

    def verify(self, path):
        body, image_id = self._split(path)
        if hashlib.sha256(body).hexdigest() != image_id:
            raise ImageCorrupt(path, "checksum mismatch")
        try:
            Manifest.from_dict(json.loads(body))
        except (ValueError, InvalidValue) as e:
            raise ImageCorrupt(path, f"bad manifest.json: {e}") from None
        return image_id, json.loads(body)

    def copy_verified(self, src, dest):
        if self.fs.exists(dest):
            raise FileExistsError(dest)
        result = self.verify(src)
        self.fs.copy(src, dest)
        return result


class FakeNet:
    def __init__(self):
        self.bridges: dict[str, tuple[str, int]] = {}  # name -> (gateway, prefixlen)
        self.macs: set[str] = set()                     # MACs of the host's own interfaces
        self.veths: dict[str, list[str]] = {}           # bridge -> veths on it
        self.deleted: list[str] = []
        self.rules = None                               # the last RootRules applied
        self.fail: Exception | None = None              # raised by apply_rules()
        self.taken: set = set()                         # (proto, ip or None, port) held on the host

    def apply_rules(self, rules):
        if self.fail:
            raise self.fail
        self.rules = rules

    def ports_taken(self, own_table): return set(self.taken)

    def ensure_bridge(self, name, gateway, prefixlen): self.bridges[name] = (gateway, prefixlen)
    def host_macs(self): return set(self.macs)
    def veths_on(self, bridge): return sorted(self.veths.get(bridge, []))
    def delete_link(self, name):
        self.deleted.append(name)
        self.bridges.pop(name, None)
        for veths in self.veths.values():
            if name in veths:
                veths.remove(name)


class FakeFs:
    """Files and directories in dicts; like a real tree, making a path makes its parents."""

    def __init__(self):
        self.files: dict[str, bytes | str] = {}
        self.dirs: set[str] = set()
        self.owners: dict[str, tuple[int, int]] = {}
        self.mtimes: dict[str, float] = {}
        self.modes: dict[str, int] = {}
        self.extracted: list[tuple[str, str, str]] = []  # (root, dest, archive)
        self.limits: list[dict] = []                     # {max_bytes, max_members} of each extraction
        self.held: set[str] = set()                      # lock files held
        self.faults: dict[str, Exception] = {}           # method name -> the error it raises

    def _fault(self, method):
        if method in self.faults:
            raise self.faults[method]

    def under(self, path) -> list[str]:
        """Every file and dir at or below path."""
        return sorted(p for p in {*self.files, *self.dirs} if p == path or p.startswith(path + "/"))

    def list_dir(self, path):
        path = path.rstrip("/")
        return sorted({p[len(path) + 1:].split("/")[0] for p in self.under(path) if p != path})

    def _parents(self, path):
        parent = posixpath.dirname(path.rstrip("/"))
        while parent not in ("", "/"):
            self.dirs.add(parent)
            parent = posixpath.dirname(parent)

    def make_dirs(self, *paths, mode=0o755):
        for p in paths:
            self.dirs.add(p.rstrip("/") or "/")
            self._parents(p)

    def _put(self, path, data):
        self._parents(path)
        self.files[path] = data

    def exists(self, path): return path in self.files or path in self.dirs
    def is_file(self, path): return path in self.files
    def is_dir(self, path): return path.rstrip("/") in self.dirs
    def remove_file(self, path):
        self._fault("remove_file")
        self.files.pop(path, None)

    def write_text(self, path, text, mode=0o644):
        self._put(path, text)
        self.modes[path] = mode
    def write_json(self, path, data): self._put(path, json.dumps(data))
    def chown(self, path, uid, gid): self.owners[path] = (uid, gid)
    def chmod(self, path, mode): self.modes[path] = mode

    def mtime(self, path):
        return self.mtimes.get(path, 0.0) if self.exists(path) else float("inf")  # gone: never "old"

    def closed_ancestor(self, path):
        current = ""
        for part in [p for p in path.split("/") if p]:
            current += "/" + part
            if not self.modes.get(current, 0o755) & 0o001:
                return current
        return None

    @contextlib.contextmanager
    def lock(self, path, wait=True):
        if path in self.held:
            if not wait:
                raise ContainerStateError(f"{posixpath.basename(path)} is held by another process")
            raise AssertionError(f"{path}: a second lock in one thread would wait forever")
        self.held.add(path)
        try:
            yield
        finally:
            self.held.discard(path)

    def remove_tree(self, path):
        self._fault("remove_tree")
        for p in self.under(path):
            self.files.pop(p, None)
            self.dirs.discard(p)

    def copy(self, src, dest):
        if src not in self.files:
            raise FileNotFoundError(src)
        self._put(dest, self.files[src])

    def try_move(self, src, dest):
        if src not in self.files:
            return None
        self.move(src, dest)
        return (0, 0, 0o644)

    def put_back(self, staged, path, owner):
        self.move(staged, path)

    def move(self, src, dest):
        self.copy(src, dest)
        del self.files[src]

    def write_in_root(self, root, path, data, mode, shift=0):
        self._fault("write_in_root")
        self._put(root + path, data)
        self.modes[root + path] = mode

    def kind_in_root(self, root, path):
        full = root + path
        return "dir" if full in self.dirs else "file" if full in self.files else None

    def _copy_tree(self, src, dest):
        """Copy the file or tree at src to dest; the entry count."""
        entries = self.under(src)
        if not entries:
            raise FileNotFoundError(src)
        for p in entries:
            (self.make_dirs if p in self.dirs else lambda d: self._put(d, self.files[p]))(dest + p[len(src):])
        return len(entries)

    def read_in_root(self, root, path, max_bytes):
        data = self.files.get(root + path)
        if data is None or len(data) > max_bytes:
            raise InvalidValue(f"{path} in the container is missing, not a file or too big")
        return data.encode() if isinstance(data, str) else data

    def copy_out_of_root(self, root, path, dest):
        if not self.under(root + path):
            raise InvalidValue(f"{path}: no such file or directory in the container")
        return self._copy_tree(root + path, dest)

    def copy_into_root(self, root, src, dest, tmp_dir, shift=0, mode=None):
        """src in this fake, or a real host file or tree (a test's temp dir), to dest in root."""
        if mode is not None:
            self.modes[root + dest] = mode
        if self.exists(src):
            return self._copy_tree(src, root + dest)
        if os.path.isfile(src):
            with open(src, "rb") as f:
                self._put(root + dest, f.read())
            return 1
        count = 0
        for dirpath, _dirs, files in os.walk(src):  # FileNotFoundError for nothing there, like the real one
            self.make_dirs(root + dest + dirpath[len(src):])
            for name in files:
                with open(os.path.join(dirpath, name), "rb") as f:
                    self._put(root + dest + os.path.join(dirpath, name)[len(src):], f.read())
            count += 1 + len(files)
        if not count:
            raise FileNotFoundError(src)
        return count

    def extract_in_root(self, root, dest, archive, shift=0, *, max_bytes=None, max_members=None):
        if archive not in self.files and not os.path.isfile(archive):  # in the fake, or a test's temp file
            raise InvalidValue(f"archive {archive!r} is not a file")
        self.extracted.append((root, dest, archive))
        self.limits.append({"max_bytes": max_bytes, "max_members": max_members})
        return 1


class FakeSkeletons:
    """The lines of the LXC config the services rely on, in LXC's syntax as the packaged
    skeleton writes them, and the packaged rootfs files, from the template context."""

    def render_config(self, ctx):
        r = ctx["r"]
        lines = [f"lxc.uts.name = {r.name}", f"lxc.rootfs.path = dir:{ctx['rootfs']}",
                 f"lxc.cap.keep = {' '.join(ctx['caps'])}", f"lxc.cgroup2.pids.max = {r.pids}",
                 *(f"lxc.idmap = {kind} 0 {r.idmap[0]} {r.idmap[1]}" for kind in ("u", "g") if r.idmap),
                 f"lxc.cgroup.dir.container = appcontainers-{ctx['root_id']}.payload.{r.name}",
                 f"lxc.init.cmd = {ctx['init']}", f"lxc.net.0.link = {ctx['bridge']}",
                 f"lxc.net.0.hwaddr = {r.mac}", f"lxc.net.0.ipv4.address = {r.ip}/{ctx['prefixlen']} {ctx['broadcast']}",
                 f"lxc.net.0.ipv4.gateway = {ctx['gateway']}", f"lxc.net.0.veth.pair = {ctx['veth']}",
                 f"lxc.mount.entry = {ctx['agent_dir']} run/appcontainers none bind,create=dir 0 0",
                 *(f"lxc.mount.entry = {src} {path.lstrip('/')} none ro,bind,create=dir 0 0"
                   for src, path in ctx["host_binds"]),
                 *([f"lxc.mount.entry = {ctx['runtime']} {ctx['runtime_mount'].lstrip('/')} none "
                    f"ro,bind,nosuid,nodev,create=dir 0 0"] if ctx.get("runtime") else []),
                 *(f"lxc.mount.entry = {src} {dst.lstrip('/')} none bind,optional,create=file 0 0"
                   for src, dst in ctx["files"])]
        return "\n".join(lines) + "\n"

    def render_files(self, ctx):
        r = ctx["r"]
        return {"/etc/hostname": f"{r.name}\n", "/etc/hosts": f"127.0.0.1\tlocalhost\n{r.ip}\t{r.name}\n",
                "/etc/resolv.conf": f"nameserver {ctx['gateway']}\n"}


class FakeBaseBuilder:
    INIT = "/sbin/appcontainers-init"

    def __init__(self, fs: FakeFs, key: str = "key-1"):
        self.fs, self.current_key = fs, key
        self.builds: list[str] = []  # the key of each build
        self.host_binds: list[str] = []  # host paths the base asks to bind (the busybox base's Python)

    def key(self): return self.current_key

    def build(self, dest, name, created):
        manifest = {"format_version": 1, "name": name, "created": created, "parent": None,
                    "startup_commands": [], "environment": {"LANG": "C.UTF-8"}, "host_binds": list(self.host_binds),
                    "base": name, "init": [self.INIT], "build_key": self.current_key}
        image_id, data = encode_image(manifest)
        self.fs.files[dest] = data
        self.builds.append(self.current_key)
        return image_id, manifest


class FakeRuntimeBuilder:
    """The agent's runtime: a tree (one file) per build; like the real one, never over one there."""

    def __init__(self, fs: FakeFs, key: str = "runtime-key-1"):
        self.fs, self.current_key = fs, key
        self.builds: list[str] = []  # dest of each build

    def key(self): return self.current_key

    def build(self, dest):
        if self.fs.exists(dest):
            raise FileExistsError(dest)
        self.fs.make_dirs(dest)
        self.fs.files[dest + "/bin/python"] = b"python"
        self.builds.append(dest)


class FakeAgentClient:
    """Like the real client: it talks only to a running agent holding the key it expects
    (else AgentUnavailable, nothing run); a run answers `reply`, streams its lines to
    on_output and logs started, output and exit records."""

    def __init__(self, running=lambda: True, agent_key=lambda: None):
        self.running = running  # the container runs: the agent answers
        self.agent_key = agent_key  # the public key the agent there holds (its agent.json), or None
        self.server_key = None  # the key the last caller gave, as the real client would check it
        self.run_keys: list = []  # server_key at each run
        self.ready = True
        self.waits: list[float] = []
        self.runs: list[dict] = []
        self.reply = (0, b"", b"")
        self.records: list[dict] = []
        self.kills: list[tuple[str, int]] = []  # (command id, signal) sent

    def _reach(self):
        if not self.running():
            raise AgentUnavailable("the agent is not running")
        if self.server_key is None or self.server_key != self.agent_key():
            raise AgentUnavailable("the agent did not authenticate")

    def alive(self): return self.running()

    def wait_ready(self, timeout):
        self.waits.append(timeout)
        if not (self.ready and self.running()):
            return False
        self._reach()
        return True

    def run(self, argv=None, shell=None, env=None, cwd=None, stdin=None, timeout=None, on_output=None,
            *, on_data=None, tty=None, controls=None, user=None, capture=True):
        self._reach()
        if stdin is not None and not isinstance(stdin, bytes):  # a stream: what the command would read
            stdin = stdin.read() if hasattr(stdin, "read") else b"".join(stdin)
        self.runs.append({"argv": argv, "shell": shell, "env": env, "cwd": cwd, "stdin": stdin,
                          **({"tty": tty} if tty is not None else {}),
                          **({"user": user} if user is not None else {})})
        self.run_keys.append(self.server_key)
        code, out, err = self.reply
        cid = f"c{len(self.runs)}"
        self.records.append({"v": 1, "type": "started", "id": cid, "pid": 100 + len(self.runs)})
        for stream, data in (("stdout", out), ("stderr", err)):
            if on_data is not None and data:
                on_data(stream, data)
            for seq, line in enumerate(data.splitlines(keepends=True)):
                self.records.append({"v": 1, "type": "output", "id": cid, "stream": stream, "seq": seq,
                                     "data": line.decode(errors="replace")})
                if on_output is not None:
                    on_output(stream, line.rstrip(b"\n").decode(errors="replace"))
        record = {"v": 1, "type": "exit", "id": cid, "code": code, "signal": None, "timed_out": False}
        self.records.append(record)
        return (code, out, err, dict(record)) if capture else (code, b"", b"", dict(record))

    def kill(self, command_id, signal=15):
        self._reach()
        self.kills.append((command_id, signal))

    def logs(self, since=0, follow=False):
        return iter([(i + 1, rec) for i, rec in enumerate(self.records) if i >= since])


class FakeAgents:
    """run_dir -> its FakeAgentClient (the same one each time, so its records accumulate). The
    agent there holds the key whose secret half is in the run_dir's agent.json in fs."""

    def __init__(self, driver: "FakeDriver", fs: "FakeFs"):
        self.clients: dict[str, FakeAgentClient] = {}
        self.driver, self.fs = driver, fs
        self.made = 0  # key pairs made
        self.pairs: dict[str, str] = {}  # secret -> public, of every pair made

    def _agent_key(self, run_dir):
        config = self.fs.files.get(run_dir.rstrip("/") + "/agent.json")
        return None if config is None else self.pairs.get(json.loads(config).get("curve_secret_key"))

    def __call__(self, run_dir, server_key=None):
        name = run_dir.rstrip("/").split("/")[-2]  # <root>/run/<name>/agent
        client = self.clients.setdefault(run_dir, FakeAgentClient(
            lambda: self.driver.containers.get(name) == "RUNNING", lambda: self._agent_key(run_dir)))
        client.server_key = server_key
        return client

    def new_keys(self):
        self.made += 1
        self.pairs[f"secret-{self.made}"] = f"public-{self.made}"
        return f"public-{self.made}", f"secret-{self.made}"


class FakeDisks:
    """Sized directories: target -> (image, size); images made once, kept until removed."""

    def __init__(self, fs: "FakeFs", free: int = 1 << 40):
        self.fs, self.free = fs, free
        self.mounted: dict[str, tuple[str, int]] = {}

    def mount(self, image, size, target):
        if target in self.mounted:
            raise AppContainersError(f"cannot mount at {target}: already mounted")
        self.fs.files.setdefault(image, b"ext4:%d" % size)
        self.mounted[target] = (image, size)

    def unmount(self, target): self.mounted.pop(target, None)
    def is_mounted(self, target): return target in self.mounted
    def free_bytes(self, path): return self.free


class FakeProcs:
    """Process tokens: this process is "me"; a token is alive while it is in `alive`."""

    def __init__(self):
        self.alive_tokens = {"me"}

    def token(self): return "me"
    def alive(self, token): return token in self.alive_tokens
    def boot_id(self): return "boot-1"


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0):
        self.now = start

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def make_service(fuse: bool = False, kernel: bool = True, **settings) -> Service:
    """The real Service over fakes; reach them through service.ports. fuse=True adds the FUSE
    mounter (unprivileged containers, the fallback); kernel=False makes the kernel path unavailable."""
    s = Settings(**{"root": "/srv/ac", "bridge": "actest0", "subnet": "10.0.100.0/24", **settings})
    fs = FakeFs()
    driver = FakeDriver()
    net = FakeNet()
    mounters = Mounters(kernel=FakeMounter("kernel", available=kernel),
                        fuse=FakeFuseMounter() if fuse else None)
    return Service(Ports(
        settings=s, repo=FakeRepo(s.subnet), driver=driver, mounters=mounters,
        codec=FakeCodec(fs), net=net, fs=fs, skeletons=FakeSkeletons(),
        base_builder=FakeBaseBuilder(fs), agents=FakeAgents(driver, fs), clock=FakeClock(),
        rng=random.Random(1234), procs=FakeProcs(), viewer=FakeImageViewer(), disks=FakeDisks(fs),
        dns=FakeResolver(net), registries=FakeRegistries(fs), signing=FakeSigning(fs),
        runtime=FakeRuntimeBuilder(fs), oci=FakeOciSource(), monitor=FakeMonitor(driver, fs),
    ))


class FakeOciSource:
    """OCI sources by string: each an OciImage whose layers yield `chunks[layer digest]` (bytes, or
    an exception raised once they are read); fetch() records the work dirs it was given."""

    def __init__(self):
        self.images: dict[str, Any] = {}  # ImportSource.skopeo_ref() -> OciImage
        self.chunks: dict[str | None, Any] = {}
        self.fetched: list[str] = []

    def fetch(self, source, work_dir, tls_verify=True):
        self.fetched.append(work_dir)
        if source.skopeo_ref() not in self.images:
            raise InvalidValue(f"no image at {source.skopeo_ref()}")
        return self.images[source.skopeo_ref()]

    def members(self, image, layer, limits, on_read=None):
        data = self.chunks.get(layer.digest, b"x" * 512)
        if isinstance(data, Exception):
            raise data
        if on_read is not None:
            on_read(layer.size)
        yield data


class FakeResolver:
    """Resolvers by run dir: the plan each runs with. Like dnsmasq, one cannot start on an
    address no bridge of `net` holds."""

    def __init__(self, net: FakeNet | None = None):
        self.net = net
        self.running: dict[str, Any] = {}  # run_dir -> the ResolverPlan it runs with
        self.starts = 0
        self._pid = 1000

    def ensure(self, plan):
        current = self.running.get(plan.run_dir)
        if current is None or (current.listen, current.upstream) != (plan.listen, plan.upstream):
            if self.net is not None and plan.listen not in {g for g, _ in self.net.bridges.values()}:
                raise AppContainersError(f"dnsmasq: failed to bind {plan.listen}: no such address")
            self.starts += 1
            self._pid += 1
        self.running[plan.run_dir] = plan

    def update(self, plan):
        if plan.run_dir in self.running:
            self.ensure(plan)

    def stop(self, run_dir):
        self.running.pop(run_dir, None)

    def pids(self, run_dir):
        return [self._pid] if run_dir in self.running else []

    def names(self, run_dir) -> dict[str, str]:
        """name -> address the resolver of run_dir answers now ({} when none runs)."""
        plan = self.running.get(run_dir)
        return dict(plan.names) if plan else {}


class FakeImageViewer:
    """Image views: directory -> the image files (top first) shown there."""

    def __init__(self):
        self.views: dict[str, list[str]] = {}
        self.fail: Exception | None = None  # raised by mount() and unmount()

    def mount(self, files, directory):
        if self.fail:
            raise self.fail
        if directory in self.views:
            raise AppContainersError(f"cannot mount at {directory}: already mounted")
        self.views[directory] = list(files)

    def unmount(self, directory):
        if self.fail:
            raise self.fail
        if self.views.pop(directory, None) is None:
            raise CommandFailed(["fusermount3", "-u", directory], 1, f"{directory}: not mounted")


class FakeRegistry:
    """One registry's blobs and manifests in dicts (a blob is stored once, for every repo, as
    distribution stores it); files come from and go to a FakeFs. Counts uploads."""

    def __init__(self, fs: FakeFs):
        self.fs = fs
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.uploads = 0
        self.fetched: list[str] = []

    @staticmethod
    def _digest(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

    def _file(self, path) -> bytes:
        data = self.fs.files[path]
        return data if isinstance(data, bytes) else data.encode()

    def push_file(self, repo, path, progress=None):
        data = self._file(path)
        digest, sent = self._digest(data), self._digest(data) not in self.blobs
        if sent:
            self.push_bytes(repo, data)
            if progress:
                progress(len(data), len(data))
        return digest, len(data), sent

    def push_bytes(self, repo, data):
        digest = self._digest(data)
        if digest not in self.blobs:
            self.uploads += 1
            self.blobs[digest] = data
        return digest

    def fetch_bytes(self, repo, digest, max_bytes):
        data = self.blobs[digest]
        if self._digest(data) != digest or len(data) > max_bytes:
            raise RegistryError("fake", f"blob {digest} does not match its digest: refused")
        return data

    def fetch_file(self, repo, digest, size, dest, progress=None):
        if dest in self.fs.files:
            raise FileExistsError(dest)
        self.fetched.append(digest)
        self.fs.files[dest] = self.fetch_bytes(repo, digest, size)
        if progress:
            progress(size, size)

    def put_manifest(self, repo, reference, data, media_type):
        digest = self._digest(data)
        self.manifests[(repo, reference)] = self.manifests[(repo, digest)] = (data, media_type)
        return digest

    def get_manifest(self, repo, reference, accept):
        if (repo, reference) not in self.manifests:
            raise RegistryError("fake", f"manifest {repo}:{reference}: unknown manifest (404)")
        data, media = self.manifests[(repo, reference)]
        return data, media, self._digest(data)


class FakeRegistries:
    """The Registries port over one FakeRegistry per host."""

    def __init__(self, fs: FakeFs, hosts: dict[str, FakeRegistry] | None = None):
        self.fs = fs
        self.hosts: dict[str, FakeRegistry] = {} if hosts is None else hosts  # share to reach them from two roots

    def __call__(self, host, tls_verify=True):
        registry = self.hosts.setdefault(host, FakeRegistry(self.fs))
        registry.fs = self.fs  # files come from and go to the caller's tree
        return registry


class FakeSigning:
    """Keys are FakeFs files naming their key ("private:NAME" / "public:NAME"); a signature is
    the sha256 of the name and the data: enough to tell keys and payloads apart."""

    def __init__(self, fs: FakeFs):
        self.fs = fs

    @staticmethod
    def _id(name: str) -> str:
        return "ed25519:" + hashlib.sha256(name.encode()).hexdigest()

    def _name(self, path, kind):
        text = self.fs.files.get(path)
        if not isinstance(text, str) or not text.startswith(kind + ":"):
            raise InvalidValue(f"{path} is not a {kind} key")
        return text.split(":", 1)[1]

    def generate(self, private_path, public_path):
        if private_path in self.fs.files or public_path in self.fs.files:
            raise InvalidValue("a key is never overwritten")
        name = posixpath.basename(private_path)
        self.fs.write_text(private_path, "private:" + name, mode=0o600)
        self.fs.write_text(public_path, "public:" + name)
        return self._id(name)

    def sign(self, private_path, data):
        name = self._name(private_path, "private")
        return self._id(name), base64.b64encode(hashlib.sha256(name.encode() + data).digest()).decode()

    def verify(self, public_path, data, key_id, signature):
        name = self._name(public_path, "public")
        return key_id == self._id(name) and self.sign_as(name, data) == signature

    def sign_as(self, name, data):
        return base64.b64encode(hashlib.sha256(name.encode() + data).digest()).decode()

    def read_signatures(self, path):
        text = self.fs.files.get(path)
        return [] if text is None else [d.encode() for d in json.loads(text)]

    def write_signatures(self, path, docs):
        self.fs.write_text(path, json.dumps([d.decode() for d in docs]))
class FakeMonitor:
    """Use of the FakeDriver's running containers (fixed figures; None when not running), disk
    use from the FakeFs, and the events tests put in `published` ({"container": ..., ...}).
    watch() ends after a round with nothing new (the real one waits forever), so tests end."""

    USAGE = {"cpu_seconds": 0.25, "memory_bytes": 4 << 20, "pids": 1}

    def __init__(self, driver: FakeDriver, fs: FakeFs):
        self.driver, self.fs = driver, fs
        self.published: list[dict] = []

    def usage(self, cgroup):
        running = self.driver.state(cgroup.rpartition(".payload.")[2]) == "RUNNING"
        return {k: (v if running else None) for k, v in self.USAGE.items()}

    def disk_used(self, path):
        if path.rstrip("/") not in self.fs.dirs:
            return None
        return sum(len(d) for p, d in self.fs.files.items() if p.startswith(path.rstrip("/") + "/"))

    def watch(self, agents, rescan, tick=None):
        while True:
            events = list(tick() if tick else ())
            known = agents()
            heard = [e for e in self.published if e.get("container") in known]  # only listed agents
            self.published = [e for e in self.published if e not in heard]
            if not events and not heard:
                return
            yield from events + heard
