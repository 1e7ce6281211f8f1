"""run -e/-w/-u, kill and shell: users resolved by the agent, the CLI over the fakes."""
from __future__ import annotations

import os

import pytest

from appcontainers.agent import protocol as p
from appcontainers.agent import users
from tests.unit.cli_fixtures import client, invoke, svc  # noqa: F401 (svc: a fixture)
from tests.unit.test_agent_runner import A, drive, finished, output, run, world  # noqa: F401


@pytest.fixture
def etc(tmp_path):
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:App:/home/app:/bin/sh\n"
                                     "broken line\n")
    (tmp_path / "group").write_text("root:x:0:\napp:x:1001:\nwheel:x:10:app,other\nstaff:x:50:\n")
    return str(tmp_path / "passwd"), str(tmp_path / "group")


class TestUsers:
    @pytest.mark.parametrize("spec, want", [
        ("app", users.User(1000, 1001, (10,), "app", "/home/app")),
        ("1000", users.User(1000, 1001, (10,), "app", "/home/app")),
        ("app:staff", users.User(1000, 50, (10,), "app", "/home/app")),
        ("root", users.User(0, 0, (), "root", "/root")),
        ("2000", users.User(2000, 2000, (), None, "/")),
        ("2000:77", users.User(2000, 77, (), None, "/")),
    ])
    def test_resolve(self, etc, spec, want):
        """A name or uid of /etc/passwd, its group and supplementary groups; a bare uid[:gid] as is."""
        assert users.resolve(spec, *etc) == want

    @pytest.mark.parametrize("spec", ["nobody", "app:nogroup", "-1", "", "1:x"])
    def test_unknown_is_refused(self, etc, spec):
        """A name that is neither in the files nor a number is refused."""
        with pytest.raises(users.NoSuchUser):
            users.resolve(spec, *etc)

    def test_environment(self):
        """HOME, USER and LOGNAME of a named user; only HOME for a bare uid."""
        assert users.environment(users.User(1, 1, (), "app", "/home/app")) == {
            "HOME": "/home/app", "USER": "app", "LOGNAME": "app"}
        assert users.environment(users.User(5, 5, (), None, "/")) == {"HOME": "/"}


class TestAgentUser:
    def test_user_field_is_validated_and_announced(self):
        """user is a non-empty string; the agent's pong says it knows users."""
        assert p.run_request("c", ["id"], user="app")["user"] == "app"
        for bad in ("", "a\0b", 5):
            with pytest.raises(p.ProtocolError):
                p.validate_request({"v": 1, "type": "run", "id": "c", "argv": ["id"], "user": bad})
        assert "user" in p.pong_message(1, 0.0)["features"]

    def test_unknown_user_is_126_with_a_message(self, world):  # noqa: F811
        """A user that is not in the container ends the command at once with 126, saying so."""
        runner, sock, _, _ = world
        run(runner, id="u", argv=["id", "-u"], user="no-such-user-here")
        msgs = sock.to(A, "u")
        assert output(msgs, "stderr") == b"appcontainers-agent: user no-such-user-here: no such user\n"
        assert msgs[-1]["code"] == 126 and "u" not in runner.commands

    @pytest.mark.skipif(os.geteuid() != 0, reason="setuid needs root")
    def test_runs_as_the_user(self, world):  # noqa: F811
        """A numeric uid:gid runs the command with those ids, no supplementary groups, HOME=/."""
        runner, sock, _, _ = world
        run(runner, id="n", shell='echo "$(id -u) $(id -g) $(id -G) $HOME"', user="4321:4322")
        drive(runner, finished(runner, "n"))
        assert output(sock.to(A, "n")) == b"4321 4322 4322 /\n"


class TestRunOptions:
    def test_env_workdir_user_reach_the_agent(self, svc):
        """-e (repeatable, later wins), -w and -u go with the command, before or after NAME."""
        result = invoke(svc, "run", "-e", "A=1", "web", "-e", "B=x=y", "-e", "A=2", "-w", "/tmp", "-u", "app",
                        "--", "env")
        assert result.exit_code == 0, result.output
        last = client(svc).runs[-1]
        assert (last["env"], last["cwd"], last["user"]) == ({"A": "2", "B": "x=y"}, "/tmp", "app")

    def test_json_run_takes_them_too(self, svc):
        """run --json passes -e, -w and -u as well."""
        assert invoke(svc, "run", "--json", "-e", "K=V", "-w", "/w", "-u", "1:1", "web", "--", "true").exit_code == 0
        last = client(svc).runs[-1]
        assert (last["env"], last["cwd"], last["user"]) == ({"K": "V"}, "/w", "1:1")

    @pytest.mark.parametrize("bad", ["NOEQUALS", "=v"])
    def test_bad_env_is_a_usage_error(self, svc, bad):
        """-e without KEY= is refused (exit 1) and nothing runs."""
        result = invoke(svc, "run", "-e", bad, "web", "--", "true")
        assert result.exit_code == 1 and "KEY=VAL" in result.output and client(svc).runs == []

    def test_shell_is_an_interactive_login_shell(self, svc):
        """shell NAME runs /bin/sh -l with stdin forwarded; -u picks the user."""
        result = invoke(svc, "shell", "web", "-u", "app", input=b"id\n")
        assert result.exit_code == 0, result.output
        last = client(svc).runs[-1]
        assert (last["argv"], last["user"], last["stdin"]) == (["/bin/sh", "-l"], "app", b"id\n")


def _log(svc, *records):
    for kind, cid in records:
        client(svc).records.append({"v": 1, "type": kind, "id": cid})


class TestKill:
    def test_the_only_running_command_by_default(self, svc):
        """Without CMD-ID the one command started by run that still runs is signalled (not startup ones)."""
        svc.get("web").start()
        _log(svc, ("started", "old"), ("agent_started", None), ("started", "startup-0"), ("started", "a"),
             ("started", "b"), ("exit", "b"))
        result = invoke(svc, "kill", "web")
        assert (result.exit_code, result.stdout, client(svc).kills) == (0, "a\n", [("a", 15)])

    def test_several_are_refused_with_their_ids(self, svc):
        """With several running and no CMD-ID nothing is signalled; the ids are listed."""
        svc.get("web").start()
        _log(svc, ("started", "a"), ("started", "b"))
        result = invoke(svc, "kill", "web")
        assert result.exit_code == 1 and "name one: a b" in result.stderr and client(svc).kills == []

    def test_none_running_is_refused(self, svc):
        """With nothing running the CLI says so and exits 1."""
        svc.get("web").start()
        result = invoke(svc, "kill", "web")
        assert result.exit_code == 1 and "no command started by run" in result.stderr

    @pytest.mark.parametrize("sig, number", [("KILL", 9), ("sigint", 2), ("1", 1)])
    def test_named_command_and_signal(self, svc, sig, number):
        """kill NAME CMD-ID --signal SIG sends that signal to that id, by name or number."""
        svc.get("web").start()
        assert invoke(svc, "kill", "web", "xyz", "--signal", sig, "--json").exit_code == 0
        assert client(svc).kills == [("xyz", number)]

    @pytest.mark.parametrize("sig", ["NOPE", "0", "99"])
    def test_bad_signal_is_refused(self, svc, sig):
        """An unknown signal is a usage error (exit 1); nothing is sent."""
        svc.get("web").start()
        assert invoke(svc, "kill", "web", "x", "-s", sig).exit_code == 1 and client(svc).kills == []


class TestUsersAgainstAHostileContainer:
    """/etc/passwd and /etc/group are the container's: they may lie, or not be files at all."""

    def test_a_number_is_a_uid_never_a_name(self, tmp_path):
        """A passwd line named "1000" with uid 0 does not turn -u 1000 into root."""
        passwd = tmp_path / "passwd"
        passwd.write_text("1000:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n")
        assert users.resolve("1000", str(passwd), str(tmp_path / "group")).uid == 1000
        assert users.resolve("1000:1000", str(passwd), str(tmp_path / "group")).uid == 1000

    def test_a_fifo_as_passwd_does_not_block(self, tmp_path):
        """A FIFO in place of /etc/passwd is read as no file (a name is then unknown), at once."""
        import os
        os.mkfifo(tmp_path / "passwd")
        with pytest.raises(users.NoSuchUser):
            users.resolve("app", str(tmp_path / "passwd"), str(tmp_path / "group"))
        assert users.resolve("1234", str(tmp_path / "passwd"), str(tmp_path / "group")).uid == 1234

    def test_an_endless_passwd_is_refused(self, tmp_path):
        """/etc/passwd as a link to /dev/zero is not a regular file: nothing is read from it."""
        (tmp_path / "passwd").symlink_to("/dev/zero")
        with pytest.raises(users.NoSuchUser):
            users.resolve("app", str(tmp_path / "passwd"), str(tmp_path / "group"))
