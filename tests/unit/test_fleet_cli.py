"""`appcontainers fleet ...` through click's CliRunner over a hand-written fleet."""
from __future__ import annotations

import json

from click.testing import CliRunner

from appcontainers.entrypoints.cli import main
from appcontainers.fleet.errors import HostLost
from appcontainers.fleet.jobs import JobResult


class FakeHandle:
    def __init__(self, host, name):
        self.host, self.name = host, name

    def info(self):
        return {"name": self.name, "ip": "10.0.224.2", "mac": "0a:0a:00:e0:00:01", "host": self.host}


class FakeFleet:
    """Records what the CLI asked; answers like a two-host fleet, h2 lost."""

    def __init__(self):
        self.calls, self.addresses = [], []

    def hosts(self):
        return [{"name": "h1", "alive": True, "subnet": "10.0.224.0/24", "containers": 1, "max_containers": 253,
                 "memory_free": 1 << 30, "cpus": 2, "load": 0.5},
                {"name": "h2", "alive": False, "subnet": "10.0.225.0/24"}]

    def ls(self):
        return [{"host": "h2", "name": "web", "state": "lost", "ip": "10.0.225.2", "ephemeral": False,
                 "image": "ab" * 32}]

    def run(self, image, cmd, **kw):
        self.calls.append(("run", image, cmd, kw))
        return JobResult(index=0, command=cmd, host="h1", exit_code=3, stdout_bytes=b"out\n", stderr_bytes=b"")

    def provision(self, image, **kw):
        self.calls.append(("provision", image, kw))
        return FakeHandle("h1", kw.get("name") or "ac-1")

    def images(self):
        return getattr(self, "spec", None)

    def use_images(self, registry=None, image_dir=None, tls_verify=True):
        from appcontainers.fleet.images import make_spec

        self.calls.append(("use_images", registry, image_dir, tls_verify))
        self.spec = make_spec(image_dir, registry, tls_verify)

    def rm(self, ref):
        if ref.startswith("h2/"):
            raise HostLost("h2")
        self.calls.append(("rm", ref))


class Obj:
    def __init__(self, fleet):
        self._fleet = fleet

    def __call__(self, reconcile=True):
        raise AssertionError("fleet commands need no local service")

    def fleet(self, address):
        self._fleet.addresses.append(address)
        return self._fleet


def invoke(args, fleet=None):
    fleet = fleet or FakeFleet()
    return CliRunner().invoke(main, args, obj=Obj(fleet)), fleet


class TestFleetCli:
    def test_hosts_shows_a_lost_host(self):
        """hosts: one line per host, a dead one LOST; --address goes to the connection."""
        result, fleet = invoke(["fleet", "--address", "127.0.0.1:6379", "hosts"])
        assert result.exit_code == 0, result.output
        assert "h1" in result.output and "LOST" in result.output
        assert fleet.addresses == ["127.0.0.1:6379"]

    def test_ls_json(self):
        """ls --json: the containers with their host and state."""
        result, _ = invoke(["fleet", "ls", "--json"])
        assert json.loads(result.output)[0]["state"] == "lost"

    def test_run_exits_with_the_jobs_code(self):
        """run: the job's output and its exit code; the options reach the fleet."""
        result, fleet = invoke(["fleet", "run", "--host", "h1", "--retries", "1", "--", "echo", "out"])
        assert result.exit_code == 3 and result.output == "out\n"
        assert fleet.calls == [("run", None, ["echo", "out"], {"host": "h1", "retries": 1, "timeout": None})]

    def test_provision_prints_host_and_name(self):
        """provision: HOST/NAME IP MAC."""
        result, fleet = invoke(["fleet", "provision", "--name", "web", "--memory", "256M"])
        assert result.output.startswith("h1/web 10.0.224.2")
        assert fleet.calls[0][2] == {"host": None, "name": "web", "ephemeral": False, "memory": "256M"}

    def test_rm_on_a_lost_host_is_one_error_line(self):
        """rm of a container on a lost host: one clear line, exit 1."""
        result, _ = invoke(["fleet", "rm", "h2/web"])
        assert result.exit_code == 1 and "host h2 is lost" in result.output

    def test_images_shows_and_switches_the_distribution(self):
        """images: none before a join; --registry switches (tls verification as asked) and prints it."""
        result, fleet = invoke(["fleet", "images"])
        assert (result.exit_code, result.output) == (0, "none yet\n")
        result, _ = invoke(["fleet", "images", "--registry", "127.0.0.1:5000/t", "--tls-verify", "false"], fleet)
        assert result.output == "registry 127.0.0.1:5000/t\n"
        assert fleet.calls == [("use_images", "127.0.0.1:5000/t", None, False)]
        result, _ = invoke(["fleet", "images", "--json"], fleet)
        assert json.loads(result.output) == {"kind": "registry", "address": "127.0.0.1:5000/t", "tls_verify": False}
