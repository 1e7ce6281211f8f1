"""FuseMounter (squashfuse + fuse-overlayfs) and ImageFS (our Python squashfs reader) on real images."""
import contextlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest

from appcontainers.adapters.mounts.fuse_overlay import FuseMounter, fuse_available
from appcontainers.adapters.mounts.mountinfo import mounts
from appcontainers.adapters.host.process import run
from appcontainers.adapters.aimg.squashfs import SquashfsCodec
from appcontainers.domain.exceptions import AppContainersError, InvalidValue

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, trusted.* xattrs, FUSE mounts)"),
    pytest.mark.skipif(not shutil.which("mksquashfs"), reason="needs squashfs-tools"),
    pytest.mark.skipif(not fuse_available(), reason="needs /dev/fuse, squashfuse and fuse-overlayfs"),
]

OPAQUE = "trusted.overlay.opaque"
BIG = os.urandom(5 * 1024 * 1024 + 123)


def _manifest(parent=None):
    m = {"format_version": 1, "name": "t", "created": 0.0}
    if parent:
        m["parent"] = parent
    return m


def _write(path, data, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """(upper.aimg, base.aimg): a base image and a layer on it with a whiteout and an opaque dir."""
    root = tmp_path_factory.mktemp("fuse-images")
    base, upper = root / "base", root / "upper"
    _write(f"{base}/etc/hostname", b"base\n")
    _write(f"{base}/etc/keep", b"kept\n")
    _write(f"{base}/etc/gone", b"deleted in the upper layer\n")
    _write(f"{base}/opq/old", b"hidden by the opaque dir\n")
    _write(f"{base}/opq/sub/deep", b"hidden too\n")
    _write(f"{base}/lib/a", b"from base\n")
    _write(f"{base}/big.bin", BIG)
    _write(f"{base}/bin/tool", b"#!/bin/sh\necho tool\n", 0o755)
    os.chmod(f"{base}/bin/tool", 0o4755)
    _write(f"{base}/data/secret", b"s3cret\n", 0o600)
    os.chown(f"{base}/data/secret", 1234, 4321)
    os.chmod(f"{base}/data/secret", 0o600)
    os.symlink("etc/keep", f"{base}/link")
    os.setxattr(f"{base}/etc/keep", "user.note", b"hello")
    _write(f"{upper}/etc/hostname", b"upper\n")
    os.mknod(f"{upper}/etc/gone", stat.S_IFCHR, os.makedev(0, 0))
    _write(f"{upper}/opq/new", b"only this\n")
    os.setxattr(f"{upper}/opq", OPAQUE, b"y")
    _write(f"{upper}/lib/b", b"from upper\n")
    os.symlink("big.bin", f"{upper}/ulink")
    codec = SquashfsCodec()
    base_id = codec.pack(str(base), _manifest(), str(root / "base.aimg"))
    codec.pack(str(upper), _manifest(base_id), str(root / "upper.aimg"))
    return str(root / "upper.aimg"), str(root / "base.aimg")


def _fuse_mounts_under(path):
    prefix = os.path.realpath(path).rstrip("/") + "/"
    return [p for p, fstype in mounts() if p.startswith(prefix) and fstype.startswith("fuse")]


def _daemons_using(path):
    """Live processes whose command line names path (our squashfuse/fuse-overlayfs/ImageFS daemons)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and int(pid) != os.getpid() and os.fsencode(path) in cmd:
            pids.append(int(pid))
    return pids


@pytest.fixture
def workdir(tmp_path):
    """A fresh dir; afterwards nothing is mounted under it and no daemon of ours runs."""
    try:
        yield tmp_path
    finally:
        for point in sorted(_fuse_mounts_under(tmp_path), key=len, reverse=True):
            subprocess.run(["fusermount3", "-u", "-z", point], capture_output=True)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in _daemons_using(str(tmp_path)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            time.sleep(0.2)


def _mount_options(point):
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == os.path.realpath(point):
                return set(fields[5].split(","))
    return None


def _read(path):
    with open(path, "rb") as f:
        return f.read()


class TestFuseMounter:
    def test_merges_layers_writes_to_upper_and_unmounts_everything(self, images, workdir):
        """The stack shows overlay semantics, writes land in upper, unmount leaves no FUSE mount."""
        upper_img, base_img = images
        points = [str(workdir / "l0"), str(workdir / "l1")]
        upper, work, target = str(workdir / "upper"), str(workdir / "work"), str(workdir / "rootfs")
        m = FuseMounter()
        m.mount([upper_img, base_img], points, upper, work, target)
        try:
            assert m.is_mounted(target)
            assert sorted(m.mounted(str(workdir))) == sorted([*points, target])
            assert {"nosuid", "nodev"}.isdisjoint(_mount_options(target))  # a rootfs needs both
            assert _read(f"{target}/etc/hostname") == b"upper\n"
            assert _read(f"{target}/etc/keep") == b"kept\n"
            assert not os.path.lexists(f"{target}/etc/gone")
            assert sorted(os.listdir(f"{target}/opq")) == ["new"]
            assert sorted(os.listdir(f"{target}/lib")) == ["a", "b"]
            assert _read(f"{target}/big.bin") == BIG
            assert os.stat(f"{target}/bin/tool").st_mode & 0o7777 == 0o4755
            _write(f"{target}/etc/added", b"new\n")
            with open(f"{target}/etc/keep", "ab") as f:
                f.write(b"more\n")
            os.unlink(f"{target}/lib/a")
            assert _read(f"{upper}/etc/added") == b"new\n"
            assert _read(f"{upper}/etc/keep") == b"kept\nmore\n"
            st = os.lstat(f"{upper}/lib/a")
            assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0  # a kernel-overlay whiteout
        finally:
            m.unmount(target, points)
        assert _fuse_mounts_under(workdir) == []
        assert not m.is_mounted(target)

    def test_failed_mount_rolls_back(self, images, workdir):
        """A layer that cannot mount leaves none of the others mounted."""
        upper_img, _ = images
        points = [str(workdir / "l0"), str(workdir / "l1")]
        with pytest.raises(AppContainersError):
            FuseMounter().mount([upper_img, str(workdir / "missing.aimg")], points, str(workdir / "u"),
                                str(workdir / "w"), str(workdir / "rootfs"))
        assert _fuse_mounts_under(workdir) == []


@contextlib.contextmanager
def image_mounted(layers, mountpoint):
    """ImageFS daemon at mountpoint (the command returns once it is up); always unmounted."""
    os.makedirs(mountpoint, exist_ok=True)
    try:
        run([sys.executable, "-m", "appcontainers.adapters.aimg.image_reader", *layers, mountpoint], timeout=30)
        yield mountpoint
    finally:
        if _fuse_mounts_under(os.path.dirname(mountpoint)):
            run(["fusermount3", "-u", mountpoint], timeout=30)


class TestImageFS:
    def test_presents_merged_layers_byte_exact(self, images, workdir):
        """Upper wins, whiteouts and opaque dirs hide, contents, links, modes and owners are exact."""
        with image_mounted(list(images), str(workdir / "mnt")) as mnt:
            assert _read(f"{mnt}/etc/hostname") == b"upper\n"
            assert _read(f"{mnt}/etc/keep") == b"kept\n"
            assert sorted(os.listdir(f"{mnt}/etc")) == ["hostname", "keep"]
            assert not os.path.lexists(f"{mnt}/etc/gone")
            assert sorted(os.listdir(f"{mnt}/opq")) == ["new"]
            assert not os.path.lexists(f"{mnt}/opq/sub/deep")
            assert sorted(os.listdir(f"{mnt}/lib")) == ["a", "b"]
            assert _read(f"{mnt}/big.bin") == BIG
            with open(f"{mnt}/big.bin", "rb") as f:  # random access across blocks
                f.seek(3 * 131072 - 7)
                assert f.read(20) == BIG[3 * 131072 - 7:3 * 131072 + 13]
            assert os.readlink(f"{mnt}/link") == "etc/keep" and _read(f"{mnt}/link") == b"kept\n"
            assert os.readlink(f"{mnt}/ulink") == "big.bin"
            assert os.stat(f"{mnt}/bin/tool").st_mode == stat.S_IFREG | 0o4755
            st = os.stat(f"{mnt}/data/secret")
            assert (st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_size) == (0o600, 1234, 4321, 7)
            assert os.getxattr(f"{mnt}/etc/keep", "user.note") == b"hello"
            assert OPAQUE not in os.listxattr(f"{mnt}/opq")
            with pytest.raises(OSError):
                _write(f"{mnt}/etc/new", b"x")
        assert _fuse_mounts_under(workdir) == []

    def test_foreground_serves_until_unmounted(self, images, workdir):
        """With -f the command serves in the foreground and exits 0 once unmounted."""
        mnt = str(workdir / "mnt")
        os.makedirs(mnt)
        argv = [sys.executable, "-m", "appcontainers.adapters.aimg.image_reader", "-f", *images, mnt]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 15
            while not _fuse_mounts_under(workdir):
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.05)
            assert _read(f"{mnt}/lib/b") == b"from upper\n"
            run(["fusermount3", "-u", mnt], timeout=30)
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stderr.close()

    def test_refuses_a_layer_without_its_parent(self, images, workdir):
        """A layered image alone is refused before anything is mounted."""
        from appcontainers.adapters.aimg.image_reader import mount_image

        os.makedirs(workdir / "mnt")
        with pytest.raises(InvalidValue, match="parent"):
            mount_image([images[0]], str(workdir / "mnt"))
        assert _fuse_mounts_under(workdir) == []


class TestImageViewer:
    def test_mounts_the_merged_layers_and_unmounts(self, images, workdir):
        """The ImageViewer adapter (behind `image mount`) makes the directory, serves the layers
        merged read-only there once mount() returns, and unmount() ends it."""
        from appcontainers.adapters.aimg.image_viewer import ImageViewer

        viewer, view = ImageViewer(), str(workdir / "view" / "here")
        viewer.mount(list(images), view)
        try:
            assert _fuse_mounts_under(workdir) == [os.path.realpath(view)]
            assert _read(f"{view}/etc/hostname") == b"upper\n" and _read(f"{view}/lib/a") == b"from base\n"
            assert not os.path.lexists(f"{view}/etc/gone")
        finally:
            if _fuse_mounts_under(workdir):
                viewer.unmount(view)
        assert _fuse_mounts_under(workdir) == []
        with pytest.raises(AppContainersError):
            viewer.unmount(view)  # not mounted any more: the error says so, nothing is hidden
