"""Shared fixtures. Integration tests share one data root, one bridge and one base
image per run, and leave nothing behind: containers, mounts, veths, bridge, files."""
from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import tempfile

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

# Property tests check what holds, not how fast inputs are drawn: on a loaded machine (CI's two
# cores, or several test runs at once) the too_slow health check and the per-example deadline
# failed tests whose properties held.
hypothesis_settings.register_profile("appcontainers", deadline=None,
                                    suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile("appcontainers")

# Overridable so two checkouts can run their integration tests on one machine at once.
TEST_BRIDGE = os.environ.get("APPCONTAINERS_TEST_BRIDGE", "actest0")
TEST_SUBNET = os.environ.get("APPCONTAINERS_TEST_SUBNET", "10.0.201.0/24")
TEST_NET = ipaddress.ip_network(TEST_SUBNET)
# The containers' resolvers forward to this loopback address, never to the host's real ones:
# test_dns.py runs a stand-in resolver there (nothing listens otherwise). Unique per test subnet.
TEST_UPSTREAM = f"127.{TEST_NET.network_address.packed[2]}.0.54"


def _umount_under(root: str) -> None:
    from appcontainers.adapters.mounts.mountinfo import mounted_under

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
    os.chmod(root, 0o711)  # as setup_service makes its root: unprivileged containers pass through it
    subprocess.run(["ip", "link", "del", TEST_BRIDGE], capture_output=True)
    upstream = root + ".resolv.conf"  # the CLI's subprocesses get it through the environment too
    with open(upstream, "w") as f:
        f.write(f"nameserver {TEST_UPSTREAM}\n")
    os.chmod(upstream, 0o644)
    os.environ["APPCONTAINERS_DNS_UPSTREAM"] = upstream
    try:
        yield root
    finally:
        _stop_containers(os.path.join(root, "containers"))
        stop_resolver(root)
        os.unlink(upstream)
        _umount_under(root)
        subprocess.run(["ip", "link", "del", TEST_BRIDGE], capture_output=True)
        delete_nft_tables(root)
        shutil.rmtree(root, ignore_errors=True)
        _assert_nothing_left(root)


def stop_resolver(root: str) -> None:
    """End the data root's dnsmasq, if one is left."""
    from appcontainers.adapters.net.dns import DnsmasqResolver
    from appcontainers.config import Layout

    DnsmasqResolver().stop(Layout(root).dns_dir)


def delete_nft_tables(root: str) -> None:
    """Remove the data root's nftables tables (both families), if there."""
    from appcontainers.config import Settings
    from appcontainers.domain.firewall import table_name

    table = table_name(Settings(root=root).root_id)
    for family in ("bridge", "inet"):
        subprocess.run(["nft", "delete", "table", family, table], capture_output=True)


def clean_root(root: str, bridge: str) -> None:
    """Everything of a data root of its own (a fleet host's, a bench's) gone: its containers,
    resolver, mounts, bridge, nftables tables and files."""
    _stop_containers(os.path.join(root, "containers"))
    stop_resolver(root)
    _umount_under(root)
    subprocess.run(["ip", "link", "del", bridge], capture_output=True)
    delete_nft_tables(root)
    shutil.rmtree(root, ignore_errors=True)


def _assert_nothing_left(root: str) -> None:
    """After the run: no mount, bridge, LXC process or loop device of ours remains (a veth
    goes with its container's network namespace; the reliability tests check those)."""
    from appcontainers.adapters.mounts.mountinfo import mounted_under

    left = []
    if mounted_under(root):
        left.append(f"mounts {mounted_under(root)}")
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    left += [f"link {line.split(':')[1].strip()}" for line in links.splitlines()
             if line.split(":")[1].strip().split("@")[0] in (TEST_BRIDGE, "actest1")]
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    left += [f"loop {line}" for line in loops.splitlines() if root in line]
    # nftables tables of any data root of this run: named for the root, they mention its bridge.
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout.split()
    for table in (t for t in tables if t.startswith("appcontainers_")):
        for family in ("bridge", "inet"):
            text = subprocess.run(["nft", "list", "table", family, table], capture_output=True, text=True).stdout
            if any(f'"{b}"' in text for b in (TEST_BRIDGE, "actest1", f"acfull{TEST_NET.network_address.packed[2]}")):
                left.append(f"nft table {family} {table}")
    procs = subprocess.run(["pgrep", "-af", root], capture_output=True, text=True).stdout
    left += [f"process {line}" for line in procs.splitlines() if "pgrep" not in line]
    assert not left, f"the test run left behind: {left}"


@pytest.fixture(scope="session")
def settings(data_root):
    return {"root": data_root, "bridge": TEST_BRIDGE, "subnet": TEST_SUBNET}


@pytest.fixture(scope="session")
def env(settings):
    """The environment a CLI subprocess needs to use the test run's data root, bridge and subnet."""
    return {**os.environ, "APPCONTAINERS_ROOT": settings["root"], "APPCONTAINERS_BRIDGE": settings["bridge"],
            "APPCONTAINERS_SUBNET": settings["subnet"]}


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
