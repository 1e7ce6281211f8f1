"""The data root's nftables rules as data: names, the rendered script, and when the service applies them."""
from __future__ import annotations

import attrs
import pytest

from appcontainers.adapters.net import nftables
from appcontainers.config import Settings
from appcontainers.domain.exceptions import InvalidValue
from appcontainers.domain.firewall import PortGuard, RootRules, table_name
from appcontainers.services import plans
from tests.fakes import make_service

A = PortGuard(veth="ac1234560000001", mac="02:00:00:00:00:0A", ip="10.0.100.2")
B = PortGuard(veth="ac1234560000002", mac="02:00:00:00:00:0b", ip="10.0.100.3")


def rules(*guards, isolation="default"):
    return RootRules(table="appcontainers_12345678", bridge="acbr0", isolation=isolation, guards=guards)


def chain(script: str, name: str) -> list[str]:
    """The rule lines of one chain in a rendered script."""
    lines = script.splitlines()
    start = lines.index(f"  chain {name} {{")
    end = lines.index("  }", start)
    return [line.strip() for line in lines[start + 1:end]]


class TestNames:
    def test_root_id_is_stable_short_and_ignores_a_trailing_slash(self):
        """The root's identity is 8 hex digits of its path, the same however the path is spelled."""
        a, b = Settings(root="/srv/ac"), Settings(root="/srv/ac/")
        assert a.root_id == b.root_id and len(a.root_id) == 8 and int(a.root_id, 16) >= 0
        assert Settings(root="/srv/other").root_id != a.root_id

    def test_veth_name_fits_ifnamsiz_and_carries_the_root(self):
        """A veth name is 15 characters: the root's prefix, then the container name's hash."""
        v = plans.veth_name("12345678", "web")
        assert len(v) == 15 and v.startswith(plans.veth_prefix("12345678")) == v.startswith("ac123456")
        assert plans.veth_name("87654321", "web") != v
        assert plans.veth_name("12345678", "db") != v

    def test_stray_veths_are_only_this_roots_own(self):
        """gc's veths: this root's prefix and no container of it; another root's, old 'acv' names
        and foreign interfaces are never stray."""
        mine, gone = plans.veth_name("12345678", "web"), plans.veth_name("12345678", "old")
        other = plans.veth_name("87654321", "old")
        veths = [mine, gone, other, "acv0123456789a", "vethXYZ", "ac123456"]
        assert plans.stray_veths("12345678", veths, {"web"}) == [gone]

    def test_table_named_for_the_root(self):
        """Both families' tables bear the root's identity."""
        assert table_name(Settings(root="/srv/ac").root_id) == "appcontainers_" + Settings(root="/srv/ac").root_id

    def test_isolation_setting(self):
        """isolation is default unless set; only the known levels; APPCONTAINERS_ISOLATION sets it."""
        assert Settings().isolation == "default"
        assert Settings(isolation="open").isolation == "open"
        assert Settings.from_env({"APPCONTAINERS_ISOLATION": "open"}).isolation == "open"
        assert Settings.from_env({"APPCONTAINERS_ISOLATION": "open"}, isolation="default").isolation == "default"
        with pytest.raises(InvalidValue):
            Settings(isolation="none")


class TestValues:
    @pytest.mark.parametrize("field, value", [
        ("veth", 'x"; flush ruleset'), ("veth", "a" * 16), ("veth", ""), ("veth", "ac-1"), ("mac", "02:00:00:00:00"),
        ("mac", "02:00:00:00:00:0a }"), ("ip", "10.0.100.300"), ("ip", "10.0.100.2 }")])
    def test_guard_refuses_what_could_change_the_script(self, field, value):
        """Names, MACs and addresses are checked, so none can inject text into the nft script."""
        with pytest.raises(InvalidValue):
            attrs.evolve(A, **{field: value})

    def test_rules_refuse_a_bad_table_bridge_or_level(self):
        """Table, bridge and isolation are checked like the guards."""
        for changes in ({"table": "x y"}, {"bridge": 'br"0'}, {"isolation": "none"},
                        {"subnet": "10.0.0.0/33"}):
            with pytest.raises(InvalidValue):
                attrs.evolve(rules(A), **changes)

    def test_mac_lowercased_and_guards_sorted(self):
        """A MAC is kept lowercase; guards are ordered by veth, so equal states give equal scripts."""
        assert A.mac == "02:00:00:00:00:0a"
        assert rules(B, A) == rules(A, B)
        assert nftables.script(rules(B, A)) == nftables.script(rules(A, B))


class TestScript:
    def test_no_guard_drops_both_tables_and_makes_none(self):
        """Without a container, the script only removes the root's tables (if there)."""
        assert nftables.script(rules()).splitlines() == [
            "add table bridge appcontainers_12345678", "delete table bridge appcontainers_12345678",
            "add table inet appcontainers_12345678", "delete table inet appcontainers_12345678"]

    def test_tables_replaced_in_one_script(self):
        """The old tables are dropped and the new made in the same script: one nft transaction."""
        lines = nftables.script(rules(A)).splitlines()
        assert lines[:4] == nftables.script(rules()).splitlines()
        assert "table bridge appcontainers_12345678 {" in lines
        assert "table inet appcontainers_12345678 {" in lines

    def test_each_veth_jumps_to_its_own_chain(self):
        """The prerouting chain sends each guarded veth's frames to that container's chain."""
        s = nftables.script(rules(A, B))
        assert chain(s, "prerouting")[-1] == "iifname vmap @ports"
        assert (f'elements = {{ "{A.veth}" : jump port_{A.veth}, "{B.veth}" : jump port_{B.veth} }}'
                in [line.strip() for line in s.splitlines()])

    def test_a_port_may_use_only_its_own_mac_and_ipv4(self):
        """Only the container's MAC as source; IPv4 only from its address; ARP only with its own
        MAC and address as sender; everything else dropped (and counted)."""
        assert chain(nftables.script(rules(A, B)), f"port_{A.veth}") == [
            "ether saddr != 02:00:00:00:00:0a counter drop",
            "ether type ip ip saddr 10.0.100.2 accept",
            "ether type arp arp htype 1 arp ptype ip arp saddr ether 02:00:00:00:00:0a "
            "arp saddr ip 10.0.100.2 accept",
            "counter drop"]

    def test_default_isolation_drops_new_traffic_to_the_host(self):
        """At default, the root's containers reach the host only with replies to what it started, and ping."""
        s = nftables.script(rules(A, B))
        assert "elements = { 10.0.100.2, 10.0.100.3 }" in [line.strip() for line in s.splitlines()]
        assert chain(s, "input")[1:] == [
            'iifname "acbr0" ip saddr @containers ct state established,related accept',
            'iifname "acbr0" ip saddr @containers icmp type echo-request accept',
            'iifname "acbr0" ip saddr @containers counter drop']

    def test_open_isolation_drops_nothing_to_the_host_but_still_guards_ports(self):
        """At open, the input chain is empty; the anti-spoofing is the same as at default."""
        s = nftables.script(rules(A, isolation="open"))
        assert chain(s, "input") == ["type filter hook input priority filter; policy accept;"]
        assert chain(s, f"port_{A.veth}") == chain(nftables.script(rules(A)), f"port_{A.veth}")


class TestService:
    def test_start_applies_rules_for_every_container_of_the_root(self):
        """A start applies the root's rules: one guard per container, with its veth, MAC and IP."""
        svc = make_service(isolation="open")
        a, b = svc.provision("a"), svc.provision("b")
        a.start()
        applied = svc.ports.net.rules
        rid = svc.settings.root_id
        assert applied.table == table_name(rid) and applied.bridge == "actest0" and applied.isolation == "open"
        assert set(applied.guards) == {PortGuard(veth=plans.veth_name(rid, c.name), mac=c.mac, ip=c.ip)
                                       for c in (a, b)}

    def test_the_config_names_the_guarded_veth_and_the_roots_cgroups(self):
        """The packaged LXC config names the guarded veth, and cgroups that carry the root's identity."""
        from appcontainers.adapters.lxc.skeletons import Skeletons
        svc = make_service()
        svc.provision("web")
        state = svc.ports.repo.read()
        context = plans.context(state.get("web"), svc.settings.layout, svc.settings, state.pool, [])
        config = Skeletons("/nonexistent").render_config(context).splitlines()
        rid = svc.settings.root_id
        assert f"lxc.net.0.veth.pair = {plans.veth_name(rid, 'web')}" in config
        assert f"lxc.cgroup.dir.container = appcontainers-{rid}.payload.web" in config
        assert f"lxc.cgroup.dir.monitor = appcontainers-{rid}.monitor.web" in config

    def test_destroy_removes_the_containers_rules_and_the_last_the_tables(self):
        """A destroyed container's guard goes; after the last one, no guard (no tables) is left."""
        svc = make_service()
        svc.provision("a").start()
        svc.provision("b").start()
        svc.get("a").destroy()
        assert [g.veth for g in svc.ports.net.rules.guards] == [plans.veth_name(svc.settings.root_id, "b")]
        svc.get("b").destroy()
        assert svc.ports.net.rules.guards == ()

    def test_reconcile_drops_rules_of_a_container_gone_without_teardown(self):
        """A reservation gone behind the service's back loses its rules at the next reconcile."""
        svc = make_service()
        svc.provision("a").start()
        with svc.ports.repo.transaction() as state:
            state.remove("a")
        svc.reconcile()
        assert svc.ports.net.rules.guards == ()

    def test_reconcile_deletes_only_this_roots_stray_veths(self):
        """gc deletes a veth of this root that no container explains, never another root's."""
        svc = make_service()
        svc.provision("web")
        rid = svc.settings.root_id
        ours_gone = plans.veth_name(rid, "gone")
        other_root = plans.veth_name("0badc0de", "gone")
        svc.ports.net.veths["actest0"] = [plans.veth_name(rid, "web"), ours_gone, other_root, "acv0123456789a"]
        svc.reconcile()
        assert svc.ports.net.deleted == [ours_gone]


class TestCgroupNames:
    def test_configured_dirs_are_the_container_and_monitor_keys(self):
        """Only lxc.cgroup.dir.container/.monitor values, and never an absolute or '..' path."""
        from appcontainers.adapters.lxc.cgroups import configured_dirs
        config = ("lxc.cgroup.dir.container = appcontainers-1.payload.web\n"
                  "lxc.cgroup.dir.monitor=appcontainers-1.monitor.web\n"
                  "lxc.cgroup.dir.container.inner = ns\nlxc.cgroup2.memory.max = 1\n"
                  "lxc.cgroup.dir.container = /abs\nlxc.cgroup.dir.monitor = a/../b\n")
        assert configured_dirs(config) == ["appcontainers-1.payload.web", "appcontainers-1.monitor.web"]

    def test_remove_stale_takes_the_tree_in_every_hierarchy(self, tmp_path):
        """A dead monitor's cgroup (with sub-cgroups) goes from each hierarchy; others stay."""
        from appcontainers.adapters.lxc.cgroups import remove_stale
        for top in ("", "memory/", "pids/"):
            (tmp_path / f"{top}appcontainers-1.payload.web/inner").mkdir(parents=True)
        (tmp_path / "memory/appcontainers-2.payload.web").mkdir()
        remove_stale(["appcontainers-1.payload.web"], root=str(tmp_path))
        left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
        assert left == ["memory", "memory/appcontainers-2.payload.web", "pids"]
