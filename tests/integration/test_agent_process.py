"""The real agent process over real ipc sockets, driven through AgentClient."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

zmq = pytest.importorskip("zmq")

from appcontainers.adapters.bus.zmq_bus import AgentClient
from appcontainers.domain.exceptions import AgentUnavailable, CommandTimeout

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# 1,000,000 lines of 100 bytes, counted as they come and not kept (capture=False)
BURST_CLIENT = r"""
import json, sys
from appcontainers.adapters.bus.zmq_bus import AgentClient


def peak_kb():
    # VmHWM: this process's own peak (ru_maxrss would count the parent's RSS at the spawn)
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM:")).split()[1])

count = 0

def on_output(stream, line):
    global count
    count += 1

code, out, _, _ = AgentClient(sys.argv[1], server_key=sys.argv[2]).run(
    shell="head -c 100000000 /dev/zero | tr '\\0' a | fold -w 100", on_output=on_output, capture=False)
print(json.dumps([code, len(out), count, peak_kb()]))
"""


@pytest.fixture
def run_dir():
    # short path: an ipc socket path must fit in 107 bytes
    path = tempfile.mkdtemp(prefix="agent-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_agent(run_dir):
    """start_agent(config=None, prefix=()) -> (Popen, AgentClient); stopped in teardown.
    The agent gets a fresh CURVE key pair in agent.json, the client its public half."""
    procs = []

    def start(config=None, prefix=(), wait=True):
        public, secret = AgentClient.new_keys()
        with open(os.path.join(run_dir, "agent.json"), "w") as f:
            json.dump({**(config or {}), "curve_secret_key": secret}, f)
        proc = subprocess.Popen([*prefix, sys.executable, "-m", "appcontainers.agent", "--dir", run_dir],
                                cwd=ROOT)
        procs.append(proc)
        client = AgentClient(run_dir, server_key=public)
        if wait:
            assert client.wait_ready(10), "the agent did not come up"
        return proc, client

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()  # a clean stop also ends its commands
            try:
                proc.wait(6)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def agent(start_agent):
    return start_agent()


def raw_dealer(client, server_key=None):
    """A bare DEALER to the client's agent, a CURVE client as AgentClient is (server_key:
    the key it expects, by default the agent's own)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.curve_serverkey = (server_key or client.server_key).encode()
    sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
    sock.connect(f"ipc://{client.cmd_path}")
    return sock


def records(client, kind=None, cmd_id=None):
    return [r for _, r in client.logs()
            if (kind is None or r["type"] == kind) and (cmd_id is None or r.get("id") == cmd_id)]


def gone(pid, within=2.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


class TestRun:
    def test_exact_output_and_exit_codes(self, agent):
        """stdout, stderr and the exit code come back exactly; a signal death is -N."""
        _, client = agent
        code, out, err, msg = client.run(shell="printf 'out\\nmore\\n'; printf 'err\\n' >&2; exit 3")
        assert (code, out, err) == (3, b"out\nmore\n", b"err\n") and msg["code"] == 3
        assert client.run(["true"])[0] == 0
        code, _, _, msg = client.run(shell="kill -9 $$")
        assert code == -9 and msg["signal"] == 9

    def test_lines_stream_before_the_end(self, agent):
        """The first line reaches on_output while the command still runs."""
        _, client = agent
        seen, start = [], time.monotonic()
        code, out, _, _ = client.run(shell="echo a; sleep 2; echo b",
                                     on_output=lambda s, line: seen.append((line, time.monotonic() - start)))
        assert code == 0 and out == b"a\nb\n"
        assert [line for line, _ in seen] == ["a", "b"]
        assert seen[0][1] < 1.5 <= seen[1][1]

    def test_invalid_utf8_and_missing_newline_are_byte_exact(self, agent):
        """Undecodable bytes and a last line without newline survive exactly."""
        _, client = agent
        lines = []
        code, out, err, _ = client.run(["sh", "-c", "printf 'a\\377b\\nlast'; printf '\\300x' >&2"],
                                       on_output=lambda s, line: lines.append((s, line)))
        assert (code, out, err) == (0, b"a\xffb\nlast", b"\xc0x")
        assert ("stdout", "a\ufffdb") in lines and ("stdout", "last") in lines

    def test_timeout_kills_and_raises(self, agent, tmp_path):
        """A command past its timeout is killed; CommandTimeout comes with what it printed."""
        _, client = agent
        pidfile = tmp_path / "pid"
        start = time.monotonic()
        with pytest.raises(CommandTimeout) as err:
            client.run(shell=f"echo started; echo $$ > {pidfile}; exec sleep 10", timeout=1)
        assert time.monotonic() - start < 3
        assert "started" in err.value.output and err.value.timeout == 1
        assert gone(int(pidfile.read_text()))

    def test_missing_command_is_127(self, agent):
        """A command that does not exist ends with 127 and a message, argv or shell."""
        _, client = agent
        code, _, err, _ = client.run(["no-such-command-xyz"])
        assert code == 127 and b"no-such-command-xyz: command not found" in err
        code, _, err, _ = client.run(shell="no-such-command-xyz")
        assert code == 127 and b"not found" in err

    def test_stdin(self, agent):
        """stdin bytes reach the command and are closed after."""
        _, client = agent
        assert client.run(["cat"], stdin=b"hello\x00\xff\n")[1] == b"hello\x00\xff\n"

    def test_env_and_cwd(self, start_agent, tmp_path):
        """env is merged over agent.json's environment; cwd is honoured."""
        _, client = start_agent({"environment": {"FROM": "json", "OVER": "json"}})
        _, out, _, _ = client.run(shell='echo "$FROM $OVER $(pwd)"', env={"OVER": "run"}, cwd=str(tmp_path))
        assert out == f"json run {tmp_path}\n".encode()

    def test_hundred_megabytes_stream_in_bounded_memory(self, agent):
        """A 100 MB burst arrives whole while neither side's memory grows with it."""
        proc, client = agent
        # the client runs in a fresh process, so its peak RSS is this transfer's alone
        done = subprocess.run([sys.executable, "-c", BURST_CLIENT, client.run_dir, client.server_key], cwd=ROOT,
                              capture_output=True, timeout=120, check=True)
        code, out_len, lines, client_kb = json.loads(done.stdout)
        assert (code, out_len, lines) == (0, 0, 1_000_000)
        assert client_kb < 200 * 1024
        with open(f"/proc/{proc.pid}/status") as f:
            agent_kb = int(next(line for line in f if line.startswith("VmHWM:")).split()[1])
        assert agent_kb < 200 * 1024


class TestLogAndEvents:
    def test_startup_commands_run_and_are_logged(self, start_agent):
        """Startup commands run at start with ids startup-N; a failing one stops nothing."""
        _, client = start_agent({"startup_commands": ["echo first", "exit 5", "echo third"]})
        deadline = time.monotonic() + 5
        while len(records(client, "exit")) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        exits = {r["id"]: r["code"] for r in records(client, "exit")}
        assert exits == {"startup-0": 0, "startup-1": 5, "startup-2": 0}
        assert [r["data"] for r in records(client, "output", "startup-2")] == ["third\n"]
        assert [r["code"] for r in records(client, "startup_failed")] == [5]
        assert client.ping(2) is not None
        assert all("ts" in r for r in records(client))

    def test_log_has_what_no_client_saw_and_follow_yields_new_records(self, agent):
        """A later client reads earlier commands from the log; follow=True waits for more."""
        _, client = agent
        client.run(["echo", "before"], command_id="before")
        later = AgentClient(client.run_dir, server_key=client.server_key)
        assert [r["data"] for r in records(later, "output", "before")] == ["before\n"]
        end = list(later.logs())[-1][0]
        threading.Timer(0.3, lambda: client.run(["echo", "after"], command_id="after")).start()
        follow = later.logs(since=end, follow=True, poll=0.05)
        for _, rec in follow:
            if rec.get("id") == "after" and rec["type"] == "exit":
                break
        follow.close()

    def test_events(self, agent):
        """The PUB socket announces command_started and command_exited, and output on request."""
        _, client = agent
        with client.events(timeout=5) as events:
            client.run(shell="exit 4", command_id="ev")
            seen = []
            for event in events:
                seen.append(event)
                if event["type"] == "command_exited":
                    break
        assert [e["type"] for e in seen] == ["command_started", "command_exited"]
        assert seen[-1] == {"v": 1, "type": "command_exited", "id": "ev", "code": 4, "signal": None,
                            "timed_out": False}
        with client.events(timeout=5, topics=("output",)) as lines:
            client.run(["echo", "published"], command_id="pub")
            assert next(lines) == {"v": 1, "type": "output", "id": "pub", "stream": "stdout", "seq": 0,
                                   "data": "published\n"}

    def test_client_leaving_mid_command(self, agent):
        """When the requester disconnects, the command finishes and its exit is logged."""
        _, client = agent
        sock = raw_dealer(client)
        sock.send(json.dumps({"v": 1, "type": "run", "id": "left", "shell": "echo one; sleep 0.5; echo two"})
                  .encode())
        assert sock.poll(5000) and json.loads(sock.recv())["type"] == "started"
        sock.close(linger=0)
        deadline = time.monotonic() + 5
        while not records(client, "exit", "left") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [r["data"] for r in records(client, "output", "left")] == ["one\n", "two\n"]
        assert records(client, "exit", "left")[0]["code"] == 0


class TestRobustness:
    def test_garbage_does_not_kill_the_agent(self, agent):
        """Foreign frames are dropped and logged, bad v1 requests answered; the agent serves on."""
        _, client = agent
        sock = raw_dealer(client)
        for frames in ([b"garbage"], [b"\xff\xfe"], [b"a", b"b", b"c"], [b""], [b'{"v": 2, "type": "ping"}'],
                       [b'{"v": 1, "type": "run"}'], [b'{"v": 1, "type": "frobnicate", "id": "f"}']):
            sock.send_multipart(frames)
        replies = []
        while sock.poll(1000):
            replies.append(json.loads(sock.recv()))
        sock.close(linger=0)
        assert [(r["type"], r["reason"]) for r in replies] == [("error", "invalid"), ("error", "unknown")]
        assert replies[1]["id"] == "f"
        assert client.ping(2) is not None
        assert len(records(client, "agent_error")) == 7

    def test_sigterm_stops_the_agent_and_its_commands(self, start_agent, run_dir):
        """SIGTERM ends the commands (SIGKILL for those ignoring TERM), records it and exits 0."""
        proc, client = start_agent({"startup_commands": ["exec sleep 30", "trap '' TERM; exec sleep 30"]})
        deadline = time.monotonic() + 5
        while len(records(client, "started")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = [r["pid"] for r in records(client, "started")]
        with client.events(timeout=5) as events:
            start = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert next(events)["type"] == "agent_stopping"
        assert proc.wait(8) == 0 and time.monotonic() - start < 5
        assert all(gone(pid) for pid in pids)
        signals = {r["id"]: r["signal"] for r in records(client, "exit")}
        assert signals == {"startup-0": signal.SIGTERM, "startup-1": signal.SIGKILL}
        assert records(client)[-1]["type"] == "agent_stopped"
        assert not os.path.exists(os.path.join(run_dir, "ready"))
        assert client.ping(0.2) is None

    def test_sigpwr_stops_an_idle_agent_fast(self, agent):
        """lxc-stop's SIGPWR stops the agent at once when nothing runs."""
        proc, _ = agent
        start = time.monotonic()
        proc.send_signal(signal.SIGPWR)
        assert proc.wait(5) == 0 and time.monotonic() - start < 1

    def test_silent_agent_is_reported_not_waited_for(self, start_agent, run_dir):
        """A run whose agent stops answering raises AgentUnavailable; no agent fails at once."""
        proc, started = start_agent()
        client = AgentClient(run_dir, server_key=started.server_key, silence=0.3, ping_wait=0.5)
        # SIGSTOP looks like a dead agent to the client (stale files, no pong) but leaves no
        # orphan behind: teardown resumes and stops it
        threading.Timer(0.5, proc.send_signal, [signal.SIGSTOP]).start()
        start = time.monotonic()
        try:
            with pytest.raises(AgentUnavailable, match="stopped answering"):
                client.run(shell="exec sleep 30")
            assert time.monotonic() - start < 3
        finally:
            proc.send_signal(signal.SIGCONT)
        empty = AgentClient(tempfile.gettempdir() + "/no-agent-here", server_key=AgentClient.new_keys()[0])
        assert empty.ping(0.2) is None and not empty.wait_ready(0.2)
        with pytest.raises(AgentUnavailable):
            empty.run(["true"])

    def test_as_pid_1_it_reaps_orphans_and_stops(self, start_agent, run_dir):
        """In its own pid namespace (as under LXC) the agent reaps orphans and stops on SIGTERM."""
        if shutil.which("unshare") is None or subprocess.run(
                ["unshare", "-fp", "--mount-proc", "true"], capture_output=True, check=False).returncode:
            pytest.skip("cannot create a pid namespace here")
        # --kill-child: the agent gets SIGTERM when unshare ends, also at teardown
        proc, client = start_agent(prefix=("unshare", "-fp", "--mount-proc", "--kill-child=SIGTERM"))
        code, out, _, _ = client.run(shell="(sleep 0.2 &); sleep 0.6; echo $PPID; "
                                           "cat /proc/[0-9]*/stat | cut -d' ' -f3 | grep -c Z")
        assert out == b"1\n0\n" and code == 1  # our parent is pid 1; grep -c found no zombie
        assert client.ping(1)["pid"] == 1
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            (agent_pid,) = f.read().split()  # unshare -f runs the agent as its one child
        start = time.monotonic()
        os.kill(int(agent_pid), signal.SIGTERM)
        assert proc.wait(5) == 0 and time.monotonic() - start < 1
