"""The agent's command-running core, driven over a hand-written fake socket and real processes."""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appcontainers.agent import protocol as p
from appcontainers.agent.config import parse_config
from appcontainers.agent.lines import LineSplitter
from appcontainers.agent.runner import AGAIN, GONE, OK, Runner

A, B = b"peer-a", b"peer-b"


class FakeSocket:
    """Takes `room` messages (None: unlimited) then says AGAIN; peers in `gone` are GONE."""

    def __init__(self, room=None):
        self.room, self.gone, self.sent = room, set(), []

    def send(self, peer, payload):
        if peer in self.gone:
            return GONE
        if self.room is not None:
            if self.room == 0:
                return AGAIN
            self.room -= 1
        self.sent.append((peer, json.loads(payload)))
        return OK

    def to(self, peer, cmd_id=None):
        return [m for q, m in self.sent if q == peer and (cmd_id is None or m.get("id") == cmd_id)]


class FakeLog:
    def __init__(self):
        self.records = []

    def write(self, record):
        self.records.append(record)

    def write_json(self, payload, ts=None):
        self.records.append(json.loads(payload))

    def of(self, cmd_id):
        return [r for r in self.records if r.get("id") == cmd_id]


@pytest.fixture
def world():
    sock, log, published = FakeSocket(), FakeLog(), []
    runner = Runner(sock.send, log, lambda topic, payload: published.append((topic, json.loads(payload))),
                    base_env={"FROM_AGENT_JSON": "yes"})
    yield runner, sock, log, published
    runner.stopping = True
    runner.signal_all(signal.SIGKILL)
    drive(runner, lambda: not runner.commands, timeout=5)


def drive(runner, until, timeout=10.0):
    """The server's loop, with select instead of zmq."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out driving the runner"
        reads, writes, blocked = runner.wants()
        wait = runner.next_timeout()
        r, w, _ = select.select(reads, writes, [], min(0.02, wait if wait is not None else 0.02))
        for fd in r:
            runner.on_readable(fd)
        for fd in w:
            runner.on_writable(fd)
        runner.reap()
        if blocked:
            runner.flush_blocked()
        runner.tick()


def run(runner, peer=A, **req):
    runner.handle(peer, {"v": 1, "type": "run", **req})


def finished(runner, cmd_id):
    return lambda: cmd_id not in runner.commands


def output(msgs, stream="stdout"):
    return b"".join(p.data_bytes(m) for m in msgs if m["type"] == "output" and m["stream"] == stream)


class TestRunning:
    def test_messages_in_order_with_sequence_numbers(self, world):
        """started, the lines (seq per stream from 0) and exit reach the peer and the log alike."""
        runner, sock, log, published = world
        run(runner, id="c", shell="echo a; echo b; echo e >&2; exit 3")
        drive(runner, finished(runner, "c"))
        msgs = sock.to(A, "c")
        assert msgs[0]["type"] == "started" and msgs[-1] == p.exit_message("c", 3, None, False)
        outs = [(m["stream"], m["seq"], m["data"]) for m in msgs if m["type"] == "output"]
        assert sorted(outs) == [("stderr", 0, "e\n"), ("stdout", 0, "a\n"), ("stdout", 1, "b\n")]
        assert [m for m in log.of("c")] == msgs
        assert [e["type"] for t, e in published if t == b"event"] == ["command_started", "command_exited"]

    def test_killed_by_signal(self, world):
        """A command killed by a signal reports it, with no exit code."""
        runner, sock, _, _ = world
        run(runner, id="k", shell="kill -9 $$")
        drive(runner, finished(runner, "k"))
        assert sock.to(A, "k")[-1] == p.exit_message("k", None, 9, False)

    def test_missing_command_is_127_with_a_message(self, world):
        """An argv that does not exist ends at once with 127 and says so on stderr."""
        runner, sock, _, _ = world
        run(runner, id="m", argv=["/no/such/tool"])
        msgs = sock.to(A, "m")
        assert output(msgs, "stderr") == b"appcontainers-agent: /no/such/tool: command not found\n"
        assert msgs[-1]["code"] == 127 and "m" not in runner.commands

    def test_environment_layers_and_cwd(self, world, tmp_path):
        """env: request over agent.json over the defaults; cwd is honoured."""
        runner, sock, _, _ = world
        run(runner, id="e", shell='echo "$HOME $FROM_AGENT_JSON $MINE $(pwd)"', env={"MINE": "1"},
            cwd=str(tmp_path))
        drive(runner, finished(runner, "e"))
        assert output(sock.to(A, "e")) == f"/root yes 1 {tmp_path}\n".encode()

    def test_stdin_data_then_eof(self, world):
        """"stdin" bytes are written and closed."""
        runner, sock, _, _ = world
        run(runner, id="i", argv=["cat"], stdin=p.b64(b"one\ntwo\xff"))
        drive(runner, finished(runner, "i"))
        assert output(sock.to(A, "i")) == b"one\ntwo\xff"

    def test_streamed_stdin(self, world):
        """stdin_stream takes stdin messages until eof."""
        runner, sock, _, _ = world
        run(runner, id="s", argv=["cat"], stdin_stream=True)
        runner.handle(A, {"v": 1, "type": "stdin", "id": "s", "data": p.b64(b"x\n")})
        drive(runner, lambda: len(sock.to(A, "s")) >= 2)
        runner.handle(A, {"v": 1, "type": "stdin", "id": "s", "data": p.b64(b"y"), "eof": True})
        drive(runner, finished(runner, "s"))
        assert output(sock.to(A, "s")) == b"x\ny"

    def test_timeout_kills_the_group(self, world):
        """Past its timeout the process group is killed and timed_out reported."""
        runner, sock, _, _ = world
        started = time.monotonic()
        run(runner, id="t", shell="sleep 10 & sleep 10", timeout=0.3)
        drive(runner, finished(runner, "t"))
        assert time.monotonic() - started < 2
        assert sock.to(A, "t")[-1] == p.exit_message("t", None, 9, True)

    def test_kill_request(self, world):
        """kill sends the signal to the command; unknown ids get an error."""
        runner, sock, _, _ = world
        run(runner, id="x", argv=["sleep", "10"])
        runner.handle(B, {"v": 1, "type": "kill", "id": "x", "signal": 15})
        runner.handle(B, {"v": 1, "type": "kill", "id": "nope", "signal": 15})
        drive(runner, finished(runner, "x"))
        assert sock.to(A, "x")[-1]["signal"] == 15
        assert sock.to(B) == [p.error_message("no running command 'nope'", "nope", "unknown")]

    def test_duplicate_id_and_stopping_are_refused(self, world):
        """A running id cannot be reused; nothing new starts once stopping."""
        runner, sock, _, _ = world
        run(runner, id="d", argv=["sleep", "10"])
        run(runner, B, id="d", argv=["true"])
        runner.stopping = True
        run(runner, B, id="late", argv=["true"])
        assert [m["reason"] for m in sock.to(B)] == ["duplicate", "stopping"]

    def test_background_child_does_not_hold_the_exit(self, world):
        """A child left holding the pipes delays the exit only by the grace period."""
        runner, sock, _, _ = world
        started = time.monotonic()
        run(runner, id="b", shell="sleep 5 & echo $!")
        drive(runner, finished(runner, "b"))
        assert time.monotonic() - started < 2
        assert sock.to(A, "b")[-1]["code"] == 0
        os.kill(int(output(sock.to(A, "b"))), signal.SIGKILL)  # the background sleep

    def test_endless_background_writer_is_cut_off(self):
        """A child that never stops writing cannot hold the exit beyond the close limit."""
        lines = [0]

        class CountingLog(FakeLog):
            def write_json(self, payload, ts=None):
                lines[0] += 1

        runner = Runner(FakeSocket().send, CountingLog(), base_env={})
        started = time.monotonic()
        runner.start_startup(0, "yes &")
        drive(runner, lambda: not runner.commands)
        assert time.monotonic() - started < 10 and lines[0] > 1000  # 2.3 s, more when loaded

    def test_long_line_is_split_and_exact(self, world):
        """A line without newline longer than MAX_LINE arrives in bounded pieces, exactly."""
        runner, sock, _, _ = world
        size = 3 * p.MAX_LINE + 5
        run(runner, id="l", shell=f"head -c {size} /dev/zero | tr '\\0' x")
        drive(runner, finished(runner, "l"))
        pieces = [p.data_bytes(m) for m in sock.to(A, "l") if m["type"] == "output"]
        assert b"".join(pieces) == b"x" * size and max(map(len, pieces)) <= p.MAX_LINE


class TestChunksAndTerminals:
    def test_chunked_output_comes_as_read_exactly(self, world):
        """chunks: output goes out as read (many lines a message), byte-exact, seq in order."""
        runner, sock, log, _ = world
        run(runner, id="ch", shell="seq 20000; printf 'no newline'", chunks=True)
        drive(runner, finished(runner, "ch"))
        outs = [m for m in sock.to(A, "ch") if m["type"] == "output"]
        want = "".join(f"{i}\n" for i in range(1, 20001)).encode() + b"no newline"
        assert output(outs) == want and len(outs) < 200
        assert [m["seq"] for m in outs] == list(range(len(outs)))
        assert output(log.of("ch")) == want

    def test_tty_command_has_a_terminal_of_the_given_size(self, world):
        """tty: stdin, stdout and stderr are one terminal of rows x cols, its controlling one."""
        runner, sock, _, _ = world
        run(runner, id="t", shell="stty size; tty >/dev/null && echo tty; echo err >&2; "
                                  "ps -o tty= -p $$ >/dev/null; exit 4", tty={"rows": 33, "cols": 101})
        drive(runner, finished(runner, "t"))
        msgs = sock.to(A, "t")
        text = output(msgs).replace(b"\r\n", b"\n")
        assert text.startswith(b"33 101\ntty\nerr\n") and output(msgs, "stderr") == b""
        assert msgs[-1]["code"] == 4

    def test_tty_takes_stdin_and_ctrl_c_interrupts_the_foreground(self, world):
        """Bytes written to a tty command reach it as typed; ^C is SIGINT to its foreground group."""
        runner, sock, _, _ = world
        run(runner, id="i", argv=["sh"], tty={"rows": 0, "cols": 0}, stdin_stream=True)
        for data in (b"echo $((6*7))\n", b"sleep 30\n"):
            runner.handle(A, {"v": 1, "type": "stdin", "id": "i", "data": p.b64(data)})
        drive(runner, lambda: b"42" in output(sock.to(A, "i")))
        time.sleep(0.3)
        runner.handle(A, {"v": 1, "type": "stdin", "id": "i", "data": p.b64(b"\x03")})
        runner.handle(A, {"v": 1, "type": "resize", "id": "i", "rows": 20, "cols": 70})
        runner.handle(A, {"v": 1, "type": "stdin", "id": "i", "data": p.b64(b"stty size; exit 3\n")})
        drive(runner, finished(runner, "i"), timeout=10)
        msgs = sock.to(A, "i")
        assert b"20 70" in output(msgs) and msgs[-1]["code"] == 3


class TestPeers:
    def test_back_pressure_stops_reading_until_the_peer_takes_more(self, world):
        """While the peer takes nothing, the pipes are not read and the command blocks."""
        runner, sock, log, _ = world
        sock.room = 10
        run(runner, id="bp", shell="head -c 2000000 /dev/zero | tr '\\0' y | fold -w 100")
        drive(runner, lambda: runner.wants()[2])
        time.sleep(0.3)
        drive(runner, lambda: True)
        assert runner.commands["bp"].status is None  # still running: blocked on its pipe
        assert runner.wants()[0] == [] and len(runner.commands["bp"].queue) < 1000
        sock.room = None
        drive(runner, finished(runner, "bp"))
        lines = [m for m in sock.to(A, "bp") if m["type"] == "output"]
        assert len(lines) == 20000 and [m["seq"] for m in lines] == list(range(20000))
        assert len([r for r in log.of("bp") if r["type"] == "output"]) == 20000

    def test_gone_peer_command_goes_on_into_the_log(self, world):
        """When the requester is gone the command runs on; output and exit are logged."""
        runner, sock, log, _ = world
        run(runner, id="g", shell="echo one; sleep 0.3; echo two")
        drive(runner, lambda: len(sock.to(A, "g")) >= 2)
        sock.gone.add(A)
        drive(runner, finished(runner, "g"))
        assert [m["type"] for m in sock.to(A, "g")] == ["started", "output"]
        assert output(log.of("g")) == b"one\ntwo\n" and log.of("g")[-1]["type"] == "exit"
        assert {"v": 1, "type": "peer_gone", "id": "g"} in log.records

    def test_attach_moves_the_rest_to_a_new_peer(self, world):
        """attach sends the remaining output and the exit to the new peer; after the end, the exit."""
        runner, sock, _, _ = world
        run(runner, id="at", shell="echo one; sleep 0.3; echo two")
        drive(runner, lambda: len(sock.to(A, "at")) >= 2)
        runner.handle(B, {"v": 1, "type": "attach", "id": "at"})
        drive(runner, finished(runner, "at"))
        assert output(sock.to(A, "at")) == b"one\n" and output(sock.to(B, "at")) == b"two\n"
        runner.handle(A, {"v": 1, "type": "attach", "id": "at"})
        assert sock.to(A, "at")[-1] == sock.to(B, "at")[-1] == p.exit_message("at", 0, None, False)


class TestStartup:
    def test_failed_startup_is_reported_and_others_run(self, world):
        """startup-N commands log like any command; a failure is an event, the next still runs."""
        runner, sock, log, published = world
        runner.start_startup(0, "exit 2")
        runner.start_startup(1, "echo up")
        drive(runner, lambda: not runner.commands)
        assert sock.sent == []
        assert output(log.of("startup-1")) == b"up\n"
        failed = {"type": "startup_failed", "id": "startup-0", "code": 2, "signal": None}
        assert {"v": 1, **failed} in log.records and (b"event", {"v": 1, **failed}) in published

    def test_stopping_stops_everything(self, world):
        """signal_all ends every command; finish_all records them."""
        runner, _, log, _ = world
        runner.start_startup(0, "sleep 30")
        runner.stopping = True
        runner.signal_all(signal.SIGTERM)
        drive(runner, lambda: not runner.live())
        runner.finish_all()
        assert not runner.commands and log.of("startup-0")[-1]["signal"] == signal.SIGTERM
        assert not [r for r in log.records if r["type"] == "startup_failed"]


class TestLineSplitter:
    @given(st.lists(st.binary(max_size=300)), st.integers(4, 64))
    def test_pieces_rejoin_exactly_and_stay_bounded(self, chunks, limit):
        """Whatever the chunking, the pieces rejoin to the input and none exceeds the limit."""
        splitter = LineSplitter(limit)
        pieces = [x for c in chunks for x in splitter.feed(c)] + splitter.flush()
        assert b"".join(pieces) == b"".join(chunks)
        assert all(0 < len(x) <= limit for x in pieces)
        assert all(x.endswith(b"\n") for x in pieces[:-1] if len(x) < limit - 3)

    def test_cuts_between_utf8_characters(self):
        """A long text line is cut where each piece stays valid UTF-8."""
        pieces = LineSplitter(10).feed("ééééééééé\n".encode())
        assert "".join(x.decode() for x in pieces) == "ééééééééé\n"


class TestConfig:
    def test_defaults_and_bad_keys(self):
        """Missing keys take defaults; invalid ones are ignored with a reason, never fatal."""
        config, problems = parse_config({"startup_commands": "echo", "environment": {"A": "1"},
                                         "log_max_bytes": 100})
        assert config["startup_commands"] == [] and config["environment"] == {"A": "1"}
        assert config["log_max_bytes"] == 100 and len(problems) == 1
        assert parse_config([])[1] == ["agent.json is not a JSON object"]


def test_the_core_imports_no_zmq():
    """protocol, runner, logfile and config import no zmq (only the server does)."""
    code = ("import sys, appcontainers.agent.runner, appcontainers.agent.logfile, "
            "appcontainers.agent.config; assert 'zmq' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
