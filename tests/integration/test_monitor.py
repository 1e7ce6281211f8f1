"""The Monitor port's contract against the real adapter (cgroup files, disk blocks, ZeroMQ watch)."""
from __future__ import annotations

import os

import pytest

from appcontainers.adapters.lxc.monitor import HostMonitor
from tests.contract.monitor import MonitorContract


class TestHostMonitor(MonitorContract):
    @pytest.fixture
    def monitor(self):
        return HostMonitor()

    @pytest.fixture
    def world(self, svc, tmp_path):
        made = []

        class World:
            missing = str(tmp_path / "nosuch")

            def dir_with(self, nbytes):
                (tmp_path / "d").mkdir()
                (tmp_path / "d" / "f").write_bytes(os.urandom(nbytes))
                return str(tmp_path / "d")

            def running_cgroup(self):
                c = svc.provision()
                made.append(c)
                c.start()
                return f"appcontainers-{svc.settings.root_id}.payload.{c.name}"
        try:
            yield World()
        finally:
            for c in made:
                c.destroy()
