"""write_file (create_file's writer) on what root inside may have planted (a temp dir, no root needed)."""
from __future__ import annotations

import os
import threading

import pytest

from appcontainers.adapters.host.rootfs_files import write_file
from appcontainers.domain.exceptions import UnsafePath


class TestPlanted:
    def test_a_fifo_at_the_path_is_refused_at_once(self, tmp_path):
        """A FIFO where the file goes is refused, never opened blocking (that hung create_file)."""
        os.makedirs(tmp_path / "etc")
        os.mkfifo(tmp_path / "etc" / "motd")
        result = []
        worker = threading.Thread(target=lambda: result.append(_try(write_file, str(tmp_path), "/etc/motd", b"hi")),
                                  daemon=True)
        worker.start()
        worker.join(5)
        if worker.is_alive():  # still blocked: unblock it by opening the FIFO for reading, then fail
            os.close(os.open(tmp_path / "etc" / "motd", os.O_RDONLY | os.O_NONBLOCK))
            pytest.fail("write_file blocked on a FIFO")
        assert isinstance(result[0], UnsafePath)

    def test_a_fifo_with_a_reader_is_refused_too(self, tmp_path):
        """With a reader holding the FIFO open, the open succeeds: the regular-file check refuses it."""
        os.makedirs(tmp_path / "etc")
        fifo = tmp_path / "etc" / "motd"
        os.mkfifo(fifo)
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            with pytest.raises(UnsafePath):
                write_file(str(tmp_path), "/etc/motd", b"hi")
        finally:
            os.close(reader)

    def test_a_regular_file_is_written(self, tmp_path):
        """The control: the same call on a plain path writes the bytes with the mode."""
        write_file(str(tmp_path), "/etc/motd", b"hi", mode=0o640)
        assert (tmp_path / "etc" / "motd").read_bytes() == b"hi"
        assert os.stat(tmp_path / "etc" / "motd").st_mode & 0o777 == 0o640


def _try(fn, *args):
    try:
        fn(*args)
    except Exception as e:  # the thread hands back what it raised
        return e
    return None
