"""Resolver: the data root's DNS resolver, one per run dir, answering its containers' names."""
from __future__ import annotations

import pytest

from appcontainers.domain.exceptions import AppContainersError


class ResolverContract:
    """Fixtures: `dns`; `plan(names, listen=None)` -> a ResolverPlan on an address the host has
    (listen overrides it) in a run dir of the test's own; `absent`, an address no interface holds;
    `lookup(plan, name)` -> the address plan's resolver answers for name, or None."""

    def test_ensure_starts_one_and_is_idempotent(self, dns, plan, lookup):
        """ensure starts one resolver answering the names; a second ensure keeps that one."""
        p = plan({"web": "10.0.0.5"})
        dns.ensure(p)
        first = dns.pids(p.run_dir)
        dns.ensure(p)
        assert len(first) == 1 and dns.pids(p.run_dir) == first
        assert lookup(p, "web") == "10.0.0.5"

    def test_new_names_are_answered_and_removed_ones_are_not(self, dns, plan, lookup):
        """ensure/update with other names: the running resolver answers exactly those."""
        p = plan({"a": "10.0.0.5"})
        dns.ensure(p)
        pids = dns.pids(p.run_dir)
        dns.update(plan({"b": "10.0.0.6"}))
        assert lookup(p, "b") == "10.0.0.6" and lookup(p, "a") is None
        assert dns.pids(p.run_dir) == pids  # told, not restarted

    def test_update_starts_nothing(self, dns, plan):
        """update without a running resolver leaves none running."""
        p = plan({"a": "10.0.0.5"})
        dns.update(p)
        assert dns.pids(p.run_dir) == []

    def test_stop_ends_it_and_is_idempotent(self, dns, plan, lookup):
        """stop ends the resolver (no process, no answer); a second stop is fine."""
        p = plan({"a": "10.0.0.5"})
        dns.ensure(p)
        dns.stop(p.run_dir)
        dns.stop(p.run_dir)
        assert dns.pids(p.run_dir) == []
        assert lookup(p, "a") is None

    def test_another_configuration_restarts_it(self, dns, plan, lookup):
        """ensure with another upstream replaces the running resolver by one new one."""
        p = plan({"a": "10.0.0.5"})
        dns.ensure(p)
        old = dns.pids(p.run_dir)
        q = plan({"a": "10.0.0.5"}, upstream="/dev/null")
        dns.ensure(q)
        assert len(dns.pids(q.run_dir)) == 1 and dns.pids(q.run_dir) != old
        assert lookup(q, "a") == "10.0.0.5"

    def test_an_address_the_host_lacks_fails(self, dns, plan, absent):
        """ensure on an address no interface holds raises, and leaves nothing running."""
        p = plan({"a": "10.0.0.5"}, listen=absent)
        with pytest.raises(AppContainersError):
            dns.ensure(p)
        assert dns.pids(p.run_dir) == []
