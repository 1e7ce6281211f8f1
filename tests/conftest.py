"""Shared fixtures. Integration tests share one data root, one bridge and one base
image per run, and leave nothing behind: containers, mounts, veths, bridge, files."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

TEST_BRIDGE = "actest0"
TEST_SUBNET = "10.0.201.0/24"


def _umount_under(root: str) -> None:
    from appcontainers.adapters.mountinfo import mounted_under

    for _ in range(3):
        points = mounted_under(root)
        if not points:
            return
        for p in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", p], capture_output=True)


def _stop_containers(lxcpath: str) -> None:
    if not os.path.isdir(lxcpath):
        return
    for name in os.listdir(lxcpath):
        subprocess.run(["lxc-stop", "-P", lxcpath, "-n", name, "-k"], capture_output=True, timeout=60)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: builds something big (a Debian base); CI runs it")


@pytest.fixture(scope="session")
def data_root():
    if os.geteuid() != 0:
        pytest.skip("integration tests need root")
    root = tempfile.mkdtemp(prefix="appcontainers-test-", dir="/var/tmp")
    subprocess.run(["ip", "link", "del", TEST_BRIDGE], capture_output=True)
    try:
        yield root
    finally:
        _stop_containers(os.path.join(root, "containers"))
        _umount_under(root)
        subprocess.run(["ip", "link", "del", TEST_BRIDGE], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(data_root):
    return {"root": data_root, "bridge": TEST_BRIDGE, "subnet": TEST_SUBNET}


@pytest.fixture(scope="session")
def svc(settings):
    import appcontainers

    return appcontainers.setup_service(**settings)


@pytest.fixture
def container(svc):
    """A fresh provisioned container, destroyed after the test whatever happens."""
    c = svc.provision()
    try:
        yield c
    finally:
        try:
            c.destroy()
        except Exception:
            pass
