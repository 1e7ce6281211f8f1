"""What a data root's DNS resolver must be, as data (pure; adapters/net/dns.py runs it).

One resolver per data root, on the bridge's gateway address: it answers the names of the root's
containers and forwards every other name to the host's resolvers."""
from __future__ import annotations

import ipaddress
from typing import Any, Iterable

import attrs

from .exceptions import InvalidValue
from .reservation import validate_name


def _check_ip(_inst: Any, _attr: Any, value: Any) -> None:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise InvalidValue(f"invalid IPv4 address {value!r}") from None


def _check_absolute(_inst: Any, _attr: Any, value: Any) -> None:
    if not isinstance(value, str) or not value.startswith("/") or any(c.isspace() for c in value):
        raise InvalidValue(f"invalid path {value!r}: an absolute path without whitespace")


def _sorted_names(names: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(n), str(ip)) for n, ip in names))


def _check_names(_inst: Any, _attr: Any, value: tuple[tuple[str, str], ...]) -> None:
    for name, ip in value:
        validate_name(name)  # a DNS label: nothing else can reach the hosts file
        _check_ip(None, None, ip)


@attrs.frozen
class ResolverPlan:
    """The root's resolver: where it listens, where its files live, what it answers.

    listen: the bridge's gateway address (port 53); run_dir: its own directory (pid file, hosts
    file); upstream: the resolv.conf-style file naming the servers it forwards to; names:
    (container name, address) of every container of the root."""

    listen: str = attrs.field(validator=_check_ip)
    run_dir: str = attrs.field(validator=_check_absolute)
    upstream: str = attrs.field(validator=_check_absolute)
    names: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_sorted_names,
                                                     validator=_check_names)

    @property
    def pid_file(self) -> str:
        return self.run_dir + "/dnsmasq.pid"

    @property
    def hosts_file(self) -> str:
        return self.run_dir + "/hosts"

    def hosts_text(self) -> str:
        """The hosts file: one `address name` line per container."""
        return "".join(f"{ip}\t{name}\n" for name, ip in self.names)

    def argv(self) -> list[str]:
        """The dnsmasq command line (it daemonizes, writes pid_file, drops root for nobody)."""
        return ["dnsmasq", "--conf-file=/dev/null", "--no-hosts", f"--addn-hosts={self.hosts_file}",
                f"--resolv-file={self.upstream}", f"--listen-address={self.listen}", "--port=53",
                "--bind-interfaces", "--except-interface=lo", "--domain-needed", "--bogus-priv",
                f"--pid-file={self.pid_file}"]
