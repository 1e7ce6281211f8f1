"""The port contracts (tests/contract) run against the fakes in tests/fakes.py.

tests/integration/test_contracts.py runs the same suites against the real adapters."""
from __future__ import annotations

import hashlib
import itertools

import pytest

from tests.contract.codec import ImageCodecContract
from tests.contract.driver import ContainerDriverContract
from tests.contract.hostfs import HostFsContract
from tests.contract.mounters import BinderContract, FuseMounterContract, RootfsMounterContract
from tests.contract.network import HostNetworkContract
from tests.contract.repository import NETWORK, ResourceRepositoryContract
from tests.contract.sized_dirs import SizedDirsContract
from tests.fakes import (FakeCodec, FakeDisks, FakeDriver, FakeFs, FakeFuseMounter, FakeMounter, FakeNet,
                         FakeRepo)

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


class TestFakeKernelMounter(RootfsMounterContract, BinderContract):
    @pytest.fixture
    def mounter(self):
        return FakeMounter("kernel")

    @pytest.fixture
    def binder(self, mounter):
        return mounter

    @pytest.fixture
    def source(self):
        return "/usr/lib/python3"


class TestFakeFuseMounter(RootfsMounterContract, FuseMounterContract):
    @pytest.fixture
    def mounter(self):
        return FakeFuseMounter()

    @pytest.fixture
    def fuse(self, mounter):
        return mounter

    @pytest.fixture
    def view_dirs(self):
        return ["/srv/contract/overlays/c/upper", "/srv/contract/mnt/c/layers/0/rootfs"]


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
