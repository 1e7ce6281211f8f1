"""Building and removing bases through the Service API, over fakes (the Debian builder faked)."""
from __future__ import annotations

import pytest

from appcontainers.adapters.bases import debian_plan as dp
from appcontainers.domain.exceptions import (BaseBuildFailed, BaseNameTaken, InUse, InvalidValue,
                                             UnknownImage)
from tests.fakes import encode_image, make_service


class FakeDebianBuilder:
    """Keys from the real pure plan; builds write a fake .aimg at dest and record their inputs."""

    def __init__(self, fs):
        self.fs = fs
        self.builds: list[tuple[str, tuple]] = []
        self.fail: Exception | None = None

    def key(self, suite, include=()):
        return dp.build_key(dp.validate_suite(suite), dp.packages(include), "agent", "builder")

    def build(self, dest, name, created, suite="bookworm", include=(), progress=None):
        if self.fail:
            self.fs.files[dest] = b"half"  # what a failed pack might leave
            raise self.fail
        manifest = {"format_version": 1, "name": name, "created": created, "parent": None,
                    "startup_commands": [], "environment": {}, "host_binds": [], "base": name,
                    "init": [dp.INIT], "build_key": self.key(suite, include)}
        image_id, data = encode_image(manifest)
        self.fs.files[dest] = data
        self.builds.append((suite, dp.packages(include)))
        if progress:
            progress("built")
        return image_id, manifest


@pytest.fixture
def svc():
    s = make_service()
    s.ports.debian_builder = FakeDebianBuilder(s.ports.fs)
    return s


def base_files(svc):
    return [p for p in svc.ports.fs.under(svc.settings.layout.bases) if svc.ports.fs.is_file(p)]


class TestBuild:
    def test_build_registers_a_base_named_after_the_suite(self, svc):
        """debian-SUITE by default, kind base, file in the bases store, no temp file left, progress told."""
        lines = []
        img = svc.build_base("debian", progress=lines.append)
        assert (img.name, img.kind, img.manifest.host_binds, img.manifest.init) == (
            "debian-bookworm", "base", (), (dp.INIT,))
        assert [b.id for b in svc.list_bases()] == [img.id]
        assert base_files(svc) == [svc.settings.layout.image_file(img.id, "base")]
        assert lines == ["built"]

    def test_same_inputs_reuse_the_image_without_building(self, svc):
        """A second build with the same suite, packages and name returns the stored image."""
        first = svc.build_base("debian", include=["less", "curl"])
        again = svc.build_base("debian", include=["curl,less"])
        assert again.id == first.id
        assert len(svc.ports.debian_builder.builds) == 1

    def test_force_rebuilds_and_drops_the_unused_old_build(self, svc):
        """force builds again; the replaced image goes when nothing uses it."""
        first = svc.build_base("debian")
        second = svc.build_base("debian", force=True)
        assert second.id != first.id and len(svc.ports.debian_builder.builds) == 2
        assert [b.id for b in svc.list_bases()] == [second.id]
        assert base_files(svc) == [svc.settings.layout.image_file(second.id, "base")]

    def test_force_keeps_an_old_build_a_container_uses(self, svc):
        """A replaced base still used by a container stays; new containers get the new one."""
        first = svc.build_base("debian")
        c = svc.provision(base="debian-bookworm")
        second = svc.build_base("debian", force=True)
        assert {b.id for b in svc.list_bases()} == {first.id, second.id}
        assert c.image == first.id
        assert svc.provision(base="debian-bookworm").image == second.id

    def test_name_taken_by_other_inputs_is_refused(self, svc):
        """Same name, other packages, no force: refused before anything is built."""
        first = svc.build_base("debian", name="deb")
        with pytest.raises(BaseNameTaken, match="deb"):
            svc.build_base("debian", include=["less"], name="deb")
        assert len(svc.ports.debian_builder.builds) == 1
        assert [b.id for b in svc.list_bases()] == [first.id]

    def test_a_failed_build_leaves_nothing(self, svc):
        """The builder's error comes through; no temp file, no record."""
        svc.ports.debian_builder.fail = BaseBuildFailed("mirror unreachable")
        with pytest.raises(BaseBuildFailed, match="mirror unreachable"):
            svc.build_base("debian")
        assert base_files(svc) == [] and svc.list_bases() == []

    @pytest.mark.parametrize("kw", [{"kind": "alpine"}, {"name": "default"}, {"name": "../x"},
                                    {"suite": "Bad Suite"}, {"include": ["no;pe"]}])
    def test_bad_input_is_refused_before_building(self, svc, kw):
        """Unknown kind, the default base's name, a bad name, suite or package: InvalidValue."""
        with pytest.raises(InvalidValue):
            svc.build_base(**{"kind": "debian", **kw})
        assert svc.ports.debian_builder.builds == []

    def test_provision_from_the_base_by_name(self, svc):
        """provision(base=NAME) finds the built base."""
        img = svc.build_base("debian")
        assert svc.provision(base=img.name).image == img.id


class TestRemove:
    def test_remove_while_a_container_uses_it_is_refused(self, svc):
        """InUse names the container; the base stays until the container is gone."""
        img = svc.build_base("debian")
        c = svc.provision(base=img.name)
        with pytest.raises(InUse, match=c.name):
            svc.remove_base(img.name)
        assert [b.id for b in svc.list_bases()] == [img.id]
        c.destroy()
        assert [i.id for i in svc.remove_base(img.name)] == [img.id]
        assert svc.list_bases() == [] and base_files(svc) == []

    def test_remove_unknown(self, svc):
        """A name no base has is UnknownImage; an invalid one InvalidValue."""
        with pytest.raises(UnknownImage):
            svc.remove_base("nope")
        with pytest.raises(InvalidValue):
            svc.remove_base("../etc")

    def test_removing_then_building_again_builds(self, svc):
        """After removal the next build really builds."""
        svc.build_base("debian")
        svc.remove_base("debian-bookworm")
        svc.build_base("debian")
        assert len(svc.ports.debian_builder.builds) == 2
