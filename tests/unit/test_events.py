"""Host-side container events: state differences, as data and over the fake driver."""
from __future__ import annotations

from appcontainers.services.events import StateWatch, logged_events, state_changes
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


class TestReplay:
    def test_logged_events(self):
        """Log records at or after the time become the events the agent published for them."""
        records = [(1, {"ts": 5.0, "type": "exit", "id": "old", "code": 0}),
                   (2, {"ts": 10.0, "type": "started", "id": "c1", "pid": 7}),
                   (3, {"ts": 11.0, "type": "output", "id": "c1", "data": "x"}),
                   (4, {"ts": 12.0, "type": "exit", "id": "c1", "code": 3})]
        assert logged_events(records, 10.0) == [{"ts": 10.0, "type": "command_started", "id": "c1", "pid": 7},
                                                {"ts": 12.0, "type": "command_exited", "id": "c1", "code": 3}]

    def test_a_started_container_s_first_commands_come_from_its_log(self):
        """After a start, once the agent's event socket exists, what its log holds since the
        previous look is given too (the agent published it before anyone could subscribe)."""
        svc = make_service()
        svc.provision("web")
        clock = svc.ports.clock
        watch = StateWatch(svc.containers, clock)
        watch()
        svc.get("web").start()
        agent_dir = svc.settings.layout.agent_dir("web")
        svc.ports.fs.files.pop(agent_dir + "/events.sock", None)
        client = svc.ports.agents(agent_dir)
        client.records = [{"ts": clock() + 1, "type": "started", "id": "c1", "pid": 9},
                          {"ts": clock() + 2, "type": "exit", "id": "c1", "code": 0}]
        assert [e["type"] for e in watch()] == ["container_started"]  # no socket yet: kept for later
        svc.ports.fs.files[agent_dir + "/events.sock"] = b""
        replayed = watch()
        assert [(e["type"], e["container"], e["id"]) for e in replayed] == [
            ("command_started", "web", "c1"), ("command_exited", "web", "c1")]
        assert watch() == []
