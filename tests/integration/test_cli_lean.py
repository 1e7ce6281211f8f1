"""The lean console-script entry against real containers: `ls` and `run` print and exit as the
click CLI does, without importing click; what it does not take goes to click."""
from __future__ import annotations

import subprocess
import sys

import pytest

CLICK = [sys.executable, "-m", "appcontainers.entrypoints.cli"]
# The console script's entry as it runs (argv[0] `appcontainers`); stderr ends with click=True/False.
LEAN = [sys.executable, "-c",
        "import atexit, sys; atexit.register(lambda: sys.stderr.write(f'click={\"click\" in sys.modules}')); "
        "sys.argv[0] = 'appcontainers'; from appcontainers.entrypoints.cli_lean import main; main()"]


@pytest.fixture(scope="module")
def pair(svc):
    """A running container and a stopped one."""
    up, down = svc.provision(), svc.provision()
    try:
        up.start()
        yield up.name, down.name
    finally:
        up.destroy()
        down.destroy()


def call(argv, env, **kw):
    kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(argv, env=env, capture_output=True, timeout=120, **kw)


def lean_used(proc) -> bool:
    return proc.stderr.endswith(b"click=False")


def without_marker(stderr: bytes) -> bytes:
    return stderr.rsplit(b"click=", 1)[0]


class TestLs:
    @pytest.mark.parametrize("args", [["ls"], ["ls", "--json"], ["ls", "--format", "json"]])
    def test_same_as_click(self, env, pair, args):
        """ls prints what click's ls prints (RUNNING and STOPPED), without click."""
        lean, click = call([*LEAN, *args], env), call([*CLICK, *args], env)
        assert lean_used(lean) and lean.returncode == click.returncode == 0
        assert lean.stdout == click.stdout
        assert pair[0].encode() in lean.stdout and pair[1].encode() in lean.stdout

    def test_frozen_is_shown(self, env, pair, svc):
        """A frozen container shows FROZEN, as lxc-ls -f says."""
        svc.ports.driver.freeze(pair[0])
        try:
            lean, click = call([*LEAN, "ls"], env), call([*CLICK, "ls"], env)
        finally:
            svc.ports.driver.unfreeze(pair[0])
        assert lean_used(lean) and lean.stdout == click.stdout and b"FROZEN" in lean.stdout


class TestRun:
    def test_output_and_exit_code_as_click(self, env, pair):
        """run NAME -- CMD: the same bytes out and the same exit code as click's run, without click."""
        argv = ["run", pair[0], "--", "sh", "-c", "printf 'a\\0b'; echo err >&2; exit 3"]
        lean, click = call([*LEAN, *argv], env), call([*CLICK, *argv], env)
        assert lean_used(lean) and lean.returncode == click.returncode == 3
        assert lean.stdout == click.stdout == b"a\0b"
        assert without_marker(lean.stderr) == click.stderr == b"err\n"

    def test_stdin_env_workdir(self, env, pair):
        """stdin is streamed, -e and -w apply, as with click's run."""
        argv = ["run", "-e", "X=1", "-w", "/tmp", pair[0], "--", "sh", "-c", "cat; echo $X; pwd"]
        lean = call([*LEAN, *argv], env, stdin=None, input=b"in\n")
        assert lean_used(lean) and (lean.returncode, lean.stdout) == (0, b"in\n1\n/tmp\n")

    def test_stopped_container_goes_to_click(self, env, svc):
        """A stopped container is click's: it starts it, then runs the command."""
        c = svc.provision()
        try:
            r = call([*LEAN, "run", c.name, "--", "echo", "hi"], env)
            assert (r.returncode, r.stdout) == (0, b"hi\n") and not lean_used(r)
        finally:
            c.destroy()

    def test_unknown_container_error_is_clicks(self, env):
        """An unknown name gets click's one-line error and exit 1."""
        lean, click = call([*LEAN, "run", "nosuch", "--", "true"], env), call([*CLICK, "run", "nosuch", "--", "true"], env)
        assert lean.returncode == click.returncode == 1
        assert without_marker(lean.stderr) == click.stderr and b"nosuch" in click.stderr
