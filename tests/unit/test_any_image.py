"""Any image runs under the agent, over the fakes: the agent's runtime for images without an init,
the image's default command (run, start_default), publish_all, and images by id or name."""
import json

import pytest

from appcontainers.domain.exceptions import InvalidValue, PortTaken, UnknownImage
from appcontainers.domain.image import Image, Manifest, RunConfig
from appcontainers.services import plans
from appcontainers.services.publish import EPHEMERAL, publish_all
from tests.contract.runtime import RuntimeBuilderContract
from tests.fakes import FakeFs, FakeRuntimeBuilder, encode_image, make_service

CONFIG = {"env": {"GREETING": "hi", "PATH": "/app"}, "entrypoint": ["/app/hello"], "cmd": ["default-arg"],
          "workdir": "/work", "user": "1000", "exposed_ports": ["8080/tcp", "53/udp", "9/sctp"]}


def manifest(name="oci", **kw):
    return {"format_version": 1, "name": name, "created": 1_600_000_000.0, "parent": None,
            "startup_commands": [], "environment": {}, "host_binds": [], "base": None, "init": [], **kw}


@pytest.fixture
def svc():
    return make_service()


def load(svc, name="oci", container=None, **kw):
    """A container from a fake .aimg of an imported-like image (no init, a run config)."""
    image_id, data = encode_image(manifest(name, **{"config": CONFIG, **kw}))
    path = f"/in/{name}-{len(svc.ports.fs.files)}.aimg"
    svc.ports.fs.files[path] = data
    return svc.load_image(path, name=container), image_id


def agent(svc, name):
    return svc.ports.agents(svc.settings.layout.agent_dir(name))


def chain(config=None, init=(), environment=None):
    return [Image(id="c" * 64, manifest=Manifest(name="x", created=0.0, init=init, config=config,
                                                   environment=environment or {}))]


class TestPlans:
    def test_default_command_is_entrypoint_and_cmd(self):
        """entrypoint + cmd; args replace cmd and keep the entrypoint; none at all is refused."""
        c = chain(RunConfig(entrypoint=["/e"], cmd=["a"]))
        assert plans.default_command(c) == ["/e", "a"]
        assert plans.default_command(c, ["b", "c"]) == ["/e", "b", "c"]
        assert plans.default_command(chain(RunConfig(cmd=["/bin/sh"]))) == ["/bin/sh"]
        for empty in (chain(), chain(RunConfig(env={"A": "1"}))):
            with pytest.raises(InvalidValue, match="no default command"):
                plans.default_command(empty)

    def test_run_defaults_and_environment(self):
        """cwd and user default to the image's workdir and user ("" means / and root); the run
        config's env goes over the images' environment."""
        c = chain(RunConfig(workdir="/w", user="nobody", env={"A": "config", "B": "b"}), environment={"A": "image"})
        assert plans.run_defaults(c, None, None) == ("/w", "nobody")
        assert plans.run_defaults(c, "/given", "root") == ("/given", "root")
        assert plans.run_defaults(chain(RunConfig()), None, None) == (None, None)
        assert plans.command_environment(c) == {"A": "config", "B": "b"}
        assert plans.environment(c) == {"A": "image"}  # what a save writes as the manifest's

    def test_exposed_ports_tcp_and_udp_only(self):
        """sctp cannot be published: it is left out."""
        assert plans.exposed_ports(chain(RunConfig.from_dict(CONFIG))) == [(53, "udp"), (8080, "tcp")]


class TestPublishAll:
    def test_free_ports_in_the_ephemeral_range(self):
        """Each exposed port gets a host port of the range that no host socket, no container and no
        other choice holds."""
        draws = iter([40000, 40000, 40001, 40002])
        ports = publish_all([(80, "tcp"), (81, "tcp")], {("tcp", None, 40000)}, [], lambda lo, hi: next(draws))
        assert [p.spec for p in ports] == ["40001:80/tcp", "40002:81/tcp"]
        assert EPHEMERAL == (32768, 60999)

    def test_no_free_port_is_refused(self):
        with pytest.raises(PortTaken, match="no free host port"):
            publish_all([(80, "tcp")], {("tcp", None, 40000)}, [], lambda lo, hi: 40000)


class TestRuntime:
    def test_image_without_init_runs_the_agent_from_the_runtime(self, svc):
        """The runtime is built once, bound read-only at /.appcontainers and the init runs the
        agent through its loader; commands go to the agent."""
        c, _ = load(svc, container="a")
        d, _ = load(svc, container="b")
        builder = svc.ports.runtime
        assert builder.builds == [svc.settings.layout.runtime("runtime-key-1")]
        config = svc.ports.driver.configs["a"].splitlines()
        assert f"lxc.init.cmd = {' '.join(plans.RUNTIME_INIT)}" in config
        assert (f"lxc.mount.entry = {builder.builds[0]} .appcontainers none ro,bind,nosuid,nodev,create=dir 0 0"
                in config)
        c.run(["true"])
        assert agent(svc, "a").runs[0]["argv"] == ["true"]
        assert svc.ports.driver.attached == []

    def test_a_new_key_builds_a_new_tree_and_a_base_needs_none(self, svc):
        """What the runtime is made from changed: the next container gets a new tree; the default
        base has its own init and no runtime."""
        load(svc, container="a")
        svc.ports.runtime.current_key = "runtime-key-2"
        load(svc, container="b")
        assert len(svc.ports.runtime.builds) == 2
        svc.provision("base")
        assert ".appcontainers" not in svc.ports.driver.configs["base"]
        assert "lxc.init.cmd = /sbin/appcontainers-init" in svc.ports.driver.configs["base"]


class TestDefaultCommand:
    def test_run_without_command_runs_the_default_with_workdir_and_user(self, svc):
        """run() runs entrypoint + cmd in the image's workdir as its user; args replace cmd; a
        given command keeps the workdir and user defaults, which cwd= and user= override."""
        c, _ = load(svc, container="a")
        c.run()
        c.run(args=["x"], env={"K": "v"})
        c.run(["ls"], cwd="/", user="0")
        runs = agent(svc, "a").runs
        assert [(r["argv"], r["cwd"], r["user"]) for r in runs] == [
            (["/app/hello", "default-arg"], "/work", "1000"), (["/app/hello", "x"], "/work", "1000"),
            (["ls"], "/", "0")]
        assert runs[1]["env"] == {"K": "v"}

    def test_agent_gets_the_images_env_and_start_default(self, svc):
        """agent.json: the image's env as the base environment; with start_default, the default
        command (argv, cwd, user) to run at every start."""
        c, image_id = load(svc, container="a")
        d = svc.provision("b", image=image_id, start_default=True)
        c.start()
        d.start()
        read = lambda n: json.loads(svc.ports.fs.files[svc.settings.layout.agent_dir(n) + "/agent.json"])
        assert read("a")["environment"] == {"GREETING": "hi", "PATH": "/app"}
        assert "default_command" not in read("a")
        assert read("b")["default_command"] == {"argv": ["/app/hello", "default-arg"], "cwd": "/work", "user": "1000"}
        assert svc.ports.repo.read().get("b").start_default

    def test_start_default_without_a_default_command_reserves_nothing(self, svc):
        """An image with no entrypoint or cmd cannot start_default: refused, nothing reserved."""
        _, image_id = load(svc, name="nocmd", container="a", config={"env": {"A": "1"}})
        with pytest.raises(InvalidValue, match="no default command"):
            svc.provision("b", image=image_id, start_default=True)
        assert "b" not in svc.ports.repo.read().reservations

    def test_saved_image_carries_the_config(self, svc):
        """A saved container (flattened or layered) keeps its image's run config."""
        c, _ = load(svc, container="a")
        svc.ports.fs.dirs.add("/out")
        for flatten in (True, False):
            image = c.save_image(f"/out/s{flatten}.aimg", flatten=flatten)
            assert image.manifest.config == RunConfig.from_dict(CONFIG)
            assert image.manifest.init == ()


class TestImageByName:
    def test_by_id_prefix_and_name(self, svc):
        """provision(image=) takes an id, an id prefix or a name."""
        _, image_id = load(svc, container="a")
        for ref, name in ((image_id, "b"), (image_id[:8], "c"), ("oci", "d")):
            assert svc.provision(name, image=ref).image == image_id

    def test_ambiguous_name_names_the_candidates(self, svc):
        """Two images of one name: refused, with both ids; an unknown one: UnknownImage."""
        _, one = load(svc, container="a")
        _, two = load(svc, container="b", config={**CONFIG, "cmd": ["other"]})
        with pytest.raises(InvalidValue, match="give the id") as e:
            svc.provision("c", image="oci")
        assert one[:12] in str(e.value) and two[:12] in str(e.value)
        with pytest.raises(UnknownImage):
            svc.provision("c", image="nothing-here")
        with pytest.raises(InvalidValue, match="not both"):
            svc.provision("c", image=one, base="default")

    def test_publish_all_publishes_the_exposed_ports(self, svc):
        """publish_all: 8080/tcp and 53/udp each on a free host port (sctp left out)."""
        _, image_id = load(svc, container="a")
        c = svc.provision("b", image=image_id, publish_all=True, publish=["127.0.0.1:5000:1"])
        ports = svc.ports.repo.read().get("b").published
        assert ports[0].spec == "127.0.0.1:5000:1/tcp"
        assert sorted((p.port, p.proto) for p in ports[1:]) == [(53, "udp"), (8080, "tcp")]
        assert all(EPHEMERAL[0] <= p.host_port <= EPHEMERAL[1] for p in ports[1:])
        assert c.info()["ports"] == [p.spec for p in ports]


class TestCli:
    def test_provision_image_start_default_publish_all_and_run(self, svc):
        """provision --image NAME --start-default -P, then `run NAME` with no command."""
        from click.testing import CliRunner
        from appcontainers.entrypoints.cli import main

        load(svc, container="a")
        runner = CliRunner()
        out = runner.invoke(main, ["provision", "--name", "b", "--image", "oci", "--start-default", "-P", "--json"],
                            obj=lambda reconcile=True: svc)
        assert out.exit_code == 0, out.output
        r = svc.ports.repo.read().get("b")
        assert r.start_default and len(r.publish) == 2
        out = runner.invoke(main, ["run", "--json", "b"], obj=lambda reconcile=True: svc)
        assert out.exit_code == 0, out.output
        assert agent(svc, "b").runs[-1]["argv"] == ["/app/hello", "default-arg"]


class TestAgentDefaultCommand:
    def test_config_takes_a_default_command_and_ignores_a_bad_one(self):
        """agent.json's default_command is an argv (with cwd and user); a malformed one is
        reported and ignored (the agent is init and comes up anyway)."""
        from appcontainers.agent.config import parse_config

        good = {"argv": ["/app/hello", "x"], "cwd": "/work", "user": "1000"}
        assert parse_config({"default_command": good}) == ({**parse_config({})[0], "default_command": good}, [])
        for bad in ({"argv": []}, {"argv": "/bin/sh"}, {"argv": ["a"], "cwd": 3}, ["a"]):
            config, problems = parse_config({"default_command": bad})
            assert config["default_command"] is None and problems == ["agent.json: ignoring invalid default_command"]

    def test_runner_runs_it_as_argv_in_its_cwd_like_a_startup_command(self, tmp_path):
        """start_default runs the argv (no shell) in the cwd, logged as startup-default."""
        from tests.unit.test_agent_runner import FakeLog, FakeSocket, drive, output
        from appcontainers.agent.runner import Runner

        log = FakeLog()
        runner = Runner(FakeSocket().send, log, base_env={"GREETING": "hi"})
        runner.start_default({"argv": ["/bin/sh", "-c", 'echo "$GREETING $(pwd)"'], "cwd": str(tmp_path)})
        drive(runner, lambda: not runner.commands)
        assert output(log.of("startup-default")) == f"hi {tmp_path}\n".encode()


class TestFakeRuntimeBuilder(RuntimeBuilderContract):
    class World:
        def __init__(self, fs):
            self.fs = fs
            fs.make_dirs("/srv/contract")

        def path(self, name):
            return f"/srv/contract/{name}"

        def exists(self, path):
            return self.fs.exists(path)

    @pytest.fixture
    def world(self):
        return self.World(FakeFs())

    @pytest.fixture
    def runtime(self, world):
        return FakeRuntimeBuilder(world.fs)
