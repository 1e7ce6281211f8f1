"""ContainerDriver, the lightweight part: create, state, list, stop and destroy of a stopped container."""
from __future__ import annotations


class ContainerDriverContract:
    """Fixtures: `driver` (no containers yet), `config(name)` -> a config text LXC accepts for a
    tiny rootfs, `names` -> fresh container names."""

    def test_nothing_yet(self, driver, names):
        """With no container: an empty list, no states, and any name is MISSING."""
        assert driver.list() == [] and driver.states() == {}
        assert driver.state(names[0]) == "MISSING"

    def test_created_is_stopped(self, driver, config, names):
        """A created container is listed, STOPPED, in states() too."""
        a, b = names[:2]
        driver.create(b, config(b))
        driver.create(a, config(a))
        assert driver.list() == sorted([a, b])
        assert driver.state(a) == "STOPPED"
        assert driver.states() == {a: "STOPPED", b: "STOPPED"}

    def test_create_again_replaces(self, driver, config, names):
        """Creating an existing container again rewrites its config; it stays one container."""
        a = names[0]
        driver.create(a, config(a))
        driver.create(a, config(a))
        assert driver.list() == [a] and driver.state(a) == "STOPPED"

    def test_stop_of_stopped_or_missing_does_nothing(self, driver, config, names):
        """stop() of a stopped container, or of one that does not exist, is no error."""
        a, b = names[:2]
        driver.create(a, config(a))
        driver.stop(a, 5)
        driver.stop(b, 5)
        assert driver.state(a) == "STOPPED" and driver.state(b) == "MISSING"

    def test_destroy_forgets(self, driver, config, names):
        """A destroyed container is MISSING and unlisted; destroying it again is no error."""
        a, b = names[:2]
        driver.create(a, config(a))
        driver.create(b, config(b))
        driver.destroy(a)
        driver.destroy(a)
        assert driver.state(a) == "MISSING" and driver.list() == [b] and driver.states() == {b: "STOPPED"}
