"""Stored images on real LXC: a writer kept across `load --move` never changes what the store
serves. Each test performs the attack for real, checks its precondition, then that its effect
did not happen."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
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
            os.chmod(mine, 0o644)
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
                    mst = os.stat(mine)  # and it is still theirs (sealing it first must be undone)
                    assert (mst.st_uid, mst.st_gid, mst.st_mode & 0o777) == (NOBODY, NOBODY, 0o644)
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
