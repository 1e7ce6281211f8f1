"""The registry and signing port contracts (tests/contract/registry.py) against the fakes;
tests/integration/test_registry_contracts.py runs them against the real adapters."""
from __future__ import annotations

import pytest

from tests.contract.registry import RegistryClientContract, SigningContract
from tests.fakes import FakeFs, FakeRegistries, FakeSigning


class _World:
    def __init__(self, fs: FakeFs, registries: FakeRegistries | None = None):
        self.fs, self.registries = fs, registries
        fs.dirs.add("/w")

    def path(self, name):
        return f"/w/{name}"

    def write(self, path, data):
        self.fs.files[path] = data

    def read(self, path):
        data = self.fs.files[path]
        return data if isinstance(data, bytes) else data.encode()

    def exists(self, path):
        return self.fs.exists(path)

    def mode(self, path):
        return self.fs.modes[path]

    def tamper(self, digest):
        blobs = self.registries.hosts["h:1"].blobs
        data = bytearray(blobs[digest])
        data[len(data) // 2] ^= 0xFF
        blobs[digest] = bytes(data)


class TestFakeRegistry(RegistryClientContract):
    @pytest.fixture
    def world(self):
        fs = FakeFs()
        return _World(fs, FakeRegistries(fs))

    @pytest.fixture
    def client(self, world):
        return world.registries("h:1", tls_verify=False)


class TestFakeSigning(SigningContract):
    @pytest.fixture
    def world(self):
        return _World(FakeFs())

    @pytest.fixture
    def signing(self, world):
        return FakeSigning(world.fs)
