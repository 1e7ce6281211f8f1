"""The agent's message schema and its JSON-lines log: round trips and rejections."""
from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appcontainers.agent import protocol as p
from appcontainers.agent.logfile import JsonLog, read_log

ids = st.text(min_size=1, max_size=20)
streams = st.sampled_from(p.STREAMS)
args = st.text(st.characters(exclude_characters="\0"), max_size=20)  # what exec can pass


class TestEncoding:
    @given(st.binary(max_size=300))
    def test_data_fields_are_lossless(self, raw):
        """Any bytes, valid UTF-8 or not, come back exactly from data/data_b64."""
        assert p.data_bytes(p.decode(p.encode({"type": "output", **p.data_fields(raw)}))) == raw

    def test_invalid_utf8_uses_data_b64(self):
        """Bytes that are not UTF-8 travel as base64, valid text as text."""
        assert set(p.data_fields(b"a\xff\n")) == {"data_b64"}
        assert p.data_fields("é\n".encode()) == {"data": "é\n"}

    @given(ids, streams, st.integers(0, 10**9), st.binary(max_size=300))
    def test_fast_output_payload_matches_the_message(self, cmd_id, stream, seq, raw):
        """The agent's hand-built output payload decodes to exactly output_message()."""
        payload = p.output_payload(p.output_prefix(cmd_id, stream), seq, raw)
        msg = p.decode(payload)
        assert msg == p.output_message(cmd_id, stream, seq, raw)
        assert p.data_bytes(msg) == raw

    @given(ids, st.lists(args.filter(bool), min_size=1, max_size=4),
           st.dictionaries(args.filter(lambda k: k and "=" not in k), args, max_size=3), st.binary(max_size=50),
           st.one_of(st.none(), st.floats(0.001, 1e6)))
    def test_run_request_round_trip(self, cmd_id, argv, env, stdin, timeout):
        """A run request survives encode/decode and validation unchanged."""
        req = p.run_request(cmd_id, argv=argv, env=env, stdin=stdin, timeout=timeout)
        back = p.validate_request(p.decode(p.encode(req)))
        assert back == req
        assert p.unb64(back["stdin"]) == stdin

    @pytest.mark.parametrize("msg", [
        p.exit_message("x", 3, None, False),
        p.exit_message("x", None, 9, True),
        p.error_message("bad", "x", "invalid"),
        {"v": 1, "type": "pong", "pid": 1, "uptime": 0.5},
        p.pong_message(1, 0.5),
        p.started_message("x", 42),
        p.stdin_ack_message("x", 100, False),
        p.event("command_exited", id="x", code=0, signal=None, timed_out=False),
    ])
    def test_replies_round_trip(self, msg):
        """Agent replies decode to what was encoded."""
        assert p.decode(p.encode(msg)) == msg

    @pytest.mark.parametrize("msg", [
        p.ping_request(),
        p.kill_request("x"),
        p.kill_request("x", 9),
        p.stdin_message("x", b"\x00\xffdata"),
        p.stdin_message("x", b""),
        p.stdin_message("x", eof=True),
        p.run_request("x", shell="true"),
    ])
    def test_built_requests_are_valid(self, msg):
        """Every request builder makes a message the agent accepts, unchanged by the wire."""
        assert p.validate_request(p.decode(p.encode(msg))) == msg

    def test_stdin_message_fields(self):
        """Data travels as base64; b"" only asks for an acknowledgement; eof only when set."""
        assert p.stdin_message("x", b"hi") == {"v": 1, "type": "stdin", "id": "x", "data": "aGk="}
        assert p.stdin_message("x", b"")["data"] == ""
        assert p.stdin_message("x", eof=True) == {"v": 1, "type": "stdin", "id": "x", "eof": True}

    def test_unchecked_run_request_is_left_to_the_runner(self):
        """check=False builds a request validation would refuse (a startup command with a NUL)."""
        with pytest.raises(p.ProtocolError):
            p.run_request("startup-0", shell="a\0b")
        assert p.run_request("startup-0", shell="a\0b", check=False)["shell"] == "a\0b"

    def test_encode_sets_the_version(self):
        """encode() adds "v": 1 when a builder left it out."""
        assert json.loads(p.encode({"type": "ping"})) == {"v": 1, "type": "ping"}


class TestRejection:
    @pytest.mark.parametrize("payload", [
        b"garbage", b"\xff\xfe", b"[1, 2]", b'"text"', b'{"type": "ping"}',
        b'{"v": 2, "type": "ping"}', b'{"v": "1", "type": "ping"}', b'{"v": 1}', b'{"v": 1, "type": 3}',
    ])
    def test_decode_rejects_foreign_payloads(self, payload):
        """Not JSON, not an object, another version or no type: ProtocolError."""
        with pytest.raises(p.ProtocolError):
            p.decode(payload)

    @pytest.mark.parametrize("msg", [
        {"type": "run", "argv": ["true"]},
        {"type": "run", "id": "", "argv": ["true"]},
        {"type": "run", "id": "a"},
        {"type": "run", "id": "a", "argv": ["true"], "shell": "true"},
        {"type": "run", "id": "a", "argv": []},
        {"type": "run", "id": "a", "argv": [""]},
        {"type": "run", "id": "a", "argv": "true"},
        {"type": "run", "id": "a", "argv": ["echo", 1]},
        {"type": "run", "id": "a", "shell": ["true"]},
        {"type": "run", "id": "a", "shell": "true", "env": {"A": 1}},
        {"type": "run", "id": "a", "shell": "true", "env": {"A=B": "1"}},
        {"type": "run", "id": "a", "shell": "true", "env": {"": "1"}},
        {"type": "run", "id": "a", "argv": ["echo", "a\0b"]},
        {"type": "run", "id": "a", "shell": "true\0"},
        {"type": "run", "id": "a", "shell": "true", "cwd": 5},
        {"type": "run", "id": "a", "shell": "true", "stdin": "not base64!"},
        {"type": "run", "id": "a", "shell": "true", "stdin": "", "stdin_stream": True},
        {"type": "run", "id": "a", "shell": "true", "stdin_stream": "yes"},
        {"type": "run", "id": "a", "shell": "true", "timeout": 0},
        {"type": "run", "id": "a", "shell": "true", "timeout": -1},
        {"type": "run", "id": "a", "shell": "true", "timeout": "1"},
        {"type": "run", "id": "a", "shell": "true", "timeout": True},
        {"type": "kill", "id": "a", "signal": 0},
        {"type": "kill", "id": "a", "signal": "TERM"},
        {"type": "kill", "signal": 9},
        {"type": "attach"},
        {"type": "stdin", "id": "a", "data": "%%%"},
        {"type": "stdin", "id": "a", "eof": 1},
        {"type": "frobnicate", "id": "a"},
    ])
    def test_validator_rejects_malformed_requests(self, msg):
        """Missing or mistyped fields and unknown types are refused with a reason."""
        with pytest.raises(p.ProtocolError) as err:
            p.validate_request({"v": 1, **msg})
        assert str(err.value)

    @pytest.mark.parametrize("msg, reason", [
        ({"type": "run", "id": "a", "argv": [], "shell": "true"}, "run: exactly one of argv and shell is needed"),
        ({"type": "run", "id": "a", "argv": [], "env": 1}, "run: argv must be a non-empty list"),
        ({"type": "run", "id": "a", "shell": "x", "env": 1, "cwd": 1}, "run: env must map names"),
        ({"type": "run", "id": "a", "shell": "x", "stdin": 5}, "run: stdin must be a base64 string"),
        ({"type": "run", "id": "a", "shell": "x", "stdin": "!!"}, "invalid base64"),
        ({"type": "run", "id": "a", "shell": "x", "stdin": "", "stdin_stream": True, "timeout": 0},
         "run: stdin and stdin_stream exclude each other"),
        ({"type": "run", "id": "a", "shell": "x", "timeout": float("nan")}, "run: timeout must be a positive"),
        ({"type": "stdin", "id": "a", "data": 1, "eof": 1}, "stdin: data must be a base64 string"),
        ({"type": "stdin", "id": "a", "eof": 1}, "stdin: eof must be a boolean"),
    ])
    def test_the_first_problem_is_the_reason(self, msg, reason):
        """Fields are checked in a fixed order; the reason names the first bad one."""
        with pytest.raises(p.ProtocolError, match="^" + re.escape(reason)):
            p.validate_request({"v": 1, **msg})

    @pytest.mark.parametrize("msg", [
        {"type": "ping"},
        {"type": "run", "id": "a", "shell": "true", "stdin_stream": True, "timeout": 2},
        {"type": "kill", "id": "a", "signal": 9},
        {"type": "kill", "id": "a"},
        {"type": "attach", "id": "a"},
        {"type": "stdin", "id": "a", "data": "aGk=", "eof": True},
    ])
    def test_validator_accepts_well_formed_requests(self, msg):
        """Each request type in its documented shape passes."""
        assert p.validate_request({"v": 1, **msg})["type"] == msg["type"]


class TestLog:
    def write(self, log, n, start=0):
        for i in range(start, start + n):
            log.write({"type": "output", "seq": i, "data": "x" * 100})
        log.flush()

    def test_records_carry_a_timestamp_and_resume_by_offset(self, tmp_path):
        """Each record has "ts"; the offset after a record resumes right after it."""
        log = JsonLog(str(tmp_path), clock=lambda: 7.5)
        self.write(log, 5)
        records = list(read_log(str(tmp_path)))
        assert [r["seq"] for _, r in records] == [0, 1, 2, 3, 4]
        assert all(r["ts"] == 7.5 for _, r in records)
        assert [r["seq"] for _, r in read_log(str(tmp_path), since=records[1][0])] == [2, 3, 4]
        assert list(read_log(str(tmp_path), since=records[-1][0])) == []

    def test_rotation_keeps_one_old_file_and_offsets_stay_valid(self, tmp_path):
        """Past max_bytes the log rotates, keeping one old file; offsets stay valid."""
        log = JsonLog(str(tmp_path), max_bytes=4096)
        self.write(log, 10)
        dropped = list(read_log(str(tmp_path)))[4][0]  # just past seq 4
        self.write(log, 90, start=10)
        assert (tmp_path / "log.jsonl").stat().st_size <= 4096
        assert (tmp_path / "log.jsonl.1").stat().st_size <= 4096
        kept = list(read_log(str(tmp_path)))
        seqs = [r["seq"] for _, r in kept]
        assert seqs == list(range(seqs[0], 100)) and seqs[0] > 5  # bounded, nothing skipped
        in_old_file = kept[2][0]
        assert [r["seq"] for _, r in read_log(str(tmp_path), since=in_old_file)] == seqs[3:]
        # from an offset whose file was dropped: the oldest record kept onwards
        assert [r["seq"] for _, r in read_log(str(tmp_path), since=dropped)] == seqs

    def test_a_restarted_writer_continues_the_offsets(self, tmp_path):
        """A new JsonLog on an existing log appends; old offsets keep meaning the same."""
        log = JsonLog(str(tmp_path))
        self.write(log, 2)
        log.close()
        end = list(read_log(str(tmp_path)))[-1][0]
        log = JsonLog(str(tmp_path))
        self.write(log, 2, start=2)
        assert [r["seq"] for _, r in read_log(str(tmp_path), since=end)] == [2, 3]

    def test_follow_yields_new_records_across_rotation(self, tmp_path):
        """follow=True waits for new records and follows the file through a rotation."""
        log = JsonLog(str(tmp_path), max_bytes=4096)
        self.write(log, 2)
        stop = []
        follow = read_log(str(tmp_path), follow=True, poll=0.01, should_stop=lambda: bool(stop))
        assert [next(follow)[1]["seq"] for _ in range(2)] == [0, 1]
        seq = 2
        while not (tmp_path / "log.jsonl.1").exists():
            self.write(log, 1, start=seq)
            seq += 1
        self.write(log, 3, start=seq)
        assert [next(follow)[1]["seq"] for _ in range(2, seq + 3)] == list(range(2, seq + 3))
        stop.append(True)
        assert list(follow) == []

    def test_a_torn_last_line_is_not_read_until_complete(self, tmp_path):
        """A record still being written is not returned half."""
        log = JsonLog(str(tmp_path))
        self.write(log, 1)
        with open(tmp_path / "log.jsonl", "ab") as f:
            f.write(b'{"type":"output","seq":1')
        assert [r["seq"] for _, r in read_log(str(tmp_path))] == [0]
