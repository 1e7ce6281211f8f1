"""Faults and stored images on real LXC: each test performs the attack or fault for real,
checks that its precondition holds, then that its effect did not happen."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import time
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading

import pytest

from appcontainers.domain.exceptions import AppContainersError
from tests.conftest import TEST_NET, _stop_containers, _umount_under

NOBODY = 65534
HOST_PYTHON = "/usr/bin/python3"  # the venv's python is under /root, which nobody cannot walk

# Run as nobody: open the file for writing, say so, and on each line from stdin either
# overwrite the whole file with another file's bytes or exit.
WRITER = textwrap.dedent("""
    import os, sys
    fd = os.open(sys.argv[1], os.O_WRONLY)
    print(fd, flush=True)
    for line in sys.stdin:
        if line.strip() == "exit":
            break
        with open(line.strip(), "rb") as f:
            data = f.read()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        print("rewritten", flush=True)
""")


def _sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _image_body_sha(path: str) -> str:
    """What the trailer seals: sha256 of everything before the 64-byte trailer."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()[:-64]).hexdigest()


def _writers_of(path: str, pid: int) -> list[int]:
    """The fds of process pid open for writing on path's inode (read from /proc)."""
    st = os.stat(path)
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            other = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if (other.st_dev, other.st_ino) != (st.st_dev, st.st_ino):
            continue
        with open(f"/proc/{pid}/fdinfo/{fd}") as f:
            flags = int(next(line for line in f if line.startswith("flags:")).split()[1], 8)
        if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
            found.append(int(fd))
    return found


@pytest.fixture(scope="module")
def two_images(svc, tmp_path_factory):
    """Two flat images with /root/which = clean and evil: (clean path, evil path)."""
    d = tmp_path_factory.mktemp("faults")
    os.chmod(d, 0o755)
    c = svc.provision()
    try:
        c.run("echo clean > /root/which")
        c.stop()
        clean = str(d / "clean.aimg")
        c.save_image(clean)
        c.run("echo evil > /root/which")
        c.stop()
        evil = str(d / "evil.aimg")
        c.save_image(evil)
    finally:
        c.destroy()
    for p in (clean, evil):
        os.chmod(p, 0o644)
    return clean, evil


def _drop_user_images(svc, *ids):
    for c in svc.list_containers():
        if c.image in ids:
            c.destroy()
    for i in ids:
        try:
            svc.remove_image(i)
        except Exception:
            pass


class TestStorePoisoning:
    def test_a_writer_kept_across_load_move_never_changes_the_stored_image(self, svc, data_root, two_images):
        """A user's O_WRONLY fd on the file load --move takes: the store's copy stays the verified
        bytes after the user rewrites through it, and a later load of the clean image serves them."""
        clean, evil = two_images
        clean_id = _image_body_sha(clean)
        _drop_user_images(svc, clean_id)
        work = tempfile.mkdtemp(dir=os.path.dirname(data_root))  # the data root's filesystem
        writer = None
        try:
            os.chown(work, NOBODY, NOBODY)
            mine = os.path.join(work, "mine.aimg")
            shutil.copyfile(clean, mine)
            os.chown(mine, NOBODY, NOBODY)
            theirs = os.path.join(work, "evil.aimg")  # the bytes they want served instead
            shutil.copyfile(evil, theirs)
            os.chown(theirs, NOBODY, NOBODY)
            writer = subprocess.Popen([HOST_PYTHON, "-c", WRITER, mine], user=NOBODY, group=NOBODY, cwd="/",
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert writer.stdout.readline().strip().isdigit()
            assert _writers_of(mine, writer.pid), "precondition: nobody holds the file open for writing"
            stored = os.path.join(data_root, "images", "user", clean_id + ".aimg")

            c = svc.load_image(mine, move=True)
            try:
                assert c.image == clean_id
                writer.stdin.write(theirs + "\n")
                writer.stdin.flush()
                assert writer.stdout.readline().strip() == "rewritten"
                # The rewrite happened, through the user's fd, to whatever that fd is on:
                if os.path.exists(mine):  # not moved: the user rewrote only their own file
                    assert _sha(mine) == _sha(evil)
                st = os.stat(stored)
                assert (st.st_uid, st.st_mode & 0o777, st.st_nlink) == (0, 0o600, 1)
                assert _image_body_sha(stored) == clean_id and _sha(stored) == _sha(clean)
                c.start()
                assert c.run("cat /root/which").stdout == "clean\n"
            finally:
                c.destroy()
            again = svc.load_image(clean)  # the clean image is in the store: its copy is reused
            try:
                assert again.image == clean_id
                assert again.run("cat /root/which").stdout == "clean\n"
            finally:
                again.destroy()
        finally:
            if writer is not None:
                writer.stdin.close()
                writer.wait(timeout=30)
            shutil.rmtree(work, ignore_errors=True)
            _drop_user_images(svc, clean_id)

    def test_a_move_without_writers_still_moves_and_seals(self, svc, data_root, two_images):
        """With no writer left, load --move still moves the very file, root's and 0600."""
        clean, _ = two_images
        clean_id = _image_body_sha(clean)
        _drop_user_images(svc, clean_id)
        work = tempfile.mkdtemp(dir=os.path.dirname(data_root))
        try:
            mine = os.path.join(work, "mine.aimg")
            shutil.copyfile(clean, mine)
            os.chown(mine, NOBODY, NOBODY)
            inode = os.stat(mine).st_ino
            c = svc.load_image(mine, move=True)
            try:
                stored = os.path.join(data_root, "images", "user", clean_id + ".aimg")
                st = os.stat(stored)
                assert not os.path.exists(mine)
                assert (st.st_ino, st.st_uid, st.st_mode & 0o777) == (inode, 0, 0o600)
            finally:
                c.destroy()
        finally:
            shutil.rmtree(work, ignore_errors=True)
            _drop_user_images(svc, clean_id)

    def test_a_damaged_store_copy_is_replaced_not_served(self, svc, data_root, two_images):
        """If the store's copy no longer matches its id (here: rewritten by root), the next load of
        the clean image verifies it, replaces it with a verified copy and serves the clean tree."""
        clean, evil = two_images
        clean_id = _image_body_sha(clean)
        _drop_user_images(svc, clean_id)
        first = svc.load_image(clean)
        first.destroy()
        stored = os.path.join(data_root, "images", "user", clean_id + ".aimg")
        try:
            shutil.copyfile(evil, stored)
            assert _sha(stored) == _sha(evil)  # precondition: the store holds other bytes
            c = svc.load_image(clean)
            try:
                assert _sha(stored) == _sha(clean)
                assert c.run("cat /root/which").stdout == "clean\n"
            finally:
                c.destroy()
        finally:
            _drop_user_images(svc, clean_id)


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
            time.sleep(0.2)
            assert svc.ports.driver.state(container.name) == left  # precondition: what lxc-info reports
            assert _read(os.path.join(freezer, "freezer.state")) == left
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


# A data root of its own on a small tmpfs, with its own bridge and the top /29 of our subnet
# (a more specific route than the main root's /24, whose containers get low addresses), so the
# two roots' reconciles never take each other's veths.
SMALL_BRIDGE = TEST_NET.network_address.exploded.rsplit(".", 1)[0].replace(".", "")[-3:]
SMALL_BRIDGE = f"acfull{SMALL_BRIDGE}"[:15]
SMALL_SUBNET = str(list(TEST_NET.subnets(new_prefix=29))[-1])


@pytest.fixture(scope="module")
def small(data_root):
    """(service, running container) on a 200 MiB tmpfs data root."""
    import appcontainers

    root = tempfile.mkdtemp(prefix="appcontainers-test-small-", dir="/var/tmp")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200m,mode=0711", "tmpfs", root], check=True)
    subprocess.run(["ip", "link", "del", SMALL_BRIDGE], capture_output=True)
    try:
        svc = appcontainers.setup_service(root=root, bridge=SMALL_BRIDGE, subnet=SMALL_SUBNET)
        c = svc.provision(name="full-disk")
        c.start()
        yield svc, c
    finally:
        _stop_containers(os.path.join(root, "containers"))
        _umount_under(root)
        subprocess.run(["umount", root], check=False)
        subprocess.run(["ip", "link", "del", SMALL_BRIDGE], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _fill(root: str, name: str = "filler") -> str:
    """Fill root's filesystem to the last block; the filler's path."""
    filler = os.path.join(root, name)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


@pytest.fixture
def disk_full(small):
    svc, c = small
    filler = _fill(svc.settings.root)
    try:
        st = os.statvfs(svc.settings.root)
        assert st.f_bavail == 0  # precondition: not one block left
        with pytest.raises(OSError):  # and nothing more can be written there
            with open(os.path.join(svc.settings.root, "probe"), "wb") as f:
                f.write(b"x" * 8192)
                f.flush()
                os.fsync(f.fileno())
        yield filler
    finally:
        for f in (filler, *(os.path.join(svc.settings.root, n) for n in ("probe", "filler2"))):
            if os.path.exists(f):
                os.unlink(f)


def _state(svc) -> dict:
    with open(os.path.join(svc.settings.root, "resources.json")) as f:
        return json.load(f)  # a corrupted file would not parse


class TestDiskFull:
    def test_the_agent_keeps_running_and_reports_what_its_log_lost(self, small, disk_full):
        """With the data root full the agent (pid 1) runs commands on, their output intact;
        once space is back the log says how many records it lost."""
        svc, c = small
        r = c.run("i=0; while [ $i -lt 3000 ]; do echo line-$i; i=$((i+1)); done")
        assert r.exit_code == 0 and r.stdout.splitlines() == [f"line-{i}" for i in range(3000)]
        assert c.run("echo still-here").stdout == "still-here\n"
        assert svc.get(c.name).state == "RUNNING"
        os.unlink(disk_full)  # space is back
        assert c.run("echo after").stdout == "after\n"
        records = [rec for _, rec in c.logs()]
        lost = [rec for rec in records if rec.get("type") == "log_lost"]
        assert lost and lost[0]["records"] > 0 and lost[0]["error"] == "No space left on device"
        assert any(rec.get("type") == "output" and rec.get("data") == "after\n" for rec in records)

    def test_provision_load_start_save_fail_with_one_clear_line(self, small, disk_full, two_images, tmp_path):
        """provision, load, start and save on a full data root raise one AppContainersError line
        (no OSError traceback); resources.json still parses and holds the same containers."""
        svc, c = small
        before = _state(svc)
        clean, _ = two_images
        calls = {
            "provision": lambda: svc.provision(),
            "load": lambda: svc.load_image(clean),
            "save": lambda: c.save_image(os.path.join(svc.settings.root, "full.aimg")),
        }
        for what, call in calls.items():
            with pytest.raises(AppContainersError) as e:
                call()
            assert "\n" not in str(e.value) and not isinstance(e.value, OSError), what
            assert _state(svc)["reservations"].keys() == before["reservations"].keys(), what
        c.stop()
        _fill(svc.settings.root, "filler2")  # what the failed calls freed when they cleaned up
        with pytest.raises(AppContainersError, match="^start failed: No space left on device"):
            c.start()
        assert svc.get(c.name).state == "STOPPED"  # a failed start leaves nothing running
        assert _state(svc)["reservations"].keys() == before["reservations"].keys()
        assert not [f for f in os.listdir(svc.settings.root) if f.endswith(".tmp") or f == "full.aimg"]

    def test_everything_works_again_once_space_is_back(self, small, disk_full):
        """After the failures above, freeing space is enough: gc finds nothing, start and run work."""
        svc, c = small
        os.unlink(disk_full)
        assert svc.reconcile(dry_run=True) == []
        c.start()
        assert c.run("echo back").stdout == "back\n"


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
