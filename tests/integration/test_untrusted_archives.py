"""Untrusted archives put into real containers: nothing they hold, and nothing the container
planted, makes a file land on the host; limits refuse bombs before a byte is written."""
from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
import tempfile

import pytest

from appcontainers.domain.exceptions import AppContainersError, UnsafePath

STEPS = "abcdefghijklmnop"
LONG_LINK = "l" * 254


@pytest.fixture(scope="module")
def box(svc):
    c = svc.provision(name="untrusted-tar")
    try:
        yield c
    finally:
        c.destroy()


def _host_dest(svc, container, dest: str) -> str:
    return os.path.join(svc.settings.layout.rootfs(container.name), dest.lstrip("/"))


def _depth(path: str) -> int:
    return len([p for p in path.split("/") if p])


def _component(dest_len: int) -> str:
    """As in CPython's test for gh-135034: long enough that the expanded chain passes PATH_MAX
    while every unexpanded path stays under it."""
    return "d" * min(247, (os.pathconf("/", "PC_PATH_MAX") - dest_len - 1) // (len(STEPS) + 1))


def _info(name, kind=tarfile.REGTYPE, linkname="", data=b""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o777 if kind == tarfile.DIRTYPE else 0o644
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, io.BytesIO(data) if kind == tarfile.REGTYPE else None


def _chain_members(component: str, ups: int, escape_to: str) -> list:
    """Directories and symlinks a..p through long names, a link that climbs back up, and
    'escape' climbing `ups` more levels and then down to escape_to (a host path)."""
    members, path = [], ""
    for step in STEPS:
        members.append(_info(path + component, tarfile.DIRTYPE))
        members.append(_info(path + step, tarfile.SYMTYPE, component))
        path += component + "/"
    link = "/".join(STEPS) + "/" + LONG_LINK
    members.append(_info(link, tarfile.SYMTYPE, "/".join([".."] * len(STEPS))))
    members.append(_info("escape", tarfile.SYMTYPE, link + "/.." * ups + escape_to))
    return members


def _write_tar(path, members, mode="w"):
    with tarfile.open(path, mode) as tf:
        for info, data in members:
            tf.addfile(info, data)
    return str(path)


def _mirror(like: str) -> tuple[str, str]:
    """(top, dir): a new host directory dir, under top, whose path has the length and depth of like."""
    top = tempfile.mkdtemp(prefix="h8mirror.", dir="/var/tmp")
    path = top
    while _depth(path) < _depth(like) - 1:
        path = os.path.join(path, "m")
    pad = len(like) - len(path) - 1
    assert 1 <= pad <= 255, (like, path)
    path = os.path.join(path, "p" * pad)
    os.makedirs(path)
    assert len(path) == len(like) and _depth(path) == _depth(like)
    return top, path


def _filter_accepts(archive: str, dest: str, member_name: str) -> bool:
    """This Python's tarfile, extracting archive into dest with filter='data': every link is
    accepted and member_name is judged inside dest by os.path.realpath."""
    with tarfile.open(archive) as tf:
        links = [m for m in tf.getmembers() if m.isdir() or m.issym()]
        tf.extractall(dest, members=links, filter="data")  # the chain; raises if the filter refuses
        member = tf.getmember(member_name)
    try:
        tarfile.data_filter(member, dest)
    except tarfile.FilterError:
        return False
    real = os.path.realpath(os.path.join(dest, member_name))
    return os.path.commonpath([real, os.path.realpath(dest)]) == os.path.realpath(dest)


class TestRealpathOverflow:
    def test_cve_2025_4517_archive_writes_nothing_on_the_host(self, svc, box, tmp_path):
        """The gh-135034 chain archive: the data filter accepts it, yet no file appears on the host."""
        host_dest = _host_dest(svc, box, "/root")
        target = tmp_path / "host-side"
        target.mkdir()
        members = _chain_members(_component(len(host_dest)), _depth(host_dest), str(target))
        members.append(_info("escape/pwned", data=b"written through the chain\n"))
        archive = _write_tar(tmp_path / "cve.tar", members)

        top, mirror = _mirror(host_dest)
        try:  # the precondition, on a host directory shaped like the container's /root
            assert _filter_accepts(archive, mirror, "escape/pwned")
            assert os.path.samefile(os.path.join(mirror, "escape"), target)  # the kernel goes out
        finally:
            shutil.rmtree(top)
        try:
            box.load_archive(archive)
        except AppContainersError:
            pass  # refused is fine too: the point is where the bytes did not go
        assert os.listdir(target) == []
        found = box.run(["find", "/root", "-name", "pwned"]).stdout.split()
        assert all(p.startswith("/root/") for p in found)

    def test_chain_planted_inside_the_container_is_not_followed(self, svc, box, tmp_path):
        """Root inside plants the chain as /root/work/app; a harmless app/config.txt stays off the host."""
        host_dest = _host_dest(svc, box, "/root/work")
        target = tmp_path / "host-side"
        target.mkdir()
        component = _component(len(host_dest))
        script = ["set -e", "mkdir -p /root/work", "cd /root/work", "p=."]
        for step in STEPS:
            script += [f"mkdir $p/{component}", f"ln -s {component} $p/{step}", f"p=$p/{component}"]
        link = "/".join(STEPS) + "/" + LONG_LINK
        script.append(f"ln -s {'/'.join(['..'] * len(STEPS))} {link}")
        script.append(f"ln -s {link}{'/..' * _depth(host_dest)}{target} app")
        assert box.run(["sh", "-c", "\n".join(script)]).exit_code == 0

        archive = _write_tar(tmp_path / "app.tar", [_info("app", tarfile.DIRTYPE),
                                                   _info("app/config.txt", data=b"key=value\n")])
        with tarfile.open(archive) as tf:  # the precondition: the filter thinks it is inside
            tarfile.data_filter(tf.getmember("app/config.txt"), host_dest)
        assert os.path.samefile(os.path.join(host_dest, "app"), target)
        try:
            box.load_archive(archive, dest="/root/work")
        except AppContainersError:
            pass
        assert os.listdir(target) == []
        box.run("rm -rf /root/work")


class TestLimits:
    def test_declared_size_over_max_bytes_is_refused_before_writing(self, box, tmp_path):
        """A 2 MiB member (a few KB of tar.gz) against max_bytes=1 MiB: refused, nothing written."""
        archive = _write_tar(tmp_path / "big.tar.gz", [_info("small", data=b"x"),
                                                       _info("big", data=bytes(2 << 20))], "w:gz")
        assert os.path.getsize(archive) < 16384
        with pytest.raises(UnsafePath, match="'big'.*unpacked bytes"):
            box.load_archive(archive, dest="/root/limits", max_bytes=1 << 20)
        assert box.run("test -e /root/limits").exit_code == 1

    def test_default_max_bytes(self, box, tmp_path):
        """A tar.gz whose header declares more than 1 GiB is refused by default, at the header."""
        info = tarfile.TarInfo("huge")
        info.size = (1 << 30) + 1
        archive = tmp_path / "huge.tar.gz"
        archive.write_bytes(gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT) + bytes(4096)))
        with pytest.raises(UnsafePath, match="huge"):
            box.load_archive(str(archive), dest="/root/limits")
        assert box.run("test -e /root/limits").exit_code == 1

    def test_member_count_bomb(self, box, tmp_path):
        """100,001 empty members (a small tar.gz): refused by default; a lower limit works per call."""
        path = tmp_path / "many.tar.gz"
        with tarfile.open(path, "w:gz", compresslevel=1) as tf:
            for n in range(100_001):
                tf.addfile(tarfile.TarInfo(f"f{n}"), io.BytesIO(b""))
        with pytest.raises(UnsafePath, match="more than 100000 members"):
            box.load_archive(str(path), dest="/root/limits")
        small = _write_tar(tmp_path / "few.tar", [_info(f"f{n}") for n in range(11)])
        with pytest.raises(UnsafePath, match="more than 10 members"):
            box.load_archive(small, dest="/root/limits", max_members=10)
        assert box.run("test -e /root/limits").exit_code == 1
        assert box.load_archive(small, dest="/root/limits", max_members=11) == 11
        box.run("rm -rf /root/limits")


    def test_huge_pax_header_is_refused_without_inflating_it(self, box, tmp_path):
        """A tar.gz whose pax header holds 64 MiB (a few hundred KB compressed): refused at the header."""
        info, data = _info("x", data=b"1")
        info.pax_headers = {"comment": "c" * (64 << 20)}
        archive = tmp_path / "pax.tar.gz"
        with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT) as tf:
            tf.addfile(info, data)
        assert os.path.getsize(archive) < 1 << 20
        with pytest.raises(AppContainersError, match="more than 4194304"):
            box.load_archive(str(archive), dest="/root/limits")
        assert box.run("test -e /root/limits").exit_code == 1


class TestNothingLeftBehind:
    @pytest.mark.parametrize("members", [
        [("ok", b"1"), ("x", b"2"), ("x/y", b"3")],  # refused while writing: x is a file
        [("ok", b"1"), ("../x", b"2")],  # refused while checking
    ], ids=["while-writing", "while-checking"])
    def test_refused_archive_leaves_no_destination(self, svc, box, tmp_path, members):
        """A refused archive leaves nothing, not even the destination directories it made,
        and its error names the member but no host path."""
        archive = _write_tar(tmp_path / "bad.tar", [_info(n, data=d) for n, d in members])
        with pytest.raises(UnsafePath) as e:
            box.load_archive(archive, dest="/root/fresh/deeper")
        assert box.run("test -e /root/fresh").exit_code == 1
        assert svc.settings.root not in str(e.value) and str(tmp_path) not in str(e.value)
        assert repr(members[-1][0]) in str(e.value)

    def test_replaced_files_come_back_when_refused(self, box, tmp_path):
        """Files an archive replaces are put back if it is refused later on; replaced for good
        (and nothing hidden left) when it loads."""
        box.run("mkdir -p /root/keep && echo old > /root/keep/x && ln -s x /root/keep/l")
        bad = _write_tar(tmp_path / "bad.tar", [_info("x", data=b"new\n"), _info("l", data=b"new\n"),
                                                _info("x/y", data=b"2")])
        with pytest.raises(UnsafePath, match="'x/y'"):
            box.load_archive(bad, dest="/root/keep")
        assert box.run("ls -A /root/keep; cat /root/keep/x; readlink /root/keep/l").stdout == "l\nx\nold\nx\n"
        good = _write_tar(tmp_path / "good.tar", [_info("x", data=b"new\n"), _info("l", data=b"file\n")])
        assert box.load_archive(good, dest="/root/keep") == 2
        assert box.run("ls -A /root/keep; cat /root/keep/x /root/keep/l").stdout == "l\nx\nnew\nfile\n"
        box.run("rm -rf /root/keep")

    @pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
    def test_compressed_archives_load(self, box, tmp_path, mode):
        """Plain, gzip, bzip2 and xz tars all load (we decompress them ourselves)."""
        archive = _write_tar(tmp_path / "c.tar", [_info("c/data", data=b"payload\n")], mode)
        assert box.load_archive(archive, dest="/root/comp") == 1
        assert box.run("cat /root/comp/c/data").stdout == "payload\n"
        box.run("rm -rf /root/comp")

    def test_ownership_modes_and_links(self, box, tmp_path):
        """Members land owned by the container's root, modes as the data filter makes them,
        symlinks and hard links inside the archive kept."""
        archive = _write_tar(tmp_path / "ok.tar", [
            _info("app", tarfile.DIRTYPE), _info("app/run.sh", data=b"#!/bin/sh\necho ran\n"),
            _info("app/link", tarfile.SYMTYPE, "run.sh"), _info("app/hard", tarfile.LNKTYPE, "app/run.sh")])
        assert box.load_archive(archive, dest="/root/okdir") == 4
        out = box.run("cd /root/okdir/app && stat -c '%u %g %a %h %F' run.sh link hard && cat link").stdout
        lines = out.splitlines()
        assert lines[0] == "0 0 644 2 regular file" and lines[2] == lines[0]
        assert lines[1].endswith("symbolic link") and lines[3] == "#!/bin/sh"
        box.run("rm -rf /root/okdir")


class TestUnprivileged:
    def test_members_belong_to_root_inside_an_unprivileged_container(self, svc, tmp_path):
        """Through the shifted view, every member (file, dir, symlink, new dest dirs) is root's inside."""
        c = svc.provision(unprivileged=True)
        try:
            archive = _write_tar(tmp_path / "u.tar", [
                _info("d", tarfile.DIRTYPE), _info("d/f", data=b"x"), _info("d/l", tarfile.SYMTYPE, "f")])
            assert c.load_archive(archive, dest="/srv/new") == 3
            out = c.run("stat -c %u:%g /srv /srv/new /srv/new/d /srv/new/d/f; stat -c %u:%g /srv/new/d/l;"
                        " find /srv/new -user 0 | wc -l").stdout.split()
            assert out == ["0:0"] * 5 + ["4"], out
        finally:
            c.destroy()
