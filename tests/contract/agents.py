"""Agents and AgentClient: key pairs, the agent a key reaches, run(), logs(), wait_ready()."""
from __future__ import annotations

import time

import pytest

from appcontainers.domain.exceptions import AgentUnavailable


def logged_until_exit(client, since: int, cid: str, within: float = 5.0) -> list:
    """client.logs(since) once it holds cid's exit record: the agent writes its log in batches,
    so the record may land just after run() returned."""
    deadline = time.monotonic() + within
    while True:
        logged = list(client.logs(since=since))
        if any(r.get("id") == cid and r.get("type") == "exit" for _, r in logged) or time.monotonic() > deadline:
            return logged
        time.sleep(0.05)


def started(agents, world):
    """A client of a running agent, holding the right key, once the agent is ready."""
    public, secret = agents.new_keys()
    client = agents(world.start(secret), server_key=public)
    assert client.wait_ready(10)
    return client


class AgentsContract:
    """Fixtures: `agents` (an Agents), `world` with start(secret) -> run_dir (an agent holding
    that secret key runs there), idle() -> a run_dir where nothing runs, and
    command(client, out, err, code) -> argv that prints out and err and exits with code."""

    def test_new_keys_are_fresh_pairs(self, agents):
        """new_keys() gives (public, secret), two different strings, and a new pair each time."""
        public, secret = agents.new_keys()
        assert isinstance(public, str) and isinstance(secret, str) and public and public != secret
        assert agents.new_keys() != (public, secret)

    def test_the_pair_reaches_its_agent(self, agents, world):
        """The public half reaches the agent holding the secret half: ready, alive, runs."""
        client = started(agents, world)
        assert client.alive()
        assert client.run(argv=world.command(client, "", "", 0))[0] == 0

    def test_a_wrong_key_or_none_is_refused(self, agents, world):
        """A client expecting another key, or no key, is refused and runs nothing."""
        public, secret = agents.new_keys()
        run_dir = world.start(secret)
        assert agents(run_dir, server_key=public).wait_ready(10)
        for key in (agents.new_keys()[0], None):
            with pytest.raises(AgentUnavailable):
                agents(run_dir, server_key=key).run(argv=["true"])
        right = agents(run_dir, server_key=public)
        assert not [r for _, r in right.logs() if r.get("type") == "started"]

    def test_kill_needs_the_key_and_spares_what_does_not_run(self, agents, world):
        """kill() of an id that runs nothing is silent and the agent serves on; with a wrong key
        it is refused."""
        public, secret = agents.new_keys()
        run_dir = world.start(secret)
        client = agents(run_dir, server_key=public)
        assert client.wait_ready(10)
        client.kill("no-such-command", 9)
        assert client.run(argv=world.command(client, "", "", 0))[0] == 0
        with pytest.raises(AgentUnavailable):
            agents(run_dir, server_key=agents.new_keys()[0]).kill("no-such-command")

    def test_run_returns_code_output_and_its_exit_record(self, agents, world):
        """run() gives the exit code, stdout and stderr exactly and the exit record; on_output
        gets each line, without its newline, with its stream."""
        client = started(agents, world)
        argv = world.command(client, "out\nmore\n", "err\n", 3)
        lines: list[tuple[str, str]] = []
        code, out, err, record = client.run(argv=argv, on_output=lambda s, line: lines.append((s, line)))
        assert (code, out, err) == (3, b"out\nmore\n", b"err\n")
        assert record["type"] == "exit" and record["code"] == 3 and record["id"]
        assert sorted(lines) == [("stderr", "err"), ("stdout", "more"), ("stdout", "out")]

    def test_on_data_gets_the_output_exactly(self, agents, world):
        """on_data(stream, bytes) gets the output as it is (no newline added); per stream, the
        pieces joined are what run() returns."""
        client = started(agents, world)
        got = {"stdout": b"", "stderr": b""}

        def on_data(stream: str, data: bytes) -> None:
            got[stream] += data

        code, out, err, _ = client.run(argv=world.command(client, "a\nbc", "err", 0), on_data=on_data)
        assert (code, got["stdout"], got["stderr"]) == (0, b"a\nbc", b"err") and (out, err) == (b"a\nbc", b"err")

    def test_logs_yield_the_commands_records(self, agents, world):
        """logs(since) yields (offset, record) from since, offsets rising: a command's started,
        output and exit records (the exit soon after run() returns); since the last, nothing more."""
        client = started(agents, world)
        before = [offset for offset, _ in client.logs()]
        since = before[-1] if before else 0
        _, _, _, record = client.run(argv=world.command(client, "hi\n", "", 0))
        logged = logged_until_exit(client, since, record["id"])
        offsets = [offset for offset, _ in logged]
        assert offsets == sorted(set(offsets)) and all(o > since for o in offsets)
        mine = [r for _, r in logged if r.get("id") == record["id"]]
        assert [r["type"] for r in mine] == ["started", "output", "exit"]
        assert mine[1]["stream"] == "stdout" and mine[1]["data"] == "hi\n" and mine[2]["code"] == 0
        assert list(client.logs(since=offsets[-1])) == []

    def test_nothing_runs(self, agents, world):
        """Where no agent runs: not alive, wait_ready is False after its timeout, run refuses."""
        public, _secret = agents.new_keys()
        client = agents(world.idle(), server_key=public)
        start = time.monotonic()
        assert not client.wait_ready(0.3) and not client.alive()
        assert time.monotonic() - start < 3
        with pytest.raises(AgentUnavailable):
            client.run(argv=["true"])
