"""Output and stdin as binary frames ([JSON header, raw bytes]), and lines without per-line work:
the frame format, the agent's runner sending and taking frames, the host's line view."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import tempfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appcontainers.adapters.bus import zmq_bus
from appcontainers.agent import protocol as p
from appcontainers.agent.lines import LineSplitter
from appcontainers.agent.runner import OK, Runner
from tests.unit.test_agent_runner import A, FakeLog, drive, finished, run

ids = st.text(min_size=1, max_size=20)


class FrameSocket:
    """Keeps what the runner sends, one frame or a (header, data) pair, as it would go out."""

    def __init__(self):
        self.sent = []

    def send(self, peer, payload):
        frames = list(payload) if isinstance(payload, tuple) else [payload]
        assert all(isinstance(f, bytes) for f in frames)
        self.sent.append((peer, frames))
        return OK

    def messages(self, cmd_id):
        """(header dict, data frame or None) of one command, in order."""
        out = []
        for _, frames in self.sent:
            msg, frame = p.message(frames)
            if msg.get("id") == cmd_id:
                out.append((msg, frame))
        return out


@pytest.fixture
def framed():
    sock, log = FrameSocket(), FakeLog()
    runner = Runner(sock.send, log)
    yield runner, sock, log
    runner.stopping = True
    runner.signal_all(signal.SIGKILL)
    drive(runner, lambda: not runner.commands, timeout=5)


class TestFrameFormat:
    @given(ids, st.sampled_from(p.STREAMS), st.integers(0, 10**9), st.binary(max_size=300))
    def test_output_header_and_data(self, cmd_id, stream, seq, raw):
        """An output message in frames: the header is the JSON message minus its data, the data
        frame the exact bytes (never base64)."""
        header = p.output_header(p.output_prefix(cmd_id, stream), seq)
        msg, frame = p.message([header, raw])
        assert msg == {"v": 1, "type": "output", "id": cmd_id, "stream": stream, "seq": seq}
        assert frame is raw and p.message_data(msg, frame) == raw

    @given(st.binary(max_size=300))
    def test_a_single_json_frame_still_carries_its_data(self, raw):
        """An agent from before frames sends one JSON frame: its data (text or base64) is read."""
        payload = p.encode(p.output_message("c", "stdout", 0, raw))
        msg, frame = p.message([payload])
        assert frame is None and p.message_data(msg, frame) == raw

    @given(ids, st.binary(max_size=300))
    def test_stdin_frames_are_a_valid_request(self, cmd_id, raw):
        header, data = p.stdin_frames(cmd_id, raw)
        msg, frame = p.message([header, data])
        assert p.validate_request(msg, frame) == {"v": 1, "type": "stdin", "id": cmd_id}
        assert frame == raw

    @pytest.mark.parametrize("frames", [[], [b"{}", b"x", b"y"]])
    def test_other_frame_counts_are_refused(self, frames):
        with pytest.raises(p.ProtocolError, match="frames"):
            p.message(frames)

    @pytest.mark.parametrize("msg", [
        p.ping_request(),
        p.kill_request("c"),
        p.run_request("c", argv=["cat"]),
        p.stdin_message("c", b"also inline"),  # data twice
    ])
    def test_only_a_stdin_without_inline_data_takes_a_data_frame(self, msg):
        with pytest.raises(p.ProtocolError, match="unexpected data frame"):
            p.validate_request(msg, b"data")

    def test_the_agent_says_it_takes_frames(self):
        assert p.started_message("c", 5)["frames"] is True and "frames" in p.FEATURES
        assert p.run_request("c", argv=["x"], frames=True)["frames"] is True
        assert "frames" not in p.run_request("c", argv=["x"])
        with pytest.raises(p.ProtocolError, match="frames must be a boolean"):
            p.validate_request({**p.run_request("c", argv=["x"]), "frames": 1})


class TestRunnerFrames:
    def test_output_goes_out_in_frames_and_the_log_keeps_json(self, framed):
        """frames: each output message is [header, raw bytes], exact for binary (no newline
        added); the log records the same bytes as JSON (data_b64 for non-UTF-8)."""
        runner, sock, log = framed
        blob = bytes(range(256)) * 4096 + b"no newline \xff"
        path = f"/tmp/x3-frames-{os.getpid()}.bin"
        with open(path, "wb") as f:
            f.write(blob)
        try:
            run(runner, id="b", argv=["cat", path], chunks=True, frames=True)
            drive(runner, finished(runner, "b"))
        finally:
            os.unlink(path)
        msgs = sock.messages("b")
        outs = [(m, f) for m, f in msgs if m["type"] == "output"]
        assert msgs[0][0]["type"] == "started" and msgs[-1][0]["type"] == "exit"
        assert all(f is not None and "data" not in m and "data_b64" not in m for m, f in outs)
        assert b"".join(f for _, f in outs) == blob
        assert [m["seq"] for m, _ in outs] == list(range(len(outs)))
        assert max(len(f) for _, f in outs) <= p.MAX_CHUNK and len(outs) <= len(blob) // 65536 + 2
        logged = [r for r in log.of("b") if r["type"] == "output"]
        assert b"".join(p.data_bytes(r) for r in logged) == blob
        assert [r["seq"] for r in logged] == [m["seq"] for m, _ in outs]

    def test_without_frames_output_stays_json(self, framed):
        """A host from before frames does not ask for them: one JSON frame per message."""
        runner, sock, _ = framed
        run(runner, id="j", shell="printf 'a\\377'", chunks=True)
        drive(runner, finished(runner, "j"))
        outs = [(m, f) for m, f in sock.messages("j") if m["type"] == "output"]
        assert [f for _, f in outs] == [None] and p.data_bytes(outs[0][0]) == b"a\xff"

    def test_stdin_in_frames_reaches_the_command_exactly(self, framed):
        """Streamed stdin as data frames (big and binary), acknowledged as written."""
        runner, sock, _ = framed
        run(runner, id="s", argv=["sha256sum"], stdin_stream=True, chunks=True, frames=True)
        data = os.urandom(3 * p.MAX_CHUNK + 7)
        for i in range(0, len(data), p.MAX_CHUNK):
            header, frame = p.stdin_frames("s", data[i:i + p.MAX_CHUNK])
            msg, frame = p.message([header, frame])
            runner.handle(A, p.validate_request(msg, frame), frame)
            drive(runner, lambda: not runner.commands["s"].stdin_buf)
        runner.handle(A, p.stdin_message("s", eof=True))
        drive(runner, finished(runner, "s"))
        msgs = sock.messages("s")
        out = b"".join(f for m, f in msgs if m["type"] == "output")
        assert out.split()[0].decode() == hashlib.sha256(data).hexdigest()
        acks = [m["bytes"] for m, _ in msgs if m["type"] == "stdin_ack"]
        assert acks and acks[-1] == len(data)


lines_of = st.lists(st.one_of(st.binary(max_size=40), st.sampled_from([b"\n", b"\xe2\x82", b"\xac\n", b"\xff"])),
                    max_size=30)


class TestLineView:
    @given(lines_of, st.sampled_from([8, 64, p.MAX_LINE]))
    def test_feed_text_is_feed_decoded_line_by_line(self, chunks, limit):
        """The fast line view gives what decoding each line did: same pieces, same replacements."""
        fast, slow = LineSplitter(limit), LineSplitter(limit)
        got = [x for c in chunks for x in fast.feed_text(c)]
        want = [x.decode("utf-8", "replace").removesuffix("\n") for c in chunks for x in slow.feed(c)]
        assert got == want and fast.rest == slow.rest

    def test_a_long_line_still_comes_in_bounded_pieces(self):
        splitter = LineSplitter()
        text = splitter.feed_text(b"x" * (3 * p.MAX_LINE) + b"\nshort\n")
        assert [len(t) for t in text] == [p.MAX_LINE] * 3 + [0, 5]  # the newline ends the last piece

    def test_a_million_lines_in_chunks(self):
        data = "".join(f"{i}\n" for i in range(1, 100001)).encode()
        splitter = LineSplitter()
        got = [x for i in range(0, len(data), p.MAX_CHUNK) for x in splitter.feed_text(data[i:i + p.MAX_CHUNK])]
        assert got == [str(i) for i in range(1, 100001)] and splitter.flush() == []


class TestHostStdin:
    def test_big_bytes_are_streamed_in_chunks_not_inlined(self):
        """stdin=bytes over INLINE_STDIN goes as a stream of data frames, not base64 in the request."""
        data = os.urandom(zmq_bus.INLINE_STDIN + 1)
        source = zmq_bus._stdin_source(data)
        assert source.open and b"".join(source.feed) == data
        assert not zmq_bus._stdin_source(b"small").open and not zmq_bus._stdin_source(None).open


def test_log_records_stay_json_lines(tmp_path):
    """The log view is unchanged with frames: JSON lines, the output's text in "data"."""
    from appcontainers.agent.logfile import JsonLog, read_log

    log = JsonLog(str(tmp_path))
    runner = Runner(FrameSocket().send, log)
    run(runner, id="l", shell="echo hi; printf 'x\\377'", chunks=True, frames=True)
    drive(runner, finished(runner, "l"))
    log.flush()
    outs = [r for _, r in read_log(str(tmp_path)) if r.get("id") == "l" and r["type"] == "output"]
    assert b"".join(p.data_bytes(r) for r in outs) == b"hi\nx\xff"
    assert {"ts", "seq", "stream"} <= set(outs[0])


class OldAgent:
    """An agent from before frames, on a real CURVE socket: one JSON frame per message both
    ways (a request with more frames it would drop), base64 stdin, JSON output; it echoes a
    command's stdin back as its output."""

    def __init__(self, run_dir: str):
        import threading

        import zmq

        self.public, secret = zmq_bus.AgentClient.new_keys()
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.curve_server, self.sock.curve_secretkey = True, secret.encode()
        self.sock.bind(f"ipc://{run_dir}/cmd.sock")
        with open(os.path.join(run_dir, "ready"), "w") as f:
            f.write("{}\n")
        self.frame_counts: list[int] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def reply(self, peer, msg):
        self.sock.send_multipart([peer, p.encode(msg)])

    def serve(self):
        got = bytearray()
        while True:
            frames = self.sock.recv_multipart()
            self.frame_counts.append(len(frames))
            msg = json.loads(frames[1])
            if msg["type"] == "run":
                self.reply(frames[0], {"v": 1, "type": "started", "id": msg["id"], "pid": 1})
            elif msg["type"] == "stdin":
                got += p.unb64(msg.get("data", ""))
                self.reply(frames[0], p.stdin_ack_message(msg["id"], len(got), False))
                if msg.get("eof"):
                    self.reply(frames[0], p.output_message(msg["id"], "stdout", 0, bytes(got)))
                    self.reply(frames[0], p.exit_message(msg["id"], 0, None, False))
                    return


def test_an_agent_from_before_frames_still_gets_stdin_and_sends_output(tmp_path):
    """The host asks for frames but an older agent's `started` does not offer them: stdin goes
    as base64 JSON and its one-frame JSON output is read, byte-exact."""
    run_dir = tempfile.mkdtemp(prefix="x3old-", dir="/tmp")  # an ipc path must be short
    old = OldAgent(run_dir)
    try:
        data = os.urandom(300_000) + b"\n"
        code, out, _, _ = zmq_bus.AgentClient(run_dir, server_key=old.public).run(["cat"], stdin=iter([data]),
                                                                                  timeout=30)
        old.thread.join(5)
        assert (code, out) == (0, data) and set(old.frame_counts) == {2}
    finally:
        old.sock.close(linger=0)
        shutil.rmtree(run_dir, ignore_errors=True)
