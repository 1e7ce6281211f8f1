"""`appcontainers run` over the fakes: argument order, stdin, exact output, signals as data."""
from __future__ import annotations

import signal

import pytest

from appcontainers.agent import protocol as p
from appcontainers.entrypoints.cli import _options_first
from appcontainers.entrypoints.run_session import Controls, exit_status
from tests.unit.cli_fixtures import client, invoke, svc  # noqa: F401 (svc: a fixture)

VALUED = {"--timeout"}


class TestArgumentOrder:
    @pytest.mark.parametrize("args, want", [
        (["web", "--timeout", "2", "--", "sleep", "1"], ["--timeout", "2", "web", "--", "sleep", "1"]),
        (["-it", "web", "--", "sh"], ["-it", "web", "--", "sh"]),
        (["web", "-t", "-i", "sh"], ["-t", "-i", "web", "--", "sh"]),
        (["web", "sh", "-c", "echo -t"], ["web", "--", "sh", "-c", "echo -t"]),
        (["web", "--timeout=3", "--", "--odd"], ["--timeout=3", "web", "--", "--odd"]),
        (["--help"], ["--help"]),
    ])
    def test_options_before_the_command_are_ours(self, args, want):
        """Options before or after NAME are run's; the command starts at -- or its first word."""
        assert _options_first(args, VALUED) == want


class TestRun:
    def test_options_after_name_and_exit_code(self, svc):
        """run web --timeout 2 -- sleep 1 runs sleep 1; the CLI exits with the command's code."""
        client(svc).reply = (4, b"", b"")
        result = invoke(svc, "run", "web", "--timeout", "2", "--", "sleep", "1")
        assert result.exit_code == 4 and client(svc).runs[-1]["argv"] == ["sleep", "1"]

    def test_piped_stdin_is_forwarded(self, svc):
        """A stdin that is not a terminal goes to the command."""
        invoke(svc, "run", "web", "--", "cat", input=b"hi\n\xff")
        assert client(svc).runs[-1]["stdin"] == b"hi\n\xff"

    def test_output_bytes_are_written_exactly(self, svc):
        """Output bytes reach stdout and stderr as they are: no newline added, nothing replaced."""
        client(svc).reply = (0, b"abc\xff", b"\x00err")
        result = invoke(svc, "run", "web", "--", "printf", "abc")
        assert result.stdout_bytes == b"abc\xff" and result.stderr_bytes == b"\x00err"

    def test_tty_asks_for_a_terminal(self, svc):
        """-t runs the command on a terminal (size unknown without one here)."""
        assert invoke(svc, "run", "-t", "web", "--", "sh").exit_code == 0
        assert client(svc).runs[-1]["tty"] == (0, 0)


class TestControls:
    def test_signals_then_kill_on_the_second_interrupt(self):
        """SIGTERM and the first SIGINT are forwarded as they are; a second SIGINT is SIGKILL."""
        controls = Controls()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGINT):
            controls.on_signal(sig, None)
        assert controls() == [signal.SIGTERM, signal.SIGINT, signal.SIGKILL] and controls() == []

    @pytest.mark.parametrize("code, status", [(0, 0), (3, 3), (-2, 130), (-9, 137), (-15, 143)])
    def test_exit_status(self, code, status):
        """A command killed by signal N makes the CLI exit 128+N."""
        assert exit_status(code) == status


class TestProtocol:
    def test_tty_and_resize_are_validated(self):
        """tty is {rows, cols} of small integers; resize likewise; chunks a boolean."""
        req = p.run_request("c", ["sh"], tty=(24, 80), chunks=True)
        assert req["tty"] == {"rows": 24, "cols": 80} and req["chunks"] is True
        assert p.validate_request(p.resize_request("c", 30, 100))["rows"] == 30
        for bad in ({"v": 1, "type": "run", "id": "c", "argv": ["sh"], "tty": {"rows": -1, "cols": 2}},
                    {"v": 1, "type": "run", "id": "c", "argv": ["sh"], "chunks": "yes"},
                    {"v": 1, "type": "resize", "id": "c", "rows": 1}):
            with pytest.raises(p.ProtocolError):
                p.validate_request(bad)

    @pytest.mark.parametrize("cmd_id, data", [("c", b""), ("é\"x", b"\x00\xff" * 100), ("1", b"abc\n")])
    def test_fast_stdin_payload_is_the_message(self, cmd_id, data):
        """The hand-built stdin payload decodes to exactly stdin_message()."""
        msg = p.decode(p.stdin_payload(cmd_id, data))
        assert msg == p.stdin_message(cmd_id, data) and p.unb64(msg["data"]) == data

