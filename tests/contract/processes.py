"""Processes: who does an operation, and whether that process still lives."""
from __future__ import annotations


class ProcessesContract:
    """Fixtures: `procs`, `world` with child(): a context manager yielding the token of a live
    child process, which has exited (and been reaped) when the block ends."""

    def test_own_token_is_alive_and_stable(self, procs):
        """This process's token is alive, and the same at every call."""
        token = procs.token()
        assert isinstance(token, str) and token and procs.alive(token)
        assert procs.token() == token

    def test_a_dead_childs_token_is_not_alive(self, procs, world):
        """A child's token is alive while it runs and not once it has exited."""
        with world.child() as token:
            assert token != procs.token() and procs.alive(token)
        assert not procs.alive(token)

    def test_no_token_or_garbage_is_not_alive(self, procs):
        """No token, an empty one or one that is not a token is never alive."""
        assert not procs.alive(None) and not procs.alive("") and not procs.alive("not a token")

    def test_boot_id_is_stable(self, procs):
        """The boot id is a non-empty string, the same at every call."""
        boot = procs.boot_id()
        assert isinstance(boot, str) and boot and procs.boot_id() == boot
