"""The library logs through the standard logging module: external commands and state changes."""
from __future__ import annotations

import logging
import random

import attrs
import pytest

from appcontainers.adapters.host import process
from appcontainers.adapters.store.json_store import JsonStore
from appcontainers.domain.exceptions import CommandFailed, CommandTimeout
from appcontainers.domain.image import Image, Manifest
from appcontainers.domain.network import MacGenerator
from appcontainers.domain.reservation import Reservation

NET = "10.20.0.0/16"
ID_A = "a" * 64


def _records(caplog, logger: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger]


class TestProcessLog:
    @pytest.fixture(autouse=True)
    def _debug(self, caplog):
        caplog.set_level(logging.DEBUG, logger="appcontainers.process")

    @pytest.mark.parametrize("tool, code", [("true", 0), ("false", 1)])
    def test_run_logs_argv_exit_code_and_duration(self, caplog, tool, code):
        """run() logs each command at debug with its argv, exit code and duration."""
        process.run([tool, "x y"], check=False)
        (rec,) = _records(caplog, "appcontainers.process")
        assert rec.levelno == logging.DEBUG
        assert (rec.argv, rec.exit_code) == ((tool, "x y"), code) and 0 <= rec.duration < 10
        assert rec.getMessage().startswith(f"{tool} 'x y': exit {code} in ")

    def test_a_failing_command_is_logged_before_it_raises(self, caplog):
        """A check=True failure still leaves its record."""
        with pytest.raises(CommandFailed):
            process.run(["false"])
        assert [r.exit_code for r in _records(caplog, "appcontainers.process")] == [1]

    @pytest.mark.parametrize("tool, code", [("true", 0), ("false", 1)])
    def test_stream_logs_argv_exit_code_and_duration(self, caplog, tool, code):
        """stream() logs the same record as run()."""
        assert process.stream([tool], timeout=10)[0] == code
        (rec,) = _records(caplog, "appcontainers.process")
        assert (rec.argv, rec.exit_code, rec.levelno) == ((tool,), code, logging.DEBUG)
        assert rec.duration >= 0

    def test_a_timeout_is_logged(self, caplog):
        """A command killed at its timeout is logged as such, without an exit code."""
        with pytest.raises(CommandTimeout):
            process.stream(["sleep", "5"], timeout=0.2)
        (rec,) = _records(caplog, "appcontainers.process")
        assert rec.exit_code is None and "timeout" in rec.getMessage() and rec.duration >= 0.2

    def test_nothing_is_printed(self, capsys):
        """The library writes nothing to stdout or stderr itself."""
        process.run(["true"])
        process.stream(["false"], timeout=10)
        assert capsys.readouterr() == ("", "")


class TestStateLog:
    @pytest.fixture
    def store(self, tmp_path):
        return JsonStore(str(tmp_path / "resources.json"), NET)

    def test_a_saved_transaction_says_what_changed(self, store, caplog):
        """A committed change is logged at info, naming what was added, changed and removed."""
        caplog.set_level(logging.INFO, logger="appcontainers.state")
        with store.transaction() as state:
            ip = state.pool.allocate("web")
            state.add(Reservation(name="web", ip=ip, mac=MacGenerator(random.Random(1)).generate(set()),
                                  image=ID_A))
            state.images[ID_A] = Image(id=ID_A, manifest=Manifest(name="base", created=1.5), kind="base")
        with store.transaction() as state:
            state.put(attrs.evolve(state.get("web"), startup_commands=("echo hi",)))
        with store.transaction() as state:
            state.remove("web")
        messages = [r.getMessage() for r in _records(caplog, "appcontainers.state")]
        assert all(r.levelno == logging.INFO for r in _records(caplog, "appcontainers.state"))
        assert messages == [
            f"{store.path}: reservations +web; images +{ID_A[:12]}; addresses +web",
            f"{store.path}: reservations ~web",
            f"{store.path}: reservations -web; addresses -web",
        ]

    def test_a_transaction_that_changes_nothing_is_quiet(self, store, caplog):
        """Nothing written, nothing logged at info."""
        caplog.set_level(logging.INFO, logger="appcontainers.state")
        with store.transaction() as state:
            state.pool.allocate("web")
        caplog.clear()
        with store.transaction():
            pass
        store.read()
        assert _records(caplog, "appcontainers.state") == []

