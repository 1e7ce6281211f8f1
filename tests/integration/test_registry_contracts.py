"""The registry and signing port contracts against the real adapters: HttpRegistry on a real
docker-registry on 127.0.0.1, Ed25519Signing in a temp dir."""
from __future__ import annotations

import os

import pytest

from appcontainers.adapters.registry.client import HttpRegistry
from appcontainers.adapters.registry.signing import Ed25519Signing
from tests.contract.registry import RegistryClientContract, SigningContract
from tests.integration.registry_helpers import registry  # noqa: F401  (the fixture)


class _World:
    def __init__(self, tmp_path, registry=None):
        self.tmp, self.registry = tmp_path, registry

    def path(self, name):
        return str(self.tmp / name)

    def write(self, path, data):
        with open(path, "wb") as f:
            f.write(data)

    def read(self, path):
        with open(path, "rb") as f:
            return f.read()

    def exists(self, path):
        return os.path.lexists(path)

    def mode(self, path):
        return os.stat(path).st_mode & 0o777

    def tamper(self, digest):
        with open(self.registry.blobs()[digest], "r+b") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(size // 2)
            byte = f.read(1)
            f.seek(size // 2)
            f.write(bytes([byte[0] ^ 0xFF]))


class TestHttpRegistry(RegistryClientContract):
    @pytest.fixture
    def world(self, tmp_path, registry):  # noqa: F811
        return _World(tmp_path, registry)

    @pytest.fixture
    def client(self, world):
        return HttpRegistry(world.registry.host, tls_verify=False)


class TestEd25519Signing(SigningContract):
    @pytest.fixture
    def world(self, tmp_path):
        return _World(tmp_path)

    @pytest.fixture
    def signing(self):
        return Ed25519Signing()
