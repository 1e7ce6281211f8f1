"""The agent's bounded JSON-lines log: writer (agent side) and reader (host side).

Offsets are byte offsets into one logical stream, the concatenation of every log file the
agent ever wrote in that directory. Each file starts with a header record
{"type": "log_start", "base": N}: N is the logical offset of that file's first byte. When
log.jsonl would pass max_bytes it is renamed to log.jsonl.1 (replacing the older one) and a
new log.jsonl starts at base = old base + old size. So an offset stays valid across
rotations until its file is dropped; reading from a dropped offset starts at the oldest
record still kept.

A full disk never stops the agent: records that cannot be written are dropped (and the older
file removed, to make room), and once writing works again a {"type": "log_lost", "records":
N, "bytes": B, "error": ...} record says what was lost, on a line of its own.
"""
from __future__ import annotations

import errno
import json
import os
import stat
import time
from collections.abc import Iterator

from .lines import LineSplitter
from .retry import attempts

# Writes failing for want of space: dropped, never fatal.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
LOST_TYPE = "log_lost"
LOG = "log.jsonl"
OLD = "log.jsonl.1"
HEADER_TYPE = "log_start"
# Longer than any record the agent writes (an output line of MAX_LINE bytes, JSON-escaped).
MAX_RECORD = 8 * 1024 * 1024


def _header_base(first_line: bytes) -> int | None:
    try:
        rec = json.loads(first_line)
    except ValueError:
        return None
    if isinstance(rec, dict) and rec.get("type") == HEADER_TYPE and isinstance(rec.get("base"), int):
        return rec["base"]
    return None


def _read_base(fd: int) -> int | None:
    first = os.pread(fd, 256, 0).split(b"\n", 1)[0]
    return _header_base(first)


class JsonLog:
    """Appends records as JSON lines with a "ts"; buffers until flush(); rotates at max_bytes."""

    def __init__(self, run_dir: str, max_bytes: int = 10 * 1024 * 1024, clock=time.time):
        self.path, self.old = os.path.join(run_dir, LOG), os.path.join(run_dir, OLD)
        self.max_bytes, self.clock = max(max_bytes, 4096), clock
        self.buf = bytearray()
        self.lost: dict | None = None  # what could not be written yet: records, bytes, error
        self.fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.size = os.fstat(self.fd).st_size
        if self.size == 0:
            self._header(self._next_base_after_old())
        else:
            base = _read_base(self.fd)
            self.base = base if base is not None else 0
            if os.pread(self.fd, 1, self.size - 1) != b"\n":
                self.buf += b"\n"  # end a line torn by a crash, so the next record stands alone

    def _next_base_after_old(self) -> int:
        try:
            fd = os.open(self.old, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return 0
        try:
            return (_read_base(fd) or 0) + os.fstat(fd).st_size
        finally:
            os.close(fd)

    def _header(self, base: int) -> None:
        self.base = base
        self.buf += json.dumps({"type": HEADER_TYPE, "base": base, "ts": self.clock()}).encode() + b"\n"
        self.flush()

    def write(self, record: dict) -> None:
        self.write_json(json.dumps(record, separators=(",", ":")).encode())

    def write_json(self, obj: bytes, ts: float | None = None) -> None:
        """Append an already encoded JSON object, adding "ts" in front."""
        head = b'{"ts":%.6f,' % (self.clock() if ts is None else ts)
        size = len(head) + len(obj)  # obj without its "{", and a newline
        if self.size + len(self.buf) + size > self.max_bytes and self.size + len(self.buf) > 0:
            try:
                self.rotate()
            except OSError as e:
                if e.errno not in NO_SPACE:
                    raise
                self._count_lost(head + obj[1:] + b"\n", e)  # no room for a new file: this record is dropped
                return
        self.buf += head
        with memoryview(obj) as view:  # a big output record is copied once, into the buffer
            self.buf += view[1:]
        self.buf += b"\n"
        if len(self.buf) >= 256 * 1024:
            self.flush()

    def flush(self) -> None:
        if not self.buf:
            return
        notice = self._lost_notice()
        data = notice + self.buf if notice else self.buf
        self.buf = bytearray()
        done, error = self._write(data)
        if done >= len(notice):
            self.lost = None  # reported
        if error is not None:
            self._count_lost(data[max(done, len(notice)):], error)

    def _write(self, data: bytes | bytearray) -> tuple[int, OSError | None]:
        """Write data; (bytes written, the error if the disk was full before the end)."""
        view, done = memoryview(data), 0
        try:
            while done < len(data):
                n = os.write(self.fd, view[done:])
                done += n
                self.size += n
        except OSError as e:
            if e.errno not in NO_SPACE:
                raise
            self._make_room()
            return done, e
        finally:
            view.release()
        return done, None

    def _count_lost(self, dropped: bytes | bytearray, error: OSError) -> None:
        lost = self.lost or {"records": 0, "bytes": 0, "error": os.strerror(error.errno or errno.ENOSPC)}
        # A record partly written counts as lost: its newline is in what was dropped.
        lost["records"] += dropped.count(b"\n")
        lost["bytes"] += len(dropped)
        self.lost = lost

    def _lost_notice(self) -> bytes:
        """What was lost, as a record on a line of its own (it also ends a line torn by a
        partial write), or nothing."""
        if self.lost is None:
            return b""
        rec = {"ts": self.clock(), "type": LOST_TYPE, **self.lost}
        return b"\n" + json.dumps(rec, separators=(",", ":")).encode() + b"\n"

    def _make_room(self) -> None:
        """The older file goes first: its records are the ones readers can best spare."""
        try:
            os.unlink(self.old)
        except OSError:
            pass

    def rotate(self) -> None:
        self.flush()
        end = self.base + self.size
        os.replace(self.path, self.old)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            os.replace(self.old, self.path)  # write on where we were
            raise
        os.close(self.fd)
        self.fd = fd
        self.size = 0
        self._header(end)

    def close(self) -> None:
        self.flush()
        os.close(self.fd)


def _lines(fd: int, pos: int, base: int) -> Iterator[tuple[int, dict]]:
    """Complete records from byte pos of fd on: (logical offset just past the record, record)."""
    splitter = LineSplitter(MAX_RECORD)  # a file without newlines must not fill our memory
    read_at = pos
    while chunk := os.pread(fd, 1024 * 1024, read_at):
        read_at += len(chunk)
        for line in splitter.feed(chunk):
            pos += len(line)
            rec = _record(line)
            if rec is not None:
                yield base + pos, rec


def _record(line: bytes) -> dict | None:
    if not line.endswith(b"\n"):
        return None  # a piece of a line too long to be ours
    try:
        rec = json.loads(line)
    except ValueError:
        return None  # a torn line (a crash mid-write) or an offset inside a line
    return rec if isinstance(rec, dict) and rec.get("type") != HEADER_TYPE else None


def read_log(run_dir: str, since: int = 0, follow: bool = False, poll: float = 0.2,
             should_stop=lambda: False) -> Iterator[tuple[int, dict]]:
    """(offset just past the record, record) from logical offset `since`; pass the last
    offset back as `since` to resume. follow=True keeps waiting for new records (and for
    the log to appear) until should_stop() is true; rotation is followed."""
    path, old = os.path.join(run_dir, LOG), os.path.join(run_dir, OLD)

    def stop() -> bool:
        return not follow or should_stop()

    cur = _open_current(path, poll, stop)
    if cur is None:
        return
    fd, base = cur
    try:
        if since < base:
            yield from _read_old(old, since, base)
            since = base
        pos = max(since - base, 0)
        for _ in attempts(poll, stop=stop):
            while True:
                for end, rec in _lines(fd, pos, base):
                    pos = end - base
                    yield end, rec
                if stop() or not _rotated(path, fd):
                    break
                # rotated: what we hold is complete (the agent flushes before renaming)
                yield from _lines(fd, pos, base)
                nxt = _open_current(path, poll, stop)
                if nxt is None:
                    return
                os.close(fd)
                (fd, base), pos = nxt, 0
    finally:
        os.close(fd)


def _rotated(path: str, fd: int) -> bool:
    """path now names another file than fd (the writer renamed it away)."""
    try:
        return os.stat(path).st_ino != os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _open_current(path: str, poll: float, stop) -> tuple[int, int] | None:
    """(fd, base) of the current log file once it has its header; waits until stop()."""
    for _ in attempts(poll, stop=stop):
        opened = _try_open(path)
        if opened is not None:
            return opened
    return None


class NotALog(OSError):
    """What the container put where its log should be is not a regular file."""

    def __init__(self, path: str, what: str) -> None:
        super().__init__(errno.EINVAL, f"{what} is where the agent's log should be; it was not read", path)


def open_log_file(path: str) -> int | None:
    """A read descriptor of the log file at path, None if there is none. The directory is the
    container's: a link it planted is never followed and a FIFO or device is never opened (a
    FIFO would block us; a device node could be the host's disk), only looked at via O_PATH."""
    try:
        pfd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        mode = os.fstat(pfd).st_mode
        if stat.S_ISLNK(mode):
            raise NotALog(path, "a symbolic link")
        if not stat.S_ISREG(mode):
            raise NotALog(path, "a FIFO" if stat.S_ISFIFO(mode) else "a file that is not a regular file")
        # Reopened from the inode the O_PATH descriptor pins: the one just checked.
        return os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(pfd)


def _try_open(path: str) -> tuple[int, int] | None:
    fd = open_log_file(path)
    if fd is None:
        return None
    base = _read_base(fd)
    if base is not None:
        return fd, base
    if os.fstat(fd).st_size > 256:  # no header: a foreign file; read it from 0
        return fd, 0
    os.close(fd)  # the header is being written
    return None


def _read_old(old: str, since: int, cur_base: int) -> Iterator[tuple[int, dict]]:
    fd = open_log_file(old)
    if fd is None:
        return
    try:
        base = _read_base(fd)
        if base is None or base + os.fstat(fd).st_size != cur_base:
            return  # not the predecessor of the current file (rotated meanwhile): skip it
        yield from _lines(fd, max(since - base, 0), base)
    finally:
        os.close(fd)
