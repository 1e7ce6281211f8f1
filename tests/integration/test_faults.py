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

import pytest

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
