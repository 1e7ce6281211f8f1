"""The shared helpers: the wait/retry loop, the file lock, process.stream's line splitting."""
from __future__ import annotations

import math
import sys

import pytest

from appcontainers.adapters.host import process
from appcontainers.adapters.host.filelock import flocked
from appcontainers.agent.protocol import MAX_LINE
from appcontainers.agent.retry import attempts
from appcontainers.domain.exceptions import ContainerStateError


class Clock:
    """A clock that only moves when slept on, or when an attempt spends time."""

    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class TestAttempts:
    def test_retries_until_the_deadline_then_once_at_it(self):
        """Attempts come at once, then every interval, the last one at the deadline."""
        clock = Clock()
        seen = [(clock.now, left) for left in attempts(0.3, 1.0, clock=clock, sleep=clock.sleep)]
        assert [t for t, _ in seen] == pytest.approx([0.0, 0.3, 0.6, 0.9, 1.0])
        assert [left for _, left in seen] == pytest.approx([1.0, 0.7, 0.4, 0.1, 0.0])

    def test_there_is_always_one_attempt(self):
        """A deadline already past still gives one attempt, with 0 seconds left, and no sleep."""
        clock = Clock()
        clock.now = 5.0
        assert list(attempts(0.1, 1.0, clock=clock, sleep=clock.sleep)) == [0.0]
        assert clock.sleeps == []

    def test_a_slow_attempt_past_the_deadline_ends_the_loop(self):
        """Time spent in the attempt counts: no sleep and no attempt after it crossed the deadline."""
        clock = Clock()
        count = 0
        for _ in attempts(0.1, 1.0, clock=clock, sleep=clock.sleep):
            count += 1
            clock.now += 2.0
        assert count == 1 and clock.sleeps == []

    def test_stop_ends_a_loop_without_deadline(self):
        """Without a deadline the loop runs until stop() is true; it yields inf."""
        clock = Clock()
        lefts = []
        for left in attempts(0.5, stop=lambda: len(lefts) >= 3, clock=clock, sleep=clock.sleep):
            lefts.append(left)
        assert lefts == [math.inf] * 3 and clock.sleeps == [0.5, 0.5]

    def test_leaving_the_loop_is_success(self):
        """The caller breaks out on success; nothing is slept after."""
        clock = Clock()
        for n, _ in enumerate(attempts(0.1, 10.0, clock=clock, sleep=clock.sleep)):
            if n == 2:
                break
        assert clock.sleeps == [0.1, 0.1]


class TestFlocked:
    def test_exclusive_excludes_and_shared_shares(self, tmp_path):
        """An exclusive lock refuses a second holder; shared locks coexist but refuse an exclusive one."""
        path = str(tmp_path / "sub" / "x.lock")
        with flocked(path):
            with pytest.raises(ContainerStateError, match="x.lock is held by another process"):
                with flocked(path, wait=False):
                    pass
        with flocked(path, shared=True), flocked(path, shared=True, wait=False):
            with pytest.raises(ContainerStateError):
                with flocked(path, wait=False):
                    pass
        with flocked(path, wait=False):  # every holder above let go
            pass
        assert (tmp_path / "sub" / "x.lock").stat().st_mode & 0o777 == 0o600


class TestStreamLines:
    def test_long_lines_come_in_bounded_pieces_and_bytes_stay_exact(self):
        """A line longer than MAX_LINE reaches on_line in pieces; stdout is byte-exact."""
        script = f"import sys; sys.stdout.write('a' * {MAX_LINE * 2 + 5} + '\\nend')"
        lines = []
        code, out, err = process.stream([sys.executable, "-c", script], timeout=30,
                                        on_line=lambda s, line: lines.append((s, line)))
        assert (code, err) == (0, b"") and out == b"a" * (MAX_LINE * 2 + 5) + b"\nend"
        assert [len(line) for _, line in lines] == [MAX_LINE, MAX_LINE, 5, 3]
        assert lines[-1] == ("stdout", "end")

    def test_lines_of_both_streams_without_newline_at_the_end(self):
        """Each stream's lines come apart, the last one even without its newline."""
        lines = []
        process.stream(["sh", "-c", "printf 'a\\nb'; printf 'e\\377' >&2"], timeout=10,
                       on_line=lambda s, line: lines.append((s, line)))
        assert sorted(lines) == [("stderr", "e\ufffd"), ("stdout", "a"), ("stdout", "b")]
