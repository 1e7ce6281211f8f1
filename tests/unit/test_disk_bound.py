"""The bound on a container's disk writes, over the fakes: the default, the override, where the
sized filesystem is mounted, and that destroy and reconcile leave none behind."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from appcontainers.domain.exceptions import InvalidValue
from appcontainers.domain.sizes import parse_size
from appcontainers.entrypoints.cli import main
from tests.fakes import make_service

G = 1 << 30


class TestDiskBound:
    def test_default_is_ten_gib_on_a_filesystem_of_its_own(self):
        """A container gets a 10 GiB sized filesystem at its overlay dir (upper and work on it);
        destroy unmounts it and removes its image."""
        svc = make_service()
        c = svc.provision(name="web")
        L = svc.settings.layout
        assert svc.containers.get("web").disk == 10 * G
        assert svc.ports.disks.mounted[L.overlay("web", False)] == (L.disk_image("web"), 10 * G)
        assert c.info()["disk"] == 10 * G
        c.destroy()
        assert svc.ports.disks.mounted == {} and L.disk_image("web") not in svc.ports.fs.files

    def test_default_never_takes_more_than_half_the_free_space(self):
        """With 4 GiB free the default bound is 2 GiB."""
        svc = make_service()
        svc.ports.disks.free = 4 * G
        assert svc.provision(name="web").info()["disk"] == 2 * G

    def test_disk_overrides_and_zero_means_none(self):
        """disk="1G" is 1 GiB; disk="0" is no bound and nothing is mounted."""
        svc = make_service()
        assert svc.provision(name="a", disk="1G").info()["disk"] == G
        b = svc.provision(name="b", disk="0")
        assert b.info()["disk"] is None
        assert svc.settings.layout.overlay("b", False) not in svc.ports.disks.mounted

    @pytest.mark.parametrize("bad", ["12X", "1M", "-1", "1.5G"])
    def test_bad_bounds_are_refused_before_anything_is_made(self, bad):
        """A malformed bound, or one under 64M, is InvalidValue and reserves nothing."""
        svc = make_service()
        with pytest.raises(InvalidValue):
            svc.provision(name="web", disk=bad)
        assert svc.ports.repo.read().reservations == {} and svc.ports.disks.mounted == {}

    def test_a_raw_container_has_no_bound_and_cannot_ask_for_one(self):
        """raw: no bound by default; asking for one is refused."""
        svc = make_service()
        base = svc.bases.ensure_default()
        assert svc.containers.reserve("r", base.id, raw=True).disk is None
        with pytest.raises(InvalidValue, match="not raw"):
            svc.containers.reserve("r2", base.id, raw=True, disk="1G")

    def test_loaded_containers_are_bounded_too(self):
        """load_image(disk=) bounds the loaded container."""
        from tests.unit.test_services import put_image
        svc = make_service()
        put_image(svc, "/in/app.aimg")
        assert svc.load_image("/in/app.aimg", name="app", disk="512M").info()["disk"] == 512 << 20

    def test_reconcile_removes_a_disk_image_no_reservation_explains(self):
        """A sized filesystem's image left by a crash (no reservation) is removed by gc."""
        svc = make_service()
        L = svc.settings.layout
        svc.ports.fs.dirs.add(L.disks)
        svc.ports.fs.files[L.disk_image("gone")] = b"ext4"
        svc.reconcile()
        assert L.disk_image("gone") not in svc.ports.fs.files

    def test_ls_json_shows_the_bound(self):
        """`ls --json` shows each container's disk bound in bytes."""
        svc = make_service()
        svc.provision(name="web", disk="2G")
        out = CliRunner().invoke(main, ["ls", "--json"], obj=lambda reconcile=True: svc)
        assert out.exit_code == 0, out.output
        assert json.loads(out.output)[0]["disk"] == 2 * G


class TestSizes:
    def test_parse(self):
        """Sizes parse in powers of 1024; bytes pass as they are; anything else is refused."""
        assert parse_size("10G") == 10 * G and parse_size("512m") == 512 << 20 and parse_size(4096) == 4096
        for bad in ("1.5G", "G", "-1", -1, True, None):
            with pytest.raises(InvalidValue):
                parse_size(bad)
