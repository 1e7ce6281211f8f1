"""The port contracts (tests/contract) run against the real adapters, as root.

tests/unit/test_contracts.py runs the same suites against the fakes. Everything happens
under a fresh directory in /var/tmp (and on this run's own test bridge), removed after."""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time

import pytest

from appcontainers.adapters.aimg.image_viewer import ImageViewer
from appcontainers.adapters.aimg.squashfs import SquashfsCodec
from appcontainers.adapters.bases.busybox_base import BusyboxBaseBuilder
from appcontainers.adapters.host.hostproc import HostProcesses
from appcontainers.adapters.host.hostfs import HostFs
from appcontainers.adapters.net.dns import DnsmasqResolver
from appcontainers.adapters.net.hostnet import HostNetwork
from appcontainers.domain.resolver import ResolverPlan
from appcontainers.adapters.lxc.lxc_cli import LxcDriver
from appcontainers.adapters.lxc.skeletons import Skeletons
from appcontainers.adapters.mounts.fuse_overlay import FuseMounter, fuse_available
from appcontainers.adapters.mounts.kernel_mount import KernelMounter, kernel_available
from appcontainers.adapters.mounts.sized_dir import SizedDirs
from appcontainers.adapters.store.json_store import JsonStore
from tests.conftest import TEST_BRIDGE, TEST_NET, TEST_UPSTREAM, _umount_under
from tests.contract.agents import AgentsContract
from tests.contract.bases import BaseBuilderContract
from tests.contract.codec import ImageCodecContract
from tests.contract.driver import ContainerDriverContract
from tests.contract.hostfs import HostFsContract
from tests.contract.mounters import (BinderContract, FuseMounterContract, RootfsMounterContract,
                                     ViewMounterContract, layout)
from tests.contract.network import HostNetworkContract
from tests.contract.processes import ProcessesContract
from tests.contract.repository import NETWORK, ResourceRepositoryContract
from tests.contract.resolver import ResolverContract
from tests.dnsquery import query_a
from tests.contract.sized_dirs import SizedDirsContract
from tests.contract.skeletons import SkeletonsContract
from tests.contract.viewer import ImageViewerContract

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts, lxc, links, chown)"),
    pytest.mark.skipif(not shutil.which("mksquashfs"), reason="needs squashfs-tools"),
]
needs_kernel = pytest.mark.skipif(not kernel_available(), reason="needs loop devices, squashfs and overlayfs")
needs_fuse = pytest.mark.skipif(not fuse_available(), reason="needs /dev/fuse, squashfuse and fuse-overlayfs")
needs_lxc = pytest.mark.skipif(not shutil.which("lxc-info"), reason="needs the lxc tools")
_names = itertools.count()
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def base():
    """A fresh directory searchable by others; whatever is mounted below is unmounted after."""
    d = tempfile.mkdtemp(prefix="appcontainers-contract-", dir="/var/tmp")
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        _umount_under(d)
        shutil.rmtree(d, ignore_errors=True)


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


class TestJsonStore(ResourceRepositoryContract):
    @pytest.fixture
    def repo(self, base):
        return JsonStore(os.path.join(base, "resources.json"), NETWORK)


@needs_lxc
class TestLxcDriver(ContainerDriverContract):
    @pytest.fixture
    def driver(self, base):
        return LxcDriver(os.path.join(base, "containers"))

    @pytest.fixture
    def config(self, base):
        def make(name: str) -> str:
            rootfs = os.path.join(base, "rootfs", name)
            os.makedirs(rootfs, exist_ok=True)
            return f"lxc.uts.name = {name}\nlxc.rootfs.path = dir:{rootfs}\nlxc.net.0.type = empty\n"
        return make

    @pytest.fixture
    def names(self, driver):
        made = [f"ac-contract-{os.getpid()}-{next(_names)}" for _ in range(2)]
        try:
            yield made
        finally:
            for n in made:
                driver.destroy(n)


# ---- mounters ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def layers(tmp_path_factory):
    """Two real images, top first: a base and a layer over it."""
    root = str(tmp_path_factory.mktemp("contract-images"))
    files = []
    for name in ("base", "top"):
        src = os.path.join(root, name)
        _write(f"{src}/etc/{name}", f"{name}\n".encode())
        dest = os.path.join(root, f"{name}.aimg")
        SquashfsCodec().pack(src, {"format_version": 1, "name": name, "created": 0.0}, dest)
        files.insert(0, dest)
    return files


@pytest.fixture
def where(base):
    return os.path.join(base, "mnt", "c")


@pytest.fixture
def view_dirs(base):
    _write(f"{base}/upper/etc/new", b"new\n")
    _write(f"{base}/lower/etc/old", b"old\n")
    return [f"{base}/upper", f"{base}/lower"]


def _view_merges_dirs(view_mounter, view_dirs, where):
    target = os.path.join(where, ".views", "c", "rootfs")
    view_mounter.mount_view(view_dirs, target)
    try:
        assert sorted(os.listdir(f"{target}/etc")) == ["new", "old"]
        with pytest.raises(OSError):
            _write(f"{target}/etc/more", b"x")
    finally:
        view_mounter.unmount_view(target)


@needs_kernel
class TestKernelMounter(RootfsMounterContract, BinderContract, ViewMounterContract):
    @pytest.fixture
    def mounter(self):
        return KernelMounter()

    @pytest.fixture
    def binder(self, mounter):
        return mounter

    @pytest.fixture
    def view_mounter(self, mounter):
        return mounter

    def test_view_merges_dirs(self, view_mounter, view_dirs, where):
        """(The kernel adapter) the view shows the files of every dir, read-only."""
        _view_merges_dirs(view_mounter, view_dirs, where)

    @pytest.fixture
    def source(self, base):
        _write(f"{base}/host/file", b"host\n")
        return f"{base}/host"

    def test_layers_merged_at_target(self, mounter, layers, where):
        """(The kernel adapter) the target shows every layer's files, the top one's first."""
        lowers, upper, work, target = layout(where, len(layers))
        mounter.mount(layers, lowers, upper, work, target)
        try:
            assert sorted(os.listdir(f"{target}/etc")) == ["base", "top"]
        finally:
            mounter.unmount(target, lowers[::-1])

    def test_bind_is_read_only(self, binder, source, where):
        """(The kernel adapter) a bind_ro target cannot be written through."""
        target = os.path.join(where, "binds", "x")
        binder.bind_ro(source, target)
        try:
            with pytest.raises(OSError):
                _write(f"{target}/new", b"x")
            assert open(f"{target}/file", "rb").read() == b"host\n"
        finally:
            binder.unmount(target, [])


@needs_fuse
class TestFuseMounter(RootfsMounterContract, FuseMounterContract, ViewMounterContract):
    @pytest.fixture
    def mounter(self):
        return FuseMounter()

    @pytest.fixture
    def fuse(self, mounter):
        return mounter

    @pytest.fixture
    def view_mounter(self, mounter):
        return mounter

    def test_idmap_shifts_ids(self, fuse, layers, where):
        """(The FUSE adapter) with idmap, files owned by root in the image show the host base id."""
        lowers, upper, work, target = layout(where, len(layers))
        fuse.mount(layers, lowers, upper, work, target, idmap=(100000, 65536))
        try:
            assert os.stat(f"{target}/etc/base").st_uid == 100000
        finally:
            fuse.unmount(target, lowers[::-1])

    def test_view_merges_dirs(self, view_mounter, view_dirs, where):
        """(The FUSE adapter) the view shows the files of every dir, read-only."""
        _view_merges_dirs(view_mounter, view_dirs, where)


# ---- codec and host -----------------------------------------------------------------------
class HostWorld:
    """What the contracts need from outside a port, on the real host, under base."""

    def __init__(self, base: str):
        self.base = base
        self._n = itertools.count()

    def read(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def archive(self, path: str) -> None:
        src = f"{self.base}/archive-src/etc/app.conf"
        _write(src, b"k=v\n")
        with tarfile.open(path, "w") as tar:
            tar.add(src, arcname="etc/app.conf")

    def source(self) -> str:
        d = f"{self.base}/src{next(self._n)}"
        _write(f"{d}/etc/hostname", b"app\n")
        return d

    def path(self, name: str) -> str:
        os.makedirs(f"{self.base}/out", exist_ok=True)
        return f"{self.base}/out/{name}"

    def damage(self, path: str) -> None:
        """Flip one byte inside the squashfs data (past the superblock, before the trailer)."""
        with open(path, "r+b") as f:
            f.seek(200)
            byte = f.read(1)
            f.seek(200)
            f.write(bytes([byte[0] ^ 0xFF]))

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)


class TestSquashfsCodec(ImageCodecContract):
    @pytest.fixture
    def world(self, base):
        return HostWorld(base)

    @pytest.fixture
    def codec(self):
        return SquashfsCodec()


class TestHostFs(HostFsContract):
    @pytest.fixture
    def fs(self):
        return HostFs()

    @pytest.fixture
    def world(self, base):
        return HostWorld(base)

    def test_extract_writes_the_member(self, fs, world):
        """(The real adapter) the archive's file lands under dest in root."""
        root = f"{world.base}/rootfs"
        os.makedirs(f"{root}/root")
        world.archive(f"{world.base}/a.tar")
        fs.extract_in_root(root, "/root", f"{world.base}/a.tar")
        assert world.read(f"{root}/root/etc/app.conf") == b"k=v\n"


class TestHostNetwork(HostNetworkContract):
    """On this run's own test bridge (APPCONTAINERS_TEST_BRIDGE), deleted before and after."""

    @pytest.fixture
    def net(self):
        return HostNetwork()

    @pytest.fixture
    def bridge(self):
        def delete():
            for link in (TEST_BRIDGE + "v", TEST_BRIDGE):
                subprocess.run(["ip", "link", "del", link], capture_output=True)
        delete()
        try:
            yield TEST_BRIDGE, str(TEST_NET.network_address + 1), TEST_NET.prefixlen
        finally:
            delete()

    @pytest.fixture
    def world(self):
        class World:
            def add_veth(self, bridge: str) -> str:
                veth = TEST_BRIDGE + "v"
                subprocess.run(["ip", "link", "add", veth, "type", "veth", "peer", "name", veth + "p"],
                               check=True, capture_output=True)
                subprocess.run(["ip", "link", "set", veth, "master", bridge], check=True, capture_output=True)
                return veth

            def hold(self, proto: str) -> tuple[str, int]:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
                s.bind(("127.0.0.1", 0))
                if proto == "tcp":
                    s.listen(1)
                held.append(s)
                return s.getsockname()

        held: list[socket.socket] = []
        yield World()
        for s in held:
            s.close()




@needs_kernel
class TestSizedDirs(SizedDirsContract):
    @pytest.fixture
    def disks(self):
        return SizedDirs()

    @pytest.fixture
    def where(self, base):
        return base

    @pytest.fixture
    def files(self):
        return os.path


# ---- processes, skeletons, agents, bases, viewer --------------------------------------------
CHILD = "from appcontainers.adapters.host.hostproc import HostProcesses; import sys; " \
        "print(HostProcesses().token(), flush=True); sys.stdin.read()"


class TestHostProcesses(ProcessesContract):
    @pytest.fixture
    def procs(self):
        return HostProcesses()

    @pytest.fixture
    def world(self):
        class World:
            @contextlib.contextmanager
            def child(self):
                """A child printing its own token, ended (and reaped) after the block."""
                proc = subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": ROOT})
                try:
                    yield proc.stdout.readline().decode().strip()
                finally:
                    proc.stdin.close()
                    proc.stdout.close()
                    proc.wait(10)
        return World()


class TestSkeletons(SkeletonsContract):
    @pytest.fixture
    def skeletons(self, base):
        return Skeletons(os.path.join(base, "no-overrides"))


class AgentWorld:
    """Real agent processes (as tests/integration/test_agent_process.py starts them), each in its
    own short directory under /tmp (an ipc socket path must fit in 107 bytes)."""

    def __init__(self):
        self.started: list[tuple[subprocess.Popen, str]] = []
        self.dirs: list[str] = []

    def _dir(self) -> str:
        d = tempfile.mkdtemp(prefix="ac-contract-", dir="/tmp")
        self.dirs.append(d)
        return d

    def start(self, secret: str) -> str:
        run_dir = self._dir()
        with open(os.path.join(run_dir, "agent.json"), "w") as f:
            json.dump({"curve_secret_key": secret}, f)
        proc = subprocess.Popen([sys.executable, "-m", "appcontainers.agent", "--dir", run_dir], cwd=ROOT)
        self.started.append((proc, run_dir))
        return run_dir

    def idle(self) -> str:
        return self._dir()

    def command(self, client, out: str, err: str, code: int) -> list[str]:
        return ["sh", "-c", 'printf "$1"; printf "$2" >&2; exit "$3"', "sh", out, err, str(code)]

    def stop(self) -> None:
        for proc, _ in self.started:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(6)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)


class TestAgentBus(AgentsContract):
    """The zmq bus: AgentClient is what build_ports() wires as the Agents port."""

    @pytest.fixture
    def agents(self):
        pytest.importorskip("zmq")
        from appcontainers.adapters.bus.zmq_bus import AgentClient
        return AgentClient

    @pytest.fixture
    def world(self):
        world = AgentWorld()
        try:
            yield world
        finally:
            world.stop()


@pytest.mark.skipif(not (shutil.which("busybox") or os.path.exists("/bin/busybox")), reason="needs busybox")
class TestBusyboxBaseBuilder(BaseBuilderContract):
    @pytest.fixture
    def codec(self):
        return SquashfsCodec()

    @pytest.fixture
    def world(self, base):
        return HostWorld(base)

    @pytest.fixture
    def builder(self, codec, base):
        return BusyboxBaseBuilder(codec, os.path.join(base, "tmp"), level=1)


@pytest.fixture(scope="module")
def view_images(tmp_path_factory):
    """(top, base): a base holding etc/hostname and etc/base, and a child layer over it."""
    root = str(tmp_path_factory.mktemp("contract-view"))
    _write(f"{root}/base/etc/hostname", b"base\n")
    _write(f"{root}/base/etc/base", b"base\n")
    _write(f"{root}/top/etc/hostname", b"top\n")
    codec = SquashfsCodec()
    base_id = codec.pack(f"{root}/base", {"format_version": 1, "name": "base", "created": 0.0}, f"{root}/base.aimg")
    codec.pack(f"{root}/top", {"format_version": 1, "name": "top", "created": 0.0, "parent": base_id},
               f"{root}/top.aimg")
    return [f"{root}/top.aimg", f"{root}/base.aimg"]


@needs_fuse
class TestImageViewer(ImageViewerContract):
    @pytest.fixture
    def viewer(self):
        return ImageViewer()

    @pytest.fixture
    def world(self, base, view_images):
        class World:
            n = itertools.count()

            def images(self):
                return list(view_images)

            def directory(self):
                return f"{base}/views/v{next(self.n)}"

            def read(self, directory, rel):
                try:
                    with open(os.path.join(directory, rel), "rb") as f:
                        return f.read()
                except FileNotFoundError:
                    return None
        return World()

    def test_the_view_is_read_only(self, viewer, world):
        """(The real adapter) nothing can be written through the view."""
        directory = world.directory()
        viewer.mount(world.images(), directory)
        try:
            with pytest.raises(OSError):
                _write(f"{directory}/etc/new", b"x")
            with pytest.raises(OSError):
                _write(f"{directory}/etc/hostname", b"x")
        finally:
            viewer.unmount(directory)



@pytest.mark.skipif(not shutil.which("dnsmasq"), reason="needs dnsmasq (dnsmasq-base)")
class TestDnsmasqResolver(ResolverContract):
    """On a loopback address of this run's own (127.<subnet's third byte>.0.53); its upstream is
    the run's dead loopback stand-in, so nothing is ever forwarded off the host."""

    @pytest.fixture
    def dns(self, base):
        resolver = DnsmasqResolver()
        try:
            yield resolver
        finally:
            resolver.stop(os.path.join(base, "dns"))
            assert resolver.pids(os.path.join(base, "dns")) == []

    @pytest.fixture
    def plan(self, base):
        upstream_file = os.path.join(base, "resolv.conf")
        _write(upstream_file, f"nameserver {TEST_UPSTREAM}\n".encode())

        def make(names, listen=TEST_UPSTREAM[:-2] + "53", upstream=upstream_file):
            return ResolverPlan(listen=listen, run_dir=os.path.join(base, "dns"), upstream=upstream,
                                names=names.items())
        return make

    @pytest.fixture
    def absent(self):
        return str(TEST_NET.network_address + 254)  # the test bridge never holds it

    @pytest.fixture
    def lookup(self):
        def lookup(plan, name):
            # An answer may lag a SIGHUP by a moment: while the server answers but not with an
            # address, ask again for up to 2 s; no answer at all (nothing listens) is None at once.
            for _ in range(20):
                found = query_a(plan.listen, name)
                if found is None or found:
                    return found[0] if found else None
                time.sleep(0.1)
            return None
        return lookup
