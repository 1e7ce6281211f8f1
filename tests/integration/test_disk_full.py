"""A full data root on real LXC (a small tmpfs of its own): the agent keeps running, every
failing call says so in one line, nothing is corrupted, and all works once space is back."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

import pytest

from appcontainers.domain.exceptions import AppContainersError
from tests.conftest import TEST_NET, _stop_containers, _umount_under, delete_nft_tables, stop_resolver
from tests.integration.test_store_poisoning import two_images  # noqa: F401 (a fixture)

# A data root of its own on a small tmpfs, with its own bridge and the top /29 of our subnet
# (a more specific route than the main root's /24, whose containers get low addresses), so the
# two roots' reconciles never take each other's veths.
SMALL_BRIDGE = f"acfull{TEST_NET.network_address.packed[2]}"
SMALL_SUBNET = str(list(TEST_NET.subnets(new_prefix=29))[-1])


@pytest.fixture(scope="module")
def small(data_root):
    """(service, running container) on a 200 MiB tmpfs data root."""
    import appcontainers

    root = tempfile.mkdtemp(prefix="appcontainers-test-small-", dir="/var/tmp")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200m,mode=0711", "tmpfs", root], check=True)
    subprocess.run(["ip", "link", "del", SMALL_BRIDGE], capture_output=True)
    try:
        svc = appcontainers.setup_service(root=root, bridge=SMALL_BRIDGE, subnet=SMALL_SUBNET)
        c = svc.provision(name="full-disk")
        c.start()
        yield svc, c
    finally:
        _stop_containers(os.path.join(root, "containers"))
        _umount_under(root)
        delete_nft_tables(root)  # its container is stopped, never destroyed: its rules stay otherwise
        stop_resolver(root)  # as its tables: its containers are stopped, never destroyed
        subprocess.run(["umount", root], check=False)
        subprocess.run(["ip", "link", "del", SMALL_BRIDGE], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _fill(root: str, name: str = "filler") -> str:
    """Fill root's filesystem to the last block; the filler's path."""
    filler = os.path.join(root, name)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


@pytest.fixture
def disk_full(small):
    svc, c = small
    filler = _fill(svc.settings.root)
    try:
        st = os.statvfs(svc.settings.root)
        assert st.f_bavail == 0  # precondition: not one block left
        with pytest.raises(OSError):  # and nothing more can be written there
            with open(os.path.join(svc.settings.root, "probe"), "wb") as f:
                f.write(b"x" * 8192)
                f.flush()
                os.fsync(f.fileno())
        yield filler
    finally:
        for f in (filler, *(os.path.join(svc.settings.root, n) for n in ("probe", "filler2"))):
            if os.path.exists(f):
                os.unlink(f)


def _state(svc) -> dict:
    with open(os.path.join(svc.settings.root, "resources.json")) as f:
        return json.load(f)  # a corrupted file would not parse


class TestDiskFull:
    def test_the_agent_keeps_running_and_reports_what_its_log_lost(self, small, disk_full):
        """With the data root full the agent (pid 1) runs commands on, their output intact;
        once space is back the log says how many records it lost."""
        svc, c = small
        r = c.run("i=0; while [ $i -lt 3000 ]; do echo line-$i; i=$((i+1)); done")
        assert r.exit_code == 0 and r.stdout.splitlines() == [f"line-{i}" for i in range(3000)]
        assert c.run("echo still-here").stdout == "still-here\n"
        assert svc.get(c.name).state == "RUNNING"
        os.unlink(disk_full)  # space is back
        assert c.run("echo after").stdout == "after\n"
        records = [rec for _, rec in c.logs()]
        lost = [rec for rec in records if rec.get("type") == "log_lost"]
        assert lost and lost[0]["records"] > 0 and lost[0]["error"] == "No space left on device"
        assert any(rec.get("type") == "output" and rec.get("data") == "after\n" for rec in records)

    def test_provision_load_start_save_fail_with_one_clear_line(self, small, disk_full, two_images, tmp_path):
        """provision, load, start and save on a full data root raise one AppContainersError line
        (no OSError traceback); resources.json still parses and holds the same containers."""
        svc, c = small
        before = _state(svc)
        clean, _ = two_images
        calls = {
            "provision": lambda: svc.provision(),
            "load": lambda: svc.load_image(clean),
            "save": lambda: c.save_image(os.path.join(svc.settings.root, "full.aimg")),
        }
        for what, call in calls.items():
            with pytest.raises(AppContainersError) as e:
                call()
            assert "\n" not in str(e.value) and not isinstance(e.value, OSError), what
            assert _state(svc)["reservations"].keys() == before["reservations"].keys(), what
        c.stop()
        _fill(svc.settings.root, "filler2")  # what the failed calls freed when they cleaned up
        with pytest.raises(AppContainersError, match="^start failed: No space left on device"):
            c.start()
        assert svc.get(c.name).state == "STOPPED"  # a failed start leaves nothing running
        assert _state(svc)["reservations"].keys() == before["reservations"].keys()
        assert not [f for f in os.listdir(svc.settings.root) if f.endswith(".tmp") or f == "full.aimg"]

    def test_everything_works_again_once_space_is_back(self, small, disk_full):
        """After the failures above, freeing space is enough: gc finds nothing, start and run work."""
        svc, c = small
        os.unlink(disk_full)
        assert svc.reconcile(dry_run=True) == []
        c.start()
        assert c.run("echo back").stdout == "back\n"
