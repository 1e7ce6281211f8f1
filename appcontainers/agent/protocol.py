"""The message schema shared by the agent and the host: JSON objects with "v" and "type".

Stdlib only: this package is copied into images as `appcontainers_agent`.
"""
from __future__ import annotations

import base64
import binascii
import json
from json.encoder import encode_basestring as _json_str  # the C encoder, as ensure_ascii=False

VERSION = 1
MAX_LINE = 64 * 1024  # output lines longer than this are split into pieces of at most this size
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


# -- builders (host -> agent)

def run_request(cmd_id: str, argv=None, shell=None, env=None, cwd=None, stdin: bytes | None = None,
                stdin_stream=False, timeout=None) -> dict:
    msg: dict = {"v": VERSION, "type": "run", "id": cmd_id}
    if argv is not None:
        msg["argv"] = list(argv)
    if shell is not None:
        msg["shell"] = shell
    if env:
        msg["env"] = dict(env)
    if cwd is not None:
        msg["cwd"] = cwd
    if stdin is not None:
        msg["stdin"] = b64(stdin)
    if stdin_stream:
        msg["stdin_stream"] = True
    if timeout is not None:
        msg["timeout"] = timeout
    return validate_request(msg)


# -- builders (agent -> host)

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
        return prefix + b'%d,"data_b64":"%s"}' % (seq, base64.b64encode(raw))
    return prefix + b'%d,"data":%s}' % (seq, _json_str(text).encode())


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


def _check_run(msg: dict) -> None:
    _need_id(msg)
    argv, shell = msg.get("argv"), msg.get("shell")
    if (argv is None) == (shell is None):
        raise ProtocolError("run: exactly one of argv and shell is needed")
    if argv is not None and (not _is_str_list(argv) or not argv or not argv[0]):
        raise ProtocolError("run: argv must be a non-empty list of strings without NUL")
    if shell is not None and not _is_arg(shell):
        raise ProtocolError("run: shell must be a string without NUL")
    if "env" in msg and not _is_str_dict(msg["env"]):
        raise ProtocolError("run: env must map names (no '=', no NUL) to strings")
    if "cwd" in msg and not _is_arg(msg["cwd"]):
        raise ProtocolError("run: cwd must be a string without NUL")
    if "stdin" in msg:
        if not isinstance(msg["stdin"], str):
            raise ProtocolError("run: stdin must be a base64 string")
        unb64(msg["stdin"])
    if "stdin_stream" in msg and not isinstance(msg["stdin_stream"], bool):
        raise ProtocolError("run: stdin_stream must be a boolean")
    if msg.get("stdin") is not None and msg.get("stdin_stream"):
        raise ProtocolError("run: stdin and stdin_stream exclude each other")
    t = msg.get("timeout")
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0):
        raise ProtocolError("run: timeout must be a positive number")


def _check_kill(msg: dict) -> None:
    _need_id(msg)
    sig = msg.get("signal", 15)
    if isinstance(sig, bool) or not isinstance(sig, int) or not 0 < sig < 65:
        raise ProtocolError("kill: signal must be an integer from 1 to 64")


def _check_stdin(msg: dict) -> None:
    _need_id(msg)
    if "data" in msg:
        if not isinstance(msg["data"], str):
            raise ProtocolError("stdin: data must be a base64 string")
        unb64(msg["data"])
    if "eof" in msg and not isinstance(msg["eof"], bool):
        raise ProtocolError("stdin: eof must be a boolean")


_CHECKS = {
    "run": _check_run,
    "ping": lambda msg: None,
    "kill": _check_kill,
    "attach": _need_id,
    "stdin": _check_stdin,
}


def validate_request(msg: dict) -> dict:
    """The request itself when it is well formed; ProtocolError (with the reason) otherwise."""
    if not isinstance(msg, dict) or msg.get("v") != VERSION or not isinstance(msg.get("type"), str):
        raise ProtocolError("not a v1 message")
    check = _CHECKS.get(msg["type"])
    if check is None:
        raise ProtocolError(f"unknown message type {msg['type']!r}")
    check(msg)
    return msg
