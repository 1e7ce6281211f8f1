"""The bound on a container's disk writes, on real LXC: a container writing past it gets ENOSPC
inside, the host's free space does not drop by more than the bound, and nothing is left."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile

import pytest

from appcontainers.adapters.mounts.mountinfo import mounts
from appcontainers.domain.exceptions import AppContainersError

MIB = 1 << 20


def _free(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _zero_bomb(path: str, size: int) -> None:
    """A small .tar.gz holding one file of size zero bytes."""
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("big")
        info.size = size
        tar.addfile(info, io.BytesIO(b"\0" * size))


class TestDiskBound:
    def test_writes_past_the_bound_fail_inside_and_spare_the_host(self, svc, settings, data_root, tmp_path):
        """A container bounded to 64M: dd of 200M stops at the bound with ENOSPC; the host's free
        space drops by less than the bound; a 200M archive bomb is refused with one line; the
        container runs on; `ls --json` shows the bound; destroy leaves no mount or image."""
        c = svc.provision(disk="64M")
        try:
            overlay = os.path.join(data_root, "overlays", "image", c.name)
            assert dict(mounts()).get(overlay) == "ext4"
            assert c.run("dd if=/dev/zero of=/root/small bs=1M count=8 2>/dev/null && echo ok").stdout == "ok\n"
            before = _free(data_root)
            r = c.run("dd if=/dev/zero of=/root/big bs=1M count=200")
            c.run("sync")
            assert r.exit_code != 0 and "No space left on device" in r.stderr  # stopped at the bound
            written = int(c.run("stat -c %s /root/big").stdout)
            assert written < 64 * MIB
            assert before - _free(data_root) < 64 * MIB  # the host paid at most the bound
            bomb = str(tmp_path / "bomb.tar.gz")
            _zero_bomb(bomb, 200 * MIB)
            assert os.path.getsize(bomb) < 1 * MIB  # precondition: small outside, big inside
            c.run("rm -f /root/big")
            with pytest.raises(AppContainersError) as e:
                c.load_archive(bomb, "/root")
            assert "\n" not in str(e.value)
            assert c.run("echo alive").stdout == "alive\n"
            env = {**os.environ, "APPCONTAINERS_ROOT": settings["root"],
                   "APPCONTAINERS_BRIDGE": settings["bridge"], "APPCONTAINERS_SUBNET": settings["subnet"]}
            ls = subprocess.run([sys.executable, "-m", "appcontainers.entrypoints.cli", "ls", "--json"],
                                capture_output=True, text=True, timeout=60, env=env, check=True)
            assert {i["name"]: i["disk"] for i in json.loads(ls.stdout)}[c.name] == 64 * MIB
        finally:
            c.destroy()
        assert overlay not in dict(mounts())
        assert not os.path.exists(os.path.join(data_root, "overlays", "disks", c.name))

    def test_the_default_bound_is_at_most_half_the_free_space(self, svc, data_root):
        """Without disk=, a container is bounded by 10G or half the data root's free space."""
        free = _free(data_root)
        c = svc.provision()
        try:
            # (the free space moves a little meanwhile: other helpers share the disk)
            assert 64 * MIB <= c.info()["disk"] <= min(10 << 30, free // 2 + 64 * MIB)
            assert c.run("df -k /root | tail -1").exit_code == 0
        finally:
            c.destroy()
