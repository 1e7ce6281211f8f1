"""Files out of a real container through the API: read_file, copy_out (pull), copy_in (push)."""
from __future__ import annotations

import os

import pytest

from appcontainers.domain.exceptions import InvalidValue


class TestReadFile:
    def test_bytes_and_symlinks(self, container, tmp_path):
        """read_file gives exact bytes; a planted symlink to a host secret is refused, and a path
        through a link to / stays in the container's root."""
        container.run("printf 'a\\000b' > /root/bin; ln -s /etc/shadow /root/evil; ln -s / /root/up")
        assert container.read_file("/root/bin") == b"a\x00b"
        with pytest.raises(InvalidValue):
            container.read_file("/root/evil")
        inside = container.run(["cat", "/etc/passwd"]).stdout.encode()
        assert container.read_file("/root/up/etc/passwd") == inside
        with open("/etc/passwd", "rb") as f:
            assert inside != f.read()

    def test_push_and_pull(self, container, tmp_path):
        """push copies a host tree in, pull copies it out again, byte for byte."""
        (tmp_path / "d" / "e").mkdir(parents=True)
        (tmp_path / "d" / "e" / "f").write_bytes(os.urandom(5000))
        assert container.push(str(tmp_path / "d"), "/root/d") == "/root/d"
        assert container.pull("/root/d", str(tmp_path / "back")) == str(tmp_path / "back")
        assert (tmp_path / "back" / "e" / "f").read_bytes() == (tmp_path / "d" / "e" / "f").read_bytes()
