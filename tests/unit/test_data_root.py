"""prepare_data_root with the real HostFs in a temp dir (no root needed)."""
from __future__ import annotations

import os
import stat

import attrs

from appcontainers.adapters.host.hostfs import HostFs
from appcontainers.services.data_root import prepare_data_root
from tests.fakes import make_service


def _ports(root):
    """The fake service's ports with the real HostFs, on a data root in a temp dir."""
    return attrs.evolve(make_service(root=str(root)).ports, fs=HostFs())


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


class TestPrepareDataRoot:
    def test_makes_the_top_directories(self, tmp_path):
        """The root and lxcpath are searchable by others (0711); uppers and views are root only."""
        ports = _ports(tmp_path / "root")
        layout = ports.settings.layout
        old = os.umask(0o022)
        try:
            prepare_data_root(ports)
        finally:
            os.umask(old)
        assert (_mode(layout.root), _mode(layout.lxcpath)) == (0o711, 0o711)
        assert (_mode(layout.overlays), _mode(layout.views)) == (0o700, 0o700)
        assert layout.view("x").startswith(layout.views + "/")
        assert layout.upper("x", False).startswith(layout.overlays + "/")

    def test_closes_existing_uppers_and_views_again(self, tmp_path):
        """Directories made open by someone else are closed to 0700 at the next set-up."""
        ports = _ports(tmp_path / "root")
        layout = ports.settings.layout
        os.makedirs(layout.overlays, mode=0o755)
        os.makedirs(layout.views, mode=0o777)
        os.chmod(layout.views, 0o777)
        prepare_data_root(ports)
        prepare_data_root(ports)  # idempotent
        assert (_mode(layout.overlays), _mode(layout.views)) == (0o700, 0o700)
