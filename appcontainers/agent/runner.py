"""The agent's core: runs commands, turns their pipes into messages, applies back-pressure.

No sockets here. The server gives a `send(peer, payload) -> OK | AGAIN | GONE` (payload: one
frame, or a (header, data) pair of frames), a log with `write(record)` /
`write_json(payload, ts)` and a `publish(topic, payload)`; it polls the
fds from wants() and calls on_readable / on_writable / reap / tick / flush_blocked.
Messages for one command go through its own queue, so started, output and exit keep their
order; while that queue cannot drain (AGAIN) its pipes are not read, so the command blocks
on its pipe instead of the agent buffering without bound.
"""
from __future__ import annotations

import collections
import os
import signal
import subprocess
import time
from typing import cast

from . import protocol as p
from . import users
from .lines import LineSplitter
from .spawn import set_size, spawn_pipes, spawn_pty

OK, AGAIN, GONE = "ok", "again", "gone"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_ENV = {"PATH": DEFAULT_PATH, "HOME": "/root"}
READ_SIZE = 64 * 1024  # one read of a pipe split into lines
EXIT_GRACE = 0.3  # after the process exits, how long its pipes may stay open (background children)
CLOSE_LIMIT = 2.0  # then how long such children may keep the pipes busy before they are closed
KEEP_FINISHED = 100  # exits remembered for a late attach


class Command:
    def __init__(self, cmd_id: str, peer: bytes | None, startup: bool = False):
        self.id, self.peer, self.startup = cmd_id, peer, startup
        self.pid: int | None = None
        self.proc: subprocess.Popen | None = None
        self.fds: dict[int, str] = {}
        self.splitters = {s: LineSplitter() for s in p.STREAMS}
        self.seq = dict.fromkeys(p.STREAMS, 0)
        self.prefix = {s: p.output_prefix(cmd_id, s) for s in p.STREAMS}
        self.queue: collections.deque[bytes | tuple[bytes, bytes]] = collections.deque()
        self.stdin_fd: int | None = None
        self.stdin_buf = bytearray()
        self.stdin_eof = False
        self.stdin_stream = False  # stdin arrives in messages, acknowledged as written
        self.stdin_written = 0
        self.chunked = False  # output goes out as read, not split into lines
        self.frames = False  # output goes to the peer as [header, raw bytes], not JSON
        self.tty_fd: int | None = None  # the pseudo-terminal's master, for resizes
        self.deadline: float | None = None
        self.timed_out = False
        self.status: int | None = None  # waitpid status once reaped
        self.exited_at: float | None = None
        self.closing = False  # exit grace over: read what is there, then close
        self.done = False


class Runner:
    def __init__(self, send, log, publish=lambda topic, payload: None, base_env=None,
                 clock=time.monotonic, reap_any=False, exit_grace=EXIT_GRACE):
        self.send, self.log, self.publish, self.clock = send, log, publish, clock
        self.base_env = {**DEFAULT_ENV, **(base_env or {})}
        self.reap_any, self.exit_grace = reap_any, exit_grace
        self.commands: dict[str, Command] = {}
        self.by_fd: dict[int, Command] = {}
        self.by_pid: dict[int, Command] = {}
        self.finished: collections.OrderedDict[str, dict] = collections.OrderedDict()
        self.stopping = False
        self.publish_output = False

    # -- requests

    def reply(self, peer: bytes | None, msg: dict) -> None:
        if peer is not None:
            self.send(peer, p.encode(msg))  # a reply nobody can take now is dropped

    def handle(self, peer: bytes | None, req: dict, frame: bytes | None = None) -> None:
        """A validated request other than ping; frame: a stdin's data frame."""
        if req["type"] == "stdin":
            return self._req_stdin(peer, req, frame)
        getattr(self, "_req_" + req["type"])(peer, req)

    def _req_run(self, peer, req, startup=False):
        cid = req["id"]
        if self.stopping:
            return self.reply(peer, p.error_message("the agent is stopping", cid, "stopping"))
        if cid in self.commands:
            return self.reply(peer, p.error_message(f"command {cid!r} is already running", cid, "duplicate"))
        self.finished.pop(cid, None)
        cmd = self.commands[cid] = Command(cid, peer, startup)
        cmd.frames = bool(req.get("frames"))
        try:
            in_w = self._start(cmd, req)
        except (OSError, ValueError) as e:
            return self._failed_start(cmd, req, e)
        cmd.pid = cast(subprocess.Popen, cmd.proc).pid
        self.by_pid[cmd.pid] = cmd
        if in_w is not None:
            os.set_blocking(in_w, False)
            cmd.stdin_fd = in_w
            cmd.stdin_buf += p.unb64(req["stdin"]) if "stdin" in req else b""
            cmd.stdin_stream = bool(req.get("stdin_stream"))
            cmd.stdin_eof = not cmd.stdin_stream
            self._write_stdin(cmd)
        if req.get("timeout") is not None:
            cmd.deadline = self.clock() + req["timeout"]
        self._emit(cmd, p.started_message(cid, cmd.pid))
        self._event(p.event("command_started", id=cid, pid=cmd.pid))
        self._flush(cmd)

    def _start(self, cmd: Command, req: dict) -> int | None:
        """Spawn the command and watch its output; the fd to write its stdin to, if it has one."""
        argv = req["argv"] if "argv" in req else ["/bin/sh", "-c", req["shell"]]
        user = users.resolve(req["user"]) if "user" in req else None
        env = {**self.base_env, **(users.environment(user) if user else {}), **req.get("env", {})}
        cwd = req.get("cwd") or "/"
        if "tty" in req:
            cmd.proc, out_r, in_w = spawn_pty(argv, env, cwd, req["tty"]["rows"], req["tty"]["cols"], user)
            cmd.tty_fd, cmd.chunked = out_r, True
            outputs: tuple[tuple[int, str], ...] = ((out_r, "stdout"),)
        else:
            piped_stdin = "stdin" in req or req.get("stdin_stream", False)
            cmd.proc, out_r, err_r, in_w = spawn_pipes(argv, env, cwd, piped_stdin, user)
            cmd.chunked, outputs = bool(req.get("chunks")), ((out_r, "stdout"), (err_r, "stderr"))
        for fd, stream in outputs:
            os.set_blocking(fd, False)
            cmd.fds[fd] = stream
            self.by_fd[fd] = cmd
        return in_w

    def _failed_start(self, cmd: Command, req: dict, e: Exception) -> None:
        """What a shell answers for a command it cannot execute: a line on stderr, 127 or 126."""
        argv = req["argv"] if "argv" in req else ["/bin/sh"]
        cwd = req.get("cwd") or "/"
        missing = isinstance(e, FileNotFoundError) and e.filename != cwd
        what = f"cwd {cwd}" if getattr(e, "filename", None) == cwd else argv[0]
        what = f"user {req['user']}" if isinstance(e, users.NoSuchUser) else what
        reason = "command not found" if missing else getattr(e, "strerror", None) or str(e)
        self._line(cmd, "stderr", f"appcontainers-agent: {what}: {reason}\n".encode(), time.time())
        cmd.status = (127 if missing else 126) << 8
        self._finish(cmd)

    def start_startup(self, index: int, shell: str) -> None:
        self._req_run(None, p.run_request(f"startup-{index}", shell=shell, check=False), startup=True)

    def start_default(self, command: dict) -> None:
        """The image's default command (agent.json default_command), run like a startup command."""
        self._req_run(None, p.run_request("startup-default", argv=command["argv"], cwd=command.get("cwd"),
                                          user=command.get("user"), check=False), startup=True)

    def _req_kill(self, peer, req):
        cmd = self.commands.get(req["id"])
        if cmd is None or cmd.pid is None or cmd.status is not None:
            return self.reply(peer, p.error_message(f"no running command {req['id']!r}", req["id"], "unknown"))
        _killpg(cmd.pid, req.get("signal", signal.SIGTERM))

    def _req_attach(self, peer, req):
        cmd = self.commands.get(req["id"])
        if cmd is not None:
            cmd.peer = peer  # what is still queued goes to the new peer
            return self._flush(cmd)
        if req["id"] in self.finished:
            return self.reply(peer, self.finished[req["id"]])
        self.reply(peer, p.error_message(f"no command {req['id']!r}", req["id"], "unknown"))

    def _req_resize(self, peer, req):
        cmd = self.commands.get(req["id"])
        if cmd is None or cmd.tty_fd is None or cmd.tty_fd not in cmd.fds:
            return  # not on a terminal, or its terminal is closed: nothing to resize
        set_size(cmd.tty_fd, req["rows"], req["cols"])

    def _req_stdin(self, peer, req, frame=None):
        cmd = self.commands.get(req["id"])
        if cmd is None or cmd.stdin_fd is None:
            if cmd is not None or req["id"] in self.finished:
                return  # it ended or closed its stdin first: the rest is dropped, as a pipe would
            return self.reply(peer, p.error_message(f"no command {req['id']!r} with open stdin",
                                                    req["id"], "unknown"))
        cmd.stdin_buf += frame if frame is not None else p.unb64(req.get("data", ""))
        cmd.stdin_eof = cmd.stdin_eof or req.get("eof", False)
        self._write_stdin(cmd, ack=True)  # always answered: an ack lost to a full queue is re-sent

    # -- what the server polls

    def wants(self) -> tuple[list[int], list[int], bool]:
        """(fds to read, fds to write, whether some command waits for its peer to take more)."""
        reads: list[int] = []
        writes: list[int] = []
        blocked = False
        for cmd in self.commands.values():
            if cmd.queue:
                blocked = True
            elif not cmd.closing:
                reads.extend(cmd.fds)
            if cmd.stdin_fd is not None and cmd.stdin_buf:
                writes.append(cmd.stdin_fd)
        return reads, writes, blocked

    def next_timeout(self) -> float | None:
        now, soonest = self.clock(), None
        for cmd in self.commands.values():
            if cmd.deadline is not None and cmd.status is None and not cmd.timed_out:
                t = cmd.deadline
            elif cmd.status is not None and cmd.fds and not cmd.queue:
                t = now if cmd.closing else cmd.exited_at + self.exit_grace
            else:
                continue
            soonest = t if soonest is None else min(soonest, t)
        return None if soonest is None else max(0.0, soonest - now)

    def on_readable(self, fd: int) -> None:
        cmd = self.by_fd.get(fd)
        if cmd is not None and not cmd.queue:
            self._read(cmd, fd)
            self._finish(cmd)

    def on_writable(self, fd: int) -> None:
        for cmd in self.commands.values():
            if cmd.stdin_fd == fd:
                return self._write_stdin(cmd)

    def reap(self) -> None:
        pids = [-1] if self.reap_any else list(self.by_pid)
        for want in pids:
            while True:
                try:
                    pid, status = os.waitpid(want, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                cmd = self.by_pid.pop(pid, None)  # else an orphan we inherited as init
                if cmd is not None:
                    cmd.status, cmd.exited_at = status, self.clock()
                    # in by_pid: started, so it has its Popen, which must not wait
                    cast(subprocess.Popen, cmd.proc).returncode = os.waitstatus_to_exitcode(status)
                    self._finish(cmd)
                if want != -1:
                    break

    def tick(self) -> None:
        now = self.clock()
        for cmd in list(self.commands.values()):
            if cmd.deadline is not None and now >= cmd.deadline and cmd.status is None and not cmd.timed_out:
                cmd.timed_out = True
                _killpg(cast(int, cmd.pid), signal.SIGKILL)  # a deadline is set when it starts
            if cmd.status is not None and cmd.fds and now >= cmd.exited_at + self.exit_grace:
                cmd.closing = True
                for fd in list(cmd.fds):
                    for _ in range(16):
                        if cmd.queue or fd not in cmd.fds:
                            break
                        if not self._read(cmd, fd):
                            self._eof(cmd, fd)
                    if fd in cmd.fds and not cmd.queue and now >= cmd.exited_at + self.exit_grace + CLOSE_LIMIT:
                        self._eof(cmd, fd)  # a background child that never pauses: stop relaying it
                self._finish(cmd)

    def flush_blocked(self) -> bool:
        """Retry the queues that could not drain; True when one made progress."""
        progress = False
        for cmd in list(self.commands.values()):
            if cmd.queue:
                before = len(cmd.queue)
                self._flush(cmd)
                progress |= len(cmd.queue) < before
                self._finish(cmd)
        return progress

    # -- stopping

    def live(self) -> bool:
        return any(c.pid is not None and c.status is None for c in self.commands.values())

    def signal_all(self, sig: int) -> None:
        for cmd in self.commands.values():
            if cmd.pid is not None and cmd.status is None:
                _killpg(cmd.pid, sig)

    def finish_all(self) -> None:
        """Record every command as ended now, whatever is still pending (the agent exits)."""
        for cmd in list(self.commands.values()):
            for fd in list(cmd.fds):
                for _ in range(64):  # what is still in the pipe, ignoring back-pressure now
                    if fd not in cmd.fds or not self._read(cmd, fd):
                        break
                if fd in cmd.fds:
                    self._eof(cmd, fd)
            if cmd.status is None:
                cmd.status = signal.SIGKILL  # a wait status meaning "killed by SIGKILL"
            self._finish(cmd)
            if cmd.queue:
                self._flush(cmd)
            self.commands.pop(cmd.id, None)

    # -- internals

    def _read(self, cmd: Command, fd: int) -> bool:
        """Read once; False when nothing is there now."""
        try:
            data = os.read(fd, p.MAX_CHUNK if cmd.chunked else READ_SIZE)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self._eof(cmd, fd)
            return True
        stream, ts = cmd.fds[fd], time.time()
        if cmd.chunked:  # one message per read, up to MAX_CHUNK
            self._line(cmd, stream, data, ts)
        else:
            for raw in cmd.splitters[stream].feed(data):
                self._line(cmd, stream, raw, ts)
        self._flush(cmd)
        return True

    def _eof(self, cmd: Command, fd: int) -> None:
        stream = cmd.fds.pop(fd)
        self.by_fd.pop(fd, None)
        os.close(fd)
        for raw in cmd.splitters[stream].flush():
            self._line(cmd, stream, raw, time.time())
        self._flush(cmd)

    def _line(self, cmd: Command, stream: str, raw: bytes, ts: float) -> None:
        seq, prefix = cmd.seq[stream], cmd.prefix[stream]
        payload = p.output_payload(prefix, seq, raw)  # the log (and subscribers) get JSON
        cmd.seq[stream] += 1
        self.log.write_json(payload, ts)
        if self.publish_output:
            self.publish(b"output", payload)
        if cmd.peer is not None:
            cmd.queue.append((p.output_header(prefix, seq), raw) if cmd.frames else payload)

    def _emit(self, cmd: Command, msg: dict) -> None:
        payload = p.encode(msg)
        self.log.write_json(payload)
        if cmd.peer is not None:
            cmd.queue.append(payload)

    def _event(self, event: dict) -> None:
        self.publish(b"event", p.encode(event))

    def _flush(self, cmd: Command) -> None:
        while cmd.queue and cmd.peer is not None:
            result = self.send(cmd.peer, cmd.queue[0])
            if result == OK:
                cmd.queue.popleft()
            elif result == AGAIN:
                return
            else:  # the requester is gone: the command goes on, into the log only
                self.log.write(p.event("peer_gone", id=cmd.id))
                cmd.peer = None
        cmd.queue.clear()

    def _write_stdin(self, cmd: Command, ack: bool = False) -> None:
        written, closed = 0, False
        while cmd.stdin_buf:
            try:
                n = _write(cast(int, cmd.stdin_fd), cmd.stdin_buf)  # callers check it is open
            except BlockingIOError:
                break
            except OSError:  # the command closed its stdin: what is left is dropped
                cmd.stdin_buf.clear()
                cmd.stdin_eof = closed = True
                break
            del cmd.stdin_buf[:n]
            written += n
        if cmd.stdin_eof and not cmd.stdin_buf:
            os.close(cast(int, cmd.stdin_fd))
            cmd.stdin_fd = None
        if cmd.stdin_stream and (written or closed or ack):
            # Credit for a streaming sender: it keeps at most a window of bytes unacknowledged,
            # so a command that reads slowly cannot make the agent (pid 1) buffer without end.
            cmd.stdin_written += written
            self.reply(cmd.peer, p.stdin_ack_message(cmd.id, cmd.stdin_written, closed))

    def _finish(self, cmd: Command) -> None:
        """Record the exit once the process is reaped and its pipes are closed; forget the
        command once its queue is delivered."""
        if not cmd.done and cmd.status is not None and not cmd.fds:
            cmd.done = True
            if cmd.stdin_fd is not None:
                os.close(cmd.stdin_fd)
                cmd.stdin_fd = None
            code = os.WEXITSTATUS(cmd.status) if os.WIFEXITED(cmd.status) else None
            sig = os.WTERMSIG(cmd.status) if os.WIFSIGNALED(cmd.status) else None
            msg = p.exit_message(cmd.id, code, sig, cmd.timed_out)
            self._emit(cmd, msg)
            self._event(p.event("command_exited", id=cmd.id, code=code, signal=sig, timed_out=cmd.timed_out))
            if cmd.startup and code != 0 and not self.stopping:
                event = p.event("startup_failed", id=cmd.id, code=code, signal=sig)
                self.log.write(event)
                self._event(event)
            self.finished[cmd.id] = msg
            while len(self.finished) > KEEP_FINISHED:
                self.finished.popitem(last=False)
            self._flush(cmd)
        if cmd.done and not cmd.queue:
            self.commands.pop(cmd.id, None)


def _write(fd: int, buf: bytearray) -> int:
    """os.write of the whole buffer without copying it first."""
    with memoryview(buf) as view:
        return os.write(fd, view)


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
