"""Egress NAT, published ports and strict isolation, with real traffic: the host, the root's
bridge, and a network namespace made here standing in for "the outside" (a veth pair with its
own /30; no other address is ever contacted)."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

import appcontainers
from appcontainers.domain.exceptions import PortTaken
from appcontainers.domain.firewall import table_name
from tests.conftest import TEST_BRIDGE, TEST_NET, _stop_containers, _umount_under, delete_nft_tables

NETNS, HOST_VETH, OUT_VETH = "acn1out", "acn1h", "acn1o"
# The outside: a /30 of the benchmarking range (RFC 2544), on the test's own veth pair only.
HOST_ADDR, OUT_ADDR = "198.18.231.1", "198.18.231.2"
OUT_PORT = 9000
WEB = 18080  # the host port a container's web server is published on
GATEWAY = str(TEST_NET[1])
OTHER_NET = list(TEST_NET.subnets(new_prefix=TEST_NET.prefixlen + 1))[1]  # a second root's addresses

# In the outside namespace: answer every TCP connection with the address it came from.
ECHO_PEER = ("import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
             f"s.bind(('{OUT_ADDR}', {OUT_PORT}))\ns.listen(8)\n"
             "while True:\n    c, peer = s.accept()\n    c.sendall(('from %s\\n' % peer[0]).encode())\n    c.close()\n")


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)


@pytest.fixture(scope="module")
def outside():
    """A network namespace joined to the host by a veth pair (HOST_ADDR/30 on the host's end),
    running a TCP server on OUT_ADDR:OUT_PORT that tells each client its address."""
    for cmd in (["ip", "netns", "del", NETNS], ["ip", "link", "del", HOST_VETH]):
        sh(*cmd, check=False)
    server = None
    try:
        sh("ip", "netns", "add", NETNS)
        sh("ip", "link", "add", HOST_VETH, "type", "veth", "peer", "name", OUT_VETH, "netns", NETNS)
        sh("ip", "addr", "add", f"{HOST_ADDR}/30", "dev", HOST_VETH)
        sh("ip", "link", "set", HOST_VETH, "up")
        sh("ip", "netns", "exec", NETNS, "ip", "addr", "add", f"{OUT_ADDR}/30", "dev", OUT_VETH)
        sh("ip", "netns", "exec", NETNS, "ip", "link", "set", OUT_VETH, "up")
        sh("ip", "netns", "exec", NETNS, "ip", "link", "set", "lo", "up")
        server = subprocess.Popen(["ip", "netns", "exec", NETNS, sys.executable, "-c", ECHO_PEER])
        for _ in range(50):
            if _connect(OUT_ADDR, OUT_PORT) is not None:
                break
            time.sleep(0.1)
        yield
    finally:
        if server is not None:
            server.kill()
            server.wait(10)
        sh("ip", "link", "del", HOST_VETH, check=False)
        sh("ip", "netns", "del", NETNS, check=False)


def _connect(ip: str, port: int) -> str | None:
    try:
        with socket.create_connection((ip, port), timeout=3) as s:
            return s.recv(100).decode().strip()
    except OSError:
        return None


def ok(c, command: str) -> str:
    r = c.run(command, timeout=30)
    assert r.exit_code == 0, (command, r.stdout, r.stderr)
    return r.stdout


def from_container(c, ip: str, port: int) -> str:
    """What c receives on a TCP connection to ip:port ('' if none)."""
    return c.run(f"nc -w 3 {ip} {port} </dev/null", timeout=30).stdout.strip()


def serve(c, marker: str, port: int = 80) -> None:
    """busybox httpd in c answers GET / on port with marker."""
    ok(c, f"mkdir -p /root/www && echo {marker} > /root/www/index.html && httpd -p {port} -h /root/www")


def get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as f:
            return f.read().decode().strip()
    except OSError:
        return None


def get_outside(url: str) -> str | None:
    """An HTTP GET made from the outside namespace."""
    code = f"import urllib.request\nprint(urllib.request.urlopen('{url}', timeout=5).read().decode().strip())"
    proc = sh("ip", "netns", "exec", NETNS, sys.executable, "-c", code, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


# busybox nc here has no UDP: the agent's own Python (bound from the host) serves the echo.
UDP_ECHO = ("exe=$(sed -n 's/^exec \\([^ ]*\\) .*/\\1/p' /sbin/appcontainers-init); "
            "$exe -S -c 'import socket\ns = socket.socket(2, 2)\ns.bind((\"\", 53))\n"
            "while True:\n    d, a = s.recvfrom(100)\n    s.sendto(d, a)' </dev/null >/dev/null 2>&1 &")


def udp_echo(ip: str, port: int) -> bytes | None:
    """What a UDP echo at ip:port sends back for b"ping" (None: nothing within 3 s)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        for _ in range(2):  # the server may still be starting
            s.sendto(b"ping", (ip, port))
            try:
                return s.recv(100)
            except OSError:
                continue
    return None


def counters(family: str, table: str, chain: str) -> int:
    out = sh("nft", "list", "chain", family, table, chain).stdout
    return sum(int(n) for n in re.findall(r"counter packets (\d+)", out))


@pytest.fixture
def made(svc):
    """Containers a test provisions, destroyed after it whatever happens."""
    cs: list = []
    yield cs
    for c in cs:
        try:
            c.destroy()
        except Exception:
            pass


@pytest.fixture
def relevel(settings, svc):
    """relevel(**settings): the session root's rules re-applied with other settings (as another
    program using the root would); the session's own settings come back after the test."""
    def apply(**changes):
        return appcontainers.setup_service(**settings, **changes)

    yield apply
    appcontainers.setup_service(**settings)


class TestEgressNat:
    def test_a_container_reaches_the_outside_from_the_hosts_address(self, outside, svc, made):
        """NAT on (the default): a container's connection to the outside namespace arrives from
        the host's address on that link, not the container's."""
        assert _connect(OUT_ADDR, OUT_PORT) == f"from {HOST_ADDR}", "precondition: the host reaches the outside"
        made.append(svc.provision())
        c = made[0]
        assert from_container(c, OUT_ADDR, OUT_PORT) == f"from {HOST_ADDR}"
        assert open("/proc/sys/net/ipv4/ip_forward").read().strip() == "1"

    def test_without_nat_nothing_gets_out(self, outside, svc, made, relevel):
        """nat=False: the same connection does not get through (while ip_forward stays on);
        back on, it does."""
        made.append(svc.provision())
        c = made[0]
        assert from_container(c, OUT_ADDR, OUT_PORT) == f"from {HOST_ADDR}", "precondition: NAT on works"
        relevel(nat=False)
        assert open("/proc/sys/net/ipv4/ip_forward").read().strip() == "1"  # not what stops it
        assert from_container(c, OUT_ADDR, OUT_PORT) == ""
        relevel(nat=True)
        assert from_container(c, OUT_ADDR, OUT_PORT) == f"from {HOST_ADDR}"


class TestPublishedPorts:
    def test_a_published_port_is_reached_from_the_host_and_the_outside(self, outside, svc, made):
        """18080:80 reaches the container's web server from 127.0.0.1, the host's addresses and
        the outside namespace; the outside cannot reach the container's address directly; after
        destroy nothing answers."""
        made.append(svc.provision(publish=[f"{WEB}:80"]))
        c = made[0]
        serve(c, "published")
        assert get(f"http://{c.ip}:80/") == "published", "precondition: the server answers on its own address"
        urls = [f"http://{ip}:{WEB}/" for ip in ("127.0.0.1", GATEWAY, HOST_ADDR)]
        assert [get(u) for u in urls] == ["published"] * 3
        assert get_outside(f"http://{HOST_ADDR}:{WEB}/") == "published"
        sh("ip", "netns", "exec", NETNS, "ip", "route", "add", str(TEST_NET), "via", HOST_ADDR)
        assert get_outside(f"http://{c.ip}:80/") is None  # routed straight to it: dropped
        c.destroy()
        assert table_name(svc.settings.root_id) not in sh("nft", "list", "tables").stdout  # its last container
        assert [get(u) for u in urls] == [None] * 3
        assert get_outside(f"http://{HOST_ADDR}:{WEB}/") is None
        sh("ip", "netns", "exec", NETNS, "ip", "route", "del", str(TEST_NET), check=False)

    def test_ports_kept_across_stop_and_start_and_shown(self, svc, made):
        """The reservation keeps the ports; after stop and start the port answers again; ls --json shows it."""
        made.append(svc.provision(publish=[f"{WEB}:80", "127.0.0.1:15353:53/udp"]))
        c = made[0]
        info = [i for i in svc.container_infos() if i["name"] == c.name][0]
        assert info["ports"] == [f"{WEB}:80/tcp", "127.0.0.1:15353:53/udp"]
        c.start()
        c.stop()
        serve(c, "again")
        assert get(f"http://127.0.0.1:{WEB}/") == "again"
        listing = sh("nft", "list", "table", "inet", table_name(svc.settings.root_id)).stdout
        assert f"ip daddr 127.0.0.1 udp dport 15353 dnat ip to {c.ip}:53" in listing

    def test_udp_port_echoes(self, svc, made):
        """A published UDP port (127.0.0.1 only) reaches a UDP echo server in the container; the
        host's other addresses do not."""
        made.append(svc.provision(publish=["127.0.0.1:15353:53/udp"]))
        c = made[0]
        ok(c, UDP_ECHO)
        assert udp_echo(c.ip, 53) == b"ping", "precondition: the echo server answers on its own address"
        assert udp_echo("127.0.0.1", 15353) == b"ping"
        assert udp_echo(GATEWAY, 15353) is None

    def test_conflicts_are_refused_and_reserve_nothing(self, svc, made):
        """A host port another container publishes, or a host socket holds, is refused with
        PortTaken before anything is reserved."""
        made.append(svc.provision(publish=[f"{WEB}:80"]))
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        busy = listener.getsockname()[1]
        try:
            before = sorted(svc.ports.repo.read().reservations)
            with pytest.raises(PortTaken, match=f"container {made[0].name} publishes"):
                svc.provision(publish=[f"127.0.0.1:{WEB}:8080"])
            with pytest.raises(PortTaken, match="in use on this host"):
                svc.provision(publish=[f"{busy}:80"])
            assert sorted(svc.ports.repo.read().reservations) == before
        finally:
            listener.close()

    def test_a_port_another_data_root_publishes_is_refused(self, svc, made):
        """A second data root (on the same bridge, its own half of the subnet) publishing a port
        makes this root refuse it; once that root's container is gone, it is free."""
        root = tempfile.mkdtemp(prefix="appcontainers-test-n1pub-", dir="/var/tmp")
        os.chmod(root, 0o711)
        try:
            other = appcontainers.setup_service(root=root, bridge=TEST_BRIDGE, subnet=str(OTHER_NET))
            theirs = other.provision(publish=[f"{WEB}:80"])
            theirs.start()
            with pytest.raises(PortTaken, match="published by another data root"):
                svc.provision(publish=[f"{WEB}:80"])
            theirs.destroy()
            made.append(svc.provision(publish=[f"{WEB}:80"]))
        finally:
            _stop_containers(os.path.join(root, "containers"))
            _umount_under(root)
            delete_nft_tables(root)
            shutil.rmtree(root, ignore_errors=True)

    def test_a_destroy_killed_midway_leaves_no_port_after_gc(self, settings, svc, made):
        """A destroy SIGKILLed after LXC stopped leaves the port's rule; gc finishes it, and the
        root's tables go with its last container."""
        c = svc.provision(publish=[f"{WEB}:80"])
        made.append(c)
        serve(c, "killed")
        assert get(f"http://127.0.0.1:{WEB}/") == "killed", "precondition: the port answers"
        code = ("import json, sys, appcontainers\n"
                "appcontainers.setup_service(**json.loads(sys.argv[1])).get(sys.argv[2]).destroy()\n")
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(settings), c.name], capture_output=True,
                              timeout=120, env={**os.environ, "APPCONTAINERS_FAULT": "destroy.stopped"})
        assert proc.returncode == -9, proc.stderr
        table = table_name(svc.settings.root_id)
        assert f"dport {WEB} dnat ip to {c.ip}:80" in sh("nft", "list", "table", "inet", table).stdout, \
            "precondition: the crash left the rule"
        svc.reconcile()
        assert c.name not in svc.ports.repo.read().reservations
        assert table not in sh("nft", "list", "tables").stdout
        assert get(f"http://127.0.0.1:{WEB}/") is None

    def test_cli_publish_and_ls(self, settings, svc):
        """The CLI: provision -p, ls shows the PORTS column, rm removes the rule."""
        env = {**os.environ, "APPCONTAINERS_ROOT": settings["root"], "APPCONTAINERS_BRIDGE": settings["bridge"],
               "APPCONTAINERS_SUBNET": settings["subnet"]}
        cli = [sys.executable, "-m", "appcontainers.entrypoints.cli"]
        out = subprocess.run([*cli, "provision", "--json", "-p", f"{WEB}:80", "--publish", "15354:54/udp"],
                             env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        name = json.loads(out.stdout)["name"]
        try:
            ls = subprocess.run([*cli, "ls"], env=env, capture_output=True, text=True, timeout=60).stdout
            assert ls.splitlines()[0].split()[-1] == "PORTS"
            assert [line.split()[-1] for line in ls.splitlines() if line.startswith(name)] == \
                [f"{WEB}:80/tcp,15354:54/udp"]
            refused = subprocess.run([*cli, "provision", "-p", f"{WEB}:81"], env=env, capture_output=True,
                                     text=True, timeout=120)
            assert refused.returncode == 1 and "cannot publish" in refused.stderr and "Traceback" not in refused.stderr
        finally:
            subprocess.run([*cli, "rm", name], env=env, capture_output=True, timeout=120)


class TestStrict:
    def test_strict_keeps_containers_apart_but_for_published_ports(self, svc, made, relevel):
        """At strict A cannot reach B's port (at default it can), and reaches B's published port
        through the host's address; the bridge table counts the drops."""
        made += [svc.provision(), svc.provision(publish=[f"{WEB}:80"])]
        a, b = made
        serve(b, "B")
        ok(a, "true")
        assert "B" in ok(a, f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {b.ip} 80"), "precondition: default"
        relevel(isolation="strict")
        table = table_name(svc.settings.root_id)
        before = counters("bridge", table, "forward")
        r = a.run(f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {b.ip} 80", timeout=30)
        assert "B" not in r.stdout
        assert counters("bridge", table, "forward") > before
        through = ok(a, f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {GATEWAY} {WEB}")
        assert through.splitlines()[-1] == "B"

    def test_strict_holds_against_routing_through_the_gateway(self, svc, made, relevel):
        """At strict, A (given net_admin) routes to B via the gateway, so its packets leave and come
        back by the bridge instead of being bridged: they are dropped too (counted in the inet
        table's forward chain), while the same route reaches B at default (the precondition)."""
        made += [svc.provision(caps_add=["net_admin"]), svc.provision()]
        a, b = made
        serve(b, "B")
        ok(a, f"ip route add {b.ip}/32 via {GATEWAY}")
        assert "B" in ok(a, f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {b.ip} 80"), "precondition: default"
        relevel(isolation="strict")
        table = table_name(svc.settings.root_id)
        before = counters("inet", table, "forward")
        r = a.run(f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {b.ip} 80", timeout=30)
        assert "B" not in r.stdout
        assert counters("inet", table, "forward") > before  # the routed path was taken, and dropped
