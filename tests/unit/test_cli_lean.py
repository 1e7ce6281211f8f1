"""The lean console-script entry (cli_lean.py): the same text as the click CLI, without click."""
from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from appcontainers import config
from appcontainers.entrypoints import cli, cli_lean
from appcontainers.entrypoints.cli import main
from tests.fakes import make_service

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def lean(*args, env=None):
    """The lean entry as the console script runs it (argv[0] `appcontainers`), in a fresh Python;
    stderr ends with whether click (and attrs) were imported."""
    code = ("import atexit, sys; atexit.register(lambda: sys.stderr.write("
            "f'attrs={\"attr\" in sys.modules} click={\"click\" in sys.modules}')); "
            "sys.argv[0] = 'appcontainers'; from appcontainers.entrypoints.cli_lean import main; main()")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": REPO, **(env or {})})


class TestSameAsClick:
    def test_help_text_is_clicks(self):
        """HELP is click's rendering of `appcontainers --help` (on a failure, paste the text shown into HELP)."""
        r = CliRunner().invoke(main, ["--help"], prog_name="appcontainers", env={"COLUMNS": "80"})
        assert r.exit_code == 0
        assert r.output == cli_lean.HELP, f"cli_lean.HELP is not click's help; click's is:\n{r.output}"

    def test_version_agrees_with_setup_and_metadata(self):
        """--version prints the version setup.py declares and the installed metadata holds."""
        setup = open(os.path.join(REPO, "setup.py")).read()
        assert re.search(r'version="([^"]+)"', setup).group(1) == cli_lean.VERSION
        assert importlib.metadata.version("appcontainers") == cli_lean.VERSION
        r = CliRunner().invoke(main, ["--version"], prog_name="appcontainers")
        assert r.output == f"appcontainers {cli_lean.VERSION}\n"

    def test_defaults_are_configs(self):
        """The lean path's default root and subnet are Settings' defaults."""
        assert cli_lean.DEFAULT_ROOT == config.DEFAULT_ROOT
        assert cli_lean.DEFAULT_SUBNET == config.Settings().subnet

    def test_run_options_taking_values_are_clicks(self):
        """The lean run knows every option of click's run that takes a value, and only those."""
        valued = {o for p in cli.run.params if isinstance(p, click.Option) and not p.is_flag for o in p.opts}
        assert valued - {"--json"} == set(cli_lean.RUN_VALUED)

    @pytest.mark.parametrize("as_json", [False, True])
    def test_ls_of_the_stored_state_is_clicks(self, as_json):
        """ls from the state as stored and the states prints what click's ls prints over the service."""
        svc = make_service()
        for name in ("web", "db", "cache"):
            svc.provision(name)
        svc.get("web").start()
        svc.get("db").add_startup_command("echo hi")
        args = ["ls", "--json"] if as_json else ["ls"]
        clicks = CliRunner().invoke(main, args, obj=lambda reconcile=True: svc)
        data = svc.ports.repo.read().to_dict()
        ours = cli_lean.ls_text(cli_lean.ls_infos(data, svc.ports.driver.states()), as_json) + "\n"
        assert clicks.exit_code == 0 and clicks.output == ours
        assert "RUNNING" in ours and "STOPPED" in ours


class TestParse:
    @pytest.mark.parametrize("args, want", [
        (["web", "--", "true"], ("web", ["true"], (None, False, False, None, None, None))),
        (["-it", "web", "--", "sh"], ("web", ["sh"], (None, True, True, None, None, None))),
        (["web", "-e", "A=1", "-e", "B=2", "-w", "/tmp", "-u", "app", "--timeout", "2.5", "--", "env"],
         ("web", ["env"], (2.5, False, False, {"A": "1", "B": "2"}, "/tmp", "app"))),
        (["web", "--", "--odd", "-i"], ("web", ["--odd", "-i"], (None, False, False, None, None, None))),
        (["web", "sh", "-c", "echo -t"], ("web", ["sh", "-c", "echo -t"], (None, False, False, None, None, None))),
    ])
    def test_forms_taken(self, args, want):
        """The forms the lean run takes, parsed as click's run parses them."""
        name, command, how = cli_lean.parse_run(args)
        assert (name, command, tuple(how)) == want

    @pytest.mark.parametrize("args", [
        ["web", "--json", "--", "true"], ["web", "-e", "NOEQ", "--", "env"],
        ["web", "--timeout", "soon", "--", "true"], ["--", "true"], ["web", "--"], ["web", "-x", "--", "true"],
    ])
    def test_other_forms_go_to_click(self, args):
        """Anything else (no --, --json, a bad value, an unknown option) is click's to answer."""
        assert cli_lean.parse_run(args) is None

    @pytest.mark.parametrize("args, want", [
        ([], False), (["--json"], True), (["--format", "json"], True), (["--format", "table"], False),
        (["--format", "yaml"], None), (["-q"], None)])
    def test_ls_arguments(self, args, want):
        """ls [--json] [--format table|json] are lean; anything else goes to click."""
        assert cli_lean._ls_args(args) == want


class TestProcess:
    def test_help_and_version_without_click(self):
        """--help and --version print click's text with neither click nor attrs imported."""
        for args, want in ((["--help"], cli_lean.HELP), (["--version"], f"appcontainers {cli_lean.VERSION}\n")):
            r = lean(*args, env={"COLUMNS": "100"})
            assert r.returncode == 0 and r.stdout == want and r.stderr.endswith("attrs=False click=False")

    def test_narrow_terminal_goes_to_click(self):
        """On a terminal narrower than 80 columns click renders the help (it wraps it)."""
        r = lean("--help", env={"COLUMNS": "60"})
        assert r.returncode == 0 and r.stderr.endswith("click=True") and r.stdout != cli_lean.HELP

    def test_other_commands_go_to_click(self):
        """A command the lean path does not take is click's, with click's exit code for a usage error."""
        r = lean("nosuch")
        assert r.returncode == 1 and "No such command" in r.stderr and r.stderr.endswith("click=True")

    @pytest.mark.skipif(os.geteuid() != 0, reason="the lean ls checks the data root as root does")
    def test_ls_over_a_stored_state(self, tmp_path):
        """ls and ls --json read resources.json (no container defined: MISSING) without click or attrs."""
        svc = make_service(root=str(tmp_path))
        svc.provision("web")
        from appcontainers.adapters.store.json_store import JsonStore

        held = svc.ports.repo.read()
        with JsonStore(str(tmp_path / "resources.json"), svc.settings.subnet).transaction() as state:
            state.pool, state.reservations, state.images = held.pool, held.reservations, held.images
        os.chmod(tmp_path, 0o711)
        env = {"APPCONTAINERS_ROOT": str(tmp_path), "APPCONTAINERS_SUBNET": svc.settings.subnet}
        for args, as_json in ((["ls"], False), (["ls", "--json"], True)):
            r = lean(*args, env=env)
            want = cli_lean.ls_text(cli_lean.ls_infos(svc.ports.repo.read().to_dict(), {}), as_json) + "\n"
            assert r.returncode == 0 and r.stdout == want and r.stderr.endswith("attrs=False click=False")
        assert "web" in r.stdout and "MISSING" in r.stdout


class TestCgroupDir:
    def test_read_from_the_config(self, tmp_path):
        """The container's cgroup is the lxc.cgroup.dir.container its config names."""
        (tmp_path / "web").mkdir()
        (tmp_path / "web" / "config").write_text("lxc.uts.name = web\nlxc.cgroup.dir.monitor = m.web\n"
                                                 "lxc.cgroup.dir.container = appcontainers-1234abcd.payload.web\n")
        assert cli_lean.cgroup_dir(str(tmp_path), "web") == "appcontainers-1234abcd.payload.web"

    def test_none_goes_to_click(self, tmp_path):
        """A container whose config names no cgroup dir (or has no config) is click's to show."""
        with pytest.raises(cli_lean.Fallback):
            cli_lean.cgroup_dir(str(tmp_path), "web")
