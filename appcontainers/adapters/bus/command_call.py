"""One AgentClient.run() in flight: streams its stdin, collects its output, watches the agent."""
from __future__ import annotations

import collections
import functools
import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import attrs

from ...agent import protocol as p
from ...agent.lines import LineSplitter
from ...domain.exceptions import AgentUnavailable, CommandTimeout, InvalidValue

if TYPE_CHECKING:
    from .zmq_bus import AgentClient

STDIN_WINDOW = 4 << 20  # streamed stdin bytes sent but not yet written by the agent (16 messages)
READ_SIZE = p.MAX_CHUNK  # one stdin message


def _zmq():
    import zmq

    return zmq


@attrs.define
class Stdin:
    """Where a streamed stdin comes from: an iterator of chunks (read when there is credit),
    or a file descriptor (read when there is credit and it is readable, so a terminal or a
    slow pipe never keeps us from the command's output)."""

    feed: Iterator[bytes] | None = None
    fd: int | None = None

    @property
    def open(self) -> bool:
        return self.feed is not None or self.fd is not None


@attrs.define
class Handlers:
    """What the caller hears and says while the command runs.

    on_output(stream, line): each line, newline removed, undecodable bytes replaced;
    on_data(stream, bytes): output exactly as it comes; controls(): what to send now, each
    an int (a signal for the command's process group) or (rows, cols) (its terminal's size)."""

    on_output: Callable[[str, str], None] | None = None
    on_data: Callable[[str, bytes], None] | None = None
    controls: Callable[[], list] | None = None


class CommandCall:
    """One run() in flight: streams its stdin, collects its output, watches the agent."""

    def __init__(self, client: AgentClient, sock, cid: str, what: str, stdin: Stdin,
                 timeout: float | None, capture: bool, handlers: Handlers):
        self.client, self.sock, self.cid, self.what, self.stdin = client, sock, cid, what, stdin
        self.timeout, self.capture, self.handlers = timeout, capture, handlers
        self.bufs: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        self.splitters = {s: LineSplitter() for s in self.bufs}
        self.heard = self.poked = time.monotonic()
        self.pinged: float | None = None
        self.sent = self.acked = 0  # streamed stdin bytes, and how many the agent has written
        self.fd_polled: int | None = None  # the stdin descriptor while it is polled
        self.poller: Any = None
        self.controlled = False  # a signal or resize was sent: "no such command" may answer it
        # stdin goes out once the command started: as [header, raw bytes] if the agent says it takes them
        self.started = self.frames = False

    def wait(self) -> tuple[int, bytes, bytes, dict]:
        zmq = _zmq()
        poller = self.poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while True:
            self._send_controls()
            ready = self._next(zmq, poller)
            if ready is None:
                continue
            if self.stdin.fd is not None and self.stdin.fd in ready:
                self._read_fd()
            if self.sock not in ready:
                self._quiet()
                continue
            self.heard, self.pinged = time.monotonic(), None
            result = self._receive(zmq)
            if result is not None:
                return result

    def _next(self, zmq, poller) -> dict | None:
        """Feed the iterator stdin if it may, else wait: what is ready (None: look again)."""
        credit = self.started and self.sent - self.acked < STDIN_WINDOW
        if self.stdin.feed is not None and credit and self.sock.poll(0, zmq.POLLOUT):
            self._feed_one(self.stdin.feed)
            return {self.sock: zmq.POLLIN} if self.sock.poll(0) else None
        self._watch_fd(poller, zmq, credit)
        wait = 250 if not self.stdin.open and self.handlers.controls is None else 50
        return dict(poller.poll(wait))

    def _watch_fd(self, poller, zmq, credit: bool) -> None:
        """Poll the stdin descriptor only while the agent gives credit."""
        want = self.stdin.fd if credit else None
        if want != self.fd_polled:
            if self.fd_polled is not None:
                poller.unregister(self.fd_polled)
            if want is not None:
                poller.register(want, zmq.POLLIN)
            self.fd_polled = want

    def _read_fd(self) -> None:
        try:
            chunk = os.read(self.stdin.fd, READ_SIZE)  # type: ignore[arg-type]  # checked by the caller
        except OSError:
            chunk = b""  # a terminal that went away: its end of file
        if chunk:
            self._send_stdin(chunk)
        else:
            self._stdin_done()
            self._send(p.stdin_message(self.cid, eof=True), block=True)
        self.poked = time.monotonic()

    def _stdin_done(self) -> None:
        if self.fd_polled is not None and self.poller is not None:
            self.poller.unregister(self.fd_polled)
        self.fd_polled = None
        self.stdin = Stdin()

    def _feed_one(self, feed: Iterator[bytes]) -> None:
        """Send the next piece of stdin (or its end)."""
        try:
            chunk = next(feed, None)
        except BaseException:
            self.sock.send(p.encode(p.stdin_message(self.cid, eof=True)))
            raise  # the source failed: the command still gets its end of file
        if chunk is None:
            self.stdin = Stdin()
            self.sock.send(p.encode(p.stdin_message(self.cid, eof=True)))
        else:
            self._send_stdin(chunk)
        self.poked = time.monotonic()

    def _send_stdin(self, chunk: bytes) -> None:
        self.sent += len(chunk)
        if self.frames:
            self.sock.send_multipart(p.stdin_frames(self.cid, chunk))
        else:  # an agent from before frames: base64 in JSON
            self.sock.send(p.stdin_payload(self.cid, chunk))

    def _send_controls(self) -> None:
        if self.handlers.controls is None:
            return
        for control in self.handlers.controls():
            self.controlled = True
            if isinstance(control, tuple):
                self._send(p.resize_request(self.cid, *control))
            else:
                self._send(p.kill_request(self.cid, control))

    def _quiet(self) -> None:
        """Nothing came: ask again for stdin credit, then make sure the agent is still there."""
        now = time.monotonic()
        if self.stdin.open and now - self.poked > 0.5:
            # Waiting for credit: ask again (an acknowledgement may have been lost).
            self._send(p.stdin_message(self.cid, b""))
            self.poked = now
        if now - self.heard < self.client.silence:
            return
        if (reason := self.client._gone()) is not None:
            raise AgentUnavailable(f"{self.what!r} did not finish: {reason}")
        if self.pinged is None:
            self._send(p.ping_request())
            self.pinged = now
        elif now - self.pinged > self.client.ping_wait:
            raise AgentUnavailable(f"{self.what!r} did not finish: the agent in {self.client.run_dir} "
                                   f"stopped answering")

    def _send(self, msg: dict, block: bool = False) -> None:
        """Send without blocking: with the agent gone, a full queue must not hang us."""
        zmq = _zmq()
        try:
            self.sock.send(p.encode(msg), 0 if block else zmq.NOBLOCK)
        except zmq.Again:
            pass

    def _receive(self, zmq) -> tuple[int, bytes, bytes, dict] | None:
        """Handle every message waiting; the result once the exit came."""
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return None
            try:
                msg, frame = p.message(frames)
            except p.ProtocolError:
                continue
            if msg.get("id") == self.cid and (result := self._handle(msg, frame)) is not None:
                return result

    def _handle(self, msg: dict, frame: bytes | None = None) -> tuple[int, bytes, bytes, dict] | None:
        kind = msg["type"]
        if kind == "output":
            self._output(msg, frame)
        elif kind == "started":
            self.started, self.frames = True, msg.get("frames") is True
        elif kind == "stdin_ack":
            self.acked = max(self.acked, int(msg.get("bytes", 0)))
            if msg.get("closed"):
                self._stdin_done()  # the command closed its stdin: stop sending
        elif kind == "exit":
            return self._result(msg)
        elif kind == "error" and not (self.controlled and msg.get("reason") == "unknown"):
            # (a signal that arrived as the command ended is answered "unknown": nothing lost)
            if msg.get("reason") in ("stopping", "failed"):
                raise AgentUnavailable(f"cannot run {self.what!r}: {msg.get('message')}")
            raise InvalidValue(f"the agent refused {self.what!r}: {msg.get('message')}")
        return None

    def _output(self, msg: dict, frame: bytes | None) -> None:
        stream = msg.get("stream")
        if stream not in self.bufs:
            return
        raw = p.message_data(msg, frame)
        if self.capture:
            self.bufs[stream].append(raw)
        if self.handlers.on_data is not None:
            self.handlers.on_data(stream, raw)
        if self.handlers.on_output is not None:
            self._lines(stream, self.splitters[stream].feed_text(raw))

    def _lines(self, stream: str, lines: list[str]) -> None:
        # a million lines are a million calls: no Python loop around them
        collections.deque(map(functools.partial(self.handlers.on_output, stream), lines), maxlen=0)  # type: ignore[arg-type, misc]

    def _result(self, msg: dict) -> tuple[int, bytes, bytes, dict]:
        if self.handlers.on_output is not None:
            for stream, splitter in self.splitters.items():
                self._lines(stream, [line.decode("utf-8", "replace") for line in splitter.flush()])
        out, err = b"".join(self.bufs["stdout"]), b"".join(self.bufs["stderr"])
        if msg.get("timed_out") and self.timeout is not None:
            raise CommandTimeout(self.what, self.timeout, (out + err).decode("utf-8", "replace"))
        code = msg.get("code")
        if code is None:
            code = -(msg.get("signal") or 0)
        return code, out, err, msg
