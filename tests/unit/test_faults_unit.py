"""Faults without root: the agent log on a full disk and on files the container planted, a
failed start, OSError at the service boundary."""
from __future__ import annotations

import os
import time

import pytest

from appcontainers.agent.logfile import JsonLog, NotALog, read_log
from appcontainers.domain.exceptions import AgentUnavailable, HostError
from tests.fakes import make_service


class TestLogOnAFullDisk:
    def test_records_are_dropped_and_the_loss_reported_once_space_is_back(self, tmp_path):
        """Writes failing with ENOSPC (/dev/full) never raise; the next write that fits says
        how many records were lost, and every record written is read back."""
        log = JsonLog(str(tmp_path))
        log.write({"type": "output", "n": 1})
        log.flush()
        real = os.dup(log.fd)
        full = os.open("/dev/full", os.O_WRONLY)
        try:
            os.dup2(full, log.fd)  # the same descriptor now fails as on a full disk
            for n in (2, 3):
                log.write({"type": "output", "n": n})
            log.flush()
            log.write({"type": "output", "n": 4})
            log.flush()
        finally:
            os.dup2(real, log.fd)
            os.close(real)
            os.close(full)
        log.write({"type": "output", "n": 5})
        log.flush()
        records = [r for _, r in read_log(str(tmp_path))]
        assert [r["n"] for r in records if r["type"] == "output"] == [1, 5]
        lost = [r for r in records if r["type"] == "log_lost"]
        assert len(lost) == 1 and lost[0]["records"] == 3 and lost[0]["error"] == "No space left on device"

    def test_the_older_file_goes_to_make_room(self, tmp_path):
        """On ENOSPC the rotated older file is removed first."""
        log = JsonLog(str(tmp_path), max_bytes=4096)
        for i in range(100):
            log.write({"type": "output", "n": i, "data": "x" * 100})
        log.flush()
        assert (tmp_path / "log.jsonl.1").exists()
        full = os.open("/dev/full", os.O_WRONLY)
        real = os.dup(log.fd)
        try:
            os.dup2(full, log.fd)
            log.write({"type": "output", "n": -1})
            log.flush()
        finally:
            os.dup2(real, log.fd)
            os.close(real)
            os.close(full)
        assert not (tmp_path / "log.jsonl.1").exists()


class TestLogIsARegularFile:
    def test_a_fifo_is_refused_without_blocking(self, tmp_path):
        """A FIFO planted as the log is refused at once (opening it to read would block)."""
        os.mkfifo(tmp_path / "log.jsonl")
        started = time.monotonic()
        with pytest.raises(NotALog, match="FIFO"):
            list(read_log(str(tmp_path)))
        assert time.monotonic() - started < 2

    def test_a_symlink_is_never_followed(self, tmp_path):
        """A symlink planted as the log (to a readable file) is refused, never read."""
        (tmp_path / "secret").write_text('{"type":"log_start","base":0}\n{"type":"output","data":"host"}\n')
        os.symlink(tmp_path / "secret", tmp_path / "log.jsonl")
        with pytest.raises(NotALog, match="symbolic link"):
            list(read_log(str(tmp_path)))

    def test_the_service_turns_it_into_one_line(self, tmp_path):
        """Through the service, a planted FIFO is a HostError naming the container."""
        svc = make_service()
        svc.provision(name="web")
        svc.ports.agents = lambda run_dir, server_key=None: _RealLogs(str(tmp_path))
        os.mkfifo(tmp_path / "log.jsonl")
        with pytest.raises(HostError, match="^reading the log of container web failed: a FIFO"):
            list(svc.containers.logs("web"))


class _RealLogs:
    """An agent client whose logs are the real reader over a directory."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir

    def logs(self, since: int = 0, follow: bool = False):
        return read_log(self.run_dir, since, follow)


class TestFailedStart:
    def test_an_agent_that_never_answers_leaves_the_container_stopped(self):
        """start() raising (agent unavailable) stops the container it started."""
        svc = make_service()
        c = svc.provision(name="web")
        svc.ports.agents(svc.settings.layout.agent_dir("web")).ready = False
        with pytest.raises(AgentUnavailable):
            c.start()
        assert svc.ports.driver.containers["web"] == "STOPPED"
        assert ("start", "web") in svc.ports.driver.events and ("stop", "web") in svc.ports.driver.events


class TestStoredCopy:
    def test_a_load_that_finds_its_image_stored_replaces_a_damaged_copy(self):
        """The store's copy no longer holding its id (other bytes in it) is replaced by a
        verified copy of the caller's file before anything mounts it."""
        from tests.unit.test_services import put_image
        svc = make_service()
        image_id = put_image(svc, "/in/app.aimg")
        svc.load_image("/in/app.aimg", name="one")
        stored = svc.settings.layout.image_file(image_id, "user")
        other_id = put_image(svc, "/in/other.aimg", startup_commands=["evil"])
        svc.ports.fs.files[stored] = svc.ports.fs.files["/in/other.aimg"]  # sealed, but another image
        two = svc.load_image("/in/app.aimg", name="two")
        assert other_id != image_id and two.image == image_id
        assert svc.ports.fs.files[stored] == svc.ports.fs.files["/in/app.aimg"]
        assert two.startup_commands == ()


def _enospc() -> OSError:
    return OSError(28, "No space left on device")


class TestOSErrorAtTheBoundary:
    """Every public use case turns an OSError from the host into one HostError line."""

    def test_create_file(self):
        """A write in the container's root failing (a full disk) is a HostError naming the action."""
        svc = make_service()
        c = svc.provision("web")
        svc.ports.fs.faults["write_in_root"] = _enospc()
        with pytest.raises(HostError, match="^create file failed: No space left on device: the data root"):
            c.create_file("/root/f", "x")

    def test_stop(self):
        """The driver's stop failing with an OSError is a HostError."""
        svc = make_service()
        c = svc.provision("web")
        c.start()
        svc.ports.driver.faults["stop"] = PermissionError(13, "Permission denied")
        with pytest.raises(HostError, match="^stop failed: Permission denied"):
            c.stop()

    def test_destroy(self):
        """A directory that cannot be removed (busy) is a HostError, not a traceback."""
        svc = make_service()
        c = svc.provision("web")
        svc.ports.fs.faults["remove_tree"] = OSError(16, "Device or resource busy", "/srv/ac/mnt/web")
        with pytest.raises(HostError, match=r"^destroy failed: Device or resource busy \(/srv/ac/mnt/web\)"):
            c.destroy()

    def test_run(self):
        """An OSError while a command runs (its output cannot be written: a closed pipe) is a HostError."""
        svc = make_service()
        c = svc.provision("web")
        svc.ports.agents(svc.settings.layout.agent_dir("web")).reply = (0, b"out\n", b"")

        def closed_pipe(stream, line):
            raise BrokenPipeError(32, "Broken pipe")

        with pytest.raises(HostError, match="^run failed: Broken pipe"):
            c.run("echo out", on_output=closed_pipe)

    @pytest.mark.parametrize("edit, action", [
        (lambda svc: svc.containers.set_startup_commands("web", ["a"]), "set startup commands"),
        (lambda svc: svc.containers.add_startup_command("web", "a"), "add startup command"),
        (lambda svc: svc.containers.remove_startup_command("web", 0), "remove startup command")])
    def test_startup_commands(self, edit, action):
        """The state failing to be written (a full disk) is a HostError; the commands stay as they were."""
        svc = make_service()
        svc.provision("web").add_startup_command("keep")
        svc.ports.repo.fail = _enospc()
        with pytest.raises(HostError, match=f"^{action} failed: No space left on device"):
            edit(svc)
        svc.ports.repo.fail = None
        assert svc.get("web").startup_commands == ("keep",)

    def test_remove_image(self):
        """An image file that cannot be removed is a HostError."""
        from tests.unit.test_services import put_image
        svc = make_service()
        image_id = put_image(svc, "/in/app.aimg")
        svc.load_image("/in/app.aimg", name="app").destroy()
        svc.ports.fs.faults["remove_file"] = PermissionError(13, "Permission denied")
        with pytest.raises(HostError, match="^remove image failed: Permission denied"):
            svc.remove_image(image_id)

    def test_mount_and_unmount_image(self):
        """The image viewer failing with an OSError is a HostError, for mount and unmount."""
        svc = make_service()
        base = svc.bases.ensure_default()
        svc.ports.viewer.fail = FileNotFoundError(2, "No such file or directory", "/view")
        with pytest.raises(HostError, match=r"^mount image failed: No such file or directory \(/view\)"):
            svc.mount_image(base.id, "/view")
        with pytest.raises(HostError, match=r"^unmount image failed: No such file or directory \(/view\)"):
            svc.unmount_image("/view")
