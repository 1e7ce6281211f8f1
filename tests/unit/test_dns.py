"""DNS for containers as data (the resolver's plan, the firewall's DNS exception, the bridge's
fixed MAC) and when the service starts, tells and stops the root's resolver (over the fakes)."""
from __future__ import annotations

import pytest

from appcontainers.adapters.lxc.skeletons import Skeletons
from appcontainers.adapters.net import nftables
from appcontainers.adapters.net.hostnet import bridge_mac, bridge_plan
from appcontainers.domain.exceptions import AppContainersError, InvalidValue
from appcontainers.domain.firewall import PortGuard, RootRules
from appcontainers.domain.resolver import ResolverPlan
from appcontainers.services import plans
from tests.fakes import make_service

A = PortGuard(veth="ac1234560000001", mac="02:00:00:00:00:0a", ip="10.0.100.2")


def plan(**kw):
    return ResolverPlan(**{"listen": "10.0.100.1", "run_dir": "/srv/ac/run/.dns",
                           "upstream": "/etc/resolv.conf", **kw})


class TestResolverPlan:
    def test_hosts_file_lists_every_name_sorted(self):
        """The hosts file has one `address name` line per container, sorted by name."""
        p = plan(names=[("web", "10.0.100.3"), ("db", "10.0.100.2")])
        assert p.hosts_text() == "10.0.100.2\tdb\n10.0.100.3\tweb\n"
        assert plan().hosts_text() == ""

    def test_argv_listens_on_the_gateway_only_and_answers_from_its_files(self):
        """dnsmasq binds the gateway's port 53 only, reads no host config, its hosts file and the
        upstream file, keeps plain names local, and writes its pid file under run_dir."""
        argv = plan().argv()
        assert argv[0] == "dnsmasq"
        for arg in ("--conf-file=/dev/null", "--no-hosts", "--addn-hosts=/srv/ac/run/.dns/hosts",
                    "--resolv-file=/etc/resolv.conf", "--listen-address=10.0.100.1", "--port=53",
                    "--bind-interfaces", "--domain-needed", "--pid-file=/srv/ac/run/.dns/dnsmasq.pid"):
            assert arg in argv
        assert not any(a.startswith("--dhcp") for a in argv)

    @pytest.mark.parametrize("field,value", [
        ("listen", "10.0.100.1 --server=1.1.1.1"), ("listen", "::1"), ("run_dir", "run/.dns"),
        ("run_dir", "/srv/a b"), ("upstream", "resolv.conf"),
        ("names", [("Web", "10.0.100.2")]), ("names", [("web\n1.2.3.4 evil", "10.0.100.2")]),
        ("names", [("web", "10.0.100.2 x")])])
    def test_refuses_what_could_change_the_command_or_the_hosts_file(self, field, value):
        """Addresses, paths and names are checked, so nothing can inject an option or a line."""
        with pytest.raises(AppContainersError):
            plan(**{field: value})


class TestDnsException:
    def rules(self, isolation="default", resolver="10.0.100.1"):
        return RootRules(table="appcontainers_12345678", bridge="acbr0", isolation=isolation,
                         guards=[A], resolver=resolver)

    def test_default_allows_dns_to_the_resolver_before_the_drop(self):
        """At default, DNS (udp and tcp 53) to the resolver's address passes, ahead of the drop."""
        lines = [line.strip() for line in nftables.script(self.rules()).splitlines()]
        rule = ('iifname "acbr0" ip saddr @containers ip daddr 10.0.100.1 '
                'meta l4proto { tcp, udp } th dport 53 accept')
        assert rule in lines
        assert lines.index(rule) < lines.index('iifname "acbr0" ip saddr @containers counter drop')

    @pytest.mark.parametrize("isolation", ["default", "open"])
    def test_only_the_bridge_and_the_host_reach_the_resolver(self, isolation):
        """At every level, DNS to the resolver's address from any interface but the bridge and lo
        is dropped first (no open resolver for a network routing the gateway to the host)."""
        lines = [line.strip() for line in nftables.script(self.rules(isolation)).splitlines()]
        start = lines.index("chain input {")
        assert lines[start + 2] == ('iifname != { "acbr0", "lo" } ip daddr 10.0.100.1 '
                                    'meta l4proto { tcp, udp } th dport 53 counter drop')

    def test_no_resolver_no_exception(self):
        """Without a resolver there is no DNS rule."""
        assert "dport 53" not in nftables.script(self.rules(resolver=None))

    def test_resolver_must_be_an_address(self):
        with pytest.raises(InvalidValue):
            self.rules(resolver="10.0.100.1 accept")

    def test_the_service_names_the_gateway_as_resolver(self):
        """A start applies rules whose resolver is the root's gateway."""
        svc = make_service()
        svc.provision("a").start()
        assert svc.ports.net.rules.resolver == svc.ports.repo.read().pool.gateway


class TestBridgeMac:
    def test_a_new_bridge_gets_its_fixed_mac(self):
        """The bridge is made with a locally administered MAC of its own name, before it is up."""
        steps = bridge_plan("acbr0", "10.0.100.1", 24, None)
        assert steps[:2] == [["ip", "link", "add", "acbr0", "type", "bridge"],
                             ["ip", "link", "set", "acbr0", "address", bridge_mac("acbr0")]]
        assert int(bridge_mac("acbr0")[:2], 16) & 0x03 == 0x02  # local, unicast
        assert bridge_mac("acbr0") != bridge_mac("acbr1")

    def test_an_existing_bridge_gets_it_once(self):
        """A bridge with another MAC is given its own; one that has it needs nothing."""
        present = {"address": "02:11:22:33:44:55", "flags": ["UP"],
                   "addr_info": [{"family": "inet", "local": "10.0.100.1", "prefixlen": 24}]}
        assert bridge_plan("acbr0", "10.0.100.1", 24, present) == [
            ["ip", "link", "set", "acbr0", "address", bridge_mac("acbr0")]]
        assert bridge_plan("acbr0", "10.0.100.1", 24, {**present, "address": bridge_mac("acbr0")}) == []


class TestResolvConf:
    def test_the_skeleton_points_at_the_gateway(self):
        """The packaged resolv.conf skeleton names the gateway as the only nameserver."""
        svc = make_service()
        svc.provision("web")
        state = svc.ports.repo.read()
        context = plans.context(state.get("web"), svc.settings.layout, svc.settings, state.pool, [])
        text = Skeletons("/nonexistent").render_files(context)["/etc/resolv.conf"]
        assert [line for line in text.splitlines() if not line.startswith("#")] == [
            f"nameserver {state.pool.gateway}"]


class TestService:
    def test_a_start_starts_the_resolver_with_every_name(self):
        """The first start starts the root's resolver on the gateway; it answers every container."""
        svc = make_service()
        a, b = svc.provision("a"), svc.provision("b")
        dns, where = svc.ports.dns, svc.settings.layout.dns_dir
        assert dns.pids(where) == []  # provisioning alone starts nothing
        a.start()
        b.start()
        assert dns.starts == 1
        assert dns.running[where].listen == svc.ports.repo.read().pool.gateway
        assert dns.names(where) == {"a": a.ip, "b": b.ip}

    def test_destroy_removes_the_name_and_the_last_stops_it(self):
        """A destroyed container's name goes; with the last one the resolver stops."""
        svc = make_service()
        svc.provision("a").start()
        svc.provision("b").start()
        where = svc.settings.layout.dns_dir
        svc.get("a").destroy()
        assert svc.ports.dns.names(where) == {"b": svc.get("b").ip}
        svc.get("b").destroy()
        assert svc.ports.dns.pids(where) == []

    def test_reconcile_restarts_a_dead_resolver_while_a_container_runs(self):
        """gc starts the resolver again when it died and a container still runs."""
        svc = make_service()
        svc.provision("a").start()
        where = svc.settings.layout.dns_dir
        svc.ports.dns.stop(where)  # it died
        svc.reconcile()
        assert svc.ports.dns.names(where) == {"a": svc.get("a").ip}

    def test_reconcile_stops_a_resolver_the_root_no_longer_needs(self):
        """A resolver left after the root's last reservation went is stopped by gc."""
        svc = make_service()
        svc.provision("a").start()
        with svc.ports.repo.transaction() as state:
            state.remove("a")
        svc.reconcile()
        assert svc.ports.dns.pids(svc.settings.layout.dns_dir) == []

    def test_a_resolver_that_cannot_start_does_not_fail_the_start(self):
        """No resolver (its address taken or dnsmasq missing): the container still starts."""
        svc = make_service()
        svc.ports.dns.net = type(svc.ports.net)()  # no bridge holds the gateway: the start fails
        svc.provision("a").start()
        assert svc.get("a").state == "RUNNING"
        assert svc.ports.dns.pids(svc.settings.layout.dns_dir) == []


class TestSetting:
    def test_dns_upstream_from_the_environment_and_checked(self):
        """APPCONTAINERS_DNS_UPSTREAM sets the upstream file; a relative path is refused."""
        from appcontainers.config import Settings
        assert Settings.from_env({"APPCONTAINERS_DNS_UPSTREAM": "/run/x.conf"}).dns_upstream == "/run/x.conf"
        assert Settings().dns_upstream == "/etc/resolv.conf"
        with pytest.raises(InvalidValue):
            Settings(dns_upstream="resolv.conf")
