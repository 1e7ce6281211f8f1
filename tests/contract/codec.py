"""ImageCodec: pack, verify, image_id, read_manifest, copy_verified; damage is ImageCorrupt."""
from __future__ import annotations

import pytest

from appcontainers.domain.exceptions import ImageCorrupt, InvalidValue

MANIFEST = {"format_version": 1, "name": "app", "created": 1_600_000_000.0, "parent": None,
            "startup_commands": ["echo hi"], "environment": {"A": "1"}, "host_binds": [], "base": "default",
            "init": []}


class ImageCodecContract:
    """Fixtures: `codec`, `world` with source() (a directory to pack), path(name) (a new file
    path in a directory that exists), damage(path) (flips a byte inside the image) and
    exists(path)."""

    def test_pack_then_read(self, codec, world):
        """What pack() wrote verifies as its id and manifest; image_id and read_manifest agree."""
        dest = world.path("app.aimg")
        image_id = codec.pack(world.source(), MANIFEST, dest)
        assert len(image_id) == 64 and int(image_id, 16) >= 0
        assert codec.verify(dest) == (image_id, MANIFEST)
        assert codec.image_id(dest) == image_id
        assert codec.read_manifest(dest) == MANIFEST

    def test_pack_refuses_a_bad_manifest(self, codec, world):
        """A manifest verify() would refuse is never written."""
        dest = world.path("bad.aimg")
        with pytest.raises(InvalidValue):
            codec.pack(world.source(), {**MANIFEST, "name": "no/slash"}, dest)
        assert not world.exists(dest)

    def test_copy_verified(self, codec, world):
        """copy_verified() makes a checked copy: same id and manifest, the copy verifies."""
        src, dest = world.path("a.aimg"), world.path("b.aimg")
        image_id = codec.pack(world.source(), MANIFEST, src)
        assert codec.copy_verified(src, dest) == (image_id, MANIFEST)
        assert codec.verify(dest) == (image_id, MANIFEST)

    def test_copy_verified_of_a_damaged_file(self, codec, world):
        """A damaged source is refused and leaves no copy behind."""
        src, dest = world.path("a.aimg"), world.path("b.aimg")
        codec.pack(world.source(), MANIFEST, src)
        world.damage(src)
        with pytest.raises(ImageCorrupt):
            codec.copy_verified(src, dest)
        assert not world.exists(dest)

    def test_damage_is_found(self, codec, world):
        """verify() of a damaged file raises ImageCorrupt; image_id still reads the trailer."""
        dest = world.path("app.aimg")
        image_id = codec.pack(world.source(), MANIFEST, dest)
        world.damage(dest)
        with pytest.raises(ImageCorrupt):
            codec.verify(dest)
        assert codec.image_id(dest) == image_id

    def test_pack_tar_then_read(self, codec, world):
        """pack_tar() of a tar stream (members under rootfs/) verifies as its id and manifest."""
        dest = world.path("layer.aimg")
        image_id = codec.pack_tar(iter(_tar_members()), MANIFEST, dest)
        assert codec.verify(dest) == (image_id, MANIFEST)

    def test_pack_tar_raises_what_the_stream_raises(self, codec, world):
        """An error while the members are produced is raised, and nothing is written."""
        dest = world.path("broken.aimg")

        def members():
            yield from _tar_members()
            raise ImageCorrupt("blob", "its digest is not what the manifest says")
        with pytest.raises(ImageCorrupt, match="digest"):
            codec.pack_tar(members(), MANIFEST, dest)
        assert not world.exists(dest)

    def test_missing_file(self, codec, world):
        """Every read of a missing file raises ImageCorrupt."""
        missing = world.path("missing.aimg")
        for read in (codec.verify, codec.image_id, codec.read_manifest):
            with pytest.raises(ImageCorrupt):
                read(missing)


def _tar_members() -> list[bytes]:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("rootfs/etc/hello")
        ti.size = 6
        tf.addfile(ti, io.BytesIO(b"hello\n"))
    return [buf.getvalue()[:1024]]  # the header and the data block, without the end blocks
