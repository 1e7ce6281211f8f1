"""Splitting a byte stream into lines that keep their newline and never exceed a size."""
from __future__ import annotations

from .protocol import MAX_LINE


def _cut(piece: bytes, limit: int) -> int:
    """Where to cut a too-long piece: at limit, moved back to a UTF-8 character start if one
    is near, so valid text stays valid text."""
    cut = limit
    while cut > limit - 4 and cut < len(piece) and (piece[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut if cut > limit - 4 else limit


class LineSplitter:
    """feed() bytes, get complete lines (with their b"\\n"); flush() the rest at EOF.

    A line longer than max_line comes out in pieces of at most max_line bytes, so a stream
    without newlines cannot grow the buffer without bound.
    """

    def __init__(self, max_line: int = MAX_LINE):
        self.max_line = max_line
        self.rest = b""

    def feed(self, data: bytes) -> list[bytes]:
        buf = self.rest + data if self.rest else data
        parts = buf.split(b"\n")
        rest = parts.pop()
        out: list[bytes] = []
        limit = self.max_line
        for part in parts:
            if len(part) >= limit:
                part = self._chop(part, out)
            out.append(part + b"\n")
        if len(rest) >= limit:
            rest = self._chop(rest, out)
        self.rest = rest
        return out

    def feed_text(self, data: bytes) -> list[str]:
        """feed(), each line decoded (undecodable bytes replaced) without its newline.

        The whole chunk is decoded and split at once when no line can need cutting (the same
        result: a newline byte never belongs to a UTF-8 sequence), else line by line."""
        buf = self.rest + data if self.rest else data
        end = buf.rfind(b"\n") + 1
        if len(buf) - end < self.max_line:
            lines = buf[:end].decode("utf-8", "replace").split("\n")
            lines.pop()  # what follows the last newline: nothing
            if not lines or max(map(len, lines)) * 4 < self.max_line:  # < max_line bytes each
                self.rest = buf[end:]
                return lines
        return [line.decode("utf-8", "replace").removesuffix("\n") for line in self.feed(data)]

    def _chop(self, piece: bytes, out: list[bytes]) -> bytes:
        # leaves the tail (< max_line) for the caller; a tail plus b"\n" still fits the limit
        limit = self.max_line
        while len(piece) >= limit:
            cut = _cut(piece, limit)
            out.append(piece[:cut])
            piece = piece[cut:]
        return piece

    def flush(self) -> list[bytes]:
        rest, self.rest = self.rest, b""
        return [rest] if rest else []
