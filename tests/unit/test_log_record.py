"""LogRecord: the agent's log records decoded for the CLI and API users."""
from __future__ import annotations

import base64

from appcontainers.agent import protocol
from appcontainers.services.logs import LogRecord, log_records


class TestLogRecord:
    def test_text_output(self):
        """An output record with text data keeps its command id, stream and text."""
        rec = LogRecord.from_agent(7, {"v": 1, "ts": 1.0, "type": "output", "id": "c1", "stream": "stderr",
                                       "seq": 3, "data": "héllo\n"})
        assert (rec.offset, rec.kind, rec.command_id, rec.stream, rec.text) == (7, "output", "c1", "stderr",
                                                                                "héllo\n")
        assert rec.is_output and not rec.is_lifecycle

    def test_bytes_output_decoded_with_replacement(self):
        """Output that was not UTF-8 (data_b64, as the agent writes it) becomes text with U+FFFD."""
        raw = {"v": 1, "type": "output", "id": "c1", "stream": "stdout", "seq": 0,
               **protocol.data_fields(b"ok \xff\xfe\n")}
        assert "data_b64" in raw
        assert LogRecord.from_agent(1, raw).text == "ok \ufffd\ufffd\n"

    def test_damaged_base64_is_empty_text(self):
        """A record with broken base64 still decodes, to empty text, rather than failing the listing."""
        assert LogRecord.from_agent(1, {"type": "output", "id": "c", "data_b64": "!!"}).text == ""

    def test_exit_detail_leaves_out_the_envelope(self):
        """A start or exit keeps its own fields as detail, without v, ts, type and id."""
        rec = LogRecord.from_agent(2, {"v": 1, "ts": 5.0, "type": "exit", "id": "c1", "code": 3,
                                       "signal": None, "timed_out": False})
        assert rec.is_lifecycle and rec.text == ""
        assert rec.detail == {"code": 3, "signal": None, "timed_out": False}

    def test_unknown_kind_kept(self):
        """A record kind this version does not know is neither output nor lifecycle, but kept whole."""
        raw = {"v": 1, "type": "future", "id": "x", "what": 1}
        rec = LogRecord.from_agent(9, raw)
        assert not rec.is_output and not rec.is_lifecycle
        assert rec.to_dict() == {"offset": 9, **raw}

    def test_records_from_pairs(self):
        """log_records turns the agent client's (offset, record) pairs into LogRecords, in order."""
        pairs = [(1, {"type": "started", "id": "a"}),
                 (2, {"type": "output", "id": "a", "stream": "stdout",
                      "data_b64": base64.b64encode(b"x").decode()})]
        assert [(r.offset, r.kind, r.text) for r in log_records(pairs)] == [(1, "started", ""),
                                                                          (2, "output", "x")]

    def test_chunked_output_is_viewed_as_lines(self):
        """Output records holding several lines, or pieces of one, come out one line a record."""
        out = lambda data, cid="a", stream="stdout": {"type": "output", "id": cid, "stream": stream, "data": data}
        pairs = [(1, out("one\ntw")), (2, out("o\nthr")), (3, out("err", stream="stderr")),
                 (4, out("x\n", cid="b")), (5, {"type": "exit", "id": "a", "code": 0}),
                 (6, out("\xe9\n", cid="b"))]
        got = [(r.offset, r.command_id, r.kind, r.text) for r in log_records(pairs)]
        assert got == [(1, "a", "output", "one\n"), (2, "a", "output", "two\n"), (4, "b", "output", "x\n"),
                       (2, "a", "output", "thr"), (3, "a", "output", "err"), (5, "a", "exit", ""),
                       (6, "b", "output", "\xe9\n")]

