"""export: layered images of our own, made by save, written as OCI images and read back by tools
we did not write (umoci, skopeo): the same tree as `image mount` shows, deletions applied."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time

import pytest

from appcontainers.domain.exceptions import AppContainersError, InvalidValue, UnknownImage

FORMATS = {"oci": "oci:{}:latest", "oci-archive": "oci-archive:{}", "docker-archive": "docker-archive:{}"}


def _tool(*argv: str, timeout: int = 120) -> str:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{argv}: {r.stderr}"
    return r.stdout


def tree(root: str) -> dict[str, tuple]:
    """path -> (kind, mode, uid, gid, symlink target or sha256 of content, mtime of a file or
    symlink) of everything under root."""
    found = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(d, name)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                what = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    what = hashlib.sha256(f.read()).hexdigest()
            else:
                what = ""
            found[os.path.relpath(p, root)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode),
                                               st.st_uid, st.st_gid, what,
                                               None if stat.S_ISDIR(st.st_mode) else int(st.st_mtime))
    return found


@pytest.fixture(scope="module")
def images(svc, data_root, tmp_path_factory):
    """Two layers saved over the default base: the second deletes a file and replaces a directory.
    Yields (top image, the container it was saved from, still running)."""
    d = tmp_path_factory.mktemp("layers")
    made = []
    try:
        c1 = svc.provision()
        made.append(c1)
        c1.run("mkdir -p /srv/old/sub /srv/data && echo a > /srv/old/a && echo b > /srv/old/sub/b"
               " && echo gone > /srv/data/gone && echo kept > /srv/data/kept")
        c1.stop()
        low = c1.save_image(str(d / "low.aimg"), flatten=False, name="exp-low")
        c2 = svc.load_image(str(d / "low.aimg"))
        made.append(c2)
        c2.add_startup_command("echo started > /tmp/started")
        c2.run("rm /srv/data/gone && rm -rf /srv/old && mkdir /srv/old && echo new > /srv/old/c"
               " && cd /srv/data && echo hello > f && chmod 640 f && chown 1234:5678 f && ln -s f link"
               " && ln f hard && echo s > s && chmod 4755 s && rm -f /etc/profile")
        os.setxattr(os.path.join(data_root, "mnt", c2.name, "rootfs", "srv/data/f"), "user.k", b"v")
        c2.stop()
        c2.save_image(str(d / "top.aimg"), flatten=False, name="exp-top")
        c3 = svc.load_image(str(d / "top.aimg"))
        made.append(c3)
        top = svc.images.resolve("exp-top")
        assert top.parent == low.id
        yield top, c2
    finally:
        for c in reversed(made):
            c.destroy()


def _read_all(fd: int) -> str:
    """What a pty's other side wrote, to its end (EIO once it is closed)."""
    parts = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        parts.append(chunk)
    return b"".join(parts).decode(errors="replace")


def _mounted_tree(svc, ref: str, where: str) -> dict:
    svc.mount_image(ref, where)
    try:
        return tree(where)
    finally:
        svc.unmount_image(where)


def _unpacked(layout: str, where: str, tag: str = "latest") -> tuple[dict, dict]:
    _tool("umoci", "unpack", "--image", f"{layout}:{tag}", where)
    with open(os.path.join(where, "config.json")) as f:
        return tree(os.path.join(where, "rootfs")), json.load(f)


class TestExport:
    def test_umoci_unpack_of_the_export_is_the_mounted_tree(self, svc, images, tmp_path):
        """An OCI layout of a 3-layer chain: one OCI layer per .aimg, and umoci unpack gives the
        tree `image mount` shows (deleted file and replaced directory included)."""
        top, _ = images
        out = svc.export_image(top.id[:12], str(tmp_path / "lay"), format="oci")
        assert len(out["layers"]) == 3 and out["image"] == top.id
        unpacked, config = _unpacked(str(tmp_path / "lay"), str(tmp_path / "unp"))
        assert unpacked == _mounted_tree(svc, top.id, str(tmp_path / "view"))
        assert "srv/data/gone" not in unpacked and "srv/old/a" not in unpacked and "srv/old/sub" not in unpacked
        assert unpacked["srv/old/c"][4] == hashlib.sha256(b"new\n").hexdigest()
        assert unpacked["srv/data/f"][1:4] == (0o640, 1234, 5678) and unpacked["srv/data/s"][1] == 0o4755
        assert unpacked["srv/data/link"][4] == "f" and "etc/profile" not in unpacked
        rootfs = tmp_path / "unp" / "rootfs"
        assert os.stat(rootfs / "srv/data/f").st_ino == os.stat(rootfs / "srv/data/hard").st_ino
        assert os.getxattr(rootfs / "srv/data/f", "user.k") == b"v"
        assert config["process"]["args"] == ["/bin/sh", "-c", "echo started > /tmp/started"]

    def test_a_shared_layer_is_the_same_blob_in_every_export(self, svc, images, tmp_path):
        """The base and the first layer exported with the top image are byte for byte the blobs of
        the first layer's own export (same digests): a registry stores them once."""
        top, _ = images
        low = svc.export_image(top.parent, str(tmp_path / "low"), format="oci")
        high = svc.export_image(top.id, str(tmp_path / "high"), format="oci-archive")
        assert [x["digest"] for x in high["layers"][:2]] == [x["digest"] for x in low["layers"]]

    def test_the_layers_carry_whiteouts_and_no_overlay_xattrs(self, svc, images, tmp_path):
        """The top layer holds .wh.gone and srv/old/.wh..wh..opq, and no trusted.overlay xattr."""
        import tarfile

        top, _ = images
        svc.export_image(top.id, str(tmp_path / "img.tar"), format="docker-archive")
        with tarfile.open(tmp_path / "img.tar") as outer:
            manifest = json.load(outer.extractfile("manifest.json"))
            assert manifest[0]["RepoTags"] == ["exp-top:latest"]
            layer = tarfile.open(fileobj=outer.extractfile(manifest[0]["Layers"][-1]))
            members = {m.name: m for m in layer.getmembers()}
        assert "srv/data/.wh.gone" in members and "srv/old/.wh..wh..opq" in members
        assert "etc/.wh.profile" in members
        assert not [m for m in members.values() for k in m.pax_headers if "overlay" in k]

    @pytest.mark.parametrize("fmt", list(FORMATS))
    def test_skopeo_reads_and_copies_each_format(self, svc, images, tmp_path, fmt):
        """skopeo inspect and copy accept oci:, oci-archive: and docker-archive:; the copy unpacks
        to the same tree."""
        top, _ = images
        dest = str(tmp_path / "out")
        svc.export_image("exp-top", dest, format=fmt)
        info = json.loads(_tool("skopeo", "inspect", FORMATS[fmt].format(dest)))
        assert len(info["Layers"]) == 3 and info["Os"] == "linux"
        _tool("skopeo", "copy", FORMATS[fmt].format(dest), f"oci:{tmp_path / 'copy'}:x")
        unpacked, _ = _unpacked(str(tmp_path / "copy"), str(tmp_path / "unp"), "x")
        assert unpacked == _mounted_tree(svc, top.id, str(tmp_path / "view"))

    def test_a_running_container_exports_its_current_tree(self, svc, images, tmp_path):
        """A container is exported as its chain plus its changes on top (nothing saved left behind)."""
        _, c2 = images
        c2.start()
        try:
            c2.run("echo live > /root/live")
            out = svc.export_image(c2.name, str(tmp_path / "c.tar"), format="oci-archive")
            assert c2.state == "RUNNING"
        finally:
            c2.stop()
        assert len(out["layers"]) == 3
        assert sorted(os.listdir(tmp_path)) == ["c.tar"]
        _tool("skopeo", "copy", f"oci-archive:{tmp_path / 'c.tar'}", f"oci:{tmp_path / 'lay'}:latest")
        unpacked, _ = _unpacked(str(tmp_path / "lay"), str(tmp_path / "unp"))
        assert unpacked["root/live"][4] == hashlib.sha256(b"live\n").hexdigest()
        assert "srv/data/gone" not in unpacked

    def test_run_config_becomes_the_oci_config(self, svc, tmp_path):
        """An image whose manifest has a run config: umoci reads its Env, Entrypoint+Cmd, WorkingDir, User."""
        from appcontainers.adapters.aimg.squashfs import SquashfsCodec

        (tmp_path / "src" / "app").mkdir(parents=True)
        (tmp_path / "src" / "app" / "run.sh").write_text("echo hi\n")
        manifest = {"format_version": 1, "name": "exp-cfg", "created": time.time(), "parent": None,
                    "config": {"env": {"A": "1", "PATH": "/usr/bin:/bin"}, "entrypoint": ["/bin/sh"],
                               "cmd": ["/app/run.sh"], "workdir": "/app", "user": "1000:1000",
                               "exposed_ports": ["80/tcp"], "labels": {"k": "v"}}}
        SquashfsCodec().pack(str(tmp_path / "src"), manifest, str(tmp_path / "cfg.aimg"))
        c = svc.load_image(str(tmp_path / "cfg.aimg"))
        try:
            svc.export_image(c.image, str(tmp_path / "lay"))
            _, config = _unpacked(str(tmp_path / "lay"), str(tmp_path / "unp"))
            info = json.loads(_tool("skopeo", "inspect", "--config", f"oci:{tmp_path / 'lay'}:latest"))
        finally:
            c.destroy()
        proc = config["process"]
        assert proc["args"] == ["/bin/sh", "/app/run.sh"] and proc["cwd"] == "/app"
        assert "A=1" in proc["env"] and (proc["user"]["uid"], proc["user"]["gid"]) == (1000, 1000)
        assert info["config"]["ExposedPorts"] == {"80/tcp": {}} and info["config"]["Labels"] == {"k": "v"}

    def test_bad_destination_or_unknown_image_writes_nothing(self, svc, images, tmp_path):
        """A missing directory, an existing layout, an unknown image or a full disk: a clear
        error and nothing left at the destination."""
        top, _ = images
        with pytest.raises(InvalidValue, match="does not exist"):
            svc.export_image(top.id, str(tmp_path / "no" / "x.tar"), format="oci-archive")
        (tmp_path / "lay").mkdir()
        (tmp_path / "lay" / "index.json").write_text("{}")
        with pytest.raises(InvalidValue, match="it exists"):
            svc.export_image(top.id, str(tmp_path / "lay"))
        with pytest.raises(UnknownImage):
            svc.export_image("no-such-image", str(tmp_path / "x.tar"), format="docker-archive")
        assert sorted(os.listdir(tmp_path)) == ["lay"]
        small = tmp_path / "small"
        small.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=True)
        try:
            for fmt in FORMATS:
                with pytest.raises(AppContainersError, match="No space left"):
                    svc.export_image(top.id, str(small / "out"), format=fmt)
                assert os.listdir(small) == []
        finally:
            subprocess.run(["umount", str(small)], check=True)

    def test_cli_export_prints_the_digest_and_errors_in_one_line(self, settings, images, tmp_path):
        """`appcontainers export` writes the archive and prints DEST DIGEST; an unknown image is one error line."""
        env = {**os.environ, "APPCONTAINERS_ROOT": settings["root"], "APPCONTAINERS_BRIDGE": settings["bridge"],
               "APPCONTAINERS_SUBNET": settings["subnet"]}
        cli = [sys.executable, "-m", "appcontainers.entrypoints.cli", "export"]
        dest = str(tmp_path / "d.tar")
        r = subprocess.run([*cli, "exp-top", dest, "--format", "docker-archive", "--json"], env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["dest"] == dest and r.stderr == ""
        import pty

        master, slave = pty.openpty()  # stderr a terminal: a progress bar there
        try:
            r = subprocess.run([*cli, "exp-top", str(tmp_path / "p.tar"), "--format", "oci-archive"], env=env,
                               stdout=subprocess.PIPE, stderr=slave, text=True, timeout=120)
            os.close(slave)
            bar = _read_all(master)
        finally:
            os.close(master)
        assert r.returncode == 0 and "exporting exp-top" in bar and "100%" in bar
        assert r.stdout.startswith(f"{tmp_path / 'p.tar'} sha256:")
        r = subprocess.run([*cli, "nope", str(tmp_path / "e.tar")], env=env, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and "appcontainers: error:" in r.stderr
        assert not os.path.exists(tmp_path / "e.tar")
