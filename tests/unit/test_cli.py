"""The appcontainers command through click's CliRunner, over the fakes (no root, no LXC)."""
from __future__ import annotations

import base64
import json
import logging
import re

import attrs
import pytest
from click.testing import CliRunner

from appcontainers.entrypoints import log_config
from appcontainers.entrypoints.cli import main
from tests.fakes import encode_image, make_service


@pytest.fixture
def svc():
    return make_service()


@pytest.fixture(autouse=True)
def _logging_reset():
    """A CLI call configures the appcontainers logger; leave it as it was found."""
    yield
    log_config.configure(None)


@pytest.fixture
def cli(svc):
    """Runs the CLI with svc as its service; .reconciles lists how each service was asked for."""
    runner = CliRunner()
    reconciles: list[bool] = []

    def factory(reconcile: bool = True):
        reconciles.append(reconcile)
        logging.getLogger("appcontainers.test").debug("service made, reconcile=%s", reconcile)
        return svc

    def invoke(*args, env=None, input=None):
        return runner.invoke(main, list(args), obj=factory, env=env or {"APPCONTAINERS_LOG": ""},
                             input=input)

    invoke.reconciles = reconciles
    return invoke


def agent(svc, name):
    """The fake agent client of container name."""
    return svc.ports.agents(svc.settings.layout.agent_dir(name))


def put_image(svc, path, **manifest) -> str:
    """A fake .aimg file at path in the fake fs; returns its id."""
    image_id, data = encode_image({"format_version": 1, "name": "app", "created": 1_600_000_000.0,
                                   "parent": None, "startup_commands": [], "environment": {},
                                   "host_binds": [], "base": "default", "init": [], **manifest})
    svc.ports.fs.files[path] = data
    return image_id


def one_error_line(result) -> str:
    """The error text of a failed call, checked to be one line on stderr with exit code 1."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert result.stderr.startswith("appcontainers: error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.output and result.stdout == ""
    return result.stderr


class TestProvision:
    def test_prints_name_ip_mac_state(self, cli, svc):
        """provision makes a container and prints its name, address, MAC and state on one line."""
        result = cli("provision", "--name", "web", "--memory", "256M", "--cpus", "0.5")
        assert result.exit_code == 0, result.output
        c = svc.get("web")
        assert result.stdout == f"web ip={c.ip} mac={c.mac} state=STOPPED\n"
        r = svc.ports.repo.read().get("web")
        assert (r.memory, r.cpus) == ("256M", 0.5)

    def test_json(self, cli, svc):
        """provision --json prints one object with the container's info."""
        info = json.loads(cli("provision", "--name", "web", "--json").stdout)
        assert info["name"] == "web" and info["ip"] == "10.0.100.2" and info["state"] == "STOPPED"
        assert info["mac"] == svc.get("web").mac and info["ephemeral"] is False


class TestLs:
    def test_table(self, cli, svc):
        """ls prints a header and one row per container: name, state, image name, address, MAC, ephemeral, ports."""
        a, b = svc.provision("a"), svc.provision("b", publish=["8080:80", "127.0.0.1:5353:53/udp"])
        b.start()
        base = svc.images.resolve(a.image).name
        lines = cli("ls").stdout.splitlines()
        assert lines[0].split() == ["NAME", "STATE", "IMAGE", "IP", "MAC", "EPHEMERAL", "PORTS"]
        assert [line.split() for line in lines[1:]] == [
            ["a", "STOPPED", base, a.ip, a.mac, "no"],
            ["b", "RUNNING", base, b.ip, b.mac, "no", "8080:80/tcp,127.0.0.1:5353:53/udp"]]

    def test_publish_option(self, cli, svc):
        """provision -p/--publish (repeatable) publishes the ports; ls --json shows them."""
        cli("provision", "--name", "web", "-p", "8080:80", "--publish", "127.0.0.1:5353:53/udp")
        listed = json.loads(cli("ls", "--json").stdout)
        assert listed[0]["ports"] == ["8080:80/tcp", "127.0.0.1:5353:53/udp"]

    def test_json(self, cli, svc):
        """ls --json prints every container's info as one list."""
        svc.provision("a")
        listed = json.loads(cli("ls", "--json").stdout)
        assert [(i["name"], i["ip"], i["state"]) for i in listed] == [("a", "10.0.100.2", "STOPPED")]
        assert json.loads(cli("ls", "--format", "json").stdout) == listed

    def test_empty(self, cli):
        """With no containers, ls prints the header and --json an empty list."""
        assert cli("ls").stdout.split() == ["NAME", "STATE", "IMAGE", "IP", "MAC", "EPHEMERAL", "PORTS"]
        assert json.loads(cli("ls", "--json").stdout) == []


class TestRun:
    def test_exit_code_passes_through(self, cli, svc):
        """run NAME -- CMD runs the argv in the container and exits with the command's code."""
        svc.provision("web")
        agent(svc, "web").reply = (5, b"", b"")
        result = cli("run", "web", "--", "sh", "-c", "exit 5")
        assert result.exit_code == 5
        assert agent(svc, "web").runs[-1]["argv"] == ["sh", "-c", "exit 5"]
        assert svc.ports.driver.state("web") == "RUNNING"

    def test_json_prints_output_and_exits_with_code(self, cli, svc):
        """run --json prints exit code, stdout and stderr as one object, and still exits with the code."""
        svc.provision("web")
        agent(svc, "web").reply = (3, b"out\n", b"err\n")
        result = cli("run", "--json", "web", "--", "cat")
        assert result.exit_code == 3
        assert json.loads(result.stdout) == {"exit_code": 3, "stdout": "out\n", "stderr": "err\n"}

    def test_killed_by_signal_exits_128_plus(self, cli, svc):
        """A command killed by signal 9 (exit code -9) makes run exit with 137, as a shell would."""
        svc.provision("web")
        agent(svc, "web").reply = (-9, b"", b"")
        assert cli("run", "web", "--", "sleep", "9").exit_code == 137

    def test_no_command_without_a_default_command_is_refused(self, cli, svc):
        """run without a command, in a container whose image has no default command, is refused
        before anything runs (with or without --)."""
        svc.provision("web")
        for args in (("run", "web", "--"), ("run", "web")):
            result = cli(*args)
            assert result.exit_code == 1 and "no default command" in result.stderr
            assert agent(svc, "web").runs == []


class TestPut:
    def test_copies_host_file_with_mode(self, cli, svc, tmp_path):
        """put writes the host file's bytes at the container path with the given octal mode."""
        svc.provision("web")
        src = tmp_path / "conf"
        src.write_bytes(b"a=1\n")
        result = cli("put", "web", str(src), "/etc/app.conf", "--mode", "600")
        assert result.stdout == "web:/etc/app.conf (4 bytes)\n"
        target = svc.settings.layout.rootfs("web") + "/etc/app.conf"
        assert svc.ports.fs.files[target] == b"a=1\n" and svc.ports.fs.modes[target] == 0o600

    def test_bad_mode_refused(self, cli, svc, tmp_path):
        """A mode that is not octal is a usage error; nothing is written."""
        svc.provision("web")
        (tmp_path / "conf").write_text("x")
        result = cli("put", "web", str(tmp_path / "conf"), "/etc/app.conf", "--mode", "rw")
        assert result.exit_code == 1 and "not an octal mode" in result.stderr
        assert svc.settings.layout.rootfs("web") + "/etc/app.conf" not in svc.ports.fs.files


class TestLoadArchive:
    @pytest.fixture
    def archive(self, svc, tmp_path):
        """An archive on the host (the CLI checks it exists) and in the fake fs (the port reads it)."""
        path = tmp_path / "app.tar"
        path.write_bytes(b"tar")
        svc.ports.fs.files[str(path)] = b"tar"
        svc.provision("web")
        return str(path)

    def test_limits_reach_the_port(self, cli, svc, archive):
        """--max-bytes SIZE and --max-members N are the extraction's limits, in bytes and members."""
        result = cli("load-archive", "web", archive, "--max-bytes", "2G", "--max-members", "10")
        assert result.stdout == "web: 1 members into /root\n", result.output
        assert svc.ports.fs.limits == [{"max_bytes": 2 << 30, "max_members": 10}]

    def test_no_limits_leaves_the_defaults(self, cli, svc, archive):
        """Without the options, the adapter's defaults apply (None reaches the port)."""
        assert cli("load-archive", "web", archive).exit_code == 0
        assert svc.ports.fs.limits == [{"max_bytes": None, "max_members": None}]

    def test_bad_size_is_one_error_line(self, cli, svc, archive):
        """A --max-bytes that is not a size is one error line; nothing is extracted."""
        assert "--max-bytes" in one_error_line(cli("load-archive", "web", archive, "--max-bytes", "lots"))
        assert svc.ports.fs.extracted == []


class TestStartupCommands:
    def test_add_and_remove(self, cli, svc):
        """add-startup lists the commands numbered; rm-startup removes by number."""
        svc.provision("web")
        cli("add-startup", "web", "httpd -f")
        assert cli("add-startup", "web", "echo hi").stdout == "0: httpd -f\n1: echo hi\n"
        assert cli("rm-startup", "web", "0").stdout == "0: echo hi\n"
        assert svc.ports.repo.read().get("web").startup_commands == ("echo hi",)
        assert cli("rm-startup", "web", "0").stdout == "(no startup commands)\n"

    def test_json(self, cli, svc):
        """add-startup --json prints the container's commands as a list."""
        svc.provision("web")
        out = json.loads(cli("add-startup", "web", "serve", "--json").stdout)
        assert out == {"name": "web", "startup_commands": ["serve"]}

    def test_unknown_index_is_an_error(self, cli, svc):
        """Removing a command number that does not exist is one error line; nothing changes."""
        svc.provision("web")
        cli("add-startup", "web", "serve")
        one_error_line(cli("rm-startup", "web", "4"))
        assert svc.ports.repo.read().get("web").startup_commands == ("serve",)


class TestLifecycle:
    def test_start_stop_rm(self, cli, svc):
        """start, stop and rm print the new state; rm frees the address."""
        svc.provision("web")
        assert cli("start", "web").stdout == "web RUNNING\n"
        assert cli("stop", "web", "--json").stdout == '{"name": "web", "state": "STOPPED"}\n'
        assert cli("rm", "web").stdout == "web destroyed\n"
        assert svc.list_containers() == [] and svc.ports.driver.list() == []
        assert len(svc.ports.repo.read().pool) == 0


class TestImages:
    def test_save_lists_and_removes(self, cli, svc):
        """save writes an image file; images lists it; rmi refuses while a container uses it."""
        svc.provision("web")
        svc.ports.fs.dirs.add("/out")
        saved = json.loads(cli("save", "web", "/out/web.aimg", "--json").stdout)
        assert saved["path"] == "/out/web.aimg" and saved["name"] == "web"
        loaded = json.loads(cli("load", "/out/web.aimg", "--name", "copy", "--json").stdout)
        assert loaded["image"] == saved["id"]
        rows = [line.split() for line in cli("images").stdout.splitlines()[1:]]
        assert [saved["id"][:12], "user", "web"] in [row[:3] for row in rows]
        assert saved["id"] in [i["id"] for i in json.loads(cli("images", "--json").stdout)]
        assert "used by" in one_error_line(cli("rmi", saved["id"]))
        cli("rm", "copy")
        assert cli("rmi", saved["id"][:10]).stdout == f"removed {saved['id'][:12]} (web)\n"
        assert saved["id"] not in [i["id"] for i in json.loads(cli("images", "--json").stdout)]

    def test_load_publishes_and_refuses_a_taken_port(self, cli, svc):
        """load -p publishes ports like provision; a port already published is one error line."""
        svc.provision("web", publish=["8080:80"])
        svc.ports.fs.dirs.add("/out")
        cli("save", "web", "/out/web.aimg")
        loaded = json.loads(cli("load", "/out/web.aimg", "--name", "copy", "-p", "8081:80", "--json").stdout)
        assert loaded["ports"] == ["8081:80/tcp"]
        assert "cannot publish 8080:80/tcp: container web publishes 8080:80/tcp" in \
            one_error_line(cli("load", "/out/web.aimg", "-p", "8080:80"))
        assert sorted(svc.ports.repo.read().reservations) == ["copy", "web"]

    def test_save_progress_goes_to_stderr(self, cli, svc):
        """Without --json, save prints the path and id on stdout; the progress bar is on stderr."""
        svc.provision("web")
        svc.ports.fs.dirs.add("/out")
        result = cli("save", "web", "/out/web.aimg")
        path, image_id = result.stdout.split()
        assert path == "/out/web.aimg" and image_id == svc.ports.codec.image_id("/out/web.aimg")
        assert "saving web" in result.stderr

    def test_load_sets_caps_and_limits(self, cli, svc):
        """load --cap-add, --pids, --memory, --cpus and --disk set them on the new container."""
        put_image(svc, "/in/app.aimg")
        result = cli("load", "/in/app.aimg", "--name", "app", "--cap-add", "net_admin", "--cap-add", "sys_time",
                     "--pids", "100", "--memory", "256M", "--cpus", "0.5", "--disk", "1G")
        assert result.exit_code == 0, result.output
        r = svc.ports.repo.read().get("app")
        assert (r.caps_add, r.pids, r.memory, r.cpus, r.disk) == (("net_admin", "sys_time"), 100, "256M", 0.5,
                                                                  1 << 30)

    def test_mount_and_umount_go_through_the_viewer(self, cli, svc, tmp_path):
        """image mount shows a stored image with its parents at a directory; umount removes it."""
        base = svc.bases.ensure_default()
        put_image(svc, "/in/child.aimg", parent=base.id)
        view = str(tmp_path / "view")
        result = cli("image", "mount", "/in/child.aimg", view)
        assert result.stdout == f"/in/child.aimg mounted at {view} (2 layers)\n"
        L = svc.settings.layout
        assert svc.ports.viewer.views == {view: ["/in/child.aimg", L.image_file(base.id, "base")]}
        (tmp_path / "view").mkdir()  # the real viewer makes it; umount wants it to exist
        assert cli("image", "umount", view).stdout == f"unmounted {view}\n"
        assert svc.ports.viewer.views == {}


class TestGc:
    def _leftover(self, svc):
        svc.provision("half")
        with svc.ports.repo.transaction() as state:
            state.put(attrs.evolve(state.get("half"), status="provisioning", owner="dead"))

    def test_dry_run_says_and_changes_nothing(self, cli, svc):
        """gc --dry-run prints what it would repair and leaves the state as it was."""
        self._leftover(svc)
        before = svc.ports.repo.read().to_dict()
        result = cli("gc", "--dry-run")
        assert "half" in result.stdout and result.exit_code == 0
        assert svc.ports.repo.read().to_dict() == before
        assert cli.reconciles == [False]  # not reconciled while the service is made

    def test_repairs(self, cli, svc):
        """gc repairs the leftover; a second run has nothing to do."""
        self._leftover(svc)
        out = json.loads(cli("gc", "--json").stdout)
        assert out["dry_run"] is False and any("half" in a for a in out["actions"])
        assert svc.list_containers() == []
        assert cli("gc").stdout == "nothing to repair\n"


class TestLogs:
    RECORDS = [
        {"v": 1, "ts": 1.0, "type": "started", "id": "c1", "argv": ["sh"]},
        {"v": 1, "ts": 2.0, "type": "output", "id": "c1", "stream": "stdout", "seq": 0, "data": "hi\n"},
        {"v": 1, "ts": 3.0, "type": "output", "id": "c1", "stream": "stderr", "seq": 0,
         "data_b64": base64.b64encode(b"bad \xff").decode()},
        {"v": 1, "ts": 4.0, "type": "exit", "id": "c1", "code": 0, "signal": None, "timed_out": False},
    ]

    def test_prints_output_and_exits(self, cli, svc):
        """logs prints output lines on their stream and the starts and exits with their details,
        tagged with the command's text where the log records it."""
        svc.provision("web")
        agent(svc, "web").records = list(self.RECORDS)
        result = cli("logs", "web")
        assert result.stdout == ('[sh] started {"argv": ["sh"]}\n[sh] hi\n'
                                 '[sh] exit {"code": 0, "signal": null, "timed_out": false}\n')
        assert result.stderr == "[sh] bad \ufffd\n"

    def test_id_when_no_text(self, cli, svc):
        """A command whose start the log does not hold is tagged with its id."""
        svc.provision("web")
        agent(svc, "web").records = list(self.RECORDS[1:2])
        assert cli("logs", "web").stdout == "[c1] hi\n"

    def test_timestamps_and_tail(self, cli, svc):
        """-t starts each line with its UTC time; --tail N prints only the last N records (their
        command text still known from earlier records)."""
        svc.provision("web")
        agent(svc, "web").records = list(self.RECORDS)
        result = cli("logs", "web", "-t", "--tail", "1")
        assert result.stdout == ('1970-01-01T00:00:04.000Z [sh] exit {"code": 0, "signal": null, '
                                 '"timed_out": false}\n')
        assert cli("logs", "web", "--tail", "0").stdout == ""

    def test_negative_since_refused(self, cli, svc):
        """--since -5 and --tail -1 are usage errors, exit 1."""
        svc.provision("web")
        for args in (("--since", "-5"), ("--tail", "-1")):
            result = cli("logs", "web", *args)
            assert result.exit_code == 1 and "Invalid value" in result.stderr

    def test_json_and_since(self, cli, svc):
        """logs --json prints each record as written, with its offset; --since skips the earlier ones."""
        svc.provision("web")
        agent(svc, "web").records = list(self.RECORDS)
        lines = [json.loads(line) for line in cli("logs", "web", "--json", "--since", "2").stdout.splitlines()]
        assert lines == [{"offset": 3, **self.RECORDS[2]}, {"offset": 4, **self.RECORDS[3]}]


class TestErrors:
    @pytest.mark.parametrize("args", [("start", "no-such"), ("rm", "no-such"), ("logs", "no-such"),
                                      ("provision", "--name", "Bad;Name"), ("load", "/nonexistent.aimg"),
                                      ("rmi", "no-such"), ("run", "no-such", "--", "true")])
    def test_one_line_exit_1(self, cli, args):
        """Our errors are one line on stderr and exit code 1, never a traceback."""
        one_error_line(cli(*args))

    def test_os_error_is_one_line_exit_1(self, cli, svc):
        """An OSError no use case turned into a HostError (here from a fake's stop) is one line too."""
        svc.provision("web").start()
        svc.ports.driver.faults["stop"] = PermissionError(13, "Permission denied")
        one_error_line(cli("stop", "web"))

    def test_os_error_making_the_service_is_one_line(self):
        """The service's set-up failing on the host (data root not writable) is one HostError
        line naming the command, and exit code 1."""
        def factory(reconcile=True):
            raise PermissionError(13, "Permission denied", "/var/lib/appcontainers")

        result = CliRunner().invoke(main, ["ls"], obj=factory, env={"APPCONTAINERS_LOG": ""})
        assert one_error_line(result) == ("appcontainers: error: ls failed: Permission denied "
                                          "(/var/lib/appcontainers)\n")

    def test_service_is_made_only_when_needed(self, cli):
        """--help and a usage error never make the service (so they need no root)."""
        assert cli("--help").exit_code == 0 and cli("ls", "--help").exit_code == 0
        assert cli("put", "web").exit_code == 1
        assert cli.reconciles == []


class TestLogging:
    def test_debug_flag_shows_library_records(self, cli, svc):
        """--debug sends the library's debug records to stderr, stdout stays the command's."""
        result = cli("--debug", "ls", "--json")
        assert json.loads(result.stdout) == []
        assert "DEBUG appcontainers.test: service made, reconcile=True" in result.stderr

    def test_env_sets_the_level(self, cli):
        """APPCONTAINERS_LOG=info shows info and above, not debug."""
        def emit(reconcile=True):
            log = logging.getLogger("appcontainers.test")
            log.debug("a debug record")
            log.info("an info record")
            return make_service()

        result = CliRunner().invoke(main, ["ls"], obj=emit, env={"APPCONTAINERS_LOG": "INFO"})
        assert "INFO appcontainers.test: an info record" in result.stderr
        assert "a debug record" not in result.stderr

    def test_quiet_by_default(self, cli):
        """Without the flag or the variable, nothing of the library's logging reaches stderr."""
        result = cli("ls")
        assert result.exit_code == 0 and result.stderr == ""
        handlers = logging.getLogger("appcontainers").handlers
        assert all(isinstance(h, logging.NullHandler) for h in handlers)

    def test_bad_level_is_an_error(self, cli):
        """An unknown APPCONTAINERS_LOG value is one error line naming the levels."""
        assert "debug, info" in one_error_line(cli("ls", env={"APPCONTAINERS_LOG": "loud"}))

    def test_repeated_calls_add_one_handler(self, cli):
        """Each call replaces the handler it set up before: a record is printed once."""
        cli("--debug", "ls")
        result = cli("--debug", "ls")
        assert result.stderr.count("service made") == 1


class TestCp:
    def _container_files(self, svc, name):
        root = svc.settings.layout.rootfs(name)
        svc.ports.fs.make_dirs(root + "/srv/site/css")
        svc.ports.fs.files[root + "/srv/site/index.html"] = b"<h1>"
        svc.ports.fs.files[root + "/srv/site/css/a.css"] = b"a{}"
        return root

    def test_out_file_and_tree(self, cli, svc):
        """cp NAME:PATH DEST copies a file or a whole tree out; into DEST when it is a directory."""
        svc.provision("web")
        self._container_files(svc, "web")
        fs = svc.ports.fs
        fs.make_dirs("/host/out")
        result = cli("cp", "web:/srv/site/index.html", "/host/out")
        assert result.exit_code == 0, result.output
        assert result.stdout == "web:/srv/site/index.html -> /host/out/index.html\n"
        assert fs.files["/host/out/index.html"] == b"<h1>"
        out = json.loads(cli("cp", "web:/srv/site", "/host/copy", "--json").stdout)
        assert out == {"name": "web", "from": "/srv/site", "to": "/host/copy", "direction": "out"}
        assert fs.files["/host/copy/css/a.css"] == b"a{}" and "/host/copy/css" in fs.dirs

    def test_out_refuses_existing_tree_and_missing_source(self, cli, svc):
        """A directory copied over an existing host path, or a missing container path, is one error line."""
        svc.provision("web")
        self._container_files(svc, "web")
        svc.ports.fs.files["/host/copy"] = b"mine"
        assert "exists on the host" in one_error_line(cli("cp", "web:/srv/site", "/host/copy"))
        assert svc.ports.fs.files["/host/copy"] == b"mine"
        assert "no such file" in one_error_line(cli("cp", "web:/nope", "/host/x"))

    def test_in_tree_into_existing_dir(self, cli, svc, tmp_path):
        """cp DIR NAME:PATH copies a host tree in; into PATH/DIR when PATH is a container directory."""
        svc.provision("web")
        root = self._container_files(svc, "web")
        (tmp_path / "app" / "lib").mkdir(parents=True)
        (tmp_path / "app" / "lib" / "m.py").write_bytes(b"x = 1\n")
        result = cli("cp", str(tmp_path / "app"), "web:/srv")
        assert result.stdout == f"{tmp_path / 'app'} -> web:/srv/app\n"
        assert svc.ports.fs.files[root + "/srv/app/lib/m.py"] == b"x = 1\n"

    def test_tar_stream_in(self, cli, svc):
        """cp - NAME:DIR unpacks a tar from stdin into DIR through the checked extractor."""
        svc.provision("web")
        result = cli("cp", "-", "web:/srv", "--json", input=b"not checked by the fake")
        assert json.loads(result.stdout) == {"name": "web", "from": "-", "to": "/srv", "direction": "in",
                                             "members": 1}
        [(root, dest, _archive)] = svc.ports.fs.extracted
        assert (root, dest) == (svc.settings.layout.rootfs("web"), "/srv")

    @pytest.mark.parametrize("args", [("a", "b"), ("web:/a", "web:/b")])
    def test_exactly_one_container_side(self, cli, svc, args):
        """Neither or both sides naming a container is a usage error (exit 1), nothing copied."""
        result = cli("cp", *args)
        assert result.exit_code == 1 and "exactly one side" in result.stderr
        assert cli.reconciles == []

    def test_put_file_into_a_directory(self, cli, svc, tmp_path):
        """put FILE NAME DIR, DIR a directory in the container, writes DIR/FILE with --mode."""
        svc.provision("web")
        root = svc.settings.layout.rootfs("web")
        svc.ports.fs.make_dirs(root + "/etc/app")
        (tmp_path / "app.conf").write_bytes(b"k=v\n")
        result = cli("put", "web", str(tmp_path / "app.conf"), "/etc/app", "--mode", "640")
        assert result.stdout == "web:/etc/app/app.conf (4 bytes)\n"
        assert svc.ports.fs.files[root + "/etc/app/app.conf"] == b"k=v\n"
        assert svc.ports.fs.modes[root + "/etc/app/app.conf"] == 0o640

    def test_put_directory(self, cli, svc, tmp_path):
        """put accepts a directory as its source and copies the tree."""
        svc.provision("web")
        (tmp_path / "d").mkdir()
        (tmp_path / "d" / "f").write_bytes(b"1")
        result = cli("put", "web", str(tmp_path / "d"), "/opt/d")
        assert result.exit_code == 0 and result.stdout == "web:/opt/d\n"
        assert svc.ports.fs.files[svc.settings.layout.rootfs("web") + "/opt/d/f"] == b"1"


class TestInspectAndStats:
    def test_inspect(self, cli, svc):
        """inspect --json gives the reservation (limits, caps, commands), state and image name, never the key."""
        svc.provision(name="web", memory="256M", cpus=0.5, pids=100, caps_add=["net_admin"])
        svc.get("web").add_startup_command("httpd")
        data = json.loads(cli("inspect", "web", "--json").stdout)
        assert (data["memory"], data["cpus"], data["pids"], data["caps_add"]) == ("256M", 0.5, 100, ["net_admin"])
        assert data["startup_commands"] == ["httpd"] and data["state"] == "STOPPED"
        assert data["privileged"] is False and data["image_name"] == svc.images.resolve(data["image"]).name
        assert data["ip"] == svc.get("web").ip and data["created"] > 0 and "agent_key" not in data
        assert [i["id"] for i in data["image_chain"]] == [data["image"]]
        assert data["rootfs"] == svc.settings.layout.rootfs("web") and data["mounter"] == "kernel"
        text = cli("inspect", "web").stdout
        assert "memory:" in text and "256M" in text

    def test_stats_of_a_stopped_container(self, cli, svc):
        """stats of a container with no cgroup shows '-' for what cannot be read (None in JSON)."""
        svc.provision("web")
        data = json.loads(cli("stats", "web", "--json").stdout)
        assert data == {"name": "web", "state": "STOPPED", "cpu_seconds": None, "memory_bytes": None,
                        "pids": None, "disk_bytes": 0}  # its upper is there, empty (the Monitor fake)
        assert cli("stats", "web").stdout.splitlines()[1].split() == ["web", "STOPPED", "-", "-", "-", "0B"]

    def test_unknown_container(self, cli):
        """inspect of a name neither a container nor an image has, and stats of an unknown
        container, are one error line."""
        one_error_line(cli("inspect", "nope"))
        one_error_line(cli("stats", "nope"))

    def test_inspect_an_image_and_stats_of_all(self, cli, svc):
        """inspect NAME falls back to the image NAME; stats without a name lists every container."""
        base = svc.bases.ensure_default()
        assert json.loads(cli("inspect", base.name, "--json").stdout)["id"] == base.id
        svc.provision("a")
        svc.provision("b")
        assert [s["name"] for s in json.loads(cli("stats", "--json").stdout)] == ["a", "b"]
        assert [line.split()[0] for line in cli("stats").stdout.splitlines()] == ["NAME", "a", "b"]


class TestCliConventions:
    def test_json_errors(self, cli):
        """Under --json an error is a JSON object on stderr, exit 1; a usage error too."""
        result = cli("rm", "no-such", "--json")
        assert result.exit_code == 1 and result.stdout == ""
        err = json.loads(result.stderr)
        assert err["type"] == "UnknownContainer" and "no-such" in err["error"]
        usage = cli("logs", "web", "--since", "-5", "--json")
        assert usage.exit_code == 1 and json.loads(usage.stderr)["type"] == "BadParameter"

    def test_version(self, cli):
        """--version prints the program and its version and needs no service."""
        result = cli("--version")
        assert result.exit_code == 0 and result.stdout.startswith("appcontainers ")
        assert cli.reconciles == []

    def test_images_size_and_created(self, cli, svc):
        """images shows SIZE and CREATED columns (and size in JSON)."""
        svc.bases.ensure_default()
        lines = cli("images").stdout.splitlines()
        assert lines[0].split() == ["ID", "KIND", "NAME", "SIZE", "CREATED", "PARENT"]
        size, created, ago = lines[1].split()[3:6]
        assert re.fullmatch(r"[0-9.]+[BKMG]|-", size) and re.fullmatch(r"[0-9]+[smhd]", created) and ago == "ago"
        assert "size" in json.loads(cli("images", "--json").stdout)[0]

    def test_rmi_refuses_a_shared_name(self, cli, svc):
        """rmi NAME with two images of that name refuses, naming both ids; nothing is removed."""
        base = svc.bases.ensure_default()
        ids = []
        for n, path in enumerate(("/in/a.aimg", "/in/b.aimg")):
            put_image(svc, path, name="srv", parent=base.id, created=1_600_000_000.0 + n)
            c = svc.load_image(path, name=f"c{n}")
            ids.append(c.image)
            c.destroy()
        err = one_error_line(cli("rmi", "srv"))
        assert ids[0][:12] in err and ids[1][:12] in err
        assert {i["id"] for i in json.loads(cli("images", "--json").stdout)} >= set(ids)

    def test_image_commands_take_json(self, cli, svc, tmp_path):
        """image inspect --json is one line of JSON; image mount/umount --json print objects."""
        base = svc.bases.ensure_default()
        out = cli("image", "inspect", base.id, "--json").stdout
        assert out.count("\n") == 1 and json.loads(out)["id"] == base.id
        view = str(tmp_path / "view")
        mounted = json.loads(cli("image", "mount", base.id, view, "--json").stdout)
        assert mounted["directory"] == view and len(mounted["layers"]) == 1
        (tmp_path / "view").mkdir()
        assert json.loads(cli("image", "umount", view, "--json").stdout)["unmounted"] is True

    def test_completion_of_names(self, cli, svc, tmp_path):
        """Shell completion offers container names from the data root's state file."""
        (tmp_path / "resources.json").write_text(json.dumps({"reservations": {"web": {}, "db": {}}, "images": {}}))
        env = {"_APPCONTAINERS_COMPLETE": "bash_complete", "COMP_WORDS": "appcontainers start w",
               "COMP_CWORD": "2", "APPCONTAINERS_ROOT": str(tmp_path), "APPCONTAINERS_LOG": ""}
        result = CliRunner().invoke(main, [], prog_name="appcontainers", env=env, obj=lambda reconcile=True: svc)
        assert "plain,web" in result.stdout and "db" not in result.stdout


class TestValidation:
    @pytest.mark.parametrize("args", [("provision", "--cpus", "0"), ("provision", "--cpus", "-1"),
                                      ("provision", "--pids", "0"), ("rm-startup", "web", "-1"),
                                      ("logs", "web", "--since", "-5")])
    def test_numeric_options_refused_out_of_range(self, cli, args):
        """A numeric option out of its range is a usage error (exit 1) and nothing is made
        (a negative argument reads as an unknown option: a usage error too)."""
        result = cli(*args)
        assert result.exit_code == 1 and ("Invalid value" in result.stderr or "No such option" in result.stderr)
        assert cli.reconciles == []
