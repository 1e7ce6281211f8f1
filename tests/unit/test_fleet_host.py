"""fleet.host.Host over the real services and the fakes: containers, jobs, images by id."""
from __future__ import annotations

import os

import pytest

from appcontainers.fleet.host import Host
from appcontainers.fleet.images import Brought
from tests.fakes import make_service


class FakeDistribution:
    """Images by id in a dict (the shared directory's promises, without the files)."""

    def __init__(self, fs, codec):
        self.fs, self.codec, self.files = fs, codec, {}
        self.fetched: list[str] = []

    def spec(self):
        return {"kind": "fake"}

    def publish(self, path):
        image_id, manifest = self.codec.verify(path)
        self.files[image_id] = self.fs.files[path]
        return image_id

    def has(self, image_id):
        return image_id in self.files

    def bring(self, image_id, svc):
        dest = os.path.join(svc.settings.layout.tmp, image_id + ".aimg")
        svc.ports.fs.files[dest] = self.files[image_id]
        self.fetched.append(image_id)
        return Brought(layers=1, top_file=dest)


def make_host(name="h1", **settings):
    svc = make_service(**settings)
    published = []
    dist = FakeDistribution(svc.ports.fs, svc.ports.codec)
    host = Host(name, svc, dist, publish=published.append, meminfo=lambda: (8 << 30, 6 << 30),
                publish_interval=0.0)
    return host, svc, dist, published


class TestHost:
    def test_view_reports_capacity_and_containers(self):
        """view(): slots from the subnet, memory less the containers' limits, the count held."""
        host, svc, _, _ = make_host(subnet="10.0.224.0/24")
        host.create(None, memory="1G")
        v = host.view()
        assert (v["name"], v["alive"], v["containers"], v["max_containers"]) == ("h1", True, 1, 253)
        assert v["memory_reserved"] == 1 << 30 and v["subnet"] == "10.0.224.0/24"

    def test_create_publishes_the_container_list(self):
        """Each change publishes the host's containers, each with its host."""
        host, _, _, published = make_host()
        name = host.create(None)
        assert [c["name"] for c in published[-1]] == [name] and published[-1][0]["host"] == "h1"

    def test_job_runs_in_an_ephemeral_container_that_goes(self):
        """job(): a container made, the command run, the container gone, the result kept."""
        host, svc, _, published = make_host()
        result = host.job(None, "echo hi")
        assert result["exit_code"] == 0 and result["host"] == "h1"
        assert svc.containers.list() == [] and published[-1] == []

    def test_an_image_is_fetched_once_then_loaded_locally(self):
        """The first container from an image id fetches it; the next ones use the stored copy."""
        host, svc, dist, _ = make_host()
        other, osvc, _, _ = make_host("h2")
        src = osvc.provision()
        osvc.ports.fs.make_dirs("/srv/out")
        saved = src.save_image("/srv/out/x.aimg")
        dist.files[saved.id] = osvc.ports.fs.files["/srv/out/x.aimg"]  # as if published from h2
        a = host.create(saved.id)
        b = host.create(saved.id, ephemeral=True)
        assert dist.fetched == [saved.id] and host.fetch_counts() == {saved.id: 1}
        assert {svc.get(a).image, svc.get(b).image} == {saved.id} and svc.get(b).ephemeral

    def test_run_stream_yields_lines_then_the_exit(self):
        """run_stream(): the output lines, then ("exit", result)."""
        host, _, _, _ = make_host()
        name = host.create(None)
        items = list(host.run_stream(name, "echo hi"))
        assert items[-1][0] == "exit" and items[-1][1]["exit_code"] == 0

    def test_publishing_is_bounded_per_interval(self):
        """Inside the interval, changes wait for one publish at its end (or flush) of the latest state."""
        host, svc, _, published = make_host()
        host.publish_interval = 60.0
        first = host.create(None)  # published at once: none before
        second = host.create(None)
        third = host.create(None)
        assert [len(p) for p in published] == [1]
        host.flush()
        assert [len(p) for p in published] == [1, 3] and {c["name"] for c in published[-1]} == {first, second, third}

    def test_call_refuses_private_names(self):
        """call() reaches Container's public methods only."""
        host, _, _, _ = make_host()
        name = host.create(None)
        with pytest.raises(AttributeError):
            host.call(name, "_svc")
        assert host.call(name, "info")["name"] == name
