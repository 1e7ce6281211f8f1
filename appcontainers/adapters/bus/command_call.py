"""One AgentClient.run() in flight: streams its stdin, collects its output, watches the agent."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from ...agent import protocol as p
from ...domain.exceptions import AgentUnavailable, CommandTimeout, InvalidValue

if TYPE_CHECKING:
    from .zmq_bus import AgentClient

STDIN_WINDOW = 1 << 20  # streamed stdin bytes sent but not yet written by the agent


def _zmq():
    import zmq

    return zmq


class CommandCall:
    """One run() in flight: streams its stdin, collects its output, watches the agent."""

    def __init__(self, client: AgentClient, sock, cid: str, what: str, feed: Iterator[bytes] | None,
                 timeout: float | None, capture: bool, on_output: Callable[[str, str], None] | None):
        self.client, self.sock, self.cid, self.what, self.feed = client, sock, cid, what, feed
        self.timeout, self.capture, self.on_output = timeout, capture, on_output
        self.bufs = {"stdout": bytearray(), "stderr": bytearray()}
        self.heard = self.poked = time.monotonic()
        self.pinged: float | None = None
        self.sent = self.acked = 0  # streamed stdin bytes, and how many the agent has written

    def wait(self) -> tuple[int, bytes, bytes, dict]:
        zmq = _zmq()
        while True:
            if self.feed is not None and self.sent - self.acked < STDIN_WINDOW and self.sock.poll(0, zmq.POLLOUT):
                self._feed_one(self.feed)
                if not self.sock.poll(0):
                    continue
            elif not self.sock.poll(250 if self.feed is None else 50):
                self._quiet()
                continue
            self.heard, self.pinged = time.monotonic(), None
            result = self._receive(zmq)
            if result is not None:
                return result

    def _feed_one(self, feed: Iterator[bytes]) -> None:
        """Send the next piece of stdin (or its end)."""
        try:
            chunk = next(feed, None)
        except BaseException:
            self.sock.send(p.encode(p.stdin_message(self.cid, eof=True)))
            raise  # the source failed: the command still gets its end of file
        if chunk is None:
            self.feed = None
            self.sock.send(p.encode(p.stdin_message(self.cid, eof=True)))
        else:
            self.sent += len(chunk)
            self.sock.send(p.encode(p.stdin_message(self.cid, chunk)))
        self.poked = time.monotonic()

    def _quiet(self) -> None:
        """Nothing came: ask again for stdin credit, then make sure the agent is still there."""
        now = time.monotonic()
        if self.feed is not None and now - self.poked > 0.5:
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

    def _send(self, msg: dict) -> None:
        """Send without blocking: with the agent gone, a full queue must not hang us."""
        zmq = _zmq()
        try:
            self.sock.send(p.encode(msg), zmq.NOBLOCK)
        except zmq.Again:
            pass

    def _receive(self, zmq) -> tuple[int, bytes, bytes, dict] | None:
        """Handle every message waiting; the result once the exit came."""
        while True:
            try:
                payload = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return None
            try:
                msg = p.decode(payload)
            except p.ProtocolError:
                continue
            if msg.get("id") == self.cid and (result := self._handle(msg)) is not None:
                return result

    def _handle(self, msg: dict) -> tuple[int, bytes, bytes, dict] | None:
        kind = msg["type"]
        if kind == "stdin_ack":
            self.acked = max(self.acked, int(msg.get("bytes", 0)))
            if msg.get("closed"):
                self.feed = None  # the command closed its stdin: stop sending
        elif kind == "output":
            self._output(msg)
        elif kind == "exit":
            return self._result(msg)
        elif kind == "error":
            if msg.get("reason") in ("stopping", "failed"):
                raise AgentUnavailable(f"cannot run {self.what!r}: {msg.get('message')}")
            raise InvalidValue(f"the agent refused {self.what!r}: {msg.get('message')}")
        return None

    def _output(self, msg: dict) -> None:
        stream = msg.get("stream")
        if stream not in self.bufs:
            return
        text = msg.get("data")
        raw = p.data_bytes(msg) if text is None or self.capture else b""
        if self.capture:
            self.bufs[stream] += raw
        if self.on_output is not None:
            if text is None:
                text = raw.decode("utf-8", "replace")
            self.on_output(stream, text.removesuffix("\n"))

    def _result(self, msg: dict) -> tuple[int, bytes, bytes, dict]:
        out, err = bytes(self.bufs["stdout"]), bytes(self.bufs["stderr"])
        if msg.get("timed_out") and self.timeout is not None:
            raise CommandTimeout(self.what, self.timeout, (out + err).decode("utf-8", "replace"))
        code = msg.get("code")
        if code is None:
            code = -(msg.get("signal") or 0)
        return code, out, err, msg

