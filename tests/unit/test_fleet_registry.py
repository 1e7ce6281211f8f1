"""fleet.images.Registry: hosts (fleet.host.Host over the real services and the fakes) that
share one FakeRegistry; what is uploaded once, what each host pulls, what stays local."""
from __future__ import annotations

import json

import pytest

from appcontainers.domain.exceptions import ImageCorrupt, InvalidValue, RegistryError, UnknownImage
from appcontainers.fleet.errors import FleetError
from appcontainers.fleet.host import Host
from appcontainers.fleet.images import Configured, Registry, SharedDirectory, from_spec, make_spec
from appcontainers.fleet.membership import _images_spec
from tests.fakes import FakeRegistry, make_service

ADDRESS = "127.0.0.1:5000/team"


class Fleet:
    """Hosts whose registries are one FakeRegistry (as hosts of a real fleet see one registry)."""

    def __init__(self):
        self.shared: dict[str, FakeRegistry] = {}
        self.hosts: dict[str, Host] = {}

    def host(self, name: str) -> Host:
        svc = make_service()
        svc.ports.registries.hosts = self.shared
        dist = Registry(ADDRESS, svc.ports.codec, svc.ports.registries, tls_verify=False)
        self.hosts[name] = Host(name, svc, dist, meminfo=lambda: (8 << 30, 6 << 30), publish_interval=0.0)
        return self.hosts[name]

    @property
    def registry(self) -> FakeRegistry:
        return self.shared["127.0.0.1:5000"]


def saved(host: Host, flatten: bool = True, image: str | None = None, marker: str = "x") -> str:
    """A container on host (from image) with a file, saved and published by the host: its id."""
    name = host.create(image)
    host.call(name, "create_file", f"/root/{marker}", marker)
    return str(host.save(name, image_name=marker, flatten=flatten)["id"])


class TestRegistryDistribution:
    def test_pushed_once_pulled_once_per_host_then_local(self):
        """A save on h1 uploads its blob once; h2 and h3 each pull it on first use and their
        next containers from it are local loads (no new download)."""
        f = Fleet()
        h1, h2, h3 = f.host("h1"), f.host("h2"), f.host("h3")
        image = saved(h1)
        uploads = f.registry.uploads  # the layer and the empty config
        assert h1.images.has(image) and uploads == 2
        for h in (h2, h3, h2, h3):
            name = h.create(image)
            assert h.svc.get(name).image == image
        assert h2.fetch_counts() == h3.fetch_counts() == {image: 1}
        assert h2.layer_counts() == {image: 1}
        assert len(f.registry.fetched) == 2 and f.registry.uploads == uploads

    def test_a_layered_image_sends_its_top_only_and_a_pull_brings_its_chain(self):
        """A layered save over a published image uploads only its own layer; a host lacking
        both pulls the chain (2 layers) in one go and then holds the parent too (a local load)."""
        f = Fleet()
        h1, h2, h3 = f.host("h1"), f.host("h2"), f.host("h3")
        parent = saved(h1, marker="parent")
        before = f.registry.uploads
        top = saved(h2, flatten=False, image=parent, marker="top")
        assert f.registry.uploads == before + 1  # its layer; the parent's blob and the config were there
        h3.create(top)
        assert h3.layer_counts() == {top: 2}
        h3.create(parent)  # came with the chain
        assert h3.fetch_counts() == {top: 1}
        h2.create(top)  # h2 holds the parent already: only the top travels
        assert h2.layer_counts() == {parent: 1, top: 1}

    def test_a_layered_save_publishes_its_unpublished_parents_first(self):
        """A layered save over the host's own base: the base goes to the registry before it."""
        f = Fleet()
        h1, h2 = f.host("h1"), f.host("h2")
        top = saved(h1, flatten=False, marker="over-base")
        h2.create(top)
        assert h2.layer_counts() == {top: 2}  # h2's fake base has another id: both layers came

    def test_publish_of_a_file_twice_sends_nothing_new(self):
        """publish(path) of an image the registry has: no upload, same id."""
        f = Fleet()
        h1 = f.host("h1")
        image = saved(h1)
        f.host("h2").create(image)
        stored = f.hosts["h2"].svc.settings.layout.image_file(image, "user")
        uploads = f.registry.uploads
        assert f.hosts["h2"].images.publish(stored) == image and f.registry.uploads == uploads

    def test_a_file_whose_parent_is_not_published_is_refused(self):
        """publish(path) of a layered file whose parent the registry lacks: UnknownImage."""
        f = Fleet()
        h1 = f.host("h1")
        name = h1.create(None)
        h1.svc.ports.fs.make_dirs("/srv/out")
        h1.svc.get(name).save_image("/srv/out/top.aimg", flatten=False)
        with pytest.raises(UnknownImage, match="publish the parent"):
            h1.images.publish("/srv/out/top.aimg")

    def test_a_tag_holding_another_image_is_refused(self):
        """The tag <id> moved to another image's manifest: has() and a host's pull refuse it."""
        f = Fleet()
        h1, h2 = f.host("h1"), f.host("h2")
        a, b = saved(h1, marker="a"), saved(h1, marker="b")
        repo = "team/img"
        f.registry.manifests[(repo, a)] = f.registry.manifests[(repo, b)]
        with pytest.raises(ImageCorrupt, match="not"):
            h2.create(a)
        assert a not in h2.svc.ports.repo.read().images

    def test_an_unknown_id_is_an_error(self):
        """A host asked for an id no one published: the registry's 404, nothing stored."""
        f = Fleet()
        h1 = f.host("h1")
        saved(h1)  # the repository exists
        with pytest.raises(RegistryError, match="404"):
            f.host("h2").create("cd" * 32)


class TestSpecs:
    def test_make_spec(self):
        """registry:// or HOST:PORT[/prefix]; an absolute directory; one of them; malformed refused."""
        assert make_spec(registry="registry://127.0.0.1:5000/a/b", tls_verify=False) == {
            "kind": "registry", "address": "127.0.0.1:5000/a/b", "tls_verify": False}
        assert make_spec(image_dir="/srv/img") == {"kind": "shared-dir", "path": "/srv/img"}
        assert make_spec() is None
        for bad in ({"registry": "127.0.0.1:5000/Bad Prefix"}, {"image_dir": "rel"},
                    {"registry": "127.0.0.1:5000", "image_dir": "/srv"}):
            with pytest.raises(InvalidValue):
                make_spec(**bad)

    def test_repository_and_reference(self):
        """HOST:PORT alone: appcontainers/img; a prefix: PREFIX/img; the tag is the id."""
        svc = make_service()
        plain = from_spec({"kind": "registry", "address": "127.0.0.1:5000"}, svc.ports.codec, svc.ports.registries)
        assert plain.ref("ab" * 32) == f"127.0.0.1:5000/appcontainers/img:{'ab' * 32}"  # type: ignore[attr-defined]
        assert plain.spec() == {"kind": "registry", "address": "127.0.0.1:5000", "tls_verify": True}
        with pytest.raises(InvalidValue):
            plain.ref("latest")  # type: ignore[attr-defined]

    def test_configured_follows_the_store(self):
        """Configured builds the distribution the store names now, and again when it changes."""
        svc = make_service()
        store = {"images": {"kind": "shared-dir", "path": "/srv/img"}}
        c = Configured(lambda: store.get("images"),
                       lambda spec: from_spec(spec, svc.ports.codec, svc.ports.registries))
        assert isinstance(c.current(), SharedDirectory)
        store["images"] = make_spec(registry=ADDRESS)
        assert isinstance(c.current(), Registry) and c.spec()["address"] == ADDRESS
        del store["images"]
        with pytest.raises(InvalidValue, match="no image distribution"):
            c.current()

    def test_a_join_asking_for_another_distribution_is_refused(self):
        """The first join's choice stays; a join leaving it out gets it; one asking another fails."""
        kv = JsonKV()
        first = make_spec(registry=ADDRESS)
        assert _images_spec(kv, first) == first
        assert _images_spec(kv, None) == first
        with pytest.raises(FleetError, match="registry 127.0.0.1:5000/team"):
            _images_spec(kv, make_spec(image_dir="/srv/img"))
        with pytest.raises(FleetError, match="no image distribution"):
            _images_spec(JsonKV(), None)


class JsonKV:
    def __init__(self):
        self.d: dict[str, str] = {}

    def put_if_absent(self, key, value):
        return self.d.setdefault(key, value) == value

    def get_json(self, key):
        return None if key not in self.d else json.loads(self.d[key])
