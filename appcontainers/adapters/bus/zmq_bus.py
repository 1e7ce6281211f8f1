"""The host side of the agent protocol: one AgentClient per container run directory.

Connections are short-lived: each call connects, does its work and closes (linger 0); there
is no host daemon. zmq is imported only when a call needs it.

Every connection is authenticated with ZeroMQ CURVE: the host knows each agent's public key
(made at the container's start, kept outside the container) and the agent proves it holds the
secret one in the handshake, before any message goes out. A socket path the container swapped
for another container's socket leads to an agent that cannot, so the command is never sent.
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
from .command_call import CommandCall, Handlers, Stdin
from ...domain.exceptions import AgentUnavailable, CommandTimeout, InvalidValue

SILENCE = 2.0  # seconds without any message before run() pings the agent
PING_WAIT = 3.0  # how long that ping may stay unanswered before the agent counts as gone
RCVHWM = 64  # messages (up to MAX_CHUNK each) the client socket buffers; the agent stops reading the pipes beyond
INLINE_STDIN = 64 * 1024  # stdin bytes up to this go in the run request; more are streamed
_client_keys: tuple[bytes, bytes] | None = None  # this process's CURVE client pair (made on first use)


def _zmq():
    import zmq

    return zmq


def new_keys() -> tuple[str, str]:
    """A fresh CURVE key pair for one agent, (public, secret), as Z85 text (40 characters)."""
    zmq = _zmq()
    if not zmq.has("curve"):
        raise AgentUnavailable(f"this host's libzmq {zmq.zmq_version()} has no CURVE support: "
                               f"the agents cannot be authenticated")
    public, secret = zmq.curve_keypair()
    return public.decode("ascii"), secret.decode("ascii")


def _authenticating(sock, server_key: str):
    """Make sock a CURVE client that accepts only the server holding server_key's secret."""
    global _client_keys
    zmq = _zmq()
    if _client_keys is None:
        # The agents accept any client: what is checked is the server's key, so one
        # throw-away pair per process is enough (each connection still gets its own session keys).
        _client_keys = zmq.curve_keypair()
    sock.setsockopt(zmq.CURVE_SERVERKEY, server_key.encode("ascii"))
    sock.setsockopt(zmq.CURVE_PUBLICKEY, _client_keys[0])
    sock.setsockopt(zmq.CURVE_SECRETKEY, _client_keys[1])
    return sock


def _handshake(sock, endpoint: str, wait: float, who: str) -> bool:
    """Connect sock and wait up to `wait` seconds for the CURVE handshake. True once the peer
    proved it holds the expected key, False if it did not answer in time; AgentUnavailable
    when it failed the handshake (the wrong agent, or one without the key)."""
    zmq = _zmq()
    from zmq.utils.monitor import parse_monitor_message

    failed = zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | \
        zmq.EVENT_HANDSHAKE_FAILED_AUTH
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | failed)
    try:
        sock.connect(endpoint)
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0 and monitor.poll(left * 1000):
            event = parse_monitor_message(monitor.recv_multipart())["event"]
            if event & failed:
                raise AgentUnavailable(
                    f"the agent in {who} did not authenticate: whatever answers at {endpoint} does not "
                    f"hold the key the host made for this container, so nothing was sent (another "
                    f"container's socket, or an agent from before agent authentication: restart it)")
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                return True
        return False
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)


class AgentClient:
    """Talks to the agent whose sockets are in run_dir (the directory the agent calls --dir),
    authenticating it by server_key, the Z85 CURVE public key the host made for it."""

    new_keys = staticmethod(new_keys)  # what the host makes a new agent's keys with

    def __init__(self, run_dir: str, *, server_key: str | None, silence: float = SILENCE,
                 ping_wait: float = PING_WAIT):
        self.server_key = server_key
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

    def _key(self) -> str:
        if self.server_key is None:
            raise AgentUnavailable(f"the host holds no key for the agent in {self.run_dir} (started "
                                   f"before agent authentication?): restart the container")
        return self.server_key

    def _open(self, wait: float):
        """A DEALER connected to the agent once the agent authenticated, or None if the
        handshake did not complete within wait. AgentUnavailable if the agent failed it."""
        self._check_socket(self.cmd_path)
        zmq = _zmq()
        sock = _authenticating(zmq.Context.instance().socket(zmq.DEALER), self._key())
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, RCVHWM)
        try:
            if _handshake(sock, f"ipc://{self.cmd_path}", wait, self.run_dir):
                return sock
        except BaseException:
            sock.close(linger=0)
            raise
        sock.close(linger=0)
        return None

    def _dealer(self):
        """_open() with the time run() gives a quiet agent (silence + ping_wait)."""
        wait = self.silence + self.ping_wait
        sock = self._open(wait)
        if sock is None:
            raise AgentUnavailable(f"the agent in {self.run_dir} did not answer the handshake within {wait:g}s")
        return sock

    def _gone(self) -> str | None:
        """Why the agent is certainly not running, or None."""
        for path in (self.ready_path, self.cmd_path):
            if not os.path.exists(path):
                return f"the agent in {self.run_dir} is not running (no {os.path.basename(path)})"
        return None

    def ping(self, timeout: float = 1.0) -> dict | None:
        """The agent's pong ({"pid", "uptime", ...}), or None when it does not answer in time;
        AgentUnavailable when what answers is not the agent holding this container's key."""
        if not os.path.exists(self.cmd_path):
            return None
        deadline = time.monotonic() + timeout
        sock = self._open(timeout)
        if sock is None:
            return None
        try:
            sock.send(p.encode(p.ping_request()))
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
            cwd: str | None = None, stdin: Any = None, timeout: float | None = None,
            on_output: Callable[[str, str], None] | None = None, capture: bool = True,
            command_id: str | None = None, on_data: Callable[[str, bytes], None] | None = None,
            tty: tuple[int, int] | None = None,
            controls: Callable[[], list] | None = None, user: str | None = None) -> tuple[int, bytes, bytes, dict]:
        """Run a command in the container; returns (exit code, stdout, stderr, exit message).

        The exit code is -N when signal N killed it. stdin: bytes, or a stream sent as the
        command reads it (a binary file with a descriptor is read only when readable, so a
        terminal or a slow pipe never holds up the output; any other file or iterable of
        bytes is read when the agent has room). on_output(stream, line) gets each line as it
        arrives, without its trailing newline (undecodable bytes replaced); on_data(stream,
        data) gets the output exactly as it comes, in chunks; stdout and stderr come back
        byte-exact. capture=False keeps no output (they come back empty), for output too big
        to hold. tty=(rows, cols) runs it on a pseudo-terminal (its output all on stdout).
        controls() is asked often for what to send: signals (ints) for the command's process
        group, (rows, cols) for its terminal. user: run as USER, UID, USER:GROUP or UID:GID of
        the container (an agent too old to know users is refused before anything runs). Raises CommandTimeout when the agent killed it
        at timeout, AgentUnavailable when the agent is gone, InvalidValue for a bad request.
        """
        cid = command_id or uuid.uuid4().hex
        source = _stdin_source(stdin)
        try:
            req = p.run_request(cid, argv, shell, env, cwd, None if source.open or stdin is None else bytes(stdin),
                                stdin_stream=source.open, timeout=timeout, chunks=True, tty=tty, user=user,
                                frames=True)
        except p.ProtocolError as e:
            raise InvalidValue(str(e)) from None
        what = shell if shell is not None else " ".join(cast(list[str], argv))  # one of them is set
        if (reason := self._gone()) is not None:
            raise AgentUnavailable(f"cannot run {what!r}: {reason}")
        if user is not None:
            self._check_feature("user", f"cannot run {what!r} as {user}")
        sock = self._dealer()
        try:
            sock.send(p.encode(req))
            return CommandCall(self, sock, cid, what, source, timeout, capture,
                               Handlers(on_output, on_data, controls)).wait()
        finally:
            sock.close(linger=0)

    def _check_feature(self, feature: str, what: str) -> None:
        """An older agent ignores a field it does not know (a user would run as root): ask first."""
        pong = self.ping(5.0)
        if pong is None:
            raise AgentUnavailable(f"{what}: the agent does not answer")
        if feature not in pong.get("features", ()):
            raise InvalidValue(f"{what}: the agent in this container is too old (rebuild its base, then restart it)")

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
        return EventStream(f"ipc://{self.events_path}", topics, timeout, server_key=self._key(),
                           who=self.run_dir)


class EventStream:
    """Events from the agent's PUB socket; close() it (or use `with`) when done."""

    def __init__(self, endpoint: str, topics: Iterable[str], timeout: float | None, *, server_key: str,
                 who: str | None = None, connect_wait: float = 1.0):
        zmq = _zmq()
        self.timeout = timeout
        self.sock = _authenticating(zmq.Context.instance().socket(zmq.SUB), server_key)
        self.sock.setsockopt(zmq.LINGER, 0)
        for topic in topics:
            self.sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        try:
            if _handshake(self.sock, endpoint, connect_wait, who or endpoint):
                time.sleep(0.005)  # authenticated: the subscription follows at once
        except BaseException:
            self.close()
            raise

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


def _stdin_source(stdin) -> Stdin:
    """A streamed stdin's source (an empty one for None or a few bytes, sent in the request)."""
    if isinstance(stdin, (bytes, bytearray, memoryview)) and len(stdin) > INLINE_STDIN:
        return Stdin(feed=chunks([stdin], p.MAX_CHUNK))  # raw frames, not base64 in the request
    if stdin is None or isinstance(stdin, (bytes, bytearray, memoryview)):
        return Stdin()
    try:
        return Stdin(fd=stdin.fileno())
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return Stdin(feed=chunks(stdin, p.MAX_CHUNK))


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


def _subscriber(endpoint: str, server_key: str, topics: Iterable[str]):
    zmq = _zmq()
    sock = _authenticating(zmq.Context.instance().socket(zmq.SUB), server_key)
    sock.setsockopt(zmq.LINGER, 0)
    for t in topics:
        sock.setsockopt(zmq.SUBSCRIBE, t.encode())
    sock.connect(f"ipc://{endpoint}")
    return sock


def _rescan(agents, socks: dict, poller, topics) -> None:
    """Subscribe to agents not heard yet, and again to those restarted with a new key (the old
    key's reconnections would fail the handshake for ever)."""
    for name, (d, key) in agents().items():
        endpoint = os.path.join(d, "events.sock")
        known = socks.get(name)
        if key is None or (known is not None and known[1] == key) or not _is_socket(endpoint):
            continue
        if known is not None:
            old, _ = socks.pop(name)
            poller.unregister(old)
            old.close(linger=0)
        sock = _subscriber(endpoint, key, topics)
        socks[name] = (sock, key)
        poller.register(sock, _zmq().POLLIN)


def watch_events(agents, rescan: float = 1.0, topics: Iterable[str] = ("event",),
                 tick: Callable[[], list[dict]] | None = None) -> Iterator[dict]:
    """Events from every container's agent, live; agents() lists {name: (agent dir, server key)}
    and is asked again every `rescan` seconds so containers started later are heard too.
    Each event gets a "container" key. An agent that does not authenticate is never heard.
    tick, if given, is called at each rescan and the events it returns (host-side ones, such as
    a container's state changes) are yielded first."""
    zmq = _zmq()
    socks: dict[str, tuple] = {}  # name -> (SUB socket, the key it expects)
    poller = zmq.Poller()
    try:
        next_scan = 0.0
        while True:
            now = time.monotonic()
            if now >= next_scan:
                yield from (tick() if tick else ())
                _rescan(agents, socks, poller, topics)
                next_scan = now + rescan
            for sock, _ in poller.poll(rescan * 1000):
                name = next(n for n, (s, _) in socks.items() if s is sock)
                frames = sock.recv_multipart()
                try:
                    event = p.decode(frames[-1])
                except p.ProtocolError:
                    continue
                event["container"] = name  # who sent it, by the key it proved; never what it says
                yield event
    finally:
        for sock, _ in socks.values():
            sock.close(linger=0)
