"""The .aimg trailer and layout checks as pure functions: no tools, no files."""
import hashlib
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appcontainers.adapters.aimg.squashfs import (
    SUPERBLOCK_SIZE, TRAILER_MAGIC, TRAILER_SIZE, TRAILER_VERSION, Trailer, check_layout,
    decode_trailer, encode_trailer, mksquashfs_argv)
from appcontainers.domain.exceptions import ImageCorrupt, InvalidValue

DIGEST = hashlib.sha256(b"squashfs bytes").digest()


def superblock(bytes_used: int, major: int = 4, magic: bytes = b"hsqs") -> bytes:
    head = bytearray(SUPERBLOCK_SIZE)
    head[:4] = magic
    struct.pack_into("<H", head, 28, major)
    struct.pack_into("<Q", head, 40, bytes_used)
    return bytes(head)


def reseal(body: bytes) -> bytes:
    """Recompute the CRC so a test can change one field and reach the check behind the CRC."""
    return body[:-4] + struct.pack("<I", zlib.crc32(body[:-4]))


def reason(excinfo) -> str:
    return excinfo.value.reason


class TestTrailer:
    @given(length=st.integers(min_value=SUPERBLOCK_SIZE, max_value=2**64 - 1),
           digest=st.binary(min_size=32, max_size=32))
    def test_round_trip(self, length, digest):
        """decode(encode(length, sha256)) gives back the same length and sha256."""
        data = encode_trailer(length, digest)
        assert len(data) == TRAILER_SIZE == 64
        assert decode_trailer(data) == Trailer(length=length, sha256=digest, version=TRAILER_VERSION)

    def test_layout_is_documented(self):
        """The bytes sit where docs/image-format.md says: magic, version, flags, length, sha256, 0, crc."""
        data = encode_trailer(4096, DIGEST)
        assert data[:8] == TRAILER_MAGIC == b"AIMGTRL1"
        assert struct.unpack_from("<IIQ", data, 8) == (TRAILER_VERSION, 0, 4096)
        assert data[24:56] == DIGEST
        assert data[56:60] == b"\0\0\0\0"
        assert struct.unpack_from("<I", data, 60)[0] == zlib.crc32(data[:60])

    def test_image_id_is_hex_sha256(self):
        """The id is the lowercase hex of the recorded sha256."""
        assert decode_trailer(encode_trailer(4096, DIGEST)).image_id == DIGEST.hex()

    def test_bad_magic(self):
        """A trailer without the magic is 'not an appcontainers image'."""
        data = b"XXXXXXXX" + encode_trailer(4096, DIGEST)[8:]
        with pytest.raises(ImageCorrupt, match="no .aimg trailer"):
            decode_trailer(data)

    def test_damaged(self):
        """One flipped bit in the trailer is caught by the CRC."""
        data = bytearray(encode_trailer(4096, DIGEST))
        data[30] ^= 0x01
        with pytest.raises(ImageCorrupt, match="CRC mismatch"):
            decode_trailer(bytes(data))

    def test_newer_version(self):
        """A trailer version from the future asks for an upgrade."""
        data = bytearray(encode_trailer(4096, DIGEST))
        struct.pack_into("<I", data, 8, TRAILER_VERSION + 1)
        with pytest.raises(ImageCorrupt, match="newer than this appcontainers"):
            decode_trailer(reseal(bytes(data)))

    @pytest.mark.parametrize("offset,value", [(8, 0), (12, 1), (56, 7)])
    def test_invalid_version_flags_reserved(self, offset, value):
        """Version 0, non-zero flags or reserved bytes are refused."""
        data = bytearray(encode_trailer(4096, DIGEST))
        struct.pack_into("<I", data, offset, value)
        with pytest.raises(ImageCorrupt, match="invalid .aimg trailer"):
            decode_trailer(reseal(bytes(data)))

    def test_length_too_small(self):
        """A length shorter than a squashfs superblock is refused."""
        data = bytearray(encode_trailer(4096, DIGEST))
        struct.pack_into("<Q", data, 16, 10)
        with pytest.raises(ImageCorrupt, match="too small"):
            decode_trailer(reseal(bytes(data)))

    def test_wrong_size(self):
        """Fewer than 64 bytes is a cut trailer."""
        with pytest.raises(ImageCorrupt, match="truncated"):
            decode_trailer(encode_trailer(4096, DIGEST)[:-1])

    def test_encode_refuses_nonsense(self):
        """encode needs a positive length and 32 bytes of sha256."""
        with pytest.raises(InvalidValue):
            encode_trailer(0, DIGEST)
        with pytest.raises(InvalidValue):
            encode_trailer(4096, DIGEST[:16])


class TestLayout:
    """check_layout(head, tail, size) on synthetic files of 4096 bytes of squashfs + trailer."""

    LENGTH = 4096

    def file(self, used=4000, trailer=None):
        body = superblock(used) + bytes(self.LENGTH - SUPERBLOCK_SIZE)
        return body + (encode_trailer(self.LENGTH, DIGEST) if trailer is None else trailer)

    def check(self, data: bytes) -> Trailer:
        return check_layout(data[:SUPERBLOCK_SIZE], data[-4096:], len(data), "x.aimg")

    def test_valid(self):
        """A well-formed file yields its trailer."""
        assert self.check(self.file()).length == self.LENGTH

    def test_too_short(self):
        with pytest.raises(ImageCorrupt, match="too short") as e:
            self.check(b"hsqs")
        assert e.value.path == "x.aimg"

    def test_truncated_one_byte(self):
        """Cutting the last byte is reported as truncation, not as a foreign file."""
        with pytest.raises(ImageCorrupt, match="truncated: the .aimg trailer is cut short"):
            self.check(self.file()[:-1])

    def test_truncated_into_squashfs(self):
        """Cutting into the squashfs is reported with the bytes it needs."""
        with pytest.raises(ImageCorrupt, match="truncated: the squashfs needs 4000 bytes"):
            self.check(self.file()[:2000])

    def test_plain_squashfs(self):
        with pytest.raises(ImageCorrupt, match=r"no .aimg trailer\) \(a plain squashfs"):
            self.check(self.file(trailer=b""))

    def test_foreign(self):
        with pytest.raises(ImageCorrupt, match="not an appcontainers image"):
            self.check(b"\x7fELF" + bytes(8000))

    def test_prepended(self):
        with pytest.raises(ImageCorrupt, match="length mismatch.*bytes were added"):
            self.check(bytes(100) + self.file())

    def test_appended(self):
        """Bytes after the trailer are named as such, not as a missing trailer."""
        with pytest.raises(ImageCorrupt, match="length mismatch: 5 bytes follow the .aimg trailer"):
            self.check(self.file() + b"junk!")

    def test_cut_in_the_middle(self):
        """A trailer announcing more bytes than the file has means truncation."""
        data = self.file()
        with pytest.raises(ImageCorrupt, match="truncated: length mismatch"):
            self.check(data[:1000] + data[2000:])

    def test_bad_squashfs_magic(self):
        data = b"XXXX" + self.file()[4:]
        with pytest.raises(ImageCorrupt, match="bad squashfs magic"):
            self.check(data)

    def test_old_squashfs(self):
        data = superblock(4000, major=3) + self.file()[SUPERBLOCK_SIZE:]
        with pytest.raises(ImageCorrupt, match="unsupported squashfs version"):
            self.check(data)

    def test_bytes_used_beyond_length(self):
        with pytest.raises(ImageCorrupt, match="the squashfs needs 5000 bytes"):
            self.check(self.file(used=5000))


class TestArgv:
    def test_defaults(self):
        """zstd at the given level, N threads, xattrs, rootfs/ via the move action, no -e."""
        argv = mksquashfs_argv("/src/upper", "/m/manifest.json", "/d/.x.tmp", level=3, threads=4)
        assert argv[:4] == ["mksquashfs", "/src/upper", "/m/manifest.json", "/d/.x.tmp"]
        assert argv[argv.index("-Xcompression-level") + 1] == "3"
        assert argv[argv.index("-processors") + 1] == "4"
        assert {"-noappend", "-xattrs", "-no-progress", "-quiet"} <= set(argv)
        assert "move(rootfs)@depth(1) && type(d) && !name(rootfs)" in argv
        assert "-e" not in argv

    def test_excludes_last_and_anchored(self):
        """Excludes are wildcards under the escaped source name, after -e at the end."""
        argv = mksquashfs_argv("/src/we[i]rd*", "/m/manifest.json", "/d/x", level=3, threads=1,
                               excludes=["/tmp", "./var/cache/*", "run/"])
        i = argv.index("-e")
        assert argv[i - 1] == "-wildcards"
        assert argv[i + 1:] == [r"we\[i\]rd\*/tmp", r"we\[i\]rd\*/var/cache/*", r"we\[i\]rd\*/run"]

    @pytest.mark.parametrize("bad", ["", "/", "../etc", "a/../../b"])
    def test_excludes_outside_refused(self, bad):
        with pytest.raises(InvalidValue):
            mksquashfs_argv("/src", "/m/manifest.json", "/d/x", level=3, threads=1, excludes=[bad])

    def test_progress_uses_info(self):
        argv = mksquashfs_argv("/src", "/m/manifest.json", "/d/x", level=3, threads=1, info=True)
        assert "-info" in argv and "-quiet" not in argv
