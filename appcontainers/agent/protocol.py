"""The message schema shared by the agent and the host: JSON objects with "v" and "type".

A message is one ZeroMQ frame of JSON, or two: a JSON header and the raw bytes it carries
(output and streamed stdin, when both sides know it: `frames`), so data is never base64 on
the wire. The log keeps one JSON record per message (data, or data_b64 for non-UTF-8 bytes).

Stdlib only: this package is copied into images as `appcontainers_agent`.
"""
from __future__ import annotations

import base64
import binascii
import json
from json.encoder import encode_basestring as _json_str  # the C encoder, as ensure_ascii=False

VERSION = 1
MAX_LINE = 64 * 1024  # output lines longer than this are split into pieces of at most this size
MAX_CHUNK = 256 * 1024  # with chunks (or a tty) one output message carries at most this many bytes
STREAMS = ("stdout", "stderr")


class ProtocolError(ValueError):
    """A message that is not a valid protocol message; carries the reason."""


def encode(msg: dict) -> bytes:
    """One message as compact UTF-8 JSON, with "v" set."""
    if msg.get("v") != VERSION:
        msg = {"v": VERSION, **msg}
    return json.dumps(msg, separators=(",", ":")).encode()  # ASCII: any str, even a lone surrogate


def decode(payload: bytes) -> dict:
    """A JSON object of our version with a string "type"; ProtocolError otherwise."""
    try:
        msg = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtocolError(f"not JSON: {e}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("not a JSON object")
    if msg.get("v") != VERSION:
        raise ProtocolError(f"unsupported version {msg.get('v')!r}")
    if not isinstance(msg.get("type"), str):
        raise ProtocolError("missing type")
    return msg


# -- output data: text when it is valid UTF-8, base64 otherwise, so bytes survive exactly

def data_fields(raw: bytes) -> dict:
    """{"data": str} for valid UTF-8, else {"data_b64": str}."""
    try:
        return {"data": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"data_b64": base64.b64encode(raw).decode("ascii")}


def data_bytes(msg: dict) -> bytes:
    """The exact bytes an output (or stdin) message carries."""
    if "data_b64" in msg:
        return base64.b64decode(msg["data_b64"], validate=True)
    return msg.get("data", "").encode("utf-8")


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ProtocolError("invalid base64") from None


# -- binary frames: [JSON header, raw bytes]

def message(frames) -> tuple[dict, bytes | None]:
    """A message of one frame (JSON) or two (a JSON header, then its raw data): (header, data
    or None); ProtocolError for anything else."""
    if not 1 <= len(frames) <= 2:
        raise ProtocolError(f"expected 1 or 2 frames, got {len(frames)}")
    msg = decode(frames[0])
    return msg, (frames[1] if len(frames) == 2 else None)


def message_data(msg: dict, frame: bytes | None) -> bytes:
    """The exact bytes an output or stdin message carries, in its data frame or its JSON."""
    return data_bytes(msg) if frame is None else frame


def output_header(prefix: bytes, seq: int) -> bytes:
    """The header of an output message whose bytes follow in a frame of their own."""
    return prefix + b"%d}" % seq


def stdin_frames(cmd_id: str, data: bytes) -> tuple[bytes, bytes]:
    """A piece of a streamed stdin as [header, raw bytes], for an agent that takes frames."""
    return b'{"v":%d,"type":"stdin","id":%s}' % (VERSION, json.dumps(cmd_id).encode()), data


# -- builders (host -> agent)

def run_request(cmd_id: str, argv=None, shell=None, env=None, cwd=None, stdin: bytes | None = None,
                stdin_stream=False, timeout=None, check: bool = True, chunks: bool = False,
                tty: tuple[int, int] | None = None, user: str | None = None, frames: bool = False) -> dict:
    """A run request; ProtocolError when it is malformed (check=False: the agent's own
    startup commands, whose failures the runner reports as the command's).

    chunks: output comes as read (any size up to MAX_LINE), not split into lines; tty: run
    it on a pseudo-terminal of (rows, cols) (0, 0: unknown), its output on stdout as read;
    user: USER, UID, USER:GROUP or UID:GID of the container's /etc/passwd (default root);
    frames: output as [header, raw bytes] (an older agent ignores it and sends JSON)."""
    msg: dict = {"v": VERSION, "type": "run", "id": cmd_id}
    if chunks:
        msg["chunks"] = True
    if frames:
        msg["frames"] = True
    if tty is not None:
        msg["tty"] = {"rows": tty[0], "cols": tty[1]}
    if argv is not None:
        msg["argv"] = list(argv)
    if shell is not None:
        msg["shell"] = shell
    if env:
        msg["env"] = dict(env)
    if cwd is not None:
        msg["cwd"] = cwd
    if user is not None:
        msg["user"] = user
    if stdin is not None:
        msg["stdin"] = b64(stdin)
    if stdin_stream:
        msg["stdin_stream"] = True
    if timeout is not None:
        msg["timeout"] = timeout
    return validate_request(msg) if check else msg


def ping_request() -> dict:
    return {"v": VERSION, "type": "ping"}


def kill_request(cmd_id: str, signal: int = 15) -> dict:
    return {"v": VERSION, "type": "kill", "id": cmd_id, "signal": signal}


def resize_request(cmd_id: str, rows: int, cols: int) -> dict:
    """A new window size for a command running on a pseudo-terminal."""
    return {"v": VERSION, "type": "resize", "id": cmd_id, "rows": rows, "cols": cols}


def stdin_message(cmd_id: str, data: bytes | None = None, eof: bool = False) -> dict:
    """A piece of a streamed stdin; data=b"" asks only for an acknowledgement."""
    msg: dict = {"v": VERSION, "type": "stdin", "id": cmd_id}
    if data is not None:
        msg["data"] = b64(data)
    if eof:
        msg["eof"] = True
    return msg


def stdin_payload(cmd_id: str, data: bytes) -> bytes:
    """encode(stdin_message(cmd_id, data)) without json.dumps of a big string: the hot path
    of a streamed stdin (base64 needs no JSON escaping)."""
    return b'{"v":%d,"type":"stdin","id":%s,"data":"%s"}' % (
        VERSION, json.dumps(cmd_id).encode(), base64.b64encode(data))


# -- builders (agent -> host)

FEATURES = ("user", "frames")  # what this agent does that an older one ignores: the host asks before relying on it


def pong_message(pid: int, uptime: float) -> dict:
    return {"v": VERSION, "type": "pong", "pid": pid, "uptime": uptime, "features": list(FEATURES)}


def started_message(cmd_id: str, pid: int) -> dict:
    """frames: this agent takes streamed stdin as [header, raw bytes] (an older one does not say so)."""
    return {"v": VERSION, "type": "started", "id": cmd_id, "pid": pid, "frames": True}


def stdin_ack_message(cmd_id: str, written: int, closed: bool) -> dict:
    """How many streamed stdin bytes the command has been given in all; closed: it closed its stdin."""
    return {"v": VERSION, "type": "stdin_ack", "id": cmd_id, "bytes": written, "closed": closed}


def event(kind: str, **fields) -> dict:
    """An event (published, and recorded in the log): command_started, agent_error, ..."""
    return {"v": VERSION, "type": kind, **fields}


def output_message(cmd_id: str, stream: str, seq: int, raw: bytes) -> dict:
    return {"v": VERSION, "type": "output", "id": cmd_id, "stream": stream, "seq": seq,
            **data_fields(raw)}


def output_prefix(cmd_id: str, stream: str) -> bytes:
    """The fixed start of a command's output payloads, for output_payload()."""
    return b'{"v":%d,"type":"output","id":%s,"stream":"%s","seq":' % (
        VERSION, _json_str(cmd_id).encode(), stream.encode())


def output_payload(prefix: bytes, seq: int, raw: bytes) -> bytes:
    """encode(output_message(...)) without a dict per line: the agent's hot path."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return b"".join((prefix, b'%d,"data_b64":"' % seq, base64.b64encode(raw), b'"}'))
    return b"".join((prefix, b'%d,"data":' % seq, _json_str(text).encode(), b"}"))


def exit_message(cmd_id: str, code, signal, timed_out: bool) -> dict:
    return {"v": VERSION, "type": "exit", "id": cmd_id, "code": code, "signal": signal,
            "timed_out": timed_out}


def error_message(message: str, cmd_id: str | None = None, reason: str = "invalid") -> dict:
    """reason: "invalid" (malformed request), "unknown" (no such command id or type),
    "duplicate" (id already running), "stopping" (the agent is shutting down) or "failed"
    (the agent could not carry out a valid request)."""
    msg = {"v": VERSION, "type": "error", "message": message, "reason": reason}
    if cmd_id is not None:
        msg["id"] = cmd_id
    return msg


# -- validation of requests (what the agent accepts)

def _is_arg(v) -> bool:
    return isinstance(v, str) and "\0" not in v  # exec cannot pass a NUL


def _is_str_list(v) -> bool:
    return isinstance(v, list) and all(_is_arg(x) for x in v)


def _is_str_dict(v) -> bool:
    return isinstance(v, dict) and all(_is_arg(k) and k and "=" not in k and _is_arg(x) for k, x in v.items())


def _need_id(msg: dict) -> None:
    if not isinstance(msg.get("id"), str) or not msg["id"]:
        raise ProtocolError(f"{msg['type']}: missing id")


def _is_b64(v) -> bool:
    """A string (False otherwise) of valid base64 (ProtocolError otherwise)."""
    if not isinstance(v, str):
        return False
    unb64(v)
    return True


def _is_timeout(t) -> bool:
    return t is None or (not isinstance(t, bool) and isinstance(t, (int, float)) and t > 0)


def _check_fields(msg: dict, checks) -> None:
    """checks: (field, test, complaint); a field that is present must pass its test."""
    for field, test, complaint in checks:
        if field in msg and not test(msg[field]):
            raise ProtocolError(f"{msg['type']}: {complaint}")


_RUN_FIELDS = (
    ("argv", lambda v: v is None or (_is_str_list(v) and bool(v) and bool(v[0])),
     "argv must be a non-empty list of strings without NUL"),
    ("shell", lambda v: v is None or _is_arg(v), "shell must be a string without NUL"),
    ("env", _is_str_dict, "env must map names (no '=', no NUL) to strings"),
    ("cwd", _is_arg, "cwd must be a string without NUL"),
    ("user", lambda v: _is_arg(v) and bool(v), "user must be a non-empty string without NUL"),
    ("stdin", _is_b64, "stdin must be a base64 string"),
    ("stdin_stream", lambda v: isinstance(v, bool), "stdin_stream must be a boolean"),
    ("chunks", lambda v: isinstance(v, bool), "chunks must be a boolean"),
    ("frames", lambda v: isinstance(v, bool), "frames must be a boolean"),
    ("tty", lambda v: isinstance(v, dict) and _is_size(v.get("rows")) and _is_size(v.get("cols")),
     "tty must be {rows, cols} with integers from 0 to 65535"),
)


def _is_size(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 65536


def _check_run(msg: dict) -> None:
    _need_id(msg)
    if (msg.get("argv") is None) == (msg.get("shell") is None):
        raise ProtocolError("run: exactly one of argv and shell is needed")
    _check_fields(msg, _RUN_FIELDS)
    if msg.get("stdin") is not None and msg.get("stdin_stream"):
        raise ProtocolError("run: stdin and stdin_stream exclude each other")
    _check_fields(msg, (("timeout", _is_timeout, "timeout must be a positive number"),))


def _check_kill(msg: dict) -> None:
    _need_id(msg)
    sig = msg.get("signal", 15)
    if isinstance(sig, bool) or not isinstance(sig, int) or not 0 < sig < 65:
        raise ProtocolError("kill: signal must be an integer from 1 to 64")


def _check_resize(msg: dict) -> None:
    _need_id(msg)
    if not (_is_size(msg.get("rows")) and _is_size(msg.get("cols"))):
        raise ProtocolError("resize: rows and cols must be integers from 0 to 65535")


def _check_stdin(msg: dict) -> None:
    _need_id(msg)
    _check_fields(msg, (("data", _is_b64, "data must be a base64 string"),
                        ("eof", lambda v: isinstance(v, bool), "eof must be a boolean")))


_CHECKS = {
    "run": _check_run,
    "ping": lambda msg: None,
    "kill": _check_kill,
    "attach": _need_id,
    "stdin": _check_stdin,
    "resize": _check_resize,
}
REQUEST_TYPES = frozenset(_CHECKS)


def validate_request(msg: dict, frame: bytes | None = None) -> dict:
    """The request itself when it is well formed; ProtocolError (with the reason) otherwise.
    frame: its data frame, if it came with one (only stdin may, and then without "data")."""
    if not isinstance(msg, dict) or msg.get("v") != VERSION or not isinstance(msg.get("type"), str):
        raise ProtocolError("not a v1 message")
    check = _CHECKS.get(msg["type"])
    if check is None:
        raise ProtocolError(f"unknown message type {msg['type']!r}")
    check(msg)
    if frame is not None and (msg["type"] != "stdin" or "data" in msg):
        raise ProtocolError(f"{msg['type']}: unexpected data frame")
    return msg
