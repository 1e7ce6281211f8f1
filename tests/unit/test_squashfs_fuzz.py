"""The pure-Python squashfs reader on any bytes: images built by mksquashfs with every
compressor, read exactly as unsquashfs reads them, then damaged (a seeded byte-flip corpus):
every failure is ImageCorrupt, and memory stays bounded (a gzip bomb is refused quickly)."""
from __future__ import annotations

import os
import random
import shutil
import stat
import struct
import subprocess
import time
import tracemalloc
import zlib

import pytest

from appcontainers.adapters.aimg.squashfs_blocks import LRU
from appcontainers.adapters.aimg.squashfs_reader import SquashfsReader
from appcontainers.domain.exceptions import ImageCorrupt

pytestmark = pytest.mark.skipif(not shutil.which("mksquashfs") or not shutil.which("unsquashfs"),
                                reason="needs squashfs-tools")

COMPRESSORS = ["gzip", "xz", "zstd", "lzma"]


def _lz4_importable() -> bool:
    try:
        import lz4.block  # noqa: F401
    except ImportError:
        return False
    return True


READABLE = COMPRESSORS + (["lz4"] if _lz4_importable() else [])


def _tree(root: str) -> None:
    rng = random.Random(7)
    os.makedirs(os.path.join(root, "etc/deep/er"))
    os.makedirs(os.path.join(root, "empty"))
    for n in range(40):  # small files: fragments
        with open(os.path.join(root, "etc", f"f{n:02d}"), "wb") as f:
            f.write(rng.randbytes(rng.randrange(0, 3000)))
    with open(os.path.join(root, "etc/deep/er/big"), "wb") as f:  # several blocks, some compressible
        f.write(rng.randbytes(70000) + bytes(150000) + rng.randbytes(9000))
    with open(os.path.join(root, "sparse"), "wb") as f:
        f.truncate(300000)
    os.symlink("etc/deep/er/big", os.path.join(root, "link"))
    os.symlink("/" + "x" * 300, os.path.join(root, "longlink"))
    try:
        os.setxattr(os.path.join(root, "etc/f00"), "user.note", b"v" * 100)
    except OSError:
        pass  # a filesystem without user xattrs: the images simply carry none


def _mksquashfs(src: str, dest: str, *options: str) -> str:
    subprocess.run(["mksquashfs", src, dest, "-noappend", "-quiet", "-no-progress", "-all-root",
                    *options], check=True, capture_output=True, timeout=120)
    return dest


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """{(compressor, block size): image path} plus the tree they hold."""
    base = tmp_path_factory.mktemp("sqfuzz")
    src = str(base / "tree")
    _tree(src)
    built = {}
    for comp in READABLE + ["lzo"] + ([] if _lz4_importable() else ["lz4"]):
        for block in ("4K", "128K"):
            built[comp, block] = _mksquashfs(src, str(base / f"{comp}-{block}.sqfs"), "-comp", comp, "-b", block)
    return built, src


def _walk(sq: SquashfsReader, budget: int = 400) -> int:
    """Visit every entry (directories, file contents, link targets, xattrs); returns bytes read."""
    seen, stack, total = set(), [sq.root], 0
    while stack and budget:
        d = stack.pop()
        for name, ref in sq.listdir(d).items():
            budget -= 1
            if ref in seen or not budget:
                continue
            seen.add(ref)
            i = sq.inode(ref)
            sq.xattrs(i)
            if i.kind == stat.S_IFDIR:
                stack.append(i)
            elif i.kind == stat.S_IFREG:
                for offset in range(0, min(i.size, 1 << 20), 65536):
                    total += len(sq.read(i, offset, 65536))
    return total


class TestCleanImages:
    @pytest.mark.parametrize("comp", READABLE)
    @pytest.mark.parametrize("block", ["4K", "128K"])
    def test_reads_what_unsquashfs_extracts(self, images, tmp_path, comp, block):
        """Every file, link and mode read back as unsquashfs extracts it."""
        built, _ = images
        out = tmp_path / "out"
        subprocess.run(["unsquashfs", "-no-xattrs", "-d", str(out), built[comp, block]], check=True,
                       capture_output=True, timeout=120)
        sq = SquashfsReader(built[comp, block])
        try:
            stack, checked = [("", sq.root)], 0
            while stack:
                rel, d = stack.pop()
                entries = sq.listdir(d)
                assert sorted(entries) == sorted(os.listdir(out / rel) if rel else os.listdir(out))
                for name, ref in entries.items():
                    i, host = sq.inode(ref), os.path.join(out, rel, name)
                    assert stat.S_IMODE(i.mode) == stat.S_IMODE(os.lstat(host).st_mode)
                    if i.kind == stat.S_IFDIR:
                        stack.append((os.path.join(rel, name), i))
                    elif i.kind == stat.S_IFLNK:
                        assert i.target.decode() == os.readlink(host)
                    else:
                        with open(host, "rb") as f:
                            assert sq.read_all(i, 1 << 20) == f.read()
                    checked += 1
            assert checked >= 45
        finally:
            sq.close()

    @pytest.mark.parametrize("comp", ["lzo"] + ([] if _lz4_importable() else ["lz4"]))
    def test_unsupported_compressor_is_image_corrupt(self, images, comp):
        """A compressor the reader cannot decode is refused with ImageCorrupt naming it."""
        with pytest.raises(ImageCorrupt, match=comp):
            SquashfsReader(images[0][comp, "4K"])


def _mutants(data: bytes, rng: random.Random, count: int):
    """Seeded damage: flipped bytes anywhere, bytes set to extremes, truncations."""
    for n in range(count):
        buf = bytearray(data)
        kind = n % 4
        if kind == 3:
            yield bytes(buf[:rng.randrange(96, len(buf))])
            continue
        for _ in range(rng.randrange(1, 9)):
            at = rng.randrange(0, len(buf)) if kind == 0 else rng.randrange(96, len(buf))
            buf[at] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256)]) if kind == 1 else buf[at] ^ (1 << rng.randrange(8))
        yield bytes(buf)


class TestDamagedImages:
    @pytest.mark.parametrize("comp", READABLE)
    def test_every_failure_is_image_corrupt_and_memory_stays_bounded(self, images, tmp_path, comp):
        """Hundreds of damaged images: each opens and reads, or fails with ImageCorrupt; never
        another exception, never more than a few MiB held."""
        built, _ = images
        outcomes = {"read": 0, "corrupt": 0}
        tracemalloc.start()
        try:
            for block in ("4K", "128K"):
                with open(built[comp, block], "rb") as f:
                    data = f.read()
                seed = hash((comp, block)) & 0xFFFF
                for n, mutant in enumerate(_mutants(data, random.Random(seed), 150)):
                    path = tmp_path / "m.sqfs"
                    path.write_bytes(mutant)
                    try:
                        sq = SquashfsReader(str(path))
                        try:
                            _walk(sq)
                        finally:
                            sq.close()
                        outcomes["read"] += 1
                    except ImageCorrupt:
                        outcomes["corrupt"] += 1
                    except Exception as e:  # the assertion under test: nothing else escapes
                        pytest.fail(f"{comp} {block} seed {seed} mutant {n}: {type(e).__name__}: {e}")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert outcomes["read"] > 20 and outcomes["corrupt"] > 20, outcomes  # both paths exercised
        assert peak < 48 << 20, peak


def _bomb(mib: int) -> bytes:
    """A zlib stream of mib MiB of zeros, built from one repeated deflate unit (compressing
    GiBs would take seconds): after a full flush, each further MiB compresses to the same bytes."""
    c, chunk = zlib.compressobj(9), bytes(1 << 20)
    first = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    unit = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    assert first[2:] == unit
    adler = (((mib << 20) % 65521) << 16) | 1  # adler32 of that many zero bytes
    return first[:2] + unit * mib + b"\x03\x00" + adler.to_bytes(4, "big")  # + an empty final block


@pytest.fixture(scope="module")
def bomb_image(tmp_path_factory):
    """A gzip image, 1 MiB blocks, uncompressed tables and data, holding 'bomb': 2 MiB of random
    bytes; returns (image bytes, where the data is, where its two block-size words are)."""
    base = tmp_path_factory.mktemp("sqbomb")
    (base / "tree").mkdir()
    payload = os.urandom(2 << 20)
    (base / "tree" / "bomb").write_bytes(payload)
    image = _mksquashfs(str(base / "tree"), str(base / "b.sqfs"), "-comp", "gzip", "-b", "1M",
                        "-noI", "-noD", "-noF", "-noX")
    data = open(image, "rb").read()
    stored = struct.pack("<I", (1 << 24) | (1 << 20))  # "1 MiB, stored uncompressed"
    words = data.index(stored + stored)
    return data, data.index(payload[:4096]), words, base


class TestBombs:
    def _patched(self, bomb_image, block: bytes, size_word: int) -> str:
        data, at, words, base = bomb_image
        buf = bytearray(data)
        buf[at:at + len(block)] = block
        buf[words:words + 4] = struct.pack("<I", size_word)  # compressed, this many bytes on disk
        path = base / "patched.sqfs"
        path.write_bytes(bytes(buf))
        return str(path)

    @pytest.mark.parametrize("case", ["1MiB-block-inflating-to-1000MiB", "2MB-block-inflating-to-2000MiB"])
    def test_gzip_bomb_is_refused_quickly(self, bomb_image, case):
        """A block that inflates past the block size is refused, at once and in little memory."""
        if case.startswith("1MiB"):
            block = _bomb(1000)
            assert len(block) <= 1 << 20
        else:  # longer on disk than a block may be; the declared length alone refuses it
            block = _bomb(2000)
            assert 1 << 20 < len(block) <= 2 << 20
        path = self._patched(bomb_image, block, len(block))
        # the precondition: the block really is a bomb, and sits where the file's first block is
        assert len(zlib.decompressobj().decompress(block, (2 << 20) + 1)) > 2 << 20
        sq = SquashfsReader(path)
        try:
            i = sq.inode(sq.listdir(sq.root)["bomb"])
            tracemalloc.start()
            started = time.monotonic()
            try:
                with pytest.raises(ImageCorrupt, match="more than 1048576 bytes|out of bounds"):
                    sq.read(i, 0, 4096)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert time.monotonic() - started < 2 and peak < 8 << 20, peak
        finally:
            sq.close()


class TestNames:
    @pytest.mark.parametrize("bad", [b"a/c", b"..", b"a\0c"])
    def test_bad_directory_entry_names_are_refused(self, tmp_path, bad):
        """A directory entry named with '/', '..' or NUL is ImageCorrupt, not a name."""
        (tmp_path / "tree").mkdir()
        (tmp_path / "tree" / ("q" * len(bad))).write_text("x")
        image = _mksquashfs(str(tmp_path / "tree"), str(tmp_path / "n.sqfs"), "-noI", "-comp", "gzip")
        data = open(image, "rb").read()
        assert data.count(b"q" * len(bad)) == 1
        path = tmp_path / "bad.sqfs"
        path.write_bytes(data.replace(b"q" * len(bad), bad))
        sq = SquashfsReader(str(path))
        try:
            with pytest.raises(ImageCorrupt, match="invalid directory entry"):
                sq.listdir(sq.root)
        finally:
            sq.close()


class TestCache:
    def test_lru_is_bounded_in_bytes(self):
        """Entries are dropped oldest first once their bytes pass the bound; a value bigger than
        the bound is returned but never kept."""
        cache = LRU(100, max_bytes=1000)
        for n in range(10):
            cache.put(n, bytes(300))
            assert cache.bytes <= 1000
        assert len(cache) == 3 and cache.get(9) is not None and cache.get(6) is None
        assert len(cache.put("huge", bytes(5000))) == 5000 and cache.get("huge") is None
        assert cache.bytes <= 1000


class TestTopLevel:
    @pytest.mark.parametrize("shape", ["rootfs-symlink", "rootfs-file", "manifest-symlink", "sparse-manifest"])
    def test_image_mount_path_refuses_what_verify_refuses(self, tmp_path, shape):
        """The FUSE path (open_layers) refuses a sealed image whose rootfs is not a real directory
        or whose manifest.json is a symlink or larger than 1 MiB (a sparse GiB)."""
        import hashlib
        import json

        from appcontainers.adapters.aimg.squashfs import encode_trailer
        from appcontainers.adapters.aimg.squashfs_reader import open_layers

        content = tmp_path / "c"
        content.mkdir()
        manifest = content / "manifest.json"
        if shape == "manifest-symlink":
            manifest.symlink_to("/etc/hostname")
        elif shape == "sparse-manifest":
            with open(manifest, "wb") as f:
                f.truncate(1 << 30)
        else:
            manifest.write_text(json.dumps({"format_version": 1, "name": "t", "created": 0.0}))
        if shape == "rootfs-symlink":
            (content / "rootfs").symlink_to("/etc")
        elif shape == "rootfs-file":
            (content / "rootfs").write_text("x")
        else:
            (content / "rootfs").mkdir()
        image = _mksquashfs(str(content), str(tmp_path / "x.aimg"), "-comp", "zstd")
        data = open(image, "rb").read()
        with open(image, "ab") as f:
            f.write(encode_trailer(len(data), hashlib.sha256(data).digest()))
        assert os.path.getsize(image) < 65536
        with pytest.raises(ImageCorrupt, match="rootfs is|manifest.json is"):
            open_layers([image])
