"""Hostile .aimg files with a valid trailer: an image is data, never a host path. A rootfs or
manifest.json that is a symlink (or not a directory / regular file) is refused at load, and a
huge or deeply nested manifest is refused before it is read."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import tracemalloc

import pytest

from appcontainers.adapters.aimg.squashfs import TRAILER_SIZE, SquashfsCodec, encode_trailer
from appcontainers.domain.exceptions import ImageCorrupt

MANIFEST = {"format_version": 1, "name": "hostile", "created": 1700000000.0}


def _seal(content_dir, path) -> str:
    """content_dir squashed as the image's top level (zstd, as pack does), with a valid trailer."""
    subprocess.run(["mksquashfs", str(content_dir), str(path), "-noappend", "-comp", "zstd", "-quiet",
                    "-no-progress", "-all-root"], check=True, capture_output=True, timeout=60)
    data = open(path, "rb").read()
    with open(path, "ab") as f:
        f.write(encode_trailer(len(data), hashlib.sha256(data).digest()))
    return str(path)


def _listing(path) -> dict[str, str]:
    """Top-level name -> `unsquashfs -lls` line, read by the real tool."""
    out = subprocess.run(["unsquashfs", "-lls", "-d", "", str(path)], check=True, capture_output=True,
                         text=True, timeout=60).stdout
    found = {}
    for line in out.splitlines():
        parts = line.split(None, 5)
        name = parts[5].split(" -> ")[0] if len(parts) == 6 else ""
        if name.count("/") == 1:
            found[name[1:]] = line
    return found


def _trailer_verifies(path) -> bool:
    data = open(path, "rb").read()
    return hashlib.sha256(data[:-TRAILER_SIZE]).digest() == data[-TRAILER_SIZE:][24:56]


def _image(tmp_path, *, rootfs=None, manifest=None) -> str:
    """rootfs: None (a real dir), ("link", target) or "file"; manifest: None (valid JSON),
    ("link", target), or bytes / a size for a sparse file."""
    content = tmp_path / "content"
    content.mkdir()
    if rootfs is None:
        (content / "rootfs").mkdir()
        (content / "rootfs" / "hello").write_text("hi\n")
    elif rootfs == "file":
        (content / "rootfs").write_text("not a directory\n")
    else:
        os.symlink(rootfs[1], content / "rootfs")
    if manifest is None:
        (content / "manifest.json").write_text(json.dumps(MANIFEST))
    elif isinstance(manifest, tuple):
        os.symlink(manifest[1], content / "manifest.json")
    elif isinstance(manifest, int):
        with open(content / "manifest.json", "wb") as f:
            f.truncate(manifest)
    else:
        (content / "manifest.json").write_bytes(manifest)
    return _seal(content, tmp_path / "hostile.aimg")


def _unchanged(svc):
    return sorted(i.id for i in svc.list_images()), sorted(c.name for c in svc.list_containers())


class TestTopLevel:
    @pytest.mark.parametrize("target", ["/etc", "/", "../../../..", "OTHER-ROOTFS"])
    def test_rootfs_symlink_is_refused(self, svc, tmp_path, target):
        """rootfs -> /etc, /, up the tree, or another container's rootfs: refused at load."""
        if target == "OTHER-ROOTFS":
            target = svc.settings.layout.rootfs("someone-else")
        path = _image(tmp_path, rootfs=("link", target))
        assert _trailer_verifies(path)  # the precondition: sealed, and really a symlink rootfs
        assert _listing(path)["rootfs"].startswith("l") and _listing(path)["rootfs"].endswith(f"-> {target}")
        before = _unchanged(svc)
        with pytest.raises(ImageCorrupt, match="rootfs is a symlink"):
            svc.load_image(path)
        with pytest.raises(ImageCorrupt, match="rootfs is a symlink"):
            svc.inspect_image(path)
        assert _unchanged(svc) == before

    def test_rootfs_file_and_manifest_symlink_are_refused(self, svc, tmp_path):
        """rootfs as a plain file, or manifest.json as a symlink to a host file: refused."""
        path = _image(tmp_path, rootfs="file")
        assert _trailer_verifies(path) and _listing(path)["rootfs"].startswith("-")
        with pytest.raises(ImageCorrupt, match="rootfs is not a directory"):
            svc.load_image(path)
        os.rename(tmp_path / "content", tmp_path / "first")
        path = _image(tmp_path, manifest=("link", "/etc/hostname"))
        assert _trailer_verifies(path) and _listing(path)["manifest.json"].startswith("l")
        with pytest.raises(ImageCorrupt, match="manifest.json is not a regular file"):
            svc.load_image(path)

    def test_a_sound_image_of_the_same_shape_loads(self, svc, tmp_path):
        """The control: the same construction with a real rootfs/ loads (no init in it: not started)."""
        path = _image(tmp_path)
        c = svc.load_image(path)
        try:
            with open(os.path.join(svc.settings.layout.rootfs(c.name), "hello")) as f:
                assert f.read() == "hi\n"
        finally:
            c.destroy()
            for image in svc.list_images():
                if image.manifest.name == "hostile":
                    svc.remove_image(image.id)


class TestManifestBounds:
    def test_sparse_gigabyte_manifest_is_refused_in_little_memory(self, svc, tmp_path):
        """A few-KB image holding a 1 GiB sparse manifest.json: refused from its inode, quickly."""
        path = _image(tmp_path, manifest=1 << 30)
        assert os.path.getsize(path) < 65536 and _trailer_verifies(path)
        assert " 1073741824 " in _listing(path)["manifest.json"]
        before = _unchanged(svc)
        tracemalloc.start()
        started = time.monotonic()
        try:
            with pytest.raises(ImageCorrupt, match="larger than 1048576 bytes"):
                svc.load_image(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert time.monotonic() - started < 10 and peak < 32 << 20, peak
        assert _unchanged(svc) == before

    def test_deeply_nested_manifest_is_refused_before_parsing(self, tmp_path):
        """100,000 nested arrays (200 KB) are refused by depth, not by a RecursionError."""
        path = _image(tmp_path, manifest=b"[" * 100_000 + b"]" * 100_000)
        with pytest.raises(ImageCorrupt, match="nests deeper than 32"):
            SquashfsCodec().verify(path)
