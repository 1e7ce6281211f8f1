"""The appcontainers command, run as a real subprocess against the test data root."""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time

import pytest
from tests.conftest import TEST_NET

CLI = [sys.executable, "-m", "appcontainers.entrypoints.cli"]


@pytest.fixture(scope="module")
def cli(settings, svc):
    env = {**os.environ, "APPCONTAINERS_ROOT": settings["root"], "APPCONTAINERS_BRIDGE": settings["bridge"],
           "APPCONTAINERS_SUBNET": settings["subnet"]}

    def run(*args, check=True, input=None):
        proc = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120, input=input)
        if check and proc.returncode != 0:
            raise AssertionError(f"{args} exited {proc.returncode}: {proc.stderr}")
        return proc

    run.env = env
    return run


@pytest.fixture
def cname(cli):
    info = json.loads(cli("provision", "--json").stdout)
    try:
        yield info["name"]
    finally:
        cli("rm", info["name"], check=False)


class TestCli:
    def test_provision_json_has_name_ip_mac_state(self, cli):
        """provision --json prints one object with name, ip, mac and state."""
        info = json.loads(cli("provision", "--name", "cli-json", "--json").stdout)
        try:
            assert info["name"] == "cli-json" and ipaddress.ip_address(info["ip"]) in TEST_NET
            assert len(info["mac"]) == 17 and info["state"] == "STOPPED"
            listed = json.loads(cli("ls", "--json").stdout)
            assert any(c["name"] == "cli-json" and c["ip"] == info["ip"] for c in listed)
        finally:
            cli("rm", "cli-json")
        assert "cli-json" not in cli("ls").stdout

    def test_run_streams_and_exits_with_the_command_code(self, cli, cname):
        """run NAME -- CMD prints stdout/stderr apart and exits with the command's code."""
        proc = cli("run", cname, "--", "sh", "-c", "echo out; echo err >&2; exit 5", check=False)
        assert (proc.returncode, proc.stdout, proc.stderr) == (5, "out\n", "err\n")

    def test_put_and_load_archive(self, cli, cname, tmp_path):
        """put copies a host file in; load-archive extracts into /root."""
        src = tmp_path / "conf"
        src.write_text("a=1\n")
        cli("put", cname, str(src), "/etc/app.conf", "--mode", "600")
        import tarfile
        (tmp_path / "d").mkdir()
        (tmp_path / "d" / "x.txt").write_text("from tar\n")
        with tarfile.open(tmp_path / "a.tgz", "w:gz") as tf:
            tf.add(tmp_path / "d", arcname="d")
        cli("load-archive", cname, str(tmp_path / "a.tgz"))
        out = cli("run", cname, "--", "sh", "-c", "cat /etc/app.conf /root/d/x.txt; stat -c %a /etc/app.conf").stdout
        assert out == "a=1\nfrom tar\n600\n"

    def test_errors_are_one_line_and_non_zero(self, cli):
        """Bad input gives one clear line on stderr, no traceback, exit 1."""
        for args in (("start", "no-such"), ("provision", "--name", "Bad;Name"), ("rm", "no-such"),
                     ("load", "/nonexistent.aimg")):
            proc = cli(*args, check=False)
            assert proc.returncode == 1, args
            assert proc.stderr.startswith("appcontainers: error: ") and "Traceback" not in proc.stderr
            assert proc.stderr.count("\n") == 1, proc.stderr

    def test_startup_commands_logs_and_events(self, cli, cname):
        """add-startup runs at start; logs shows its output; events shows command exits."""
        cli("add-startup", cname, "echo hello-from-startup")
        cli("start", cname)
        ev = subprocess.Popen([*CLI, "events"], env=cli.env, stdout=subprocess.PIPE, text=True)
        try:
            # PUB/SUB does not replay: keep running commands until the subscriber has joined.
            deadline, seen = time.time() + 20, []
            os.set_blocking(ev.stdout.fileno(), False)
            while time.time() < deadline and not any(e.get("type") == "command_exited" for e in seen):
                cli("run", cname, "--", "true")
                while line := ev.stdout.readline():
                    seen.append(json.loads(line))
                time.sleep(0.2)
            assert any(e.get("type") == "command_exited" and e.get("container") == cname for e in seen), seen
        finally:
            ev.terminate()
            ev.wait(10)
        logs = cli("logs", cname).stdout
        assert "hello-from-startup" in logs
        out = cli("rm-startup", cname, "0").stdout
        assert "no startup commands" in out

    def test_save_load_images_rmi(self, cli, cname, tmp_path):
        """save writes an image, load makes a container of it, images lists it, rmi refuses while used."""
        cli("run", cname, "--", "sh", "-c", "echo saved > /root/mark")
        path = str(tmp_path / "c.aimg")
        saved = json.loads(cli("save", cname, path, "--json").stdout)
        loaded = json.loads(cli("load", path, "--json").stdout)
        try:
            assert loaded["image"] == saved["id"]
            assert cli("run", loaded["name"], "--", "cat", "/root/mark").stdout == "saved\n"
            assert saved["id"][:12] in cli("images").stdout
            proc = cli("rmi", saved["id"], check=False)
            assert proc.returncode == 1 and "used by" in proc.stderr
            inspect = json.loads(cli("image", "inspect", path).stdout)
            assert inspect["id"] == saved["id"]
        finally:
            cli("rm", loaded["name"])
        cli("rmi", saved["id"])
        assert saved["id"][:12] not in cli("images").stdout

    def test_help_is_fast_to_import(self):
        """--help does not import the service stack (lazy imports)."""
        code = ("import sys, appcontainers.entrypoints.cli as c; "
                "print(sorted(m for m in ('zmq','tempita','appcontainers.services.containers') if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip() == "[]"


def _tree_digest(root) -> dict:
    """{relative path: (kind, mode, sha256 or link target)} of a host tree, not following links."""
    import hashlib
    import stat

    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                with open(path, "rb") as f:
                    out[rel] = ("file", stat.S_IMODE(st.st_mode), hashlib.sha256(f.read()).hexdigest())
    return out


class TestCopy:
    def test_tree_round_trip(self, cli, cname, tmp_path):
        """cp of a host tree in and back out keeps every file's bytes and mode, dirs and relative links
        (in a tree, modes as the checked extractor keeps them: no group/other write, directories 755)."""
        src = tmp_path / "site"
        (src / "css" / "deep").mkdir(parents=True)
        (src / "index.html").write_bytes(os.urandom(70_000))
        (src / "css" / "a.css").write_bytes(b"a{}\n")
        (src / "css" / "deep" / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
        os.chmod(src / "css" / "deep" / "run.sh", 0o750)
        os.chmod(src / "css" / "a.css", 0o600)
        os.symlink("css/a.css", src / "style.css")
        inside = json.loads(cli("cp", str(src), f"{cname}:/srv", "--json").stdout)
        assert inside["to"] == "/srv"
        cli("run", cname, "--", "mkdir", "/opt/into")
        assert json.loads(cli("cp", str(src), f"{cname}:/opt/into", "--json").stdout)["to"] == "/opt/into/site"
        assert cli("run", cname, "--", "/srv/css/deep/run.sh").stdout == "hi\n"
        (src / "shared").write_text("w\n")
        os.chmod(src / "shared", 0o666)
        cli("cp", str(src / "shared"), f"{cname}:/opt/shared")  # a single file keeps its mode exactly
        assert cli("run", cname, "--", "stat", "-c", "%a", "/opt/shared").stdout == "666\n"
        os.unlink(src / "shared")
        out = tmp_path / "back"
        cli("cp", f"{cname}:/srv", str(out))
        assert _tree_digest(out) == _tree_digest(src)
        cli("cp", f"{cname}:/opt/into/site/index.html", str(tmp_path))
        assert (tmp_path / "index.html").read_bytes() == (src / "index.html").read_bytes()

    def test_symlinks_inside_are_never_followed_to_the_host(self, cli, cname, tmp_path):
        """A symlink to /etc/shadow planted in the container comes out as a symlink, not the host's file;
        a path through a planted link to / resolves in the container's root."""
        cli("run", cname, "--", "sh", "-c",
            "mkdir -p /root/t && echo mine > /root/t/f && ln -s /etc/shadow /root/t/evil && ln -s / /root/up")
        out = tmp_path / "t"
        cli("cp", f"{cname}:/root/t", str(out))
        assert os.path.islink(out / "evil") and os.readlink(out / "evil") == "/etc/shadow"
        assert (out / "f").read_text() == "mine\n"
        cli("cp", f"{cname}:/root/t/evil", str(tmp_path / "single"))
        assert os.path.islink(tmp_path / "single")
        cli("cp", f"{cname}:/root/up/etc/passwd", str(tmp_path / "passwd"))
        inside = cli("run", cname, "--", "cat", "/etc/passwd").stdout
        with open("/etc/passwd") as f:
            assert (tmp_path / "passwd").read_text() == inside != f.read()

    def test_put_directory_and_missing_source(self, cli, cname, tmp_path):
        """put copies a host directory in; a missing container path is one error line, exit 1."""
        (tmp_path / "d").mkdir()
        (tmp_path / "d" / "x").write_text("1\n")
        cli("put", cname, str(tmp_path / "d"), "/root/d")
        assert cli("run", cname, "--", "cat", "/root/d/x").stdout == "1\n"
        proc = cli("cp", f"{cname}:/no/such", str(tmp_path / "z"), check=False)
        assert proc.returncode == 1 and "no such file" in proc.stderr and proc.stderr.count("\n") == 1
        assert not os.path.lexists(tmp_path / "z")


    def test_tar_streams(self, cli, cname, tmp_path):
        """cp NAME:PATH - writes a tar of PATH to stdout; cp - NAME:DIR unpacks one from stdin."""
        import io
        import tarfile

        cli("run", cname, "--", "sh", "-c", "mkdir -p /srv/t && printf 'x\\000y' > /srv/t/bin && ln -s bin /srv/t/l")
        proc = subprocess.run([*CLI, "cp", f"{cname}:/srv/t", "-"], env=cli.env, capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tf:
            members = {m.name: m for m in tf.getmembers()}
            assert tf.extractfile(members["t/bin"]).read() == b"x\x00y"
            assert members["t/l"].issym() and members["t/l"].linkname == "bin"
        proc = subprocess.run([*CLI, "cp", "-", f"{cname}:/opt/back"], env=cli.env, input=proc.stdout,
                              capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert cli("run", cname, "--", "sh", "-c", "od -c /opt/back/t/bin; readlink /opt/back/t/l").stdout \
            == cli("run", cname, "--", "sh", "-c", "od -c /srv/t/bin; readlink /srv/t/l").stdout


class TestInspectStats:
    def test_inspect_and_stats_of_a_running_container(self, cli, cname):
        """inspect shows the limits; stats reads cpu, memory and pids from the running container's cgroup."""
        cli("start", cname)
        cli("run", cname, "--", "sh", "-c", "dd if=/dev/zero of=/root/blob bs=1k count=512 2>/dev/null")
        data = json.loads(cli("inspect", cname, "--json").stdout)
        assert data["state"] == "RUNNING" and data["pids"] == 4096 and data["image_name"]
        s = json.loads(cli("stats", cname, "--json").stdout)
        assert s["cpu_seconds"] > 0 and s["memory_bytes"] > 0 and s["pids"] >= 1
        assert s["disk_bytes"] >= 512 * 1024


class TestEvents:
    def test_start_and_stop_are_events(self, cli, cname):
        """events shows a container's start and stop (seen by the host) and its startup command's
        exit, which the agent published before any subscriber could connect (replayed from its log)."""
        ev = subprocess.Popen([*CLI, "events", "--json"], env=cli.env, stdout=subprocess.PIPE, text=True)
        try:
            seen: list[dict] = []
            os.set_blocking(ev.stdout.fileno(), False)

            def read_until(pred, timeout=20):
                deadline = time.time() + timeout
                while time.time() < deadline:
                    while line := ev.stdout.readline():
                        seen.append(json.loads(line))
                    if any(pred(e) for e in seen):
                        return True
                    time.sleep(0.1)
                return False

            cli("add-startup", cname, "true")  # runs as the agent starts: before anyone can subscribe
            time.sleep(1.5)  # events has taken the states as they are (its first look)
            cli("start", cname)
            mine = [lambda e, t=t, i=i: e.get("container") == cname and e.get("type") == t and e.get("id") == i
                    for t, i in (("container_started", None), ("command_exited", "startup-0"))]
            assert read_until(mine[0]) and read_until(mine[1]), seen
            assert sum(map(mine[1], seen)) == 1, seen  # once: from the log or from the agent, not both
            cli("stop", cname)
            assert read_until(lambda e: e.get("container") == cname and e.get("type") == "container_stopped"), seen
        finally:
            ev.terminate()
            ev.wait(10)
