"""export, the adapter side: .aimg layers packed by mksquashfs, streamed by our reader as OCI
layer tars and written as OCI layouts and archives, read back with Python's tarfile."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import time

import pytest

from appcontainers.adapters.aimg.squashfs import SquashfsCodec
from appcontainers.adapters.aimg.squashfs_reader import open_layers
from appcontainers.adapters.oci.export_blobs import DigestWriter
from appcontainers.adapters.oci.export_layout import OciExporter, check_dest
from appcontainers.adapters.oci.export_tar import LayerTar, Member, walk
from appcontainers.domain.exceptions import ImageCorrupt, InvalidValue

pytestmark = pytest.mark.skipif(not shutil.which("mksquashfs"), reason="needs squashfs-tools")
LONG = "d" * 60 + "/" + "f" * 70
ROOT = os.geteuid() == 0


def _user_xattrs(path) -> bool:
    try:
        os.setxattr(path, "user.probe", b"1")
        return True
    except OSError:
        return False


def pack(src, dest, parent=None) -> str:
    manifest = {"format_version": 1, "name": "t", "created": time.time(), "parent": parent}
    return SquashfsCodec().pack(str(src), manifest, str(dest), level=1)


@pytest.fixture
def layer(tmp_path):
    """An .aimg whose rootfs holds a file of every kind, a long and a non-ASCII name, whiteouts and
    an opaque directory as overlayfs marks them (xattr forms, as any user can make them)."""
    src = tmp_path / "src"
    (src / "a" / "sub").mkdir(parents=True)
    (src / "a" / "f").write_bytes(b"hello\n" * 50000)
    os.chmod(src / "a" / "f", 0o640)
    os.link(src / "a" / "f", src / "a" / "hard")
    os.symlink("f", src / "a" / "link")
    (src / LONG).parent.mkdir()
    (src / LONG).write_text("long")
    (src / "caf\u00e9").write_text("x")
    os.mkfifo(src / "fifo")
    if not _user_xattrs(src / "a" / "f"):
        pytest.skip("no user xattrs on this filesystem")
    os.setxattr(src / "a" / "f", "user.k", b"\xff\x00v")
    (src / "opq").mkdir()
    (src / "opq" / "kept").write_text("k")
    os.setxattr(src / "opq", "user.overlay.opaque", b"y")
    (src / "gone").write_text("")
    os.setxattr(src / "gone", "user.overlay.whiteout", b"")
    if ROOT:
        os.mknod(src / "a" / "dev-gone", 0o600 | 0o020000, 0)
        os.setxattr(src / "a", "trusted.overlay.opaque", b"n")
    pack(src, tmp_path / "l.aimg")
    return str(tmp_path / "l.aimg")


def _layer_members(path) -> tuple[dict[str, tarfile.TarInfo], bytes]:
    """The layer tar's members by name, and the content of a/f."""
    (sq,) = open_layers([path])
    buf = io.BytesIO()
    try:
        LayerTar(sq, DigestWriter(buf, None)).write(sq.rootfs)
    finally:
        sq.close()
    assert len(buf.getvalue()) % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tf:
        return {m.name: m for m in tf.getmembers()}, tf.extractfile("a/f").read()  # type: ignore[union-attr]


class TestLayerTar:
    def test_every_kind_of_entry_is_kept(self, layer):
        """Files with their mode and content, hard links, symlinks, FIFOs, long and non-ASCII names, xattrs."""
        m, data = _layer_members(layer)
        f = m["a/f"]
        assert f.isreg() and f.mode == 0o640 and data == b"hello\n" * 50000
        assert f.pax_headers["SCHILY.xattr.user.k"].encode("utf-8", "surrogateescape") == b"\xff\x00v"
        assert m["a/hard"].islnk() and m["a/hard"].linkname == "a/f"
        assert m["a/link"].issym() and m["a/link"].linkname == "f"
        assert m["fifo"].isfifo() and m["a"].isdir() and m["a/sub"].isdir()
        assert m[LONG].isreg() and m["caf\u00e9"].isreg()
        names = list(m)
        assert names.index("a") < names.index("a/f")  # a directory before what it holds

    def test_whiteouts_and_opaque_directories_become_oci_markers(self, layer):
        """overlay.whiteout and char 0/0 files become .wh.NAME; overlay.opaque=y adds .wh..wh..opq;
        no overlay xattr is left."""
        m, _ = _layer_members(layer)
        assert ".wh.gone" in m and "gone" not in m
        assert "opq/.wh..wh..opq" in m and "opq/kept" in m
        if ROOT:
            assert "a/.wh.dev-gone" in m and "a/.wh..wh..opq" not in m  # opaque=n is not opaque
        assert not [k for i in m.values() for k in i.pax_headers if "overlay" in k]

    def test_a_redirected_directory_is_refused(self, tmp_path):
        """overlay.redirect (a renamed directory) cannot be said in OCI: a clear error, nothing written."""
        (tmp_path / "src" / "moved").mkdir(parents=True)
        if not _user_xattrs(tmp_path / "src"):
            pytest.skip("no user xattrs on this filesystem")
        os.setxattr(tmp_path / "src" / "moved", "user.overlay.redirect", b"/old")
        pack(tmp_path / "src", tmp_path / "r.aimg")
        (tmp_path / "out").mkdir()
        with pytest.raises(ImageCorrupt, match="export the image flattened"):
            OciExporter().export([str(tmp_path / "r.aimg")], {}, str(tmp_path / "out" / "x.tar"),
                                 "oci-archive", "latest", None, 1)
        assert os.listdir(tmp_path / "out") == []

    def test_a_directory_loop_is_refused(self):
        """A crafted image whose directory holds its own parent is ImageCorrupt, not an endless walk."""
        from appcontainers.adapters.aimg.squashfs_inodes import Inode

        def directory(number):
            i = Inode()
            i.mode, i.number = stat.S_IFDIR | 0o755, number
            return i

        class LoopingReader:  # rootfs (1) holds a (2), which holds back (1)
            path = "crafted.aimg"
            inodes = {1: directory(1), 2: directory(2)}

            def listdir(self, d):
                return {"a": 2} if d.number == 1 else {"back": 1}

            def inode(self, ref):
                return self.inodes[ref]

        with pytest.raises(ImageCorrupt, match="appears twice"):
            list(walk(LoopingReader(), LoopingReader.inodes[1]))  # type: ignore[arg-type]

    def test_ustar_headers_are_the_ones_tarfile_writes(self):
        """Our fast header is byte for byte tarfile's, for every kind of member."""
        for kind in (tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE):
            m = Member("x/y", kind, 0o4755, 1234, 5678, 1_700_000_000)
            m.size, m.link = (99 if kind == tarfile.REGTYPE else 0), ("t" if kind in (b"1", b"2") else "")
            m.dev = (1, 3) if kind == tarfile.CHRTYPE else (0, 0)
            ti = tarfile.TarInfo("x/y")
            ti.type, ti.mode, ti.uid, ti.gid, ti.mtime, ti.size, ti.linkname = kind, 0o4755, 1234, 5678, \
                1_700_000_000, m.size, m.link
            ti.devmajor, ti.devminor, ti.uname, ti.gname = *m.dev, "", ""
            assert m.header() == ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _two_layers(tmp_path, layer) -> list[str]:
    (tmp_path / "top").mkdir()
    (tmp_path / "top" / "new").write_text("new")
    top = tmp_path / "top.aimg"
    pack(tmp_path / "top", top, parent=SquashfsCodec().image_id(layer))
    return [str(top), layer]


def _read_archive(path) -> dict[str, bytes]:
    with tarfile.open(path) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isreg()}  # type: ignore[union-attr]


class TestParallelGzip:
    def test_one_gzip_stream_the_same_bytes_for_any_number_of_threads(self):
        """The chunks, compressed on 1, 2 or 4 threads, make one gzip member that decompresses to the
        input, byte for byte the same whatever the thread count; the digests are of the blob and the input."""
        import random

        rng = random.Random(1)
        data = b"".join(rng.randbytes(rng.randint(0, 300_000)) if i % 3 == 0 else b"text %d " % i * rng.randint(0, 50_000)
                        for i in range(40))
        blobs = []
        for workers in (1, 2, 4):
            buf = io.BytesIO()
            w = DigestWriter(buf, 1, workers)
            for at in range(0, len(data), 7777):
                w.write(data[at:at + 7777])
            digest, diff_id, size = w.finish()
            blob = buf.getvalue()
            assert gzip.decompress(blob) == data and size == len(blob)
            assert (digest, diff_id) == ("sha256:" + hashlib.sha256(blob).hexdigest(),
                                         "sha256:" + hashlib.sha256(data).hexdigest())
            blobs.append(blob)
        assert blobs[0] == blobs[1] == blobs[2]
        assert len(blobs[0]) < len(data) // 2

    def test_empty_input_is_a_valid_gzip(self):
        """An empty stream is still a gzip file (of nothing)."""
        buf = io.BytesIO()
        DigestWriter(buf, 1).finish()
        assert gzip.decompress(buf.getvalue()) == b""


class TestOciExporter:
    @pytest.mark.parametrize("fmt", ["oci", "oci-archive"])
    def test_oci_forms_hold_gzip_layers_whose_digests_and_diff_ids_match(self, tmp_path, layer, fmt):
        """index.json -> manifest -> config and gzip layers, bottom first; each digest is the blob's
        sha256 and each diff_id the sha256 of the uncompressed tar."""
        dest = tmp_path / "out"
        result = OciExporter().export(_two_layers(tmp_path, layer), {"os": "linux"}, str(dest), fmt, "v1", None, 1)
        if fmt == "oci":
            files = {os.path.relpath(os.path.join(d, n), dest): open(os.path.join(d, n), "rb").read()
                     for d, _, ns in os.walk(dest) for n in ns}
        else:
            files = _read_archive(dest)
        assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
        (entry,) = json.loads(files["index.json"])["manifests"]
        assert entry["annotations"] == {"org.opencontainers.image.ref.name": "v1"}
        blob = {f"sha256:{k.rsplit('/', 1)[1]}": v for k, v in files.items() if k.startswith("blobs/")}
        assert all(hashlib.sha256(v).hexdigest() == k[7:] for k, v in blob.items())
        manifest = json.loads(blob[entry["digest"]])
        config = json.loads(blob[manifest["config"]["digest"]])
        layers = [gzip.decompress(blob[x["digest"]]) for x in manifest["layers"]]
        assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(t).hexdigest() for t in layers]
        assert [x["diff_id"] for x in result["layers"]] == config["rootfs"]["diff_ids"]
        assert "a/f" in tarfile.open(fileobj=io.BytesIO(layers[0])).getnames()
        assert tarfile.open(fileobj=io.BytesIO(layers[1])).getnames() == ["new"]

    def test_docker_archive_holds_plain_tars_named_in_manifest_json(self, tmp_path, layer):
        """docker-archive: manifest.json names the config and the plain layer tars, bottom first."""
        dest = tmp_path / "d.tar"
        OciExporter().export(_two_layers(tmp_path, layer), {"os": "linux"}, str(dest), "docker-archive",
                             "latest", "t:latest", 1)
        files = _read_archive(dest)
        (entry,) = json.loads(files["manifest.json"])
        assert entry["RepoTags"] == ["t:latest"]
        config = json.loads(files[entry["Config"]])
        assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(files[p]).hexdigest()
                                                for p in entry["Layers"]]
        assert tarfile.open(fileobj=io.BytesIO(files[entry["Layers"][1]])).getnames() == ["new"]

    def test_destinations_refused_before_anything_is_written(self, tmp_path):
        """A missing directory, an existing non-empty layout, a directory for an archive, an unknown format."""
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "x").write_text("")
        (tmp_path / "empty").mkdir()
        for dest, fmt, what in ((tmp_path / "no" / "x", "oci", "does not exist"), (tmp_path / "full", "oci", "exists"),
                                (tmp_path / "empty", "docker-archive", "is a directory"),
                                (tmp_path / "x", "tar", "unknown export format")):
            with pytest.raises(InvalidValue, match=what):
                check_dest(str(dest), fmt)
        assert check_dest(str(tmp_path / "empty"), "oci") == str(tmp_path / "empty")
        assert sorted(os.listdir(tmp_path)) == ["empty", "full"]

    def test_progress_ends_at_100(self, tmp_path, layer):
        """progress gets rising percentages up to 100."""
        seen: list[int] = []
        OciExporter().export([layer], {}, str(tmp_path / "x.tar"), "oci-archive", "latest", None, 1, seen.append)
        assert seen == sorted(seen) and seen[-1] == 100
