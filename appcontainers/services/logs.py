"""One record of a container's agent log, decoded from the agent's format (agent/logfile.py)."""
from __future__ import annotations

import base64
import binascii
from typing import Any, Iterable, Iterator

import attrs

_HEADER_FIELDS = ("ts", "type", "id", "v")


@attrs.frozen
class LogRecord:
    """offset: where the record sits in the log (give it as `since` to read on from there).

    kind: "output" (a line of a command, in text), "started", "exit", or what a newer agent
    writes. stream: "stdout"/"stderr" for output. detail: the record's other fields (for a
    start or an exit: the command, its code, ...). raw: the record as the agent wrote it."""

    offset: int
    kind: str
    command_id: str | None
    stream: str | None = None
    text: str = ""
    detail: dict[str, Any] = attrs.field(factory=dict)
    raw: dict[str, Any] = attrs.field(factory=dict)

    @classmethod
    def from_agent(cls, offset: int, record: dict[str, Any]) -> "LogRecord":
        detail = {k: v for k, v in record.items() if k not in _HEADER_FIELDS}
        kind = record.get("type")
        return cls(offset=offset, kind=kind if isinstance(kind, str) else "", command_id=record.get("id"),
                   stream=record.get("stream"), text=_text(record) if kind == "output" else "",
                   detail=detail, raw=dict(record))

    @property
    def is_output(self) -> bool:
        return self.kind == "output"

    @property
    def is_lifecycle(self) -> bool:
        """A command started or exited."""
        return self.kind in ("started", "exit")

    def to_dict(self) -> dict[str, Any]:
        """The agent's record with its offset (what `logs --json` prints)."""
        return {"offset": self.offset, **self.raw}


def _text(record: dict[str, Any]) -> str:
    """An output record's data as text: "data" is UTF-8 text, "data_b64" any bytes."""
    data = record.get("data")
    if isinstance(data, str):
        return data
    try:
        raw = base64.b64decode(record.get("data_b64") or "")
    except (binascii.Error, ValueError, TypeError):
        return ""
    return raw.decode(errors="replace")


def log_records(pairs: Iterable[tuple[int, dict[str, Any]]]) -> Iterator[LogRecord]:
    """(offset, record) pairs, as the agent client yields them, as LogRecords.

    Output comes as lines: the agent logs a command's output in chunks as read (many lines, or
    a piece of one), so a record's lines become one LogRecord each, with that record's offset;
    a piece of a line waits for its rest (or the command's exit, or the end of the pairs)."""
    pending: dict[tuple[Any, Any], tuple[int, dict[str, Any], bytes]] = {}
    for offset, record in pairs:
        if record.get("type") != "output":
            if record.get("type") == "exit":
                yield from _rest(pending, record.get("id"))
            yield LogRecord.from_agent(offset, record)
            continue
        key = (record.get("id"), record.get("stream"))
        held = pending.pop(key, None)
        data = (held[2] if held else b"") + _bytes(record)
        *lines, rest = data.split(b"\n")
        for line in lines:
            yield _line(offset, record, line + b"\n")
        if rest:
            pending[key] = (offset, record, rest)
    yield from _rest(pending, None)


def _bytes(record: dict[str, Any]) -> bytes:
    data = record.get("data")
    if isinstance(data, str):
        return data.encode("utf-8", "surrogatepass")
    try:
        return base64.b64decode(record.get("data_b64") or "")
    except (binascii.Error, ValueError, TypeError):
        return b""


def _line(offset: int, record: dict[str, Any], line: bytes) -> LogRecord:
    """One line of an output record, as the record of that line alone."""
    fields = {k: v for k, v in record.items() if k not in ("data", "data_b64")}
    try:
        fields["data"] = line.decode("utf-8")
    except UnicodeDecodeError:
        fields["data_b64"] = base64.b64encode(line).decode("ascii")
    return LogRecord.from_agent(offset, fields)


def _rest(pending: dict[tuple[Any, Any], tuple[int, dict[str, Any], bytes]], cmd_id: Any) -> Iterator[LogRecord]:
    """The held pieces of lines (of one command, or of all with None), as they are."""
    for key in [k for k in pending if cmd_id is None or k[0] == cmd_id]:
        offset, record, rest = pending.pop(key)
        yield _line(offset, record, rest)
