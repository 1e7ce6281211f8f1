"""Names for containers, for real: the data root's dnsmasq on the bridge's gateway answers the
root's container names from inside its containers, forwards other names (to a stand-in upstream
resolver on loopback, never the host's real ones), and goes with the root's last container."""
from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from appcontainers.adapters.net.dns import running
from appcontainers.adapters.net.hostnet import bridge_mac
from appcontainers.domain.firewall import table_name
from tests.conftest import TEST_UPSTREAM
from tests.dnsquery import query_a

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/sbin/dnsmasq"), reason="needs dnsmasq (dnsmasq-base)")

FORWARDED = ("www.example.test", "192.0.2.7")  # what only the stand-in upstream knows


@pytest.fixture(scope="module")
def upstream():
    """The stand-in for the host's resolver: a dnsmasq on this run's loopback upstream address
    that knows only example.test, started and ended here."""
    d = tempfile.mkdtemp(prefix="appcontainers-upstream-", dir="/var/tmp")
    os.chmod(d, 0o755)
    pid_file = os.path.join(d, "pid")
    subprocess.run(["dnsmasq", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces",
                    f"--listen-address={TEST_UPSTREAM}", "--port=53", f"--address=/example.test/{FORWARDED[1]}",
                    f"--pid-file={pid_file}"], check=True, capture_output=True, timeout=30)
    pid = int(open(pid_file).read())
    try:
        assert query_a(TEST_UPSTREAM, FORWARDED[0]) == [FORWARDED[1]], "precondition: the stand-in answers"
        yield TEST_UPSTREAM
    finally:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not os.path.exists(f"/proc/{pid}") or not open(f"/proc/{pid}/cmdline").read():
                break
            time.sleep(0.05)
        subprocess.run(["rm", "-rf", d])


def gateway(svc) -> str:
    return str(ipaddress.ip_network(svc.settings.subnet)[1])


def bridge_address(svc) -> str:
    with open(f"/sys/class/net/{svc.settings.bridge}/address") as f:
        return f.read().strip()


def dns_dir(svc) -> str:
    return svc.settings.layout.dns_dir


def resolved(c, name: str) -> list[str]:
    """The addresses busybox nslookup in c finds for name through c's /etc/resolv.conf."""
    out = c.run(f"nslookup -type=a {name}", timeout=30).stdout
    if "Name:" not in out:
        return []
    return re.findall(r"^Address:\s*(\S+)", out.split("Name:", 1)[1], re.M)


def eventually(check, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def uniq(prefix: str) -> str:
    return f"{prefix}-{os.getpid() % 100000}-{int(time.monotonic() * 1000) % 100000}"


@pytest.fixture
def pair(svc, upstream):
    """A (holding net_raw, for ping) and B, started; destroyed after whatever happens."""
    made = []
    try:
        for name, caps in ((uniq("dns-a"), ["net_raw"]), (uniq("dns-b"), [])):
            made.append(svc.provision(name=name, caps_add=caps))
            made[-1].start()
        yield made
    finally:
        for c in made:
            try:
                c.destroy()
            except Exception:
                pass


class TestNames:
    def test_a_container_reaches_another_by_name(self, svc, pair):
        """A's resolv.conf names the gateway, and A resolves (nslookup) and pings B by name."""
        a, b = pair
        assert a.run(f"ping -c1 -W2 {gateway(svc)}", timeout=30).exit_code == 0, "precondition: A reaches the gateway"
        assert f"nameserver {gateway(svc)}" in a.run("cat /etc/resolv.conf").stdout
        assert resolved(a, b.name) == [b.ip]
        assert resolved(b, a.name) == [a.ip]
        r = a.run(f"ping -c1 -W2 {b.name}", timeout=30)
        assert r.exit_code == 0 and f"({b.ip})" in r.stdout, r.stdout + r.stderr

    def test_dns_over_tcp_to_the_gateway_passes_the_input_policy(self, svc, pair):
        """At the default isolation, A may open TCP 53 on the gateway (and no other port there)."""
        a, _b = pair
        assert svc.settings.isolation == "default"
        assert a.run(f"nc -w 3 {gateway(svc)} 53 </dev/null", timeout=30).exit_code == 0
        assert a.run(f"nc -w 3 {gateway(svc)} 54 </dev/null", timeout=30).exit_code != 0

    def test_other_names_are_forwarded_upstream(self, pair):
        """A name only the (stand-in) host resolver knows resolves inside a container."""
        a, _b = pair
        assert resolved(a, FORWARDED[0]) == [FORWARDED[1]]

    def test_a_destroyed_containers_name_no_longer_resolves(self, svc, pair):
        """After B is destroyed, A's lookup of B's name finds nothing, and A still reaches the
        resolver (its own name resolves): the bridge kept its MAC when B's port left."""
        a, b = pair
        assert resolved(a, b.name) == [b.ip], "precondition"
        b.destroy()
        assert bridge_address(svc) == bridge_mac(svc.settings.bridge)
        assert resolved(a, a.name) == [a.ip]
        assert resolved(a, b.name) == []
        assert "NXDOMAIN" in a.run(f"nslookup -type=a {b.name}", timeout=30).stdout  # answered, not lost


def nothing_left(svc) -> list[str]:
    """What of the root's resolver or rules is still there."""
    left = [f"dnsmasq {pid}" for pid in running(dns_dir(svc))]
    if os.path.exists(dns_dir(svc)):
        left.append(f"{dns_dir(svc)}: {os.listdir(dns_dir(svc))}")
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    left += [line for line in tables.splitlines() if table_name(svc.settings.root_id) in line]
    return left


class TestLifetime:
    def test_the_resolver_goes_with_the_roots_last_container(self, svc, upstream):
        """One dnsmasq while the root has containers, answering on the gateway; none, and no
        pid file, hosts file or table, after its last container is destroyed."""
        assert svc.list_containers() == [], "precondition: the root has no other container"
        c = svc.provision(name=uniq("dns-c"))
        try:
            c.start()
            assert len(running(dns_dir(svc))) == 1
            assert query_a(gateway(svc), c.name) == [c.ip]  # the host may ask it too
        finally:
            c.destroy()
        assert nothing_left(svc) == []

    def test_gc_restarts_a_dead_resolver_and_removes_a_stale_one(self, svc, upstream):
        """kill -9 of the resolver: gc starts a new one while a container runs (names answer
        again); a resolver left after the last container went (a crash between the steps) and
        its pid file are removed by gc."""
        assert svc.list_containers() == [], "precondition: the root has no other container"
        c = svc.provision(name=uniq("dns-d"))
        try:
            c.start()
            [pid] = running(dns_dir(svc))
            os.kill(pid, signal.SIGKILL)
            assert eventually(lambda: running(dns_dir(svc)) == [])
            assert query_a(gateway(svc), c.name) is None, "precondition: nothing answers"
            svc.reconcile()
            assert len(running(dns_dir(svc))) == 1 and running(dns_dir(svc)) != [pid]
            assert query_a(gateway(svc), c.name) == [c.ip]
            argv = open(f"/proc/{running(dns_dir(svc))[0]}/cmdline").read().split("\0")[:-1]
        finally:
            c.destroy()
        assert nothing_left(svc) == []
        # What a process killed between the last destroy's steps leaves: a resolver and its files.
        os.makedirs(dns_dir(svc), exist_ok=True)
        subprocess.run(argv, check=True, capture_output=True, timeout=30)
        assert len(running(dns_dir(svc))) == 1, "precondition: a resolver is left"
        svc.reconcile()
        assert nothing_left(svc) == []


class TestImpostor:
    def test_a_local_users_fake_dnsmasq_is_not_taken_for_the_roots_resolver(self, svc, upstream):
        """Attack: a local user (nobody) starts a program named dnsmasq carrying the root's
        --pid-file flag before the root's first container starts. It is not counted as the
        resolver (the container's names answer from a real one) and is never signalled."""
        assert svc.list_containers() == [], "precondition: the root has no other container"
        marker = f"--pid-file={dns_dir(svc)}/dnsmasq.pid"
        fake = subprocess.Popen(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash", "-c",
             f'exec -a dnsmasq /usr/bin/python3 -c "import time; time.sleep(120)" {marker}'])
        try:
            assert eventually(lambda: marker in open(f"/proc/{fake.pid}/cmdline").read()
                              and open(f"/proc/{fake.pid}/cmdline").read().startswith("dnsmasq\0")), \
                "precondition: the impostor carries the name and the flag the old check looked for"
            assert running(dns_dir(svc)) == []
            c = svc.provision(name=uniq("dns-i"))
            try:
                c.start()
                [pid] = running(dns_dir(svc))
                assert pid != fake.pid
                assert query_a(gateway(svc), c.name) == [c.ip]
            finally:
                c.destroy()
            assert fake.poll() is None, "the impostor was signalled"
        finally:
            fake.kill()
            fake.wait()
        assert nothing_left(svc) == []


@pytest.fixture
def outsider(svc):
    """A network namespace on a veth of its own (not the bridge), routing the gateway's address
    to the host: a stand-in for another network of the host. Removed after."""
    third = ipaddress.ip_network(svc.settings.subnet).network_address.packed[2]
    ns, host_end = f"acdnsns{third}", f"acdnsh{third}"
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "link", "del", host_end], capture_output=True)
    try:
        for argv in (["ip", "netns", "add", ns],
                     ["ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns],
                     ["ip", "addr", "add", f"169.254.{third}.1/30", "dev", host_end],
                     ["ip", "link", "set", host_end, "up"],
                     ["ip", "-n", ns, "addr", "add", f"169.254.{third}.2/30", "dev", "eth0"],
                     ["ip", "-n", ns, "link", "set", "eth0", "up"],
                     ["ip", "-n", ns, "route", "add", gateway(svc), "via", f"169.254.{third}.1"]):
            subprocess.run(argv, check=True, capture_output=True)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", host_end], capture_output=True)


def dns_guard_drops(svc) -> int:
    out = subprocess.run(["nft", "list", "chain", "inet", table_name(svc.settings.root_id), "input"],
                         capture_output=True, text=True, check=True).stdout
    return sum(int(n) for line in out.splitlines() if "dport 53" in line and "drop" in line
               for n in re.findall(r"counter packets (\d+)", line))


class TestNotAnOpenResolver:
    def test_another_interface_gets_no_answer(self, svc, upstream, outsider):
        """A query for a container's name reaching the gateway's address from another interface
        is dropped; the same query from the host itself is answered."""
        c = svc.provision(name=uniq("dns-e"))
        try:
            c.start()
            ping = subprocess.run(["ip", "netns", "exec", outsider, "busybox", "ping", "-c1", "-W2", gateway(svc)],
                                  capture_output=True, text=True)
            assert ping.returncode == 0, "precondition: the outsider reaches the gateway's address"
            before = dns_guard_drops(svc)
            code = f"from tests.dnsquery import query_a; print(query_a({gateway(svc)!r}, {c.name!r}))"
            out = subprocess.run(["ip", "netns", "exec", outsider, sys.executable, "-c", code],
                                 capture_output=True, text=True, check=True,
                                 cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__)))).stdout
            assert out.strip() == "None"
            assert dns_guard_drops(svc) > before
            assert query_a(gateway(svc), c.name) == [c.ip]
        finally:
            c.destroy()
