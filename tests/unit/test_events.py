"""Host-side container events: state differences, as data and over the fake driver."""
from __future__ import annotations

from appcontainers.services.events import StateWatch, state_changes
from tests.fakes import make_service


class TestStateChanges:
    def test_each_kind(self):
        """New, gone, started and stopped containers each give one event; unchanged ones none."""
        before = {"a": "STOPPED", "b": "RUNNING", "c": "RUNNING", "d": "STOPPED"}
        after = {"a": "RUNNING", "b": "STOPPED", "c": "FROZEN", "e": "STOPPED"}
        assert state_changes(before, after) == [("a", "container_started"), ("b", "container_stopped"),
                                                ("d", "container_destroyed"), ("e", "container_created")]

    def test_created_running(self):
        """A container first seen running is created and started."""
        assert state_changes({}, {"x": "RUNNING"}) == [("x", "container_created"), ("x", "container_started")]


class TestStateWatch:
    def test_reports_what_changed_since_the_last_call(self):
        """The first call takes the states as they are; later calls report start, stop and destroy."""
        svc = make_service()
        svc.provision("web")
        watch = StateWatch(svc.containers, svc.ports.clock)
        assert watch() == []
        svc.get("web").start()
        svc.provision("db")
        events = watch()
        assert [(e["container"], e["type"]) for e in events] == [("db", "container_created"),
                                                                  ("web", "container_started")]
        assert events[1]["state"] == "RUNNING" and isinstance(events[1]["ts"], float)
        svc.get("web").stop()
        svc.get("db").destroy()
        assert [(e["container"], e["type"]) for e in watch()] == [("db", "container_destroyed"),
                                                                  ("web", "container_stopped")]
        assert watch() == []
