"""The host talks only to the agent it means: every connection authenticates the agent with the
CURVE key the host made for it, so a socket path swapped for another agent's never carries a
command there. Real agent processes first, then the attack on real containers."""
from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time

import pytest

zmq = pytest.importorskip("zmq")

from appcontainers.adapters.bus.zmq_bus import AgentClient  # noqa: E402
from appcontainers.domain.exceptions import AgentUnavailable  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def agents():
    """agents(key=True) -> AgentClient of a fresh agent process in its own dir (stopped and
    removed in teardown); key=False gives the agent no key in agent.json."""
    started = []

    def start(key=True, silence=2.0, ping_wait=3.0):
        run_dir = tempfile.mkdtemp(prefix="auth-", dir="/tmp")  # ipc paths must fit in 107 bytes
        public, secret = AgentClient.new_keys()
        with open(os.path.join(run_dir, "agent.json"), "w") as f:
            json.dump({"curve_secret_key": secret} if key else {}, f)
        proc = subprocess.Popen([sys.executable, "-m", "appcontainers.agent", "--dir", run_dir], cwd=ROOT)
        started.append((proc, run_dir))
        client = AgentClient(run_dir, server_key=public, silence=silence, ping_wait=ping_wait)
        deadline = time.monotonic() + 10
        while not os.path.exists(client.ready_path) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert os.path.exists(client.ready_path), "the agent did not come up"
        client.proc = proc
        return client

    yield start
    for proc, run_dir in started:
        if proc.poll() is None:
            os.kill(proc.pid, 18)  # SIGCONT, in case a test stopped it
            proc.terminate()
            try:
                proc.wait(6)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(run_dir, ignore_errors=True)


def ran(records) -> list[str]:
    """The ids of the commands an agent started, from its log records (client.logs())."""
    return [r["id"] for _, r in records if r.get("type") == "started"]


def impostor(client, key: str) -> AgentClient:
    return AgentClient(client.run_dir, server_key=key, silence=client.silence, ping_wait=client.ping_wait)


class TestHandshake:
    def test_a_wrong_key_is_refused_at_once_and_nothing_is_sent(self, agents, tmp_path):
        """A client expecting another key fails the handshake with a clear error, fast; nothing runs."""
        client = agents()
        assert client.run(["true"])[0] == 0  # precondition: the right key works
        marker = tmp_path / "marker"
        wrong = impostor(client, AgentClient.new_keys()[0])
        start = time.monotonic()
        with pytest.raises(AgentUnavailable, match=f"the agent in {client.run_dir} did not authenticate"):
            wrong.run(["touch", str(marker)])
        assert time.monotonic() - start < 2
        with pytest.raises(AgentUnavailable, match="did not authenticate"):
            wrong.ping(2)
        with pytest.raises(AgentUnavailable, match="did not authenticate"):
            wrong.events(timeout=1)
        with pytest.raises(AgentUnavailable, match="did not authenticate"):
            wrong.kill("any")
        assert not marker.exists()
        assert len(ran(client.logs())) == 1  # only the precondition's command

    def test_an_agent_without_a_key_is_not_talked_to(self, agents):
        """An agent.json without curve_secret_key: the agent binds plain, says so, and the host refuses it."""
        client = agents(key=False)
        with pytest.raises(AgentUnavailable, match="did not authenticate"):
            client.run(["true"])
        errors = [r["message"] for _, r in client.logs() if r.get("type") == "agent_error"]
        assert any("no curve_secret_key" in m for m in errors)
        assert ran(client.logs()) == []

    def test_another_agents_socket_at_this_path_is_refused(self, agents, tmp_path):
        """B's very socket linked in as A's cmd.sock (it passes the socket-file check): A's
        command is refused by the handshake and never reaches B."""
        a, b = agents(), agents()
        os.link(b.cmd_path, a.cmd_path + ".new")  # the same socket inode, under A's directory
        os.replace(a.cmd_path + ".new", a.cmd_path)
        assert stat.S_ISSOCK(os.lstat(a.cmd_path).st_mode)
        assert impostor(a, b.server_key).ping(2) is not None  # precondition: A's path reaches B
        marker = tmp_path / "marker"
        with pytest.raises(AgentUnavailable, match="did not authenticate"):
            a.run(["touch", str(marker)])
        assert not marker.exists() and ran(b.logs()) == [] and ran(a.logs()) == []

    def test_a_stopped_agent_fails_within_the_agent_timeouts(self, agents):
        """An agent that never completes the handshake (SIGSTOP) is reported within silence + ping_wait."""
        client = agents(silence=0.3, ping_wait=0.5)
        client.proc.send_signal(19)  # SIGSTOP: the socket is there, nothing answers
        start = time.monotonic()
        with pytest.raises(AgentUnavailable, match="did not answer the handshake within 0.8s"):
            client.run(["true"])
        assert time.monotonic() - start < 2
        assert client.ping(0.3) is None


# ---- the attack on real containers ---------------------------------------------------------

SWAP = ("cd /run/appcontainers; end=$(( $(date +%s) + {secs} )); "
        "while [ $(date +%s) -lt $end ]; do mv cmd.sock cmd.real; ln -s {target} cmd.sock; "
        "mv cmd.real cmd.sock; done")


def peer_pid(path: str) -> int | None:
    """The pid of the process listening at path (SO_PEERCRED), following a symlink as the
    host's connect does; None if nothing answers."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
    except OSError:
        return None
    finally:
        s.close()


@pytest.fixture
def pair(svc):
    made = []
    try:
        for _ in range(2):
            c = svc.provision()
            made.append(c)
            c.start()
        yield made
    finally:
        for c in made:
            try:
                c.destroy()
            except Exception:  # noqa: BLE001 - already gone
                pass


class TestSocketSwap:
    def test_a_command_for_a_never_runs_in_b(self, svc, pair):
        """Root in A swaps A's cmd.sock for a symlink to B's (a host path the host's connect
        follows) in a loop: the swap reaches B, yet 60 runs in A never print B's hostname."""
        a, b = pair
        a_sock = os.path.join(svc.settings.layout.agent_dir(a.name), "cmd.sock")
        b_sock = os.path.join(svc.settings.layout.agent_dir(b.name), "cmd.sock")
        b_pid = svc.ports.driver.pid(b.name)
        a.run(f"setsid sh -c '{SWAP.format(secs=60, target=b_sock)}' </dev/null >/dev/null 2>&1 &")
        # Precondition: the swap happens, and a plain connection by A's path reaches B's agent.
        seen_link = reached_b = 0
        deadline = time.monotonic() + 20
        while (not seen_link or not reached_b) and time.monotonic() < deadline:
            try:
                seen_link += stat.S_ISLNK(os.lstat(a_sock).st_mode) and os.readlink(a_sock) == b_sock
            except OSError:
                pass
            reached_b += peer_pid(a_sock) == b_pid
        assert seen_link and reached_b, (seen_link, reached_b)
        outputs, refused = [], []
        by_handshake = 0
        for i in range(600):  # at least 60, and until a run met B's agent and was refused by the handshake
            if i >= 60 and by_handshake:
                break
            try:
                outputs.append(a.run("hostname").stdout.strip())
            except AgentUnavailable as e:
                refused.append(str(e))
                by_handshake += "did not authenticate" in str(e)
        assert by_handshake, "precondition: some run connected to B's agent during the swap"
        assert b.name not in outputs
        assert set(outputs) <= {a.name}
        print(f"\n{len(outputs) + len(refused)} runs during the swap: {len(outputs)} ran in A, "
              f"{len(refused)} refused; {by_handshake} by the handshake")
        assert ran(svc.containers.logs(b.name)) == []  # B was never asked to run anything

    def test_a_stale_key_is_refused_not_waited_for(self, svc, pair):
        """A client holding the key of the container's previous start gets a clear error, fast."""
        a, _ = pair
        old = svc.containers.agent(a.name)
        assert old.run(["true"])[0] == 0
        a.stop()
        a.start()
        assert svc.containers.get(a.name).agent_key != old.server_key
        start = time.monotonic()
        with pytest.raises(AgentUnavailable, match="did not authenticate"):
            old.run(["true"])
        assert time.monotonic() - start < 2
        assert a.run("hostname").stdout.strip() == a.name

    def test_the_secret_half_reaches_only_the_container(self, svc, pair):
        """agent.json (the agent's secret key) is root-only; the host keeps only the public half,
        outside the container, and it matches."""
        a, _ = pair
        path = os.path.join(svc.settings.layout.agent_dir(a.name), "agent.json")
        st = os.stat(path)
        idmap = svc.containers.get(a.name).idmap  # the file is root inside's: host uid 0, or the map's first id
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == (idmap[0] if idmap else 0)
        with open(path) as f:
            secret = json.load(f)["curve_secret_key"]
        assert zmq.curve_public(secret.encode()).decode() == svc.containers.get(a.name).agent_key
        inside = a.run("cat /run/appcontainers/agent.json").stdout
        assert json.loads(inside)["curve_secret_key"] == secret

    def test_an_unprivileged_containers_agent_reads_its_key(self, svc):
        """With an id map, agent.json belongs to root inside (0600) and the agent authenticates."""
        if not svc.ports.mounters.fuse_available():
            pytest.skip("unprivileged containers need fuse-overlayfs")
        c = svc.provision(unprivileged=True)
        try:
            c.start()
            r = svc.containers.get(c.name)
            st = os.stat(os.path.join(svc.settings.layout.agent_dir(c.name), "agent.json"))
            assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (r.idmap[0], 0o600)
            assert c.run("hostname").stdout.strip() == c.name
        finally:
            c.destroy()


def test_events_are_heard_only_from_authenticated_agents(agents):
    """watch_events hears an agent with the expected key, not one with another key, and
    subscribes again when a container's key changes."""
    from appcontainers.adapters.bus.zmq_bus import watch_events

    good, bad = agents(), agents()
    table = {"good": (good.run_dir, good.server_key), "bad": (bad.run_dir, AgentClient.new_keys()[0])}
    heard = []
    stream = watch_events(lambda: dict(table), rescan=0.2)

    def listen():
        for event in stream:
            heard.append(event)
            if len(heard) >= 4:
                return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    time.sleep(0.5)
    good.run(["true"])
    bad.run(["true"])
    time.sleep(0.5)
    table["bad"] = (bad.run_dir, bad.server_key)  # as after a restart: the new key is used
    time.sleep(0.6)
    bad.run(["true"])
    t.join(5)
    if not t.is_alive():
        stream.close()
    assert {e["container"] for e in heard} == {"good", "bad"}
    assert [e["type"] for e in heard if e["container"] == "bad"] == ["command_started", "command_exited"]
