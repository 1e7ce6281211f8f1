"""Faults on real LXC: a save killed while freezing, a zombie owner, a start whose agent hangs,
a log the container swapped for a FIFO or a symlink. Each test performs the fault for real,
checks its precondition, then that its effect did not happen."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from appcontainers.domain.exceptions import AppContainersError

SAVE = textwrap.dedent("""
    import json, sys, appcontainers
    svc = appcontainers.setup_service(**json.loads(sys.argv[1]))
    svc.get(sys.argv[2]).save_image(sys.argv[3])
""")


def _wait_for(predicate, timeout: float = 30.0, what: str = "a condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _freezer_dir(svc, name: str) -> str:
    """The v1 freezer cgroup directory of the container's init (this host's LXC uses it)."""
    pid = svc.ports.driver.pid(name)
    with open(f"/proc/{pid}/cgroup") as f:
        rel = next(line.split(":", 2)[2].strip() for line in f if line.split(":")[1] == "freezer")
    return "/sys/fs/cgroup/freezer" + rel


@contextlib.contextmanager
def _unfreezable_task(cgroup_dir: str, work):
    """A task in the container's freezer cgroup that cannot freeze: a cat reading from a FUSE
    filesystem whose daemon is stopped (after the freezer's fake signal it waits killable, not
    freezable), so freezing the cgroup stays FREEZING until the daemon answers."""
    src, mnt = work / "src", work / "mnt"
    src.mkdir()
    mnt.mkdir()
    (src / "f").write_text("x")
    subprocess.run(["mksquashfs", str(src), str(work / "t.sqfs"), "-quiet", "-no-progress"], check=True)
    daemon = subprocess.Popen(["squashfuse", "-f", str(work / "t.sqfs"), str(mnt)])
    cat = None
    try:
        _wait_for(lambda: os.path.ismount(mnt), what="squashfuse")
        os.kill(daemon.pid, signal.SIGSTOP)
        cat = subprocess.Popen(["cat", str(mnt / "f")], stdout=subprocess.DEVNULL)
        _wait_for(lambda: _read(f"/proc/{cat.pid}/wchan") == "request_wait_answer", what="cat to block")
        with open(os.path.join(cgroup_dir, "cgroup.procs"), "w") as f:
            f.write(str(cat.pid))
        yield
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
        if cat is not None:
            cat.wait(timeout=30)
        subprocess.run(["umount", str(mnt)], check=False)
        daemon.terminate()
        daemon.wait(timeout=30)


class TestLeftFrozen:
    @pytest.mark.parametrize("left", ["FREEZING", "FROZEN"])
    def test_gc_thaws_a_container_a_killed_save_left_frozen(self, svc, settings, container, tmp_path, left):
        """A save's process group killed while it froze the container (state FREEZING, or FROZEN):
        gc thaws it and the container runs commands again."""
        container.start()
        freezer = _freezer_dir(svc, container.name)
        with contextlib.ExitStack() as stack:
            if left == "FREEZING":
                stack.enter_context(_unfreezable_task(freezer, tmp_path))
            save = subprocess.Popen([sys.executable, "-c", SAVE, json.dumps(settings), container.name,
                                     str(tmp_path / "s.aimg")], start_new_session=True,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                _wait_for(lambda: _read(os.path.join(freezer, "freezer.state")) == left, what=left)
            finally:
                os.killpg(save.pid, signal.SIGKILL)
                save.wait(timeout=30)
            # Precondition: what lxc-info reports, and the cgroup (a loaded host may show a passing
            # FREEZING on the way to FROZEN: wait for it to settle).
            _wait_for(lambda: svc.ports.driver.state(container.name) == left
                      and _read(os.path.join(freezer, "freezer.state")) == left, what=f"{left} to settle")
            svc.reconcile()
            assert _read(os.path.join(freezer, "freezer.state")) == "THAWED"
            assert svc.ports.driver.state(container.name) == "RUNNING"
        assert container.run("echo thawed").stdout == "thawed\n"
        container.save_image(str(tmp_path / "again.aimg"))  # freezes and thaws again, cleanly
        assert svc.ports.driver.state(container.name) == "RUNNING"
        assert svc.reconcile(dry_run=True) == []
        assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []


PROVISION = textwrap.dedent("""
    import json, sys, appcontainers
    svc = appcontainers.setup_service(**json.loads(sys.argv[1]))
    svc.provision(name=sys.argv[2])
""")


class TestZombieOwner:
    def test_a_provision_whose_process_is_a_zombie_is_repaired_and_removable(self, svc, settings):
        """A provision killed mid-way whose parent has not reaped it (a zombie) counts as dead:
        gc tears it down, and destroy is not refused as 'provisioning by another process'."""
        name = "zombie-owner"
        p = subprocess.Popen([sys.executable, "-c", PROVISION, json.dumps(settings), name],
                             env={**os.environ, "APPCONTAINERS_FAULT": "provision.reserved"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)  # exited, and left unreaped
            assert _read(f"/proc/{p.pid}/stat").split(")")[-1].split()[0] == "Z"  # precondition
            r = svc.ports.repo.read().reservations[name]
            assert r.status == "provisioning" and r.owner.split(":")[0] == str(p.pid)
            assert not svc.ports.procs.alive(r.owner)
            assert any(name in line for line in svc.reconcile(dry_run=True))
            svc.get(name).destroy()  # not refused
            assert name not in {c.name for c in svc.list_containers()}
            assert os.path.exists(f"/proc/{p.pid}")  # still a zombie all along
        finally:
            p.wait(timeout=30)
            if name in {c.name for c in svc.list_containers()}:
                svc.reconcile()


def _stop_init_when_it_appears(svc, name: str, seen: dict) -> None:
    """SIGSTOP the container's init (the agent) as soon as LXC reports it: a hung agent."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pid = svc.ports.driver.pid(name)
        if pid:
            os.kill(pid, signal.SIGSTOP)
            seen["pid"] = pid
            seen["ready_before"] = os.path.exists(os.path.join(svc.settings.layout.agent_dir(name), "ready"))
            return
        time.sleep(0.005)


class TestFailedStart:
    def test_a_start_whose_agent_hangs_stops_the_container(self, settings):
        """start() raising because the agent never answers leaves the container STOPPED, not
        RUNNING with a hung init; a later start works."""
        import appcontainers

        svc = appcontainers.setup_service(**settings, start_timeout=3, stop_timeout=2)
        c = svc.provision()
        try:
            for _ in range(3):  # the agent may, rarely, be ready before it is stopped: try again
                seen: dict = {}
                watcher = threading.Thread(target=_stop_init_when_it_appears, args=(svc, c.name, seen))
                watcher.start()
                try:
                    with pytest.raises(AppContainersError) as e:
                        c.start()
                except pytest.fail.Exception:
                    assert seen.get("ready_before"), "start succeeded although the agent was stopped"
                    watcher.join()
                    c.stop()
                    continue
                watcher.join()
                break
            assert seen.get("pid") and not seen["ready_before"]  # precondition: the agent hung
            assert "agent did not answer" in str(e.value)
            assert svc.get(c.name).state == "STOPPED"
            assert not os.path.exists(f"/proc/{seen['pid']}")  # the hung init is gone too
            c.start()
            assert c.run("echo up").stdout == "up\n"
        finally:
            c.destroy()


class TestLogsOnPlantedFiles:
    @pytest.mark.parametrize("plant", ["mkfifo log.jsonl", "ln -s /etc/shadow log.jsonl"],
                             ids=["fifo", "symlink-to-host-shadow"])
    def test_logs_refuses_what_the_container_put_as_its_log(self, svc, settings, container, plant):
        """The container swaps its agent log for a FIFO or a symlink to /etc/shadow: `logs`
        ends at once with one error line, never blocks, never reads the link's target."""
        container.run("echo before")
        container.run(f"cd /run/appcontainers && rm -f log.jsonl.1 log.jsonl && {plant}")
        host_log = os.path.join(svc.settings.layout.agent_dir(container.name), "log.jsonl")
        st = os.lstat(host_log)  # precondition: the host sees what was planted
        assert (st.st_mode & 0o170000) in (0o010000, 0o120000)
        env = {**os.environ, "APPCONTAINERS_ROOT": settings["root"], "APPCONTAINERS_BRIDGE": settings["bridge"],
               "APPCONTAINERS_SUBNET": settings["subnet"]}
        cli = subprocess.run([sys.executable, "-m", "appcontainers.entrypoints.cli", "logs", container.name],
                             capture_output=True, text=True, timeout=60, env=env)
        assert cli.returncode == 1
        assert cli.stderr.startswith("appcontainers: error: reading the log of container") and \
            cli.stderr.count("\n") == 1, cli.stderr
        assert "root:" not in cli.stdout + cli.stderr  # nothing of /etc/shadow
