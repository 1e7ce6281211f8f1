"""Each host's subnet, claimed fleet-wide: pure logic over a small key-value port.

A claim is one key per /24 block ("subnet/10.0.224.0/24" -> host name), written with
put-if-absent, which Ray's control store (GCS) does atomically: two hosts racing for a block
cannot both get it. A subnet given to join claims every /24 it overlaps, all or nothing.
A host that joins again under its name gets back the subnet it holds.
"""
from __future__ import annotations

import ipaddress
from typing import Collection, Iterator, Protocol

from ..domain.network import parse_network
from .errors import RangeExhausted, SubnetTaken

# 1,024 /24 blocks: a 1,000-host fleet fits, each host with 253 container addresses.
# Clear of the single-host default (10.0.100.0/24) and of the usual Docker/Kubernetes ranges.
DEFAULT_RANGE = "10.160.0.0/14"
BLOCK = 24


class KV(Protocol):
    def put_if_absent(self, key: str, value: str) -> bool:
        """True if the key was absent and now holds value; False if it held something."""

    def get(self, key: str) -> str | None: ...

    def delete(self, key: str) -> None: ...

    def keys(self, prefix: str) -> list[str]: ...


def block_key(block: str) -> str:
    return f"subnet/{block}"


def host_key(host: str) -> str:
    return f"host-subnet/{host}"


def blocks(subnet: str) -> list[str]:
    """The /24 blocks subnet overlaps (a /25 is in one, a /23 spans two)."""
    net = parse_network(subnet)
    if net.prefixlen >= BLOCK:
        return [str(net.supernet(new_prefix=BLOCK))]
    return [str(b) for b in net.subnets(new_prefix=BLOCK)]


def candidates(fleet_range: str) -> Iterator[str]:
    """The /24 blocks of the fleet range, in order."""
    net = ipaddress.IPv4Network(fleet_range, strict=True)
    if net.prefixlen > BLOCK:
        raise RangeExhausted(fleet_range)
    return (str(b) for b in net.subnets(new_prefix=BLOCK))


def fleet_range(kv: KV, wanted: str | None) -> str:
    """The fleet-wide range: the first host's choice (or the default) stays the fleet's."""
    kv.put_if_absent("fleet-range", str(ipaddress.IPv4Network(wanted or DEFAULT_RANGE, strict=True)))
    return kv.get("fleet-range") or DEFAULT_RANGE


def claim(kv: KV, host: str, range_: str, subnet: str | None = None) -> str:
    """The subnet host uses: the one it held, the one given (registered), or a free /24.
    A host moving to another subnet claims the new blocks first (all or nothing) and only then
    gives back the old ones: a refused move leaves it holding what its containers use."""
    held = kv.get(host_key(host))
    if held is not None and (subnet is None or held == str(parse_network(subnet))):
        return held
    chosen = _claim_given(kv, host, subnet) if subnet else _claim_free(kv, host, range_)
    if held is not None:
        _release_blocks(kv, host, held, keep=set(blocks(chosen)))
    kv.delete(host_key(host))
    kv.put_if_absent(host_key(host), chosen)
    return chosen


def _claim_given(kv: KV, host: str, subnet: str) -> str:
    new: list[str] = []  # the blocks this claim took (not those host already held)
    for b in blocks(subnet):
        if kv.put_if_absent(block_key(b), host):
            new.append(b)
        elif kv.get(block_key(b)) != host:
            for t in new:  # all or nothing
                kv.delete(block_key(t))
            raise SubnetTaken(subnet, kv.get(block_key(b)) or "?")
    return str(parse_network(subnet))


def _claim_free(kv: KV, host: str, range_: str) -> str:
    for b in candidates(range_):
        if kv.put_if_absent(block_key(b), host):
            return b
    raise RangeExhausted(range_)


def release(kv: KV, host: str) -> None:
    """Give back every block host holds (a host leaving the fleet for good)."""
    held = kv.get(host_key(host))
    if held is None:
        return
    _release_blocks(kv, host, held)
    kv.delete(host_key(host))


def _release_blocks(kv: KV, host: str, subnet: str, keep: Collection[str] = ()) -> None:
    for b in blocks(subnet):
        if b not in keep and kv.get(block_key(b)) == host:
            kv.delete(block_key(b))


def mac_prefix(subnet: str) -> str:
    """A MAC prefix unique to the host's /24 (locally administered 0a:NN:NN:NN: its second to
    fourth octets are the block's), so two hosts' containers never share a MAC."""
    octets = parse_network(blocks(subnet)[0]).network_address.packed
    return "0a:" + ":".join(f"{o:02x}" for o in octets[:3])
