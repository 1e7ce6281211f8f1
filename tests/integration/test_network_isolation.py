"""The bridge is not a free-for-all: each attack tried for real in a container that keeps
net_admin and net_raw (today's default), so the nftables rules themselves are what stops it."""
from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

import pytest

from appcontainers.domain.firewall import table_name
from appcontainers.services.plans import veth_name
from tests.conftest import TEST_BRIDGE, TEST_NET, _stop_containers, _umount_under, delete_nft_tables, stop_resolver

# A second data root on the same bridge: the upper half of the test subnet (the session root
# allocates from the bottom and never gets that far).
OTHER_NET = list(TEST_NET.subnets(new_prefix=TEST_NET.prefixlen + 1))[1]
PORT = 8080


def sh(*argv) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def drops(svc, veth: str) -> int:
    """Frames the bridge table dropped on veth (its port chain's counters)."""
    out = sh("nft", "list", "chain", "bridge", table_name(svc.settings.root_id), f"port_{veth}")
    return sum(int(n) for n in re.findall(r"counter packets (\d+)", out))


def input_drops(svc) -> int:
    out = sh("nft", "list", "chain", "inet", table_name(svc.settings.root_id), "input")
    return sum(int(n) for n in re.findall(r"counter packets (\d+)", out))


def veth(c) -> str:
    return veth_name(c._svc.settings.root_id, c.name)


def ok(c, command: str) -> str:
    r = c.run(command, timeout=30)
    assert r.exit_code == 0, (command, r.stdout, r.stderr)
    return r.stdout


def has_net_caps(c) -> bool:
    """Whether c's processes hold CAP_NET_ADMIN (12) and CAP_NET_RAW (13)."""
    eff = int(re.search(r"CapEff:\s*([0-9a-f]+)", ok(c, "cat /proc/self/status")).group(1), 16)
    return bool(eff >> 12 & 1 and eff >> 13 & 1)


def serve(c, marker: str) -> None:
    """busybox httpd in c answers GET / with marker."""
    ok(c, f"mkdir -p /www && echo {marker} > /www/index.html && httpd -p {PORT} -h /www")


def fetch(ip: str, flush: bool = True) -> str:
    """What the host gets from ip's web server; flush: resolving ip afresh (neighbour entry flushed)."""
    if flush:
        subprocess.run(["ip", "neigh", "flush", "to", ip, "dev", TEST_BRIDGE], capture_output=True)
    with urllib.request.urlopen(f"http://{ip}:{PORT}/", timeout=5) as f:
        return f.read().decode().strip()


def neighbour_mac(ip: str) -> str | None:
    entries = json.loads(sh("ip", "-j", "neigh", "show", "to", ip, "dev", TEST_BRIDGE) or "[]")
    return entries[0].get("lladdr") if entries else None


@pytest.fixture(scope="module")
def other_svc(svc):
    """A second data root on the same bridge name (isolation open), removed with its tables."""
    import appcontainers

    root = tempfile.mkdtemp(prefix="appcontainers-test-other-", dir="/var/tmp")
    os.chmod(root, 0o711)
    try:
        yield appcontainers.setup_service(root=root, bridge=TEST_BRIDGE, subnet=str(OTHER_NET),
                                          isolation="open")
    finally:
        _stop_containers(os.path.join(root, "containers"))
        _umount_under(root)
        delete_nft_tables(root)
        stop_resolver(root)  # as its tables: its containers are stopped, never destroyed
        shutil.rmtree(root, ignore_errors=True)


def attacker(svc):
    """A container given net_admin and net_raw on purpose (the default drops them): the rules
    themselves must hold against a container that can forge any frame."""
    return svc.provision(caps_add=["net_admin", "net_raw"])


def _pair(svc):
    """A (the attacker) and B, running, each serving its name; destroyed after."""
    made = []
    try:
        for marker in ("A", "B"):
            made.append(attacker(svc) if marker == "A" else svc.provision())
            serve(made[-1], marker)
        yield made
    finally:
        for c in made:
            try:
                c.destroy()
            except Exception:
                pass


@pytest.fixture
def pair(svc):
    """Two running containers of the session root (isolation default)."""
    yield from _pair(svc)


@pytest.fixture
def open_pair(other_svc):
    """Two running containers of a root with isolation open."""
    yield from _pair(other_svc)


def hijack_ip(a, b, prefixlen: int) -> None:
    """In a: take b's address and announce it (gratuitous ARP, unsolicited and as answers)."""
    ok(a, f"ip addr add {b.ip}/{prefixlen} dev eth0")
    assert f"inet {b.ip}/" in ok(a, "ip addr show eth0"), "precondition: a now carries b's address"
    ok(a, f"arping -U -c 2 -I eth0 -s {b.ip} {b.ip}; arping -A -c 2 -I eth0 -s {b.ip} {b.ip}; true")
    ok(a, f"ping -c 2 -W 1 -I {b.ip} {ipaddress.ip_network(f'{b.ip}/{prefixlen}', strict=False)[1]}; true")


def spoof_mac(a, b) -> None:
    """In a: take b's MAC (and address), then send frames that would teach the bridge."""
    ok(a, f"ip link set eth0 down && ip link set eth0 address {b.mac} && ip link set eth0 up")
    assert f"link/ether {b.mac}" in ok(a, "ip link show eth0"), "precondition: a now has b's MAC"
    hijack_ip(a, b, TEST_NET.prefixlen)


@pytest.mark.parametrize("level", ["default", "open"])
class TestAntiSpoofing:
    def _pair(self, level, request):
        return request.getfixturevalue("pair" if level == "default" else "open_pair")

    def test_ip_hijack_is_not_answered(self, level, request):
        """A takes B's IP with gratuitous ARP: its frames are dropped at its veth; the host still reaches B."""
        a, b = self._pair(level, request)
        svc = a._svc
        assert (fetch(a.ip), fetch(b.ip)) == ("A", "B"), "precondition: both serve"
        assert has_net_caps(a), "precondition: the attacker holds net_admin and net_raw"
        assert neighbour_mac(b.ip) == b.mac, "precondition: the host knows B's MAC"
        time.sleep(1.5)  # past the neighbour entry's locktime (1 s): an announcement could replace it
        before = drops(svc, veth(a))
        hijack_ip(a, b, ipaddress.ip_network(svc.settings.subnet).prefixlen)
        assert drops(svc, veth(a)) > before, "precondition: the spoofed frames reached the bridge"
        assert neighbour_mac(b.ip) == b.mac  # the announcement did not replace B's entry
        assert fetch(b.ip, flush=False) == "B"
        for _ in range(3):  # nor does A win when the host asks again
            assert fetch(b.ip) == "B"
            assert neighbour_mac(b.ip) == b.mac
        assert fetch(a.ip) == "A"  # A itself still works

    def test_mac_spoof_does_not_take_bs_traffic(self, level, request):
        """A takes B's MAC (and IP): the bridge never learns B's MAC on A's port; B still answers."""
        a, b = self._pair(level, request)
        svc = a._svc
        assert fetch(b.ip) == "B", "precondition: B serves"
        assert has_net_caps(a), "precondition: the attacker holds net_admin and net_raw"
        before = drops(svc, veth(a))
        spoof_mac(a, b)
        assert drops(svc, veth(a)) > before, "precondition: the spoofed frames reached the bridge"
        fdb = sh("bridge", "fdb", "show", "br", TEST_BRIDGE)
        assert not [line for line in fdb.splitlines() if line.startswith(b.mac) and f"dev {veth(a)} " in line]
        for _ in range(3):
            assert fetch(b.ip) == "B"
            assert neighbour_mac(b.ip) == b.mac


class HostListener:
    """A TCP listener on the host's 0.0.0.0:<free port> that records what each connection sends."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("0.0.0.0", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.got: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            with conn:
                conn.settimeout(5)
                try:
                    self.got.append(conn.recv(100))
                except OSError:
                    self.got.append(b"")

    def close(self):
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)


def gateway(svc) -> str:
    return str(ipaddress.ip_network(svc.settings.subnet)[1])


def get_from(c, ip: str) -> str:
    """An HTTP GET from c to ip's web server, over busybox nc (its static wget cannot resolve)."""
    return ok(c, f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} {PORT}").strip()


def send(c, ip: str, port: int) -> int:
    return c.run(f"echo hello-{c.name} | nc -w 3 {ip} {port}", timeout=30).exit_code


class TestHostServices:
    def test_default_containers_reach_each_other_not_the_host(self, pair, svc):
        """At default, A reaches B's port, but none of the host's addresses on a 0.0.0.0 listener."""
        a, b = pair
        assert get_from(a, b.ip).endswith("\nB"), "precondition: A reaches B"
        listener = HostListener()
        try:
            before = input_drops(svc)
            for host_ip in {gateway(svc), str(OTHER_NET[1])}:
                assert send(a, host_ip, listener.port) != 0
            time.sleep(0.2)
            assert listener.got == []
            assert input_drops(svc) > before, "precondition: the SYNs reached the host and were dropped"
        finally:
            listener.close()

    def test_open_containers_reach_the_host(self, open_pair, other_svc):
        """At open, the same listener is reached from a container (and containers reach each other)."""
        a, b = open_pair
        assert get_from(a, b.ip).endswith("\nB")
        listener = HostListener()
        try:
            assert send(a, gateway(other_svc), listener.port) == 0
            time.sleep(0.2)
            assert listener.got == [f"hello-{a.name}\n".encode()]
        finally:
            listener.close()


class TestRules:
    def test_tables_follow_the_containers(self, svc, other_svc):
        """Both families' tables of a root exist while it has a container, hold its veth and
        address, and are gone with its last container; the other root's are untouched."""
        def tables():
            return set(sh("nft", "list", "tables").splitlines())

        mine, theirs = table_name(svc.settings.root_id), table_name(other_svc.settings.root_id)
        assert mine != theirs
        c = other_svc.provision()
        try:
            c.start()
            assert {f"table bridge {theirs}", f"table inet {theirs}"} <= tables()
            listing = sh("nft", "list", "table", "bridge", theirs)
            assert veth(c) in listing and c.mac in listing
            assert c.ip in sh("nft", "list", "table", "inet", theirs)
            d = svc.provision()
            d.start()
            d.destroy()
            assert {f"table bridge {theirs}", f"table inet {theirs}"} <= tables()
        finally:
            c.destroy()
        assert not {line for line in tables() if theirs in line}
        other_svc.reconcile()
        assert not {line for line in tables() if theirs in line}


class TestTwoRoots:
    def test_second_roots_gc_leaves_the_first_roots_veth(self, svc, other_svc):
        """On one bridge name, root 2's gc deletes a stray veth of its own but not root 1's."""
        c = svc.provision()
        stray = veth_name(other_svc.settings.root_id, "gone")
        try:
            serve(c, "C")
            assert veth(c) in os.listdir(f"/sys/class/net/{TEST_BRIDGE}/brif")
            sh("ip", "link", "add", stray, "type", "veth", "peer", "name", stray[:-1] + "p")
            sh("ip", "link", "set", stray, "master", TEST_BRIDGE)
            done = other_svc.reconcile()
            brif = os.listdir(f"/sys/class/net/{TEST_BRIDGE}/brif")
            assert stray not in brif and any(stray in d for d in done), "precondition: root 2's gc ran"
            assert veth(c) in brif
            assert fetch(c.ip) == "C"
        finally:
            subprocess.run(["ip", "link", "del", stray], capture_output=True)
            c.destroy()

    def test_two_roots_each_run_a_container_of_the_same_name(self, svc, other_svc):
        """Two roots run `web` at once: own veth, own cgroups, own address, both answering."""
        made = []
        try:
            for s in (svc, other_svc):
                made.append(s.provision(name="web"))
                made[-1].start()
            assert [c.state for c in made] == ["RUNNING", "RUNNING"]
            assert [ok(c, "hostname").strip() for c in made] == ["web", "web"]
            assert [ok(c, "ip -4 -o addr show eth0").split()[3].split("/")[0] for c in made] == \
                [c.ip for c in made]
            assert veth(made[0]) != veth(made[1])
            for s in (svc, other_svc):
                assert os.path.isdir(f"/sys/fs/cgroup/unified/appcontainers-{s.settings.root_id}.payload.web") \
                    or os.path.isdir(f"/sys/fs/cgroup/appcontainers-{s.settings.root_id}.payload.web")
        finally:
            for c in made:
                try:
                    c.destroy()
                except Exception:
                    pass

    def test_a_dead_monitors_cgroups_do_not_block_a_start(self, svc):
        """Cgroups named for the root, left by a monitor that died (nested ones too), are removed
        before the start; the container runs and leaves none behind when destroyed."""
        rid, made = svc.settings.root_id, []
        c = svc.provision()
        try:
            for top in ("unified", "pids", "memory"):
                path = f"/sys/fs/cgroup/{top}/appcontainers-{rid}.payload.{c.name}/inner"
                if os.path.isdir(os.path.dirname(os.path.dirname(path))):
                    os.makedirs(path)
                    made.append(os.path.dirname(path))
            assert made, "precondition: stale cgroups made"
            c.start()
            assert c.state == "RUNNING"
        finally:
            c.destroy()
            left = [p for p in made if os.path.isdir(p)]
            for p in made:
                for d in (p + "/inner", p):
                    if os.path.isdir(d):
                        os.rmdir(d)
        assert left == []
