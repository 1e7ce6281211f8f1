"""The host side of the agent protocol: one AgentClient per container run directory.

Connections are short-lived: each call connects, does its work and closes (linger 0); there
is no host daemon. zmq is imported only when a call needs it.
"""
from __future__ import annotations

import os
import socket
import stat
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

from ...agent import protocol as p
from ...agent.logfile import read_log
from ...agent.retry import attempts
from ..host.process import chunks
from .command_call import CommandCall
from ...domain.exceptions import AgentUnavailable, CommandTimeout, InvalidValue

SILENCE = 2.0  # seconds without any message before run() pings the agent
PING_WAIT = 3.0  # how long that ping may stay unanswered before the agent counts as gone
RCVHWM = 1000  # messages the client socket buffers; the agent stops reading the pipes beyond


def _zmq():
    import zmq

    return zmq


class AgentClient:
    """Talks to the agent whose sockets are in run_dir (the directory the agent calls --dir)."""

    def __init__(self, run_dir: str, *, silence: float = SILENCE, ping_wait: float = PING_WAIT):
        self.silence, self.ping_wait = silence, ping_wait
        self.run_dir = os.path.abspath(run_dir)
        self.cmd_path = os.path.join(self.run_dir, "cmd.sock")
        self.events_path = os.path.join(self.run_dir, "events.sock")
        self.ready_path = os.path.join(self.run_dir, "ready")

    def _check_socket(self, path: str) -> None:
        """The run directory is writable from inside the container: connect only to a real
        socket there, never through a symlink the container planted toward a host socket."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise AgentUnavailable(f"the agent in {self.run_dir} is not running (no {os.path.basename(path)})") from None
        if not stat.S_ISSOCK(st.st_mode):
            raise AgentUnavailable(f"{path} is not a socket: refusing to connect")

    def _dealer(self):
        self._check_socket(self.cmd_path)
        zmq = _zmq()
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, RCVHWM)
        sock.connect(f"ipc://{self.cmd_path}")
        return sock

    def _gone(self) -> str | None:
        """Why the agent is certainly not running, or None."""
        for path in (self.ready_path, self.cmd_path):
            if not os.path.exists(path):
                return f"the agent in {self.run_dir} is not running (no {os.path.basename(path)})"
        return None

    def ping(self, timeout: float = 1.0) -> dict | None:
        """The agent's pong ({"pid", "uptime", ...}), or None when it does not answer in time."""
        if not os.path.exists(self.cmd_path):
            return None
        sock = self._dealer()
        try:
            sock.send(p.encode(p.ping_request()))
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                if not sock.poll(left * 1000):
                    break
                try:
                    msg = p.decode(sock.recv())
                except p.ProtocolError:
                    continue
                if msg["type"] == "pong":
                    return msg
            return None
        finally:
            sock.close(linger=0)

    def alive(self) -> bool:
        """Quick check, without ZeroMQ: the ready file is there and something listens on
        cmd.sock (a socket file left by a dead agent refuses the connection at once)."""
        if not os.path.exists(self.ready_path):
            return False
        try:
            if not stat.S_ISSOCK(os.lstat(self.cmd_path).st_mode):
                return False
        except OSError:
            return False
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(1.0)
        try:
            s.connect(self.cmd_path)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def wait_ready(self, timeout: float) -> bool:
        """True once the agent wrote its ready file and answers a ping, False after timeout."""
        for left in attempts(0.01, time.monotonic() + timeout):
            if left > 0 and os.path.exists(self.ready_path) and self.ping(min(left, 0.5)) is not None:
                return True
        return False

    def run(self, argv: list[str] | None = None, shell: str | None = None, env: dict | None = None,
            cwd: str | None = None, stdin: bytes | None = None, timeout: float | None = None,
            on_output: Callable[[str, str], None] | None = None, capture: bool = True,
            command_id: str | None = None) -> tuple[int, bytes, bytes, dict]:
        """Run a command in the container; returns (exit code, stdout, stderr, exit message).

        The exit code is -N when signal N killed it. on_output(stream, line) gets each line
        as it arrives, without its trailing newline (undecodable bytes replaced); stdout and
        stderr come back byte-exact. capture=False keeps no output (they come back empty),
        for output too big to hold. Raises CommandTimeout when the agent killed it at
        timeout, AgentUnavailable when the agent is gone, InvalidValue for a bad request.
        """
        cid = command_id or uuid.uuid4().hex
        feed = None
        if stdin is not None and not isinstance(stdin, (bytes, bytearray, memoryview)):
            feed = chunks(stdin)  # a stream: sent as the command runs, then end of file
            stdin = None
        try:
            req = p.run_request(cid, argv, shell, env, cwd, None if stdin is None else bytes(stdin),
                                stdin_stream=feed is not None, timeout=timeout)
        except p.ProtocolError as e:
            raise InvalidValue(str(e)) from None
        what = shell if shell is not None else " ".join(cast(list[str], argv))  # one of them is set
        if (reason := self._gone()) is not None:
            raise AgentUnavailable(f"cannot run {what!r}: {reason}")
        sock = self._dealer()
        try:
            sock.send(p.encode(req))
            return CommandCall(self, sock, cid, what, feed, timeout, capture, on_output).wait()
        finally:
            sock.close(linger=0)

    def kill(self, command_id: str, signal: int = 15) -> None:
        """Send a signal to a running command's process group (fire and forget)."""
        sock = self._dealer()
        try:
            sock.send(p.encode(p.kill_request(command_id, signal)))
        finally:
            sock.close(linger=1000)  # close returns at once; the message still goes out

    def logs(self, since: int = 0, follow: bool = False, poll: float = 0.2) -> Iterator[tuple[int, dict]]:
        """(offset, record) from the agent's log, from logical byte offset `since`.

        offset is just past the record: pass the last one back as `since` to resume. Offsets
        survive rotation; records older than the one kept rotated file are gone, and reading
        from before them starts at the oldest kept. follow=True waits for new records until
        the caller stops iterating.
        """
        return read_log(self.run_dir, since, follow, poll)

    def events(self, timeout: float | None = None, topics: Iterable[str] = ("event",)) -> EventStream:
        """An iterator of event dicts; it is subscribed when this returns (so start it before
        the action whose events you want) and ends after `timeout` seconds without an event."""
        self._check_socket(self.events_path)
        return EventStream(f"ipc://{self.events_path}", topics, timeout)


class EventStream:
    """Events from the agent's PUB socket; close() it (or use `with`) when done."""

    def __init__(self, endpoint: str, topics: Iterable[str], timeout: float | None,
                 connect_wait: float = 1.0):
        zmq = _zmq()
        self.timeout = timeout
        self.sock = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        for topic in topics:
            self.sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        monitor = self.sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        try:
            self.sock.connect(endpoint)
            if monitor.poll(connect_wait * 1000):  # connected: the subscription follows at once
                monitor.recv_multipart()
                time.sleep(0.005)
        finally:
            self.sock.disable_monitor()
            monitor.close(linger=0)

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> dict:
        while self.sock is not None:
            if not self.sock.poll(None if self.timeout is None else self.timeout * 1000):
                break
            frames = self.sock.recv_multipart()
            try:
                return p.decode(frames[-1])
            except p.ProtocolError:
                continue
        self.close()
        raise StopIteration

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        self.close()


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


def watch_events(agent_dirs, rescan: float = 1.0, topics: Iterable[str] = ("event",)) -> Iterator[dict]:
    """Events from every container's agent, live; agent_dirs() lists {name: agent dir}
    and is asked again every `rescan` seconds so containers started later are heard too.
    Each event gets a "container" key."""
    zmq = _zmq()
    ctx = zmq.Context.instance()
    socks: dict[str, Any] = {}  # zmq sockets (zmq is imported on first use)
    poller = zmq.Poller()
    try:
        next_scan = 0.0
        while True:
            now = time.monotonic()
            if now >= next_scan:
                for name, d in agent_dirs().items():
                    endpoint = os.path.join(d, "events.sock")
                    if name not in socks and _is_socket(endpoint):
                        sock = ctx.socket(zmq.SUB)
                        sock.setsockopt(zmq.LINGER, 0)
                        for t in topics:
                            sock.setsockopt(zmq.SUBSCRIBE, t.encode())
                        sock.connect(f"ipc://{endpoint}")
                        socks[name] = sock
                        poller.register(sock, zmq.POLLIN)
                next_scan = now + rescan
            for sock, _ in poller.poll(rescan * 1000):
                name = next(n for n, s in socks.items() if s is sock)
                frames = sock.recv_multipart()
                try:
                    event = p.decode(frames[-1])
                except p.ProtocolError:
                    continue
                event.setdefault("container", name)
                yield event
    finally:
        for sock in socks.values():
            sock.close(linger=0)
