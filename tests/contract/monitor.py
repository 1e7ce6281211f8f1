"""Monitor: a container's use (cgroup, writable layer) and its agents' events."""
from __future__ import annotations

import itertools

KEYS = {"cpu_seconds", "memory_bytes", "pids"}


class MonitorContract:
    """Fixtures: `monitor`, `world` with dir_with(nbytes) -> a directory holding files of nbytes,
    missing -> a path that does not exist, running_cgroup() -> the cgroup (lxc.cgroup.dir.container)
    of a running container."""

    def test_usage_of_a_cgroup_that_is_not_there(self, monitor):
        """A cgroup that does not exist (a stopped container's) reads None for each figure."""
        assert monitor.usage("appcontainers-00000000.payload.ac-nosuch") == dict.fromkeys(KEYS)

    def test_usage_of_a_running_container(self, monitor, world):
        """A running container's cgroup has a process, memory in use and a cpu time."""
        use = monitor.usage(world.running_cgroup())
        assert set(use) == KEYS and use["pids"] >= 1 and use["memory_bytes"] > 0 and use["cpu_seconds"] >= 0

    def test_disk_used(self, monitor, world):
        """What files take under a directory is at least their bytes; a missing path is None."""
        assert monitor.disk_used(world.dir_with(100_000)) >= 100_000
        assert monitor.disk_used(world.missing) is None

    def test_watch_gives_ticks_first(self, monitor):
        """watch() yields tick()'s events first, before any agent's."""
        ticks = iter([[{"kind": "started", "container": "a"}, {"kind": "stopped", "container": "b"}]])
        events = monitor.watch(lambda: {}, 0.05, tick=lambda: next(ticks, []))
        try:
            got = list(itertools.islice(events, 2))
        finally:
            events.close()
        assert [e["kind"] for e in got] == ["started", "stopped"]
