"""HostNetwork: the bridge, the veths on it, links deleted."""
from __future__ import annotations


class HostNetworkContract:
    """Fixtures: `net`, `bridge` (name, gateway, prefixlen; absent before the test, removed
    after it), `world` with add_veth(bridge) -> the name of a new veth attached to it, and
    hold(proto) -> (address, port) of a socket it holds on the host until the test ends."""

    def test_ensure_bridge_is_idempotent(self, net, bridge):
        """ensure_bridge twice makes one bridge, with no veths on it yet."""
        name, gateway, prefixlen = bridge
        net.ensure_bridge(name, gateway, prefixlen)
        net.ensure_bridge(name, gateway, prefixlen)
        assert net.veths_on(name) == []

    def test_veths_on_and_delete_link(self, net, bridge, world):
        """veths_on lists the links on the bridge; a deleted one is gone from it."""
        name, gateway, prefixlen = bridge
        net.ensure_bridge(name, gateway, prefixlen)
        veth = world.add_veth(name)
        assert net.veths_on(name) == [veth]
        net.delete_link(veth)
        assert net.veths_on(name) == []

    def test_no_bridge_no_veths(self, net, bridge):
        """A bridge that does not exist has no veths (no error)."""
        assert net.veths_on(bridge[0]) == []

    def test_host_macs(self, net):
        """host_macs is a set of lowercase MAC strings."""
        macs = net.host_macs()
        assert isinstance(macs, set) and all(m == m.lower() and m.count(":") == 5 for m in macs)

    def test_ports_taken_lists_a_held_port(self, net, world):
        """A TCP listener's and a bound UDP socket's ports are taken, with their address."""
        for proto in ("tcp", "udp"):
            ip, port = world.hold(proto)
            assert (proto, ip, port) in net.ports_taken("appcontainers_00000000")
