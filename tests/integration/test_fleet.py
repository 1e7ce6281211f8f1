"""The fleet on a real Ray cluster of three nodes on this machine (127.0.0.1): each node a host
with its own data root, bridge and subnet; containers, jobs, images and a host that dies."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

ray = pytest.importorskip("ray")

from appcontainers.fleet import HostLost  # noqa: E402

FLEET_RANGE = "10.0.224.0/20"
HOSTS = {"h1": "acf1", "h2": "acf2", "h3": "acf3"}
GIVEN = {"h1": "10.0.230.0/24"}  # a subnet given to join: used as is, and registered
UPSTREAM = "127.224.0.54"  # the resolvers forward here (nothing listens): no query leaves the machine


def _ray_procs() -> list[str]:
    out = subprocess.run(["pgrep", "-af", "ray::|raylet|gcs_server"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def _clean_root(root: str, bridge: str) -> None:
    from tests.conftest import _stop_containers, _umount_under, delete_nft_tables, stop_resolver

    _stop_containers(os.path.join(root, "containers"))
    stop_resolver(root)
    _umount_under(root)
    subprocess.run(["ip", "link", "del", bridge], capture_output=True)
    delete_nft_tables(root)
    shutil.rmtree(root, ignore_errors=True)


class World:
    """The cluster, its nodes by host, the roots, the shared image directory, the fleet."""

    def __init__(self) -> None:
        from ray.cluster_utils import Cluster

        self.base = tempfile.mkdtemp(prefix="acf-fleet-", dir="/var/tmp")
        os.chmod(self.base, 0o711)
        self.upstream = os.path.join(self.base, "resolv.conf")
        with open(self.upstream, "w") as f:
            f.write(f"nameserver {UPSTREAM}\n")
        os.chmod(self.upstream, 0o644)
        self.image_dir = os.path.join(self.base, "images")
        self.roots = {h: os.path.join(self.base, h) for h in HOSTS}
        for r in self.roots.values():
            os.makedirs(r, mode=0o711)
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "include_dashboard": False, "node_ip_address": "127.0.0.1",
            "resources": {"appcontainers-host-h1": 1},
            "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}})
        self.nodes = {"h1": self.cluster.head_node}
        for h in ("h2", "h3"):
            self.add_node(h)
        self.address = self.cluster.address

    def add_node(self, host: str) -> None:
        self.nodes[host] = self.cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1",
                                                 resources={f"appcontainers-host-{host}": 1})

    def join(self, host: str) -> dict:
        import appcontainers.fleet as fleet

        return fleet.join(self.address, host, self.roots[host], HOSTS[host], GIVEN.get(host),
                          image_dir=self.image_dir, fleet_range=FLEET_RANGE, nat=False,
                          dns_upstream=self.upstream)

    def teardown(self) -> None:
        import appcontainers.fleet as fleet

        try:
            if ray.is_initialized():
                f = fleet.connect(self.address)
                for c in f.ls():
                    if c["state"] != "lost":
                        f.get(f"{c['host']}/{c['name']}").destroy()
                for h in HOSTS:
                    fleet.leave(self.address, h)
        finally:
            ray.shutdown()
            self.cluster.shutdown()
            for h, r in self.roots.items():
                _clean_root(r, HOSTS[h])
            shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def world():
    if os.geteuid() != 0:
        pytest.skip("the fleet's hosts run containers: root")
    if _ray_procs():
        pytest.skip(f"another Ray cluster runs on this machine: {_ray_procs()[:2]}")
    w = World()
    try:
        with ThreadPoolExecutor(3) as pool:  # the hosts come up at once (each builds its base)
            w.records = dict(zip(HOSTS, pool.map(w.join, HOSTS)))
        yield w
    finally:
        w.teardown()
        left = _ray_procs()
        assert not left, f"Ray processes left: {left}"
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
        assert not [b for b in HOSTS.values() if f" {b}:" in links], "a bridge of the fleet is left"


@pytest.fixture(scope="module")
def fleet(world):
    import appcontainers.fleet as fleet

    return fleet.connect(world.address)


class TestHosts:
    def test_every_ray_listener_is_on_loopback(self, world):
        """Every socket a Ray process listens on is bound to 127.0.0.1 (nothing reachable from outside)."""
        pids = {line.split()[0] for line in _ray_procs()}
        out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
        ours = [line for line in out.splitlines() if any(f"pid={p}," in line for p in pids)]
        assert ours, "no Ray listener found"
        addrs = {line.split()[3].rsplit(":", 1)[0].strip("[]").removeprefix("::ffff:") for line in ours}
        assert addrs == {"127.0.0.1"}, ours  # (an IPv6 socket's v4-mapped ::ffff:127.0.0.1 included)

    def test_hosts_hold_distinct_subnets_and_report_capacity(self, world, fleet):
        """Each host has its own /24 (the given one as is), alive, with memory, cpus and slots."""
        hosts = {h["name"]: h for h in fleet.hosts()}
        assert set(hosts) == set(HOSTS)
        assert hosts["h1"]["subnet"] == GIVEN["h1"]
        assert len({h["subnet"] for h in hosts.values()}) == 3
        for h in hosts.values():
            assert h["alive"] and h["memory_free"] > 0 and h["cpus"] >= 1 and h["max_containers"] == 253
            assert h["subnet"].startswith("10.0.2")
