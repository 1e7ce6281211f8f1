"""Egress NAT, published ports and strict isolation as data: parsing, storage, conflicts, the script."""
from __future__ import annotations

import pytest

from appcontainers.adapters.net import hostnet, nftables, sockets
from appcontainers.config import Settings
from appcontainers.domain.exceptions import InvalidValue, PortTaken
from appcontainers.domain.firewall import PortForward, PortGuard, RootRules
from appcontainers.domain.publish import Published, parse_all
from appcontainers.domain.reservation import Reservation
from tests.fakes import make_service

A = PortGuard(veth="ac1234560000001", mac="02:00:00:00:00:0a", ip="10.0.100.2")
B = PortGuard(veth="ac1234560000002", mac="02:00:00:00:00:0b", ip="10.0.100.3")
WEB = PortForward(host_port=8080, proto="tcp", ip="10.0.100.2", port=80)
DNS = PortForward(host_port=5353, proto="udp", ip="10.0.100.3", port=53, host_ip="127.0.0.1")


def rules(*guards, isolation="default", nat=True, forwards=()):
    return RootRules(table="appcontainers_12345678", bridge="acbr0", isolation=isolation, guards=guards,
                     subnet="10.0.100.0/24", nat=nat, forwards=forwards)


def chain(script: str, name: str) -> list[str]:
    lines = script.splitlines()
    start = lines.index(f"  chain {name} {{")
    return [line.strip() for line in lines[start + 1:lines.index("  }", start)]]


def chains(script: str) -> set[str]:
    return {line.split()[1] for line in script.splitlines() if line.startswith("  chain ")}


class TestPublished:
    @pytest.mark.parametrize("spec, canonical", [
        ("8080:80", "8080:80/tcp"), ("127.0.0.1:5353:53/udp", "127.0.0.1:5353:53/udp"),
        ("0.0.0.0:80:8080/tcp", "80:8080/tcp"), ("1:65535", "1:65535/tcp")])
    def test_parse_is_dockers_syntax(self, spec, canonical):
        """[HOST_IP:]HOST_PORT:PORT[/tcp|/udp]; 0.0.0.0 is every address; kept in one spelling."""
        assert Published.parse(spec).spec == canonical
        assert Published.parse(canonical).spec == canonical

    @pytest.mark.parametrize("spec", ["80", "0:80", "80:70000", "a:80", "1.2.3:80:80", "80:80/sctp",
                                      "::1:80:80", "80:80 ", 8080, None, "300.1.1.1:80:80"])
    def test_malformed_refused(self, spec):
        """Anything else is refused with a clear InvalidValue."""
        with pytest.raises(InvalidValue):
            Published.parse(spec)

    def test_one_host_port_once(self):
        """A host port (per protocol, overlapping address) cannot be published twice in one list."""
        assert parse_all(["80:80", "80:80/udp", "127.0.0.1:81:80", "127.0.0.2:81:80"])
        for specs in (["80:80", "80:81"], ["127.0.0.1:80:80", "80:81"]):
            with pytest.raises(InvalidValue):
                parse_all(specs)
        with pytest.raises(InvalidValue):
            parse_all("80:80")

    def test_reservation_round_trip(self):
        """publish is stored canonical in the reservation and survives to_dict/from_dict; old records have none."""
        r = Reservation(name="web", ip="10.0.100.2", mac="02:00:00:00:00:0a", image="x",
                        publish=["8080:80", "127.0.0.1:5353:53/udp"])
        assert r.publish == ("8080:80/tcp", "127.0.0.1:5353:53/udp")
        assert Reservation.from_dict(r.to_dict()) == r
        old = r.to_dict()
        del old["publish"]
        assert Reservation.from_dict(old).publish == ()


class TestSettings:
    def test_nat_on_by_default_off_by_setting_or_env(self):
        """nat is on unless setup_service(nat=False) or APPCONTAINERS_NAT=0."""
        assert Settings().nat is True
        assert Settings(nat=False).nat is False
        assert Settings.from_env({"APPCONTAINERS_NAT": "0"}).nat is False
        assert Settings.from_env({"APPCONTAINERS_NAT": "1"}).nat is True
        with pytest.raises(InvalidValue):
            Settings.from_env({"APPCONTAINERS_NAT": "maybe"})

    def test_strict_is_a_level(self):
        """isolation="strict" is accepted."""
        assert Settings(isolation="strict").isolation == "strict"


class TestScript:
    def test_nat_masquerades_the_subnet_leaving_by_other_interfaces(self):
        """With nat, the subnet is masqueraded on any interface but the bridge; forward lets it out."""
        s = nftables.script(rules(A))
        assert chain(s, "postrouting")[1:] == ['oifname != "acbr0" ip saddr 10.0.100.0/24 masquerade']
        assert 'iifname "acbr0" ip saddr @containers oifname != "acbr0" counter drop' not in chain(s, "forward")

    def test_without_nat_nothing_new_leaves(self):
        """nat=False: no masquerade, and new traffic from a container to another interface is dropped."""
        s = nftables.script(rules(A, nat=False))
        assert "postrouting" not in chains(s)
        assert chain(s, "forward")[-1] == 'iifname "acbr0" ip saddr @containers oifname != "acbr0" counter drop'

    def test_forward_lets_replies_and_published_ports_in_and_nothing_else(self):
        """Routed traffic to a container passes only if established or DNATed (a published port)."""
        assert chain(nftables.script(rules(A)), "forward")[1:4] == [
            "ct state established,related accept", "ct status dnat accept",
            'iifname != "acbr0" oifname "acbr0" ip daddr @containers counter drop']

    def test_a_named_address_must_still_be_the_hosts(self):
        """A publish naming an address matches it only as a local one: 1.1.1.1:443 never captures
        the host's or a container's traffic to that address elsewhere."""
        from appcontainers.domain.firewall import PortForward
        rule = nftables.dnat(PortForward(host_port=443, proto="tcp", ip="10.0.100.2", port=443,
                                         host_ip="1.1.1.1"), "output")
        assert rule.strip().startswith("fib daddr type local ip daddr 1.1.1.1 ")

    def test_strict_drops_routed_traffic_between_containers(self):
        """At strict, a container routing to another through the gateway (in and out by the bridge)
        is dropped after DNATed (published) traffic is let through."""
        inet = nftables.script(rules(A, B, isolation="strict")).split("\ntable inet ", 1)[1]
        lines = chain(inet, "forward")
        dnat = lines.index("ct status dnat accept")
        drop = lines.index('iifname "acbr0" oifname "acbr0" ip saddr @containers ip daddr @containers counter drop')
        assert dnat < drop
        default = nftables.script(rules(A, B)).split("\ntable inet ", 1)[1]
        assert "ip saddr @containers ip daddr @containers" not in " ".join(chain(default, "forward"))

    def test_published_ports_dnat_from_outside_and_from_the_host(self):
        """Each port is DNATed in prerouting (not a 127.0.0.1 one) and output; hairpin and
        loopback connections are masqueraded so the answers come back through the host."""
        s = nftables.script(rules(A, B, forwards=[WEB, DNS]))
        assert chain(s, "publish_in")[1:] == ["fib daddr type local tcp dport 8080 dnat ip to 10.0.100.2:80"]
        assert chain(s, "publish_out")[1:] == ["fib daddr type local tcp dport 8080 dnat ip to 10.0.100.2:80",
                                               "fib daddr type local ip daddr 127.0.0.1 udp dport 5353 dnat ip to 10.0.100.3:53"]
        assert chain(s, "postrouting")[2:] == ['oifname "acbr0" ip saddr 10.0.100.0/24 ct status dnat masquerade',
                                               'oifname "acbr0" ip saddr 127.0.0.0/8 ct status dnat masquerade']
        assert "elements = { tcp . 8080, udp . 5353 }" in [line.strip() for line in s.splitlines()]

    def test_no_published_port_no_dnat(self):
        """Without a published port there is no DNAT chain and no published set."""
        s = nftables.script(rules(A))
        assert not {"publish_in", "publish_out"} & chains(s) and "set published" not in s

    def test_loopback_of_the_host_is_closed_to_containers(self):
        """A packet from a container to 127.0.0.0/8 is dropped (route_localnet would route it)."""
        assert chain(nftables.script(rules(A)), "localnet")[1:] == [
            'iifname != "lo" ip saddr @containers ip daddr 127.0.0.0/8 counter drop']

    def test_strict_drops_frames_between_the_roots_veths(self):
        """At strict, the bridge table drops every frame from one of the root's veths to another
        but those DNATed to a published port (marked); the input policy is default's; other
        levels have no such chain."""
        s = nftables.script(rules(A, B, isolation="strict", forwards=[WEB]))
        assert chain(s, "forward") == ["type filter hook forward priority filter; policy accept;",
                                       "meta mark & 0x00a00000 == 0x00a00000 accept",
                                       "iifname @veths oifname @veths counter drop"]
        assert chain(s, "publish_mark")[1:] == [
            "ct status dnat ip daddr @containers meta mark set meta mark | 0x00a00000"]
        assert "publish_mark" not in chains(nftables.script(rules(A, B, forwards=[WEB])))
        assert f'elements = {{ "{A.veth}", "{B.veth}" }}' in [line.strip() for line in s.splitlines()]
        assert chain(s, "input") == chain(nftables.script(rules(A, B)), "input")
        assert "set veths" not in nftables.script(rules(A, B))

    def test_sysctls_only_when_needed(self):
        """ip_forward for NAT or published ports; route_localnet on the bridge only for a loopback
        port; nothing without containers."""
        assert rules(A, nat=False).sysctls() == ()
        assert rules(A).sysctls() == (("net/ipv4/ip_forward", "1"),)
        assert rules(A, nat=False, forwards=[WEB]).sysctls() == (
            ("net/ipv4/ip_forward", "1"), ("net/ipv4/conf/acbr0/route_localnet", "1"))
        assert rules(nat=True, forwards=[WEB]).sysctls() == ()
        only_ip = PortForward(host_port=8080, proto="tcp", ip="10.0.100.2", port=80, host_ip="192.0.2.1")
        assert rules(A, nat=False, forwards=[only_ip]).sysctls() == (("net/ipv4/ip_forward", "1"),)

    def test_switch_on_never_switches_off(self, tmp_path):
        """A key off is switched on, one already on is left alone, one missing (no bridge yet) skipped."""
        (tmp_path / "net/ipv4").mkdir(parents=True)
        (tmp_path / "net/ipv4/ip_forward").write_text("0\n")
        (tmp_path / "net/ipv4/on").write_text("1\n")
        hostnet.switch_on((("net/ipv4/ip_forward", "1"), ("net/ipv4/on", "1"),
                           ("net/ipv4/conf/acbr0/route_localnet", "1")), root=str(tmp_path))
        assert (tmp_path / "net/ipv4/ip_forward").read_text() == "1"
        assert (tmp_path / "net/ipv4/on").read_text() == "1\n"
        assert not (tmp_path / "net/ipv4/conf").exists()


class TestSockets:
    def test_proc_net_listeners_and_bound_udp(self):
        """/proc/net parsing: TCP in LISTEN and UDP sockets hold their port; wildcard is None."""
        tcp = ("  sl  local_address rem_address   st\n"
               "   0: 00000000:1F90 00000000:0000 0A 0\n"
               "   1: 0100007F:0035 00000000:0000 0A 0\n"
               "   2: 0100007F:9C40 0100007F:1F90 01 0\n")
        assert sockets.parse_proc_net(tcp, "tcp") == {("tcp", None, 8080), ("tcp", "127.0.0.1", 53)}
        tcp6 = ("  sl  local_address rem_address st\n"
                "   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 0\n"
                "   1: 0000000000000000FFFF00000100007F:0051 00000000000000000000000000000000:0000 0A 0\n")
        assert sockets.parse_proc_net(tcp6, "tcp") == {("tcp", None, 80), ("tcp", "127.0.0.1", 81)}
        udp = "  sl  local_address rem_address st\n   0: 00000000:14E9 00000000:0000 07 0\n"
        assert sockets.parse_proc_net(udp, "udp") == {("udp", None, 5353)}

    def test_other_roots_published_set(self):
        """An `nft -j list set` listing gives (protocol, None, port)."""
        listing = ('{"nftables": [{"metainfo": {}}, {"set": {"name": "published", '
                   '"elem": [{"concat": ["tcp", 18080]}, {"concat": ["udp", 5353]}]}}]}')
        assert sockets.parse_published(listing) == {("tcp", None, 18080), ("udp", None, 5353)}


class TestService:
    def test_provision_stores_the_ports_and_start_forwards_them(self):
        """provision(publish=) keeps the ports in the reservation; the rules DNAT them to its address."""
        svc = make_service()
        c = svc.provision("web", publish=["8080:80", "127.0.0.1:5353:53/udp"])
        c.start()
        assert svc.containers.get("web").publish == ("8080:80/tcp", "127.0.0.1:5353:53/udp")
        assert set(svc.ports.net.rules.forwards) == {
            PortForward(host_port=8080, proto="tcp", ip=c.ip, port=80),
            PortForward(host_port=5353, proto="udp", ip=c.ip, port=53, host_ip="127.0.0.1")}
        assert svc.ports.net.rules.nat is True and svc.ports.net.rules.subnet == svc.settings.subnet
        c.stop()
        c.start()
        assert len(svc.ports.net.rules.forwards) == 2  # kept across stop/start
        c.destroy()
        assert svc.ports.net.rules.forwards == ()

    def test_a_port_another_container_publishes_is_refused_and_nothing_reserved(self):
        """A clash with another container's port raises PortTaken naming it; nothing is reserved."""
        svc = make_service()
        svc.provision("web", publish=["8080:80"])
        before = svc.ports.repo.read().to_dict()
        with pytest.raises(PortTaken, match="container web publishes 8080:80/tcp"):
            svc.provision("web2", publish=["127.0.0.1:8080:81"])
        assert svc.ports.repo.read().to_dict() == before
        svc.provision("web3", publish=["8080:80/udp"])  # another protocol is another port

    def test_a_port_in_use_on_the_host_is_refused(self):
        """A host socket (or another root's publication) on the port refuses it before reserving."""
        svc = make_service()
        svc.ports.net.taken = {("tcp", "127.0.0.1", 8080)}
        with pytest.raises(PortTaken, match="in use on this host"):
            svc.provision("web", publish=["8080:80"])
        assert svc.ports.repo.read().reservations == {}
        svc.provision("web", publish=["192.0.2.7:8080:80"])  # another address is free

    def test_nat_setting_reaches_the_rules(self):
        """setup with nat=False applies rules without NAT."""
        svc = make_service(nat=False)
        svc.provision("a").start()
        assert svc.ports.net.rules.nat is False


def test_port_53_on_every_address_is_refused():
    """-p 53:53/udp would also match every data root's gateway, where its resolver listens."""
    import pytest as _pytest

    from appcontainers.domain.exceptions import PortTaken
    from appcontainers.services import publish

    with _pytest.raises(PortTaken, match="name the address"):
        publish.wanted(["53:53/udp"])
    assert [p.spec for p in publish.wanted(["127.0.0.1:53:53/udp"])] == ["127.0.0.1:53:53/udp"]
