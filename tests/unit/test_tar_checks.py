"""The first pass over an untrusted tar (pure: headers only, nothing written) and the manifest's
depth bound, as data."""
from __future__ import annotations

import io
import tarfile

import pytest

from appcontainers.adapters.aimg.squashfs import json_depth, parse_manifest
from appcontainers.adapters.host.tar_extract import _Refused, check_member, read_plan
from appcontainers.domain.exceptions import ImageCorrupt, InvalidValue, UnsafePath


def _member(name, kind=tarfile.REGTYPE, linkname="", mode=0o644, size=0):
    m = tarfile.TarInfo(name)
    m.type, m.linkname, m.mode, m.size = kind, linkname, mode, size
    return m


def _tar(*members) -> tarfile.TarFile:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for m in members:
            tf.addfile(m, io.BytesIO(bytes(m.size)) if m.isreg() else None)
    buf.seek(0)
    return tarfile.open(fileobj=buf, mode="r:")


class TestCheckMember:
    @pytest.mark.parametrize("member, reason", [
        (_member("/etc/passwd"), "absolute"),
        (_member("a/../../x"), "'..'"),
        (_member("x" * 4001), "too long"),
        (_member("suid", mode=0o4755), "setuid"),
        (_member("sgid", mode=0o2755), "setuid or setgid"),
        (_member("l", tarfile.SYMTYPE, "/etc"), "absolute"),
        (_member("a/l", tarfile.SYMTYPE, "../../etc"), "outside"),
        (_member("l", tarfile.SYMTYPE, ""), "nothing"),
        (_member("h", tarfile.LNKTYPE, "not-in-archive"), "not a file earlier"),
        (_member("h", tarfile.LNKTYPE, "../outside"), "not a file earlier"),
        (_member("dev", tarfile.CHRTYPE), "special"),
        (_member("fifo", tarfile.FIFOTYPE), "special"),
        (_member(".", tarfile.REGTYPE), "destination itself"),
    ], ids=lambda v: v if isinstance(v, str) else v.name[:20])
    def test_refused(self, member, reason):
        """Each dangerous header is refused with a reason naming what is wrong."""
        with pytest.raises(_Refused, match=reason):
            check_member(member, set())

    def test_accepted_names_are_clean(self):
        """'./a//b/' is a/b; '.' as a directory is the destination; links inside pass."""
        files: set[str] = set()
        assert check_member(_member("./a//b/"), files) == "a/b"
        assert check_member(_member("./", tarfile.DIRTYPE), files) == ""
        assert check_member(_member("a/l", tarfile.SYMTYPE, "../a/b"), files) == "a/l"
        assert check_member(_member("h", tarfile.LNKTYPE, "./a/b"), files) == "h"
        assert files == {"a/b", "h"}


class TestReadPlan:
    def test_limits_are_checked_on_declared_sizes(self):
        """max_bytes counts regular files' declared sizes; the member naming the excess is named."""
        with _tar(_member("a", size=600), _member("b", size=600)) as tf:
            with pytest.raises(UnsafePath, match="member 'b' takes it past 1000 unpacked bytes"):
                read_plan(tf, "t.tar", 1000, 10)
        with _tar(_member("a", size=600), _member("b", size=400)) as tf:
            plan, total = read_plan(tf, "t.tar", 1000, 10)
            assert [name for _, name in plan] == ["a", "b"] and total == 1000

    def test_member_count(self):
        """One member more than max_members is refused before it is looked at."""
        with _tar(*[_member(f"f{n}") for n in range(4)]) as tf:
            with pytest.raises(UnsafePath, match="more than 3 members"):
                read_plan(tf, "t.tar", 1 << 20, 3)

    def test_damaged_stream_is_invalid_value(self):
        """A tar.gz cut short partway is an InvalidValue, not a traceback."""
        import gzip
        import os

        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            for n in range(3):
                tf.addfile(_member(f"f{n}", size=50000), io.BytesIO(os.urandom(50000)))
        cut = gzip.compress(buf.getvalue())[:80000]
        with gzip.GzipFile(fileobj=io.BytesIO(cut)) as stream, tarfile.open(fileobj=stream, mode="r:") as tf:
            with pytest.raises(InvalidValue, match="not a readable tar"):
                read_plan(tf, "t.tar.gz", 1 << 20, 10)


class TestManifestDepth:
    @pytest.mark.parametrize("text, depth", [
        ("{}", 1), ('{"a": [1, {"b": 2}]}', 3), ('"[[[["', 0), (r'["\"[[", "\\", []]', 2), ("[" * 40, 40),
    ])
    def test_json_depth(self, text, depth):
        """Brackets inside strings (escaped quotes and backslashes too) do not count."""
        assert json_depth(text) == depth

    def test_deep_manifest_refused_before_parsing(self):
        """200,000 nested arrays: ImageCorrupt for depth, never a RecursionError."""
        with pytest.raises(ImageCorrupt, match="deeper than 32"):
            parse_manifest(b"[" * 200_000 + b"]" * 200_000, "x.aimg")
