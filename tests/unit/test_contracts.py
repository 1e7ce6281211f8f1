"""The port contracts (tests/contract) run against the fakes in tests/fakes.py.

tests/integration/test_contracts.py runs the same suites against the real adapters."""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json

import pytest

from appcontainers.domain.resolver import ResolverPlan

from tests.contract.agents import AgentsContract
from tests.contract.bases import BaseBuilderContract
from tests.contract.codec import ImageCodecContract
from tests.contract.driver import ContainerDriverContract
from tests.contract.hostfs import HostFsContract
from tests.contract.mounters import (BinderContract, FuseMounterContract, RootfsMounterContract,
                                     ViewMounterContract)
from tests.contract.network import HostNetworkContract
from tests.contract.processes import ProcessesContract
from tests.contract.repository import NETWORK, ResourceRepositoryContract
from tests.contract.resolver import ResolverContract
from tests.contract.sized_dirs import SizedDirsContract
from tests.contract.skeletons import SkeletonsContract
from tests.contract.viewer import ImageViewerContract
from tests.fakes import (FakeAgents, FakeBaseBuilder, FakeCodec, FakeDisks, FakeDriver, FakeFs, FakeFuseMounter,
                         FakeImageViewer, FakeMounter, FakeNet, FakeProcs, FakeRepo, FakeResolver,
                         FakeSkeletons)

WHERE = "/srv/contract/mnt/c"


class TestFakeRepo(ResourceRepositoryContract):
    @pytest.fixture
    def repo(self):
        return FakeRepo(NETWORK)


class TestFakeDriver(ContainerDriverContract):
    @pytest.fixture
    def driver(self):
        return FakeDriver()

    @pytest.fixture
    def config(self):
        return lambda name: f"lxc.uts.name = {name}\n"

    @pytest.fixture
    def names(self):
        return ["ac-contract-a", "ac-contract-b"]


@pytest.fixture
def layers():
    return ["/srv/contract/images/top.aimg", "/srv/contract/images/base.aimg"]


@pytest.fixture
def where():
    return WHERE


@pytest.fixture
def view_dirs():
    return ["/srv/contract/overlays/c/upper", "/srv/contract/mnt/c/layers/0/rootfs"]


class TestFakeKernelMounter(RootfsMounterContract, BinderContract, ViewMounterContract):
    @pytest.fixture
    def mounter(self):
        return FakeMounter("kernel")

    @pytest.fixture
    def binder(self, mounter):
        return mounter

    @pytest.fixture
    def view_mounter(self, mounter):
        return mounter

    @pytest.fixture
    def source(self):
        return "/usr/lib/python3"


class TestFakeFuseMounter(RootfsMounterContract, FuseMounterContract, ViewMounterContract):
    @pytest.fixture
    def mounter(self):
        return FakeFuseMounter()

    @pytest.fixture
    def fuse(self, mounter):
        return mounter

    @pytest.fixture
    def view_mounter(self, mounter):
        return mounter


class FakeFsWorld:
    """What the contracts need from outside a port, on a FakeFs."""

    base = "/srv/contract/base"

    def __init__(self, fs: FakeFs):
        self.fs = fs
        self._n = itertools.count()

    def read(self, path) -> bytes:
        data = self.fs.files[path]
        return data.encode() if isinstance(data, str) else data

    def archive(self, path) -> None:
        self.fs.files[path] = b"a tar of etc/app.conf"

    def source(self) -> str:
        d = f"/srv/contract/src{next(self._n)}"
        self.fs.make_dirs(d)
        self.fs.files[d + "/etc/hostname"] = b"app\n"
        return d

    def path(self, name) -> str:
        self.fs.make_dirs("/srv/contract/out")
        return "/srv/contract/out/" + name

    def damage(self, path) -> None:
        data = self.fs.files[path]
        self.fs.files[path] = data[:5] + bytes([data[5] ^ 1]) + data[6:]

    def exists(self, path) -> bool:
        return self.fs.exists(path)


class TestFakeFs(HostFsContract):
    @pytest.fixture
    def fs(self):
        return FakeFs()

    @pytest.fixture
    def world(self, fs):
        return FakeFsWorld(fs)


class TestFakeCodec(ImageCodecContract):
    @pytest.fixture
    def world(self):
        return FakeFsWorld(FakeFs())

    @pytest.fixture
    def codec(self, world):
        return FakeCodec(world.fs)


class TestFakeNet(HostNetworkContract):
    @pytest.fixture
    def net(self):
        return FakeNet()

    @pytest.fixture
    def bridge(self):
        return ("actest9", "10.0.99.1", 24)

    @pytest.fixture
    def world(self, net):
        class World:
            def add_veth(self, bridge):
                name = "acv" + hashlib.sha256(bridge.encode()).hexdigest()[:8]
                net.veths.setdefault(bridge, []).append(name)
                return name

            def hold(self, proto):
                net.taken.add((proto, "127.0.0.1", 40000 + len(net.taken)))
                return "127.0.0.1", 40000 + len(net.taken) - 1
        return World()


class TestFakeDisks(SizedDirsContract):
    @pytest.fixture
    def files(self):
        return FakeFs()

    @pytest.fixture
    def disks(self, files):
        return FakeDisks(files)

    @pytest.fixture
    def where(self):
        return WHERE


class TestFakeProcs(ProcessesContract):
    @pytest.fixture
    def procs(self):
        return FakeProcs()

    @pytest.fixture
    def world(self, procs):
        class World:
            @contextlib.contextmanager
            def child(self):
                procs.alive_tokens.add("child")  # as a real child's token lives while it runs
                try:
                    yield "child"
                finally:
                    procs.alive_tokens.discard("child")
        return World()


class TestFakeSkeletons(SkeletonsContract):
    @pytest.fixture
    def skeletons(self):
        return FakeSkeletons()


class FakeAgentWorld:
    """Agents in containers of a FakeDriver: started is an agent.json holding the secret key
    (as start() writes it) in a running container's agent directory."""

    def __init__(self, driver: FakeDriver, fs: FakeFs):
        self.driver, self.fs = driver, fs
        self._n = itertools.count()

    def start(self, secret: str) -> str:
        name = f"c{next(self._n)}"
        run_dir = f"/srv/contract/run/{name}/agent"
        self.fs.write_text(run_dir + "/agent.json", json.dumps({"curve_secret_key": secret}), mode=0o600)
        self.driver.containers[name] = "RUNNING"
        return run_dir

    def idle(self) -> str:
        return f"/srv/contract/run/idle{next(self._n)}/agent"

    def command(self, client, out: str, err: str, code: int) -> list[str]:
        client.reply = (code, out.encode(), err.encode())
        return ["sh", "-c", "a command the fake answers with its reply"]


class TestFakeAgents(AgentsContract):
    @pytest.fixture
    def world(self):
        return FakeAgentWorld(FakeDriver(), FakeFs())

    @pytest.fixture
    def agents(self, world):
        return FakeAgents(world.driver, world.fs)


class TestFakeBaseBuilder(BaseBuilderContract):
    @pytest.fixture
    def world(self):
        return FakeFsWorld(FakeFs())

    @pytest.fixture
    def builder(self, world):
        return FakeBaseBuilder(world.fs)

    @pytest.fixture
    def codec(self, world):
        return FakeCodec(world.fs)


class TestFakeImageViewer(ImageViewerContract):
    @pytest.fixture
    def viewer(self):
        return FakeImageViewer()

    @pytest.fixture
    def world(self, viewer):
        class World:
            """What each fake image file holds; a view shows the files of what is mounted there."""
            trees = {"/srv/contract/images/top.aimg": {"etc/hostname": b"top\n"},
                     "/srv/contract/images/base.aimg": {"etc/hostname": b"base\n", "etc/base": b"base\n"}}
            n = itertools.count()

            def images(self):
                return list(self.trees)

            def directory(self):
                return f"/srv/contract/views/v{next(self.n)}"

            def read(self, directory, rel):
                for f in viewer.views.get(directory, []):  # top first
                    if rel in self.trees[f]:
                        return self.trees[f][rel]
                return None
        return World()


class TestFakeResolver(ResolverContract):
    @pytest.fixture
    def dns(self):
        net = FakeNet()
        net.ensure_bridge("acdns0", "10.0.250.1", 24)
        return FakeResolver(net)

    @pytest.fixture
    def plan(self):
        def make(names, listen="10.0.250.1", upstream="/etc/resolv.conf"):
            return ResolverPlan(listen=listen, run_dir="/srv/contract/run/.dns", upstream=upstream,
                                names=names.items())
        return make

    @pytest.fixture
    def absent(self):
        return "10.0.251.1"

    @pytest.fixture
    def lookup(self, dns):
        return lambda plan, name: dns.names(plan.run_dir).get(name)
