"""The agent process: reads agent.json, binds the sockets, runs the poll loop, stops on signals."""
from __future__ import annotations

import collections
import json
import os
import signal
import socket
import time

import zmq

from . import protocol as p
from .config import load_config
from .logfile import JsonLog
from .runner import AGAIN, DEFAULT_PATH, GONE, OK, Runner

STOP_GRACE = 3.0  # SIGTERM to SIGKILL
KILL_WAIT = 1.0  # SIGKILL to giving up on reaping
# messages queued per peer before the agent stops reading that command's pipes: with output
# messages of up to MAX_CHUNK (256 KiB) that is at most 16 MiB (1000 of 64 KiB were 64 MiB)
SNDHWM = 64
MAX_REQUESTS_PER_TURN = 256
FILES = ("cmd.sock", "events.sock", "ready")
_NOBLOCK = int(zmq.NOBLOCK)
_MORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)


class Agent:
    def __init__(self, run_dir: str, stop_grace: float = STOP_GRACE):
        self.dir, self.stop_grace = run_dir, stop_grace
        self.started = time.monotonic()
        self.stop_requested = False
        self.subscriptions: collections.Counter[bytes] = collections.Counter()
        self.pollout_useless = False
        self.stop_at: float | None = None  # stopping: when SIGTERM gives way to SIGKILL
        self.kill_at: float | None = None  # and when we stop waiting for the killed

    # -- zmq glue for the runner

    def _send(self, peer: bytes, payload: bytes | tuple[bytes, bytes]) -> str:
        try:
            # with ROUTER_MANDATORY only the identity frame can fail; the payload then goes
            self.router.send(peer, _MORE_NOBLOCK)
            if isinstance(payload, tuple):  # [header, raw bytes]
                self.router.send(payload[0], _MORE_NOBLOCK)
                self.router.send(payload[1], _NOBLOCK)
            else:
                self.router.send(payload, _NOBLOCK)
            return OK
        except zmq.Again:
            return AGAIN
        except zmq.ZMQError as e:
            if e.errno == zmq.EHOSTUNREACH:
                return GONE
            raise

    def _publish(self, topic: bytes, payload: bytes) -> None:
        try:
            self.pub.send(topic, _MORE_NOBLOCK)
            self.pub.send(payload, _NOBLOCK)
        except zmq.Again:
            pass  # a slow subscriber misses events; it never slows the agent

    def _record(self, event: dict, publish: bool = True) -> None:
        self.log.write({"v": p.VERSION, **event})
        if publish:
            self._publish(b"event", p.encode(event))

    # -- life cycle

    def serve(self) -> int:
        os.makedirs(self.dir, exist_ok=True)
        config, problems = load_config(self.dir)
        if os.getpid() == 1:
            os.environ.setdefault("PATH", DEFAULT_PATH)
            if config["hostname"]:
                try:
                    socket.sethostname(config["hostname"])
                except OSError as e:
                    problems.append(f"cannot set hostname: {e}")
        for name in FILES:
            _remove(os.path.join(self.dir, name))
        self.log = JsonLog(self.dir, config["log_max_bytes"])
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.setsockopt(zmq.SNDHWM, SNDHWM)
        # XPUB (a PUB that sees subscriptions): output lines are published only when wanted
        self.pub = self.ctx.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.SNDHWM, SNDHWM)
        problems += _curve_servers((self.router, self.pub), config["curve_secret_key"])
        self.router.bind(f"ipc://{self.dir}/cmd.sock")
        self.pub.bind(f"ipc://{self.dir}/events.sock")
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGPWR, signal.SIGINT):
            signal.signal(sig, self._on_stop_signal)
        # handlers (not SIG_IGN, which children would inherit) so signals wake the poll
        signal.signal(signal.SIGCHLD, _nothing)
        signal.signal(signal.SIGHUP, _nothing)
        self.runner = Runner(self._send, self.log, self._publish, config["environment"], reap_any=True)
        self._record(p.event("agent_started", pid=os.getpid(), dir=self.dir))
        for problem in problems:
            self._record(p.event("agent_error", message=problem), publish=False)
        for i, shell in enumerate(config["startup_commands"]):
            self.runner.start_startup(i, shell)
        if config["default_command"]:
            self.runner.start_default(config["default_command"])
        _write_ready(self.dir)
        try:
            self._loop(wake_r)
        finally:
            self._teardown()
        return 0

    def _on_stop_signal(self, signum, frame) -> None:
        self.stop_requested = True

    def _loop(self, wake_r: int) -> None:
        while True:
            reads, writes, blocked = self.runner.wants()
            self.log.flush()
            events = self._poll(wake_r, reads, writes, blocked)
            self._serve(events, wake_r, reads, writes, blocked)
            if self._stopped():
                return

    def _poll(self, wake_r: int, reads: list[int], writes: list[int], blocked: bool) -> dict:
        """Wait for a socket, a pipe, a signal or the next deadline: {what is ready: its events}."""
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN | (zmq.POLLOUT if blocked and not self.pollout_useless else 0))
        poller.register(self.pub, zmq.POLLIN)
        poller.register(wake_r, zmq.POLLIN)
        for fd in reads:
            poller.register(fd, zmq.POLLIN)
        for fd in writes:
            poller.register(fd, zmq.POLLOUT)
        timeout = self._timeout(blocked)
        return dict(poller.poll(None if timeout is None else int(timeout * 1000)))

    def _timeout(self, blocked: bool) -> float | None:
        """Seconds until something is due (a command's deadline, a stop step), None: nothing is."""
        now = time.monotonic()
        due = [max(0.0, t - now) for t in (self.stop_at, self.kill_at) if t is not None]
        if (t := self.runner.next_timeout()) is not None:
            due.append(t)
        if blocked and self.pollout_useless:
            due.append(0.01)  # the peer's queue cannot tell us when it drains: look again soon
        return min(due) if due else None

    def _serve(self, events: dict, wake_r: int, reads: list[int], writes: list[int], blocked: bool) -> None:
        runner = self.runner
        if wake_r in events:
            _drain(wake_r)
        runner.reap()
        if events.get(self.router, 0) & zmq.POLLIN:
            self._requests()
        if self.pub in events:
            self._subscriptions()
        for fd in reads:
            if fd in events:
                runner.on_readable(fd)
        for fd in writes:
            if fd in events:
                runner.on_writable(fd)
        if blocked:
            progress = runner.flush_blocked()
            self.pollout_useless = bool(events.get(self.router, 0) & zmq.POLLOUT) and not progress
        runner.tick()

    def _stopped(self) -> bool:
        """Stopping: SIGTERM everything, SIGKILL after the grace, then record; True: leave."""
        runner, now = self.runner, time.monotonic()
        if self.stop_requested and self.stop_at is None:
            self.stop_at = now + self.stop_grace
            runner.stopping = True
            self._record(p.event("agent_stopping", pid=os.getpid()))
            runner.signal_all(signal.SIGTERM)
        if self.stop_at is None:
            return False
        if self.kill_at is None and now >= self.stop_at:
            self.kill_at = now + KILL_WAIT
            runner.signal_all(signal.SIGKILL)
        if runner.live() and (self.kill_at is None or now < self.kill_at):
            return False
        runner.finish_all()
        self._record(p.event("agent_stopped", pid=os.getpid()))
        return True

    def _requests(self) -> None:
        for _ in range(MAX_REQUESTS_PER_TURN):
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) not in (2, 3):
                self._foreign(f"expected 1 or 2 payload frames, got {len(frames) - 1}", frames[-1])
                continue
            peer, payload, frame = frames[0], frames[1], (frames[2] if len(frames) == 3 else None)
            try:
                msg = p.decode(payload)
            except p.ProtocolError as e:
                self._foreign(str(e), payload)  # not ours: dropped without a reply
                continue
            try:
                p.validate_request(msg, frame)
            except p.ProtocolError as e:
                self._invalid(peer, msg, payload, e)
                continue
            self._request(peer, msg, frame)

    def _invalid(self, peer: bytes, msg: dict, payload: bytes, e: p.ProtocolError) -> None:
        self._foreign(str(e), payload)
        cid = msg.get("id") if isinstance(msg.get("id"), str) else None
        reason = "unknown" if msg["type"] not in p.REQUEST_TYPES else "invalid"
        self.runner.reply(peer, p.error_message(str(e), cid, reason))

    def _request(self, peer: bytes, msg: dict, frame: bytes | None = None) -> None:
        """A valid request: ping is answered here, the rest by the runner."""
        if msg["type"] == "ping":
            return self.runner.reply(peer, p.pong_message(os.getpid(), round(time.monotonic() - self.started, 3)))
        try:
            self.runner.handle(peer, msg, frame)
        except Exception as e:  # noqa: BLE001 -- one bad request must not end init
            self._record(p.event("agent_error", message=f"{msg['type']} failed: {e!r}"), publish=False)
            self.runner.reply(peer, p.error_message(f"{msg['type']} failed: {e}", msg.get("id"), "failed"))

    def _foreign(self, message: str, payload: bytes) -> None:
        self._record(p.event("agent_error", message=message, sample=repr(payload[:80])), publish=False)

    def _subscriptions(self) -> None:
        while True:
            try:
                msg = self.pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if msg:
                self.subscriptions[msg[1:]] += 1 if msg[0] == 1 else -1
        self.runner.publish_output = any(n > 0 and b"output".startswith(t)
                                         for t, n in self.subscriptions.items())

    def _teardown(self) -> None:
        _remove(os.path.join(self.dir, "ready"))
        self.log.close()
        self.router.close(linger=200)  # let the last exit messages out, briefly
        self.pub.close(linger=0)
        self.ctx.term()
        for name in FILES:
            _remove(os.path.join(self.dir, name))


def serve(run_dir: str) -> int:
    return Agent(run_dir).serve()


def _curve_servers(socks, secret_key: str | None) -> list[str]:
    """Make the sockets CURVE servers with the key the host made for this container, so the
    host can tell this agent from any other: the host talks only to an agent holding it.
    Without a key the sockets stay plain, and the host will not talk to this agent."""
    if secret_key is None:
        return ["agent.json has no curve_secret_key: the host will refuse to talk to this agent"]
    if not zmq.has("curve"):
        return [f"this libzmq ({zmq.zmq_version()}) has no CURVE: the host will refuse to talk to this agent"]
    for sock in socks:
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, secret_key.encode("ascii"))
    return []


def _write_ready(run_dir: str) -> None:
    tmp = os.path.join(run_dir, ".ready.tmp")
    with open(tmp, "w") as f:
        json.dump({"pid": os.getpid(), "started": time.time()}, f)
        f.write("\n")
    os.replace(tmp, os.path.join(run_dir, "ready"))


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _nothing(signum, frame) -> None:
    pass
