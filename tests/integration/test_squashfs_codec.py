"""SquashfsCodec with the real mksquashfs/unsquashfs, the kernel's squashfs and real files."""
import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile

import pytest

from appcontainers.adapters.host.process import run
from appcontainers.adapters.aimg.squashfs import TRAILER_SIZE, SquashfsCodec, encode_trailer
from appcontainers.domain.exceptions import CommandFailed, ImageCorrupt, InvalidValue

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, mknod, trusted.* xattrs, mount)"),
    pytest.mark.skipif(not (shutil.which("mksquashfs") and shutil.which("unsquashfs")),
                       reason="needs squashfs-tools"),
]

MANIFEST = {"format_version": 1, "name": "demo", "created": 1700000000.0,
            "startup_commands": ["echo hi"], "environment": {"A": "1"}}
OPAQUE = "trusted.overlay.opaque"


@contextlib.contextmanager
def mounted(argv_tail):
    """Mount (ro squashfs or a tmpfs) on a fresh dir; always unmounted and removed."""
    target = tempfile.mkdtemp(prefix="aimg-test-mnt.")
    ok = False
    try:
        run(["mount", *argv_tail, target], timeout=30)
        ok = True
        yield target
    finally:
        if ok:
            run(["umount", target], timeout=30)
        os.rmdir(target)


def make_tree(root):
    os.makedirs(os.path.join(root, "etc"))
    os.makedirs(os.path.join(root, "opaque"))
    os.makedirs(os.path.join(root, "tmp"))
    os.makedirs(os.path.join(root, "var/cache"))
    with open(os.path.join(root, "etc/hostname"), "w") as f:
        f.write("demo\n")
    with open(os.path.join(root, "secret"), "w") as f:
        f.write("s3cret\n")
    os.chmod(os.path.join(root, "secret"), 0o600)
    suid = os.path.join(root, "suid")
    with open(suid, "wb") as f:
        f.write(b"\x7fELF" + os.urandom(20000))
    os.chown(suid, 1234, 5678)
    os.chmod(suid, 0o4755)  # after chown, which clears set-uid
    os.link(suid, os.path.join(root, "suid-link"))
    os.symlink("etc/hostname", os.path.join(root, "hostlink"))
    os.symlink("/nonexistent/absolute", os.path.join(root, "dangling"))
    os.setxattr(os.path.join(root, "etc/hostname"), "user.test", b"1")
    os.mknod(os.path.join(root, "whiteout"), stat.S_IFCHR | 0o000, os.makedev(0, 0))
    os.setxattr(os.path.join(root, "opaque"), OPAQUE, b"y")
    for name in ("tmp/junk", "var/cache/pkg", "opaque/kept"):
        with open(os.path.join(root, name), "w") as f:
            f.write(name)


def write_raw_image(content_dir, path, trailer=True):
    """A squashfs of content_dir as root, with our trailer appended unless trailer=False."""
    run(["mksquashfs", content_dir, path, "-noappend", "-comp", "zstd", "-quiet", "-no-progress"])
    if trailer:
        data = open(path, "rb").read()
        with open(path, "ab") as f:
            f.write(encode_trailer(len(data), hashlib.sha256(data).digest()))
    return path


def reason_of(path, call=None):
    with pytest.raises(ImageCorrupt) as e:
        (call or SquashfsCodec().verify)(str(path))
    assert e.value.path == str(path)
    return e.value.reason


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    base = tmp_path_factory.mktemp("pack")
    src = base / "upper"
    make_tree(str(src))
    dest = base / "out" / "demo.aimg"
    dest.parent.mkdir()
    seen = []
    image_id = SquashfsCodec().pack(str(src), MANIFEST, str(dest), progress=seen.append,
                                    excludes=["tmp/junk", "var/cache/*"])
    return image_id, dest, seen


class TestPack:
    def test_verify_returns_id_and_manifest(self, packed):
        """verify() gives the id pack() returned and the manifest as stored."""
        image_id, dest, _ = packed
        assert SquashfsCodec().verify(str(dest)) == (image_id, MANIFEST)

    def test_id_is_sha256_of_squashfs(self, packed):
        """The id is the sha256 of every byte before the 64-byte trailer."""
        image_id, dest, _ = packed
        data = dest.read_bytes()
        assert hashlib.sha256(data[:-TRAILER_SIZE]).hexdigest() == image_id
        codec = SquashfsCodec()
        assert codec.image_id(str(dest)) == image_id
        assert codec.squashfs_size(str(dest)) == len(data) - TRAILER_SIZE
        assert codec.read_manifest(str(dest)) == MANIFEST

    def test_layout_and_no_leftovers(self, packed):
        """The root holds manifest.json and rootfs/; the dest dir holds only the image."""
        _, dest, _ = packed
        listing = run(["unsquashfs", "-lln", str(dest)]).stdout.decode()
        names = {line.split()[-1] for line in listing.splitlines() if "squashfs-root" in line}
        assert {"squashfs-root/manifest.json", "squashfs-root/rootfs/etc/hostname"} <= names
        assert os.listdir(dest.parent) == ["demo.aimg"]
        assert stat.S_IMODE(dest.stat().st_mode) == 0o644

    def test_progress_reported(self, packed):
        """progress gets rising percentages from 0 to 100."""
        seen = packed[2]
        assert seen[0] == 0 and seen[-1] == 100 and seen == sorted(seen) and len(seen) >= 3

    def test_kernel_mount_keeps_metadata(self, packed):
        """The kernel mounts the file despite the trailer; modes, owners, links, xattrs, whiteouts survive."""
        _, dest, _ = packed
        try:
            ctx = mounted(["-t", "squashfs", "-o", "ro,loop", str(dest)])
            mnt = ctx.__enter__()
        except CommandFailed as e:
            pytest.skip(f"cannot loop-mount here: {e}")
        try:
            with open(os.path.join(mnt, "manifest.json")) as f:
                assert json.load(f) == MANIFEST
            r = os.path.join(mnt, "rootfs")
            st_root = os.lstat(mnt)
            assert (stat.S_IMODE(st_root.st_mode), st_root.st_uid) == (0o755, 0)
            suid, link = os.lstat(f"{r}/suid"), os.lstat(f"{r}/suid-link")
            assert stat.S_IMODE(suid.st_mode) == 0o4755
            assert (suid.st_uid, suid.st_gid) == (1234, 5678)
            assert suid.st_ino == link.st_ino and suid.st_nlink == 2
            assert stat.S_IMODE(os.lstat(f"{r}/secret").st_mode) == 0o600
            assert os.readlink(f"{r}/hostlink") == "etc/hostname"
            assert os.readlink(f"{r}/dangling") == "/nonexistent/absolute"
            assert os.getxattr(f"{r}/etc/hostname", "user.test") == b"1"
            wh = os.lstat(f"{r}/whiteout")
            assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == os.makedev(0, 0)
            assert os.getxattr(f"{r}/opaque", OPAQUE) == b"y"
            assert os.path.exists(f"{r}/opaque/kept")
            assert not os.path.exists(f"{r}/tmp/junk") and os.path.isdir(f"{r}/tmp")
            assert os.listdir(f"{r}/var/cache") == []
        finally:
            ctx.__exit__(None, None, None)

    def test_source_named_rootfs(self, tmp_path):
        """A source dir already called rootfs lands at rootfs/ too (no nesting)."""
        (tmp_path / "rootfs").mkdir()
        (tmp_path / "rootfs" / "f").write_text("x")
        SquashfsCodec().pack(str(tmp_path / "rootfs"), MANIFEST, str(tmp_path / "a.aimg"))
        out = run(["unsquashfs", "-cat", str(tmp_path / "a.aimg"), "rootfs/f"]).stdout
        assert out == b"x"


@pytest.fixture(scope="module")
def good_image(packed):
    return packed[1]


class TestVerifyRefuses:
    @pytest.fixture
    def copy(self, good_image, tmp_path):
        dest = tmp_path / "copy.aimg"
        shutil.copyfile(good_image, dest)
        return dest

    def test_truncated_by_one_byte(self, copy):
        os.truncate(copy, copy.stat().st_size - 1)
        assert reason_of(copy).startswith("truncated")

    def test_truncated_by_half(self, copy):
        os.truncate(copy, copy.stat().st_size // 2)
        assert reason_of(copy).startswith("truncated")

    def test_flipped_byte(self, copy):
        with open(copy, "r+b") as f:
            f.seek(copy.stat().st_size // 2)
            b = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([b[0] ^ 0xFF]))
        assert reason_of(copy) == "checksum mismatch: the file was altered or damaged"

    def test_wrong_trailer_magic(self, copy):
        with open(copy, "r+b") as f:
            f.seek(-TRAILER_SIZE, os.SEEK_END)
            f.write(b"NOTMAGIC")
        assert "not an appcontainers image (no .aimg trailer)" in reason_of(copy)
        assert "no .aimg trailer" in reason_of(copy, SquashfsCodec().image_id)

    def test_bytes_appended(self, copy):
        with open(copy, "ab") as f:
            f.write(b"junk")
        assert "length mismatch" in reason_of(copy)

    def test_plain_squashfs(self, tmp_path):
        (tmp_path / "c").mkdir()
        (tmp_path / "c" / "manifest.json").write_text(json.dumps(MANIFEST))
        path = write_raw_image(str(tmp_path / "c"), str(tmp_path / "plain.sqfs"), trailer=False)
        assert "no .aimg trailer" in reason_of(path)

    def test_no_manifest(self, tmp_path):
        (tmp_path / "c" / "rootfs").mkdir(parents=True)
        path = write_raw_image(str(tmp_path / "c"), str(tmp_path / "x.aimg"))
        assert reason_of(path) == "no manifest.json inside"

    @pytest.mark.parametrize("content,expected", [
        (json.dumps({**MANIFEST, "format_version": 99}), "format version 99 is newer"),
        (json.dumps({k: v for k, v in MANIFEST.items() if k != "name"}), "lacks name"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
    ])
    def test_bad_manifest(self, tmp_path, content, expected):
        (tmp_path / "c" / "rootfs").mkdir(parents=True)
        (tmp_path / "c" / "manifest.json").write_text(content)
        path = write_raw_image(str(tmp_path / "c"), str(tmp_path / "x.aimg"))
        assert expected in reason_of(path)
        assert expected in reason_of(path, SquashfsCodec().read_manifest)

    def test_directory(self, tmp_path):
        assert "not a regular file" in reason_of(tmp_path)

    def test_fifo(self, tmp_path):
        """A FIFO is refused without blocking on open()."""
        os.mkfifo(tmp_path / "fifo.aimg")
        assert reason_of(tmp_path / "fifo.aimg") == "not a regular file"

    def test_missing(self, tmp_path):
        assert reason_of(tmp_path / "nope.aimg") == "no such file"

    def test_too_short(self, tmp_path):
        (tmp_path / "tiny.aimg").write_bytes(b"hsqs")
        assert "too short" in reason_of(tmp_path / "tiny.aimg")


class TestPackFailures:
    def test_missing_source(self, tmp_path):
        """A missing source is refused before anything is written."""
        (tmp_path / "out").mkdir()
        with pytest.raises(InvalidValue, match="not a directory"):
            SquashfsCodec().pack(str(tmp_path / "nope"), MANIFEST, str(tmp_path / "out" / "x.aimg"))
        assert os.listdir(tmp_path / "out") == []

    def test_invalid_manifest(self, tmp_path):
        """A manifest verify() would refuse is never packed."""
        (tmp_path / "src").mkdir()
        with pytest.raises(InvalidValue, match="lacks name"):
            SquashfsCodec().pack(str(tmp_path / "src"), {"format_version": 1, "created": 1.0},
                                 str(tmp_path / "x.aimg"))
        assert os.listdir(tmp_path) == ["src"]

    def test_disk_full(self, tmp_path):
        """mksquashfs failing on a full disk leaves neither a temp file nor the dest."""
        src = tmp_path / "src"
        src.mkdir()
        for i in range(3):
            (src / f"blob{i}").write_bytes(os.urandom(1 << 20))  # incompressible
        with mounted(["-t", "tmpfs", "-o", "size=1m", "aimg-test-full"]) as full:
            with pytest.raises(CommandFailed, match="No space left on device"):
                SquashfsCodec().pack(str(src), MANIFEST, os.path.join(full, "x.aimg"))
            assert os.listdir(full) == []

    def test_interrupted(self, tmp_path):
        """A KeyboardInterrupt mid-pack (here from the progress callback) removes the temp file."""
        src = tmp_path / "src"
        src.mkdir()
        for i in range(40):
            (src / f"f{i}").write_bytes(os.urandom(64 << 10))
        (tmp_path / "out").mkdir()

        def interrupt(pct):
            if pct > 0:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            SquashfsCodec().pack(str(src), MANIFEST, str(tmp_path / "out" / "x.aimg"), progress=interrupt)
        assert os.listdir(tmp_path / "out") == []
