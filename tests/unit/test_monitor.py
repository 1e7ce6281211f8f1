"""The Monitor port: its contract over the fake; Service.stats() and events() over the fakes."""
from __future__ import annotations

import pytest

from tests.contract.monitor import MonitorContract
from tests.fakes import FakeDriver, FakeFs, FakeMonitor, make_service


class TestFakeMonitor(MonitorContract):
    @pytest.fixture
    def monitor(self):
        return FakeMonitor(FakeDriver(), FakeFs())

    @pytest.fixture
    def world(self, monitor):
        class World:
            missing = "/srv/contract/nosuch"

            def dir_with(self, nbytes):
                monitor.fs.make_dirs("/srv/contract/d")
                monitor.fs.files["/srv/contract/d/f"] = b"x" * nbytes
                return "/srv/contract/d"

            def running_cgroup(self):
                monitor.driver.create("ac-mon", "lxc.uts.name = ac-mon\n")
                monitor.driver.start("ac-mon", 10)
                return "appcontainers-00000000.payload.ac-mon"
        return World()


class TestStats:
    def test_running_and_stopped(self):
        """stats of a running container has the cgroup's figures; of a stopped one None; disk from the upper."""
        svc = make_service()
        web = svc.provision("web")
        svc.provision("db")
        web.start()
        upper = svc.containers.upper(svc.containers.get("web"))
        svc.ports.fs.files[upper + "/etc/x"] = b"12345"
        up, down = svc.stats("web"), svc.stats("db")
        assert up == {"name": "web", "state": "RUNNING", **FakeMonitor.USAGE, "disk_bytes": 5}
        assert (down["state"], down["pids"], down["memory_bytes"]) == ("STOPPED", None, None)


class TestEvents:
    def test_agent_events_then_a_start(self):
        """events() gives what a listed agent published (never an unlisted one's), then a start seen by the host."""
        svc = make_service()
        web = svc.provision("web")
        monitor = svc.ports.monitor
        monitor.published += [{"container": "web", "type": "exit", "code": 0},
                              {"container": "stranger", "type": "exit", "code": 1}]
        events = svc.events()
        assert next(events) == {"container": "web", "type": "exit", "code": 0}
        web.start()
        started = next(events)
        assert (started["type"], started["container"], started["state"]) == ("container_started", "web", "RUNNING")
        assert list(events) == [] and monitor.published == [{"container": "stranger", "type": "exit", "code": 1}]
