"""Save and load .aimg images on real containers: round trips, ephemeral, layered, bad input."""
from __future__ import annotations

import os
import subprocess

import pytest

from appcontainers.domain.exceptions import ImageCorrupt, InUse, InvalidValue, UnknownContainer, UnknownImage


@pytest.fixture(scope="module")
def saved(svc, tmp_path_factory, data_root):
    """A container with a varied tree, saved flat; yields (image, path, container name)."""
    c = svc.provision()
    c.run(
        "mkdir -p /srv/data && cd /srv/data && echo hello > f && chmod 640 f && chown 1234:5678 f"
        " && ln -s f link && ln f hard && echo secret > s && chmod 4755 s"
        " && rm -f /etc/profile; echo done"
    )
    # busybox has no setfattr: set the xattr from the host side of the container's rootfs.
    os.setxattr(os.path.join(data_root, "mnt", c.name, "rootfs", "srv/data/f"), "user.k", b"v")
    c.add_startup_command("echo started-by-manifest > /tmp/from-manifest")
    path = str(tmp_path_factory.mktemp("img") / "app.aimg")
    c.stop()
    image = c.save_image(path)
    yield image, path, c
    c.destroy()


def _loaded(svc, path, **kw):
    c = svc.load_image(path, **kw)
    return c


class TestSaveLoad:
    def test_round_trip_keeps_files_modes_owners_links(self, svc, saved):
        """Files, modes, ownership, symlinks and hard links survive save then load."""
        image, path, _ = saved
        c = _loaded(svc, path)
        try:
            assert os.getxattr(os.path.join(svc.settings.root, "mnt", c.name, "rootfs", "srv/data/f"), "user.k") == b"v"
            r = c.run("cd /srv/data && cat f && stat -c '%a %u %g %h' f s && readlink link"
                      " && [ $(stat -c %i f) = $(stat -c %i hard) ] && echo same-inode"
                      " && test ! -e /etc/profile && echo deleted-stays-deleted")
            assert r.stdout == "hello\n640 1234 5678 2\n4755 0 0 1\nf\nsame-inode\ndeleted-stays-deleted\n", r.stderr
        finally:
            c.destroy()

    def test_image_id_is_the_sha256_and_manifest_carries_startup_commands(self, svc, saved):
        """The returned Image's id verifies, and the startup command comes back with the load."""
        import hashlib
        image, path, _ = saved
        with open(path, "rb") as f:
            data = f.read()
        assert hashlib.sha256(data[:-64]).hexdigest() == image.id
        c = _loaded(svc, path)
        try:
            assert c.startup_commands == ("echo started-by-manifest > /tmp/from-manifest",)
            c.start()
            assert c.run("cat /tmp/from-manifest").stdout == "started-by-manifest\n"
        finally:
            c.destroy()

    def test_ephemeral_writes_vanish_and_container_goes_on_stop(self, svc, saved, data_root):
        """An ephemeral container's upper lives in overlays/tmp and is removed with it at stop."""
        _, path, _ = saved
        c = _loaded(svc, path, ephemeral=True)
        name = c.name
        c.run("echo scratch > /root/scratch")
        assert os.path.isdir(os.path.join(data_root, "overlays", "tmp", name))
        c.stop()
        with pytest.raises(UnknownContainer):
            svc.get(name)
        assert not os.path.exists(os.path.join(data_root, "overlays", "tmp", name))
        c2 = _loaded(svc, path)
        try:
            assert c2.run("test -e /root/scratch").exit_code == 1
        finally:
            c2.destroy()

    def test_persistent_writes_survive_stop_start(self, svc, saved):
        """A persistent container keeps its writes across stop and start."""
        _, path, _ = saved
        c = _loaded(svc, path)
        try:
            c.run("echo kept > /root/kept")
            c.stop()
            c.start()
            assert c.run("cat /root/kept").stdout == "kept\n"
        finally:
            c.destroy()

    def test_layered_save_holds_only_changes_and_loads_with_parent(self, svc, saved, tmp_path):
        """flatten=False packs the upper layer only, records the parent, and loads on top of it."""
        image, path, _ = saved
        c = _loaded(svc, path)
        try:
            c.run("echo layer > /root/layer-file; rm /srv/data/s")
            c.stop()
            child_path = str(tmp_path / "child.aimg")
            child = c.save_image(child_path, flatten=False)
        finally:
            c.destroy()
        assert child.parent == image.id
        assert os.path.getsize(child_path) < os.path.getsize(path) / 4
        d = _loaded(svc, child_path)
        try:
            r = d.run("cat /root/layer-file /srv/data/f; test -e /srv/data/s || echo s-gone")
            assert r.stdout == "layer\nhello\ns-gone\n"
        finally:
            d.destroy()
        with pytest.raises(InUse):
            svc.remove_image(image.id)  # the child image still needs it

    def test_save_running_container_is_consistent(self, svc, container, tmp_path):
        """Saving a running container freezes it for the copy and leaves it running."""
        container.run("echo live > /root/live")
        img = container.save_image(str(tmp_path / "live.aimg"))
        assert container.state == "RUNNING"
        c = _loaded(svc, str(tmp_path / "live.aimg"))
        try:
            assert c.run("cat /root/live").stdout == "live\n"
            assert c.image == img.id
        finally:
            c.destroy()


class TestBadImages:
    def _variants(self, path, tmp_path):
        data = open(path, "rb").read()
        out = {}
        out["truncated"] = data[:-1]
        out["half"] = data[: len(data) // 2]
        flipped = bytearray(data)
        flipped[len(data) // 3] ^= 0xFF
        out["altered"] = bytes(flipped)
        out["foreign"] = b"\x7fELF" + os.urandom(5000)
        out["plain-squashfs"] = data[:-64]
        return out

    def test_every_malformed_file_is_refused_and_nothing_changes(self, svc, saved, tmp_path, data_root):
        """Truncated, altered, foreign and trailer-less files: ImageCorrupt, no container, no import."""
        _, path, _ = saved
        before = ({c.name for c in svc.list_containers()}, {i.id for i in svc.list_images()},
                  sorted(os.listdir(os.path.join(data_root, "images", "user"))))
        for label, data in self._variants(path, tmp_path).items():
            bad = tmp_path / f"{label}.aimg"
            bad.write_bytes(data)
            with pytest.raises(ImageCorrupt):
                svc.load_image(str(bad))
        with pytest.raises(ImageCorrupt):
            svc.load_image(str(tmp_path))  # a directory
        with pytest.raises(ImageCorrupt):
            svc.load_image(str(tmp_path / "missing.aimg"))
        after = ({c.name for c in svc.list_containers()}, {i.id for i in svc.list_images()},
                 sorted(os.listdir(os.path.join(data_root, "images", "user"))))
        assert after == before

    def test_missing_parent_is_refused(self, svc, tmp_path):
        """A layered image whose parent is not in the store is refused, nothing imported."""
        from appcontainers.adapters.aimg.squashfs import SquashfsCodec
        src = tmp_path / "rootfs"
        src.mkdir()
        (src / "x").write_text("x")
        path = str(tmp_path / "orphan.aimg")
        SquashfsCodec().pack(str(src), {"format_version": 1, "name": "orphan", "created": 0.0,
                                        "parent": "ab" * 32}, path)
        before = {i.id for i in svc.list_images()}
        with pytest.raises(UnknownImage):
            svc.load_image(path)
        assert {i.id for i in svc.list_images()} == before

    def test_saving_a_destroyed_container(self, svc, tmp_path):
        """save_image on a destroyed container names it."""
        c = svc.provision()
        c.destroy()
        with pytest.raises(UnknownContainer):
            c.save_image(str(tmp_path / "x.aimg"))
        assert not os.path.exists(tmp_path / "x.aimg")

    def test_save_to_missing_directory(self, container, tmp_path):
        """A destination in a directory that does not exist is refused before packing."""
        with pytest.raises(InvalidValue):
            container.save_image(str(tmp_path / "nope" / "x.aimg"))

    def test_disk_full_during_save_leaves_no_temp_file(self, container, tmp_path):
        """ENOSPC while packing: an error, no image and no temp file in the directory."""
        small = tmp_path / "small"
        small.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(small)], check=True)
        try:
            container.run("head -c 3000000 /dev/urandom > /root/big")
            with pytest.raises(Exception):
                container.save_image(str(small / "full.aimg"))
            assert os.listdir(small) == []
        finally:
            subprocess.run(["umount", str(small)], check=True)


class TestFuse:
    def test_fuse_backend_runs_a_container_and_saves(self, settings, tmp_path):
        """With mounter='fuse' (squashfuse + fuse-overlayfs) a container runs, writes and saves."""
        import appcontainers
        from appcontainers.adapters.mounts.mountinfo import mounts
        fsvc = appcontainers.setup_service(**settings, mounter="fuse")
        c = fsvc.provision()
        try:
            root = os.path.join(settings["root"], "mnt", c.name, "rootfs")
            assert dict(mounts()).get(root) == "fuse.fuse-overlayfs"
            assert c.run("echo via-fuse > /root/f; cat /root/f").stdout == "via-fuse\n"
            assert c.run(["ip", "-4", "-o", "addr", "show", "eth0"]).stdout.split()[3].split("/")[0] == c.ip
            img = c.save_image(str(tmp_path / "fuse.aimg"))
            assert img.id
            c.run("mkdir -p /srv/newdir && echo x > /srv/newdir/f")
            c.save_image(str(tmp_path / "fuse-layer.aimg"), flatten=False)
            import subprocess
            listing = subprocess.run(["unsquashfs", "-l", str(tmp_path / "fuse-layer.aimg")],
                                     capture_output=True, text=True, check=True).stdout
            assert "srv/newdir/f" in listing and ".wh..wh..opq" not in listing
        finally:
            c.destroy()
        assert not [p for p, _ in mounts() if f"/mnt/{c.name}/" in p + "/"]

    def test_image_mount_shows_the_merged_tree(self, svc, saved, settings, tmp_path):
        """`appcontainers image mount` of a layered image shows parent files, changes and deletions."""
        import subprocess, sys
        image, path, _ = saved
        c = svc.load_image(path)
        try:
            c.run("echo top > /root/top; rm /srv/data/s")
            c.stop()
            child = str(tmp_path / "child.aimg")
            c.save_image(child, flatten=False)
        finally:
            c.destroy()
        env = {**os.environ, "APPCONTAINERS_ROOT": settings["root"], "APPCONTAINERS_BRIDGE": settings["bridge"],
               "APPCONTAINERS_SUBNET": settings["subnet"]}
        mnt = tmp_path / "view"
        cli = [sys.executable, "-m", "appcontainers.entrypoints.cli"]
        subprocess.run([*cli, "image", "mount", child, str(mnt)], env=env, check=True, capture_output=True, timeout=60)
        try:
            # The reader presents the image's rootfs, merged with its parent.
            assert (mnt / "root" / "top").read_text() == "top\n"
            assert (mnt / "srv" / "data" / "f").read_text() == "hello\n"
            assert not (mnt / "srv" / "data" / "s").exists()
            assert (mnt / "bin" / "busybox").exists()
        finally:
            subprocess.run([*cli, "image", "umount", str(mnt)], env=env, capture_output=True, timeout=60)
        assert not os.path.ismount(mnt)


class TestRaw:
    def test_raw_container_is_a_plain_directory_and_saves(self, svc, saved, settings, tmp_path):
        """raw=True: the image is unpacked into overlays/raw/<name>, no squashfs or overlay mount;
        writes land in that directory; it saves flattened and loads back normally."""
        from appcontainers.adapters.mounts.mountinfo import mounts
        _, path, _ = saved
        c = svc.load_image(path, raw=True)
        try:
            raw_dir = os.path.join(settings["root"], "overlays", "raw", c.name)
            kinds = {kind for p, kind in mounts() if f"/mnt/{c.name}/" in p + "/"}
            assert "squashfs" not in kinds and "overlay" not in kinds
            assert c.run("cat /srv/data/f; echo raw-write > /root/raw").stdout == "hello\n"
            with open(os.path.join(raw_dir, "root", "raw")) as f:
                assert f.read() == "raw-write\n"
            with pytest.raises(InvalidValue):
                c.save_image(str(tmp_path / "layered.aimg"), flatten=False)
            c.stop()
            c.save_image(str(tmp_path / "flat.aimg"))
        finally:
            c.destroy()
        assert not os.path.exists(raw_dir)
        d = svc.load_image(str(tmp_path / "flat.aimg"))
        try:
            assert d.run("cat /root/raw").stdout == "raw-write\n"
        finally:
            d.destroy()


class TestHostileManifest:
    def test_image_asking_for_host_paths_no_base_provides_is_refused(self, svc, tmp_path):
        """An image whose manifest binds /etc (or any path no local base binds) is refused, nothing imported."""
        from appcontainers.adapters.aimg.squashfs import SquashfsCodec
        src = tmp_path / "rootfs"
        src.mkdir()
        path = str(tmp_path / "greedy.aimg")
        SquashfsCodec().pack(str(src), {"format_version": 1, "name": "greedy", "created": 0.0,
                                        "host_binds": ["/etc"]}, path)
        before = {i.id for i in svc.list_images()}
        with pytest.raises(ImageCorrupt, match="/etc"):
            svc.load_image(path)
        assert {i.id for i in svc.list_images()} == before


class TestMoveLoad:
    def test_move_puts_the_file_itself_in_the_store_and_back_on_failure(self, svc, saved, data_root):
        """load(move=True): no copy, the file goes into the store; a failed load puts it back intact."""
        import hashlib
        import shutil
        import tempfile
        from appcontainers.domain.exceptions import NameTaken
        _, path, keep = saved
        work = tempfile.mkdtemp(dir=os.path.dirname(data_root))  # the data root's filesystem
        try:
            mine = os.path.join(work, "mine.aimg")
            with open(path, "rb") as src, open(mine, "wb") as dst:
                dst.write(src.read())
            # a distinct image, so it is not already in the store
            child = svc.load_image(path)
            try:
                child.run("echo moved > /root/moved")
                child.stop()
                child.save_image(mine)
            finally:
                child.destroy()
            digest = hashlib.sha256(open(mine, "rb").read()).hexdigest()
            inode = os.stat(mine).st_ino
            with pytest.raises(NameTaken):
                svc.load_image(mine, name=keep.name, move=True)
            assert hashlib.sha256(open(mine, "rb").read()).hexdigest() == digest  # put back, intact
            c = svc.load_image(mine, move=True)
            try:
                assert not os.path.exists(mine)
                stored = os.path.join(data_root, "images", "user", c.image + ".aimg")
                assert os.stat(stored).st_ino == inode  # the same file: moved, not copied
                assert c.run("cat /root/moved").stdout == "moved\n"
            finally:
                image_id = c.image
                c.destroy()
                svc.remove_image(image_id)
        finally:
            shutil.rmtree(work, ignore_errors=True)
