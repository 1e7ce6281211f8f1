"""Files in and out of a container through the API, over the fakes (services/files.py)."""
from __future__ import annotations

import pytest

from appcontainers.domain.exceptions import ContainerStateError, InvalidValue, UnsafePath
from tests.fakes import make_service


class TestFiles:
    def test_read_file(self):
        """read_file gives the bytes of a container file; a missing one is InvalidValue."""
        svc = make_service()
        c = svc.provision("web")
        c.create_file("/etc/app.conf", b"k=v\n")
        assert c.read_file("/etc/app.conf") == b"k=v\n"
        with pytest.raises(InvalidValue):
            c.read_file("/etc/none")
        with pytest.raises(UnsafePath):
            c.read_file("/etc/../../x")

    def test_copy_out_into_a_host_directory(self):
        """copy_out into an existing host directory writes under the source's name; pull is the same."""
        svc = make_service()
        c = svc.provision("web")
        c.create_file("/srv/a.txt", b"a")
        svc.ports.fs.make_dirs("/host/out")
        assert c.copy_out("/srv/a.txt", "/host/out") == "/host/out/a.txt"
        assert c.pull("/srv", "/host/srv") == "/host/srv"
        assert svc.ports.fs.files["/host/srv/a.txt"] == b"a"

    def test_refused_while_not_ready(self):
        """A container still being provisioned refuses copies (read under its lock)."""
        svc = make_service()
        svc.provision("web")
        with svc.ports.repo.transaction() as state:
            import attrs
            state.put(attrs.evolve(state.get("web"), status="provisioning"))
        with pytest.raises(ContainerStateError):
            svc.get("web").read_file("/etc/hostname")
