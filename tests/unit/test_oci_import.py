"""OCI import as data: the layer filter (whiteouts, opaque dirs, checks, digests), the source
and config readings, and the import use case over the fakes (layers, reuse, nothing left)."""
from __future__ import annotations

import gzip
import hashlib
import io
import tarfile

import pytest
import zstandard

from appcontainers.adapters.host.tar_extract import MemberRules
from appcontainers.adapters.oci.layer_filter import (OPAQUE_XATTR, LayerLimits, LayerMapper, layer_members)
from appcontainers.domain.exceptions import ImageCorrupt, InvalidValue, UnsafePath
from appcontainers.domain.image import Image, Manifest, RunConfig
from appcontainers.domain.oci import OciImage, OciLayer, parse_source, run_config
from appcontainers.domain.operations import ImportOp
from tests.fakes import make_service

H = "sha256:" + "a" * 64


def info(name: str, kind: bytes = tarfile.REGTYPE, **kw) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in members:
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data) if data else None)
    return buf.getvalue()


def converted(blob: bytes, **kw) -> list[tarfile.TarInfo]:
    """The members layer_members emits for blob, read back by tarfile."""
    out = b"".join(layer_members(io.BufferedReader(io.BytesIO(blob)), "test", **{"digest": None, "diff_id": None, **kw}))
    with tarfile.open(fileobj=io.BytesIO(out + bytes(1024)), mode="r:") as tf:
        return tf.getmembers()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class TestLayerMapper:
    def test_whiteout_becomes_a_char_device_0_0(self):
        """etc/.wh.passwd is a character device 0/0 rootfs/etc/passwd."""
        [out] = LayerMapper().map(info("etc/.wh.passwd"), "etc/.wh.passwd")
        assert (out.name, out.type, out.devmajor, out.devminor, out.mode) == ("rootfs/etc/passwd", tarfile.CHRTYPE, 0, 0, 0)

    def test_opaque_marker_sets_the_xattr_on_its_directory(self):
        """A directory then its .wh..wh..opq: the directory, emitted last, carries the opaque xattr."""
        m = LayerMapper()
        assert m.map(info("opt/d", tarfile.DIRTYPE, mode=0o700, uid=7), "opt/d") == []
        assert m.map(info("opt/d/.wh..wh..opq"), "opt/d/.wh..wh..opq") == []
        [d] = m.directories()
        assert (d.name, d.mode, d.uid, d.pax_headers[OPAQUE_XATTR]) == ("rootfs/opt/d", 0o700, 7, "y")

    def test_opaque_marker_before_its_directory(self):
        """umoci writes the marker first: the directory's own entry keeps the xattr and its attributes."""
        m = LayerMapper()
        m.map(info("opt/d/.wh..wh..opq"), "opt/d/.wh..wh..opq")
        m.map(info("opt/d", tarfile.DIRTYPE, mode=0o750), "opt/d")
        [d] = m.directories()
        assert (d.mode, d.pax_headers[OPAQUE_XATTR]) == (0o750, "y")

    def test_opaque_marker_without_a_directory_entry(self):
        """A marker alone still makes its directory opaque (0755 root)."""
        m = LayerMapper()
        m.map(info("a/.wh..wh..opq"), "a/.wh..wh..opq")
        [d] = m.directories()
        assert (d.name, d.mode, d.pax_headers[OPAQUE_XATTR]) == ("rootfs/a", 0o755, "y")

    def test_aufs_metadata_is_dropped(self):
        """.wh..wh.plnk and its kin are not part of the tree."""
        assert LayerMapper().map(info(".wh..wh.plnk", tarfile.DIRTYPE), ".wh..wh.plnk") == []

    def test_image_overlay_xattrs_are_dropped_others_kept(self):
        """An image cannot set trusted.overlay.* itself (a redirect, an opaque of its own)."""
        ti = info("f", pax_headers={"SCHILY.xattr.trusted.overlay.redirect": "/etc", "SCHILY.xattr.user.k": "v",
                                    "path": "f"})
        [out] = LayerMapper().map(ti, "f")
        assert out.pax_headers == {"SCHILY.xattr.user.k": "v"}

    def test_hard_link_target_is_prefixed(self):
        """A hard link names its target under rootfs/ too."""
        [out] = LayerMapper().map(info("b", tarfile.LNKTYPE, linkname="./a"), "b")
        assert (out.name, out.linkname) == ("rootfs/b", "rootfs/a")

    def test_malformed_whiteouts_are_refused(self):
        """.wh. alone, or a whiteout that is no regular file, is refused."""
        from appcontainers.adapters.host.tar_extract import MemberRefused

        with pytest.raises(MemberRefused):
            LayerMapper().map(info("d/.wh."), "d/.wh.")
        with pytest.raises(MemberRefused):
            LayerMapper().map(info("d/.wh.x", tarfile.SYMTYPE, linkname="y"), "d/.wh.x")


class TestLayerMembers:
    def _layer(self):
        return tar_bytes([(info("./", tarfile.DIRTYPE, mode=0o755), b""), (info("bin", tarfile.DIRTYPE), b""),
                          (info("bin/sh", mode=0o755, uid=0), b"#!x\n"),
                          (info("bin/ls", tarfile.SYMTYPE, linkname="/bin/busybox"), b""),
                          (info("etc/.wh.gone"), b""), (info("srv/.wh..wh..opq"), b"")])

    def test_members_under_rootfs_directories_last(self):
        """Files, links and whiteouts under rootfs/, then the directories (opaque ones marked)."""
        got = [(m.name, m.type) for m in converted(self._layer())]
        assert got == [("rootfs/bin/sh", tarfile.REGTYPE), ("rootfs/bin/ls", tarfile.SYMTYPE),
                       ("rootfs/etc/gone", tarfile.CHRTYPE), ("rootfs", tarfile.DIRTYPE),
                       ("rootfs/bin", tarfile.DIRTYPE), ("rootfs/srv", tarfile.DIRTYPE)]

    @pytest.mark.parametrize("compress", [lambda b: b, gzip.compress, lambda b: zstandard.ZstdCompressor().compress(b)])
    def test_plain_gzip_and_zstd_and_their_digests(self, compress):
        """Any of the three compressions; the blob digest and the diff_id are checked."""
        plain = self._layer()
        blob = compress(plain)
        assert len(converted(blob, digest=sha(blob), diff_id=sha(plain))) == 6

    def test_wrong_diff_id_is_refused(self):
        """Content that is not what the config's diff_id says: ImageCorrupt."""
        blob = gzip.compress(self._layer())
        with pytest.raises(ImageCorrupt, match="diff_id"):
            converted(blob, digest=sha(blob), diff_id=H)

    def test_corrupted_blob_is_refused(self):
        """A byte changed in the compressed blob: ImageCorrupt naming the digest."""
        blob = bytearray(gzip.compress(self._layer() * 3))
        digest = sha(bytes(blob))
        blob[len(blob) // 2] ^= 0xFF
        with pytest.raises(ImageCorrupt, match="digest"):
            converted(bytes(blob), digest=digest)

    def test_missing_end_blocks_are_tolerated(self):
        """A layer ending right after its last data (umoci insert writes them so) still reads."""
        plain = self._layer()
        cut = tar_bytes([(info("a"), b"12345678")])[:512 + 8]
        assert [m.name for m in converted(cut, diff_id=sha(cut))] == ["rootfs/a"]
        assert plain  # the regular one above reads too

    @pytest.mark.parametrize("member,why", [
        (info("../x"), "'..'"), (info("/etc/x"), "absolute"), (info("dev/sda", tarfile.BLKTYPE), "device"),
        (info("bin/su", mode=0o4755), "setuid"), (info("h", tarfile.LNKTYPE, linkname="nowhere"), "hard link"),
    ])
    def test_unsafe_members_are_refused(self, member, why):
        """Escapes, devices, setuid files, hard links to nothing in the layer: UnsafePath."""
        with pytest.raises(UnsafePath, match=why):
            converted(tar_bytes([(member, b"")]))

    def test_devices_and_setuid_when_allowed(self):
        """rules may allow devices and setuid files; symlinks anywhere are kept (resolved in the container)."""
        limits = LayerLimits(rules=MemberRules(devices=True, setuid=True, any_symlink=True))
        blob = tar_bytes([(info("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3), b""),
                          (info("bin/su", mode=0o4755), b"x"), (info("l", tarfile.SYMTYPE, linkname="../../.."), b"")])
        got = {m.name: m for m in converted(blob, limits=limits)}
        assert got["rootfs/bin/su"].mode == 0o4755 and got["rootfs/dev/null"].devminor == 3

    def test_truncated_data_is_refused(self):
        """Only the padding and end blocks may be missing: data cut short is refused."""
        cut = tar_bytes([(info("a"), b"x" * 700)])[:512 + 600]
        with pytest.raises(InvalidValue, match="cut short"):
            converted(cut)

    def test_giant_header_is_refused_unread(self):
        """A PAX header declaring more than 4 MiB is refused before it is read."""
        blob = tar_bytes([(info("a", pax_headers={"comment": "x" * (5 << 20)}), b"")])
        with pytest.raises(InvalidValue, match="not a readable tar"):
            converted(blob)

    @pytest.mark.parametrize("damage", ["cut in a header", "garbage between members"])
    def test_a_damaged_tar_is_refused_not_shortened(self, damage):
        """tarfile takes a header it cannot read as the archive's end: a plain tar (no digest to
        check) cut in its second header, or with garbage where a header should be, is refused
        rather than imported as its first member alone."""
        whole = tar_bytes([(info("a"), b"x" * 10), (info("b"), b"y" * 10)])
        first = 2 * tarfile.BLOCKSIZE  # a's header and its data block; b's header follows
        assert whole[first:first + 1] == b"b", "precondition: b's header starts there"
        blob = whole[:first + 100] if damage == "cut in a header" else whole[:first] + b"\x07" * 512 + whole[first:]
        assert [m.name for m in tarfile.open(fileobj=io.BytesIO(blob)).getmembers()] == ["a"], \
            "precondition: tarfile alone reads the damaged tar as holding only a"
        with pytest.raises(InvalidValue, match="damaged header"):
            converted(blob)

    def test_big_extended_headers_are_refused(self):
        """A member with more than 64 KiB of PAX headers (xattrs): refused (each header would
        otherwise be held in memory for the whole layer)."""
        blob = tar_bytes([(info("a", pax_headers={"SCHILY.xattr.user.x": "v" * (65 << 10)}), b"")])
        with pytest.raises(UnsafePath, match="extended headers"):
            converted(blob)

    def test_file_capabilities_are_refused_like_setuid(self):
        """security.capability (e.g. cap_setuid+ep) is refused unless setuid files are allowed."""
        cap = {"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x80"}
        blob = tar_bytes([(info("bin/ping", mode=0o755, pax_headers=cap), b"x")])
        with pytest.raises(UnsafePath, match="capabilities"):
            converted(blob)
        allowed = LayerLimits(rules=MemberRules(setuid=True, any_symlink=True))
        [m] = converted(blob, limits=allowed)
        assert "SCHILY.xattr.security.capability" in m.pax_headers

    def test_a_bomb_after_the_end_is_refused(self):
        """More than 1 MiB after the tar's end marker (a decompression bomb hidden where nothing
        reads it but the diff_id): refused, not drained for hours."""
        blob = gzip.compress(tar_bytes([(info("a"), b"x")]) + bytes(3 << 20))
        with pytest.raises(ImageCorrupt, match="follow the end"):
            converted(blob)

    def test_size_limits(self):
        """More members or bytes than the limits: refused."""
        blob = tar_bytes([(info("a"), b"x" * 600), (info("b"), b"y")])
        with pytest.raises(UnsafePath, match="members"):
            converted(blob, limits=LayerLimits(max_members=1))
        with pytest.raises(UnsafePath, match="bytes"):
            converted(blob, limits=LayerLimits(max_bytes=500))

    def test_not_a_tar(self):
        """Bytes that are no tar: InvalidValue, one line."""
        with pytest.raises(InvalidValue, match="not a readable tar"):
            converted(gzip.compress(b"hello" * 300))


class TestSourcesAndConfig:
    @pytest.mark.parametrize("text,expected", [
        ("oci:/x/lay:v1", ("oci", "/x/lay", "v1")), ("oci:/x/lay", ("oci", "/x/lay", "")),
        ("oci-archive:/a/b.tar:t", ("oci-archive", "/a/b.tar", "t")),
        ("docker-archive:/a/b:c.tar", ("docker-archive", "/a/b:c.tar", "")),
        ("docker://127.0.0.1:5000/app/web:1.0", ("docker", "//127.0.0.1:5000/app/web:1.0", "")),
        ("/tmp/root.tar.gz", ("tar", "/tmp/root.tar.gz", "")),
    ])
    def test_parse_source(self, text, expected):
        """skopeo's transports and a plain path."""
        s = parse_source(text)
        assert (s.transport, s.ref, s.tag) == expected

    def test_default_names(self):
        """The repository's last part, or the file's name without its tar suffixes."""
        assert parse_source("docker://127.0.0.1:5000/app/web:1.0").default_name() == "web"
        assert parse_source("/tmp/root.tar.gz").default_name() == "root"
        assert parse_source("oci-archive:/a/my img.tar").default_name() == "my-img"

    def test_bad_sources(self):
        """docker: without //, oci: without a path, an empty string."""
        for bad in ("docker:web", "oci:", ""):
            with pytest.raises(InvalidValue):
                parse_source(bad)

    def test_run_config(self):
        """Env, Entrypoint, Cmd, WorkingDir, User, ExposedPorts (a bare port is tcp), Labels."""
        cfg = run_config({"config": {"Env": ["PATH=/bin", "A=b=c"], "Entrypoint": ["/init"], "Cmd": None,
                                     "WorkingDir": "/srv", "User": "1000:1000",
                                     "ExposedPorts": {"80/tcp": {}, "53": {}}, "Labels": {"k": "v"}}})
        assert cfg == RunConfig(env={"PATH": "/bin", "A": "b=c"}, entrypoint=("/init",), workdir="/srv",
                                user="1000:1000", exposed_ports=("53/tcp", "80/tcp"), labels={"k": "v"})
        assert run_config({}) == RunConfig()
        with pytest.raises(InvalidValue):
            run_config({"config": {"Cmd": "sh -c x"}})


def _image(*digests: str, config: RunConfig | None = RunConfig(cmd=("/bin/sh",))) -> OciImage:
    return OciImage(layers=tuple(OciLayer(digest="sha256:" + d * 64, diff_id="sha256:" + d * 63 + "0",
                                          size=100) for d in digests), config=config, layout="/x")


class TestImportService:
    def _svc(self, **images: OciImage):
        svc = make_service()
        for ref, image in images.items():
            svc.ports.oci.images[f"oci:{ref}"] = image
        return svc

    def test_layers_become_a_chain_with_the_config_on_top(self):
        """Three layers: two 'layer' images and the named top, parents in order, config on top."""
        svc = self._svc(**{"/img": _image("a", "b", "c")})
        top = svc.import_image("oci:/img", name="web")
        images = svc.ports.repo.read().images
        assert top.name == "web" and top.kind == "user" and top.manifest.config == RunConfig(cmd=("/bin/sh",))
        mid = images[top.parent]
        base = images[mid.parent]
        assert (mid.kind, base.kind, base.parent) == ("layer", "layer", None)
        assert base.manifest.diff_id == "sha256:" + "a" * 63 + "0" and base.manifest.config is None
        assert [i.name for i in svc.list_images()] == ["web"]
        for i in (top, mid, base):
            assert svc.ports.fs.exists(svc.settings.layout.image_file(i.id, i.kind))

    def test_shared_base_layer_is_stored_once(self):
        """Two images on the same base: the base layer is converted once, reused by the second."""
        svc = self._svc(**{"/one": _image("a", "b"), "/two": _image("a", "c")})
        one = svc.import_image("oci:/one")
        two = svc.import_image("oci:/two")
        assert one.parent == two.parent
        assert len(svc.ports.codec.packed) == 3

    def test_failure_leaves_nothing(self):
        """A layer refused half-way: no image recorded, no file in the store, no record left."""
        svc = self._svc(**{"/img": _image("a", "b")})
        svc.ports.oci.chunks["sha256:" + "b" * 64] = UnsafePath("layer b refused: member 'x' is a device")
        before = svc.ports.repo.read()
        with pytest.raises(UnsafePath):
            svc.import_image("oci:/img")
        after = svc.ports.repo.read()
        assert after.images == before.images and after.operations == {}
        store = svc.settings.layout.user_images
        assert [f for f in svc.ports.fs.files if f.startswith(store)] == []

    def test_repeated_import_reuses_the_image(self):
        """The same image imported twice under one name: the same top image, nothing converted again."""
        svc = self._svc(**{"/img": _image("a", "b")})
        first = svc.import_image("oci:/img", name="x")
        assert svc.import_image("oci:/img", name="x").id == first.id
        assert len(svc.ports.codec.packed) == 2

    def test_a_stored_image_claiming_a_layers_diff_id_is_never_reused(self):
        """Attack: a loaded or pulled image whose own manifest claims a base layer's diff_id (and,
        for the top, the name and config an import would give). A later import converts its
        layers itself: neither the claimed base nor the claimed top is taken from the store."""
        svc = self._svc(**{"/img": _image("a", "b")})
        claimed = {"format_version": 1, "name": "layer-aaaaaaaaaaaa", "created": 0, "parent": None,
                   "diff_id": "sha256:" + "a" * 63 + "0"}
        planted = Image(id="e" * 64, manifest=Manifest.from_dict(claimed), kind="user")
        planted_top = Image(id="f" * 64, kind="user", manifest=Manifest.from_dict({
            "format_version": 1, "name": "web", "created": 1, "parent": planted.id,
            "diff_id": "sha256:" + "b" * 63 + "0", "config": {"cmd": ["/bin/sh"]}}))
        with svc.ports.repo.transaction() as state:
            state.images[planted.id] = planted
            state.images[planted_top.id] = planted_top
        for img in (planted, planted_top):
            svc.ports.fs.files[svc.settings.layout.image_file(img.id, img.kind)] = b"the attacker's tree"
        assert svc.ports.repo.read().images[planted.id].manifest.diff_id == claimed["diff_id"], "precondition"
        top = svc.import_image("oci:/img", name="web")
        assert top.id != planted_top.id and top.parent != planted.id
        assert len(svc.ports.codec.packed) == 2

    def test_remove_takes_unused_layers_keeps_shared(self):
        """Removing an imported image removes its own layers, not one another image stands on."""
        svc = self._svc(**{"/one": _image("a", "b", "c"), "/two": _image("a", "d")})
        one = svc.import_image("oci:/one")
        two = svc.import_image("oci:/two")
        svc.remove_image(one.id)
        images = svc.ports.repo.read().images
        assert set(images) == {two.id, two.parent}

    def test_dead_import_is_undone_by_gc(self):
        """An import record whose process is gone: reconcile removes its work directory and forgets it."""
        svc = self._svc()
        work = svc.settings.layout.user_images + "/.oci-import.0badf00d"
        svc.ports.fs.make_dirs(work)
        svc.ports.fs.files[work + "/0.aimg"] = b"half"
        with svc.ports.repo.transaction() as state:
            state.begin(ImportOp(id="import-0badf00d", owner="dead", work_dir=work))
        svc.reconcile()
        assert not svc.ports.fs.exists(work + "/0.aimg") and not svc.ports.fs.exists(work)
        assert svc.ports.repo.read().operations == {}

    def test_import_record_round_trips(self):
        """ImportOp is stored as the dict reconcile reads back."""
        from appcontainers.domain.operations import operation_from_dict

        op = ImportOp(id="import-1", owner="me", work_dir="/srv/ac/images/user/.oci-import.1")
        assert operation_from_dict(op.id, op.to_dict()) == op


class TestSkopeo:
    def test_copy_argv(self):
        """skopeo copy into oci:WORK:import; --src-tls-verify=false only for a registry asked so."""
        from appcontainers.adapters.oci.source import skopeo_copy_argv

        assert skopeo_copy_argv(parse_source("docker://127.0.0.1:5000/a:1"), "/w", tls_verify=False) == [
            "skopeo", "copy", "--quiet", "--src-tls-verify=false", "docker://127.0.0.1:5000/a:1", "oci:/w:import"]
        assert skopeo_copy_argv(parse_source("oci-archive:/f.tar:t"), "/w") == [
            "skopeo", "copy", "--quiet", "oci-archive:/f.tar:t", "oci:/w:import"]

    def test_reason_is_the_fatal_message(self):
        """A failing skopeo becomes one line: the message of its fatal log line."""
        from appcontainers.adapters.oci.source import skopeo_reason

        out = 'time="x" level=fatal msg="initializing source: reading manifest t: \\"not found\\""\n'
        assert skopeo_reason(out) == 'initializing source: reading manifest t: "not found"'
        assert skopeo_reason("plain failure\n") == "plain failure"


class TestCli:
    def test_import_json(self):
        """`import SOURCE --name N --json` prints the top image, its layer count and config."""
        import json

        from click.testing import CliRunner

        from appcontainers.entrypoints.cli import main

        svc = make_service()
        svc.ports.oci.images["oci:/img"] = _image("a", "b")
        result = CliRunner().invoke(main, ["import", "oci:/img", "--name", "web", "--json"],
                                    obj=lambda reconcile=True: svc)
        assert result.exit_code == 0, result.output
        out = json.loads(result.output)
        assert (out["name"], out["layers"], out["config"]["cmd"]) == ("web", 2, ["/bin/sh"])

    def test_refusal_is_one_line(self):
        """A refused layer: exit 1, one error line."""
        from click.testing import CliRunner

        from appcontainers.entrypoints.cli import main

        svc = make_service()
        svc.ports.oci.images["oci:/img"] = _image("a")
        svc.ports.oci.chunks["sha256:" + "a" * 64] = UnsafePath("layer a refused: member 'dev/x' is a device")
        result = CliRunner().invoke(main, ["import", "oci:/img"], obj=lambda reconcile=True: svc)
        assert result.exit_code == 1
        assert result.output.strip().splitlines() == ["appcontainers: error: layer a refused: member 'dev/x' is a device"]
