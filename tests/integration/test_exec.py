"""`appcontainers run` as a real exec: the CLI as a subprocess against a real container."""
from __future__ import annotations

import fcntl
import hashlib
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest

CLI = [sys.executable, "-m", "appcontainers.entrypoints.cli"]


@pytest.fixture(scope="module")
def web(svc):
    c = svc.provision()
    try:
        c.start()
        yield c.name
    finally:
        c.destroy()


def cli(env, *args, stdin=subprocess.DEVNULL, timeout=120):
    return subprocess.run([*CLI, *args], env=env, stdin=stdin, capture_output=True, timeout=timeout)


def started(env, *args):
    """The CLI running `run` in the background, once the command printed its first line."""
    proc = subprocess.Popen([*CLI, *args], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"ready\n"
    return proc


class TestStdin:
    def test_piped_stdin_reaches_the_command(self, env, web):
        """echo hi | run NAME -- cat prints hi."""
        proc = subprocess.run(
            [*CLI, "run", web, "--", "cat"], env=env, input=b"hi\n", capture_output=True, timeout=60)
        assert (proc.returncode, proc.stdout) == (0, b"hi\n")

    def test_50mb_file_on_stdin_hashes_the_same(self, env, web, tmp_path):
        """run NAME -- sha256sum < 50 MB file gives that file's hash."""
        path = tmp_path / "big.bin"
        data = os.urandom(50 << 20)
        path.write_bytes(data)
        with open(path, "rb") as f:
            proc = cli(env, "run", web, "--", "sha256sum", stdin=f)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()


class TestExactOutput:
    @pytest.mark.parametrize("tail", [b"", b"\n"])
    def test_random_bytes_round_trip(self, env, web, tmp_path, tail):
        """Random bytes (with or without a final newline) come back byte-identical, on both streams."""
        data = os.urandom(100_000) + tail
        path = tmp_path / "rand.bin"
        path.write_bytes(data)
        with open(path, "rb") as f:
            proc = cli(env, "run", web, "--", "sh", "-c", "tee /dev/stderr", stdin=f)
        assert proc.returncode == 0 and proc.stdout == data and proc.stderr == data

    def test_no_newline_is_added(self, env, web):
        """printf abc gives exactly abc."""
        proc = cli(env, "run", web, "--", "printf", "abc")
        assert (proc.returncode, proc.stdout) == (0, b"abc")

    def test_large_output_is_exact_and_fast(self, env, web):
        """seq 1000000 comes through whole, in seconds (it took 20 s line by line)."""
        t = time.monotonic()
        proc = cli(env, "run", web, "--", "seq", "1000000")
        took = time.monotonic() - t
        want = "".join(f"{i}\n" for i in range(1, 1_000_001)).encode()
        assert proc.returncode == 0 and proc.stdout == want
        assert took < 8, took


    def test_reader_gone_sends_sigpipe(self, env, web):
        """run NAME -- yes | head -1 ends: the command gets SIGPIPE when our reader is gone."""
        proc = subprocess.run(f"{' '.join(CLI)} run {web} -- yes | head -1; echo ${{PIPESTATUS[0]}}",
                              shell=True, executable="/bin/bash", env=env, capture_output=True, timeout=60)
        assert proc.stdout == b"y\n141\n" and b"Traceback" not in proc.stderr, proc.stderr


class TestOptions:
    def test_options_after_name(self, env, web):
        """run NAME --timeout S -- CMD reads --timeout as ours, not as the command."""
        assert cli(env, "run", web, "--timeout", "5", "--", "sleep", "0.2").returncode == 0
        late = cli(env, "run", web, "--timeout", "0.5", "--", "sleep", "5")
        assert late.returncode == 1 and b"did not finish within 0.5s" in late.stderr

    def test_command_without_double_dash_keeps_its_options(self, env, web):
        """run NAME CMD -x: what follows the command is the command's."""
        proc = cli(env, "run", web, "sh", "-c", "echo $0 $1", "-t", "x")
        assert (proc.returncode, proc.stdout) == (0, b"-t x\n")


class TestSignals:
    def test_ctrl_c_reaches_the_commands_trap(self, env, web):
        """SIGINT to the CLI runs the command's INT trap; the CLI exits with the command's code."""
        proc = started(env, "run", web, "--", "sh", "-c",
                       'trap "echo got INT; exit 7" INT; echo ready; while :; do sleep 0.1; done')
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert (proc.returncode, out) == (7, b"got INT\n")

    def test_ctrl_c_ends_the_command_with_130(self, env, web):
        """A command ended by the forwarded SIGINT makes the CLI exit 130, and it is gone inside."""
        proc = started(env, "run", web, "--", "sh", "-c", "echo ready; sleep 31")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
        left = cli(env, "run", web, "--", "sh", "-c", "ps -o args | grep -qx 'sleep 31' && echo alive || echo gone")
        assert left.stdout == b"gone\n"

    def test_second_ctrl_c_kills(self, env, web):
        """A command that ignores SIGINT is killed by the second Ctrl-C (137)."""
        proc = started(env, "run", web, "--", "sh", "-c", 'trap "" INT; echo ready; sleep 30')
        proc.send_signal(signal.SIGINT)
        time.sleep(1)
        assert proc.poll() is None  # ignored
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 137

    def test_sigterm_is_forwarded(self, env, web):
        """SIGTERM to the CLI ends the command with SIGTERM (143)."""
        proc = started(env, "run", web, "--", "sh", "-c", "echo ready; sleep 30")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 143


def _pty_session(env, args, keys: list, rows=30, cols=90, timeout=60):
    """Run the CLI on a real pseudo-terminal, type each of keys (bytes, or (rows, cols): resize
    the terminal) once output has appeared and paused, and return (all it printed, its exit status)."""
    pid, fd = os.forkpty()
    if pid == 0:  # the child: size its terminal, become the CLI
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            os.execve(sys.executable, [*CLI, *args], env)
        finally:
            os._exit(127)
    out, deadline, keys = b"", time.monotonic() + timeout, list(keys)
    try:
        while time.monotonic() < deadline:
            if not select.select([fd], [], [], 0.5)[0]:
                if keys and out:
                    key = keys.pop(0)
                    if isinstance(key, tuple):  # a new window size: the CLI gets SIGWINCH
                        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", *key, 0, 0))
                    else:
                        os.write(fd, key)
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    return out, os.waitstatus_to_exitcode(status)


class TestInteractive:
    def test_it_shell_through_a_pty(self, env, web):
        """run -it NAME -- sh: a shell on a terminal of our size; exit 3 gives 3."""
        out, code = _pty_session(env, ["run", "-it", web, "--", "sh"],
                                 [b"echo $((6*7))\n", b"stty size\n", b"exit 3\n"])
        assert b"42\r\n" in out and b"30 90\r\n" in out and code == 3, out

    def test_ctrl_c_typed_interrupts_the_foreground_only(self, env, web):
        """^C typed in -it goes through the terminal: it stops sleep, not the shell."""
        out, code = _pty_session(env, ["run", "-it", web, "--", "sh"],
                                 [b"sleep 30\n", b"\x03", b"echo after $?\n", b"exit 0\n"])
        assert b"after 130" in out and code == 0, out

    def test_window_size_follows_the_terminal(self, env, web):
        """A resized local terminal (SIGWINCH) resizes the command's terminal."""
        out, code = _pty_session(env, ["run", "-it", web, "--", "sh"],
                                 [(41, 123), b"stty size\n", b"exit\n"])
        assert b"41 123\r\n" in out and code == 0, out



class TestExecOptions:
    def test_env_is_seen_by_the_command(self, env, web):
        """run -e KEY=VAL (repeatable) sets the command's environment."""
        proc = cli(env, "run", "-e", "KEY=hello world", web, "-e", "OTHER=x", "--", "sh", "-c", "echo $KEY $OTHER")
        assert (proc.returncode, proc.stdout) == (0, b"hello world x\n"), proc.stderr

    def test_workdir(self, env, web):
        """run -w DIR runs the command in DIR; a missing DIR is 126 with a message."""
        proc = cli(env, "run", "-w", "/etc", web, "--", "pwd")
        assert (proc.returncode, proc.stdout) == (0, b"/etc\n"), proc.stderr
        missing = cli(env, "run", "-w", "/no/such/dir", web, "--", "pwd")
        assert missing.returncode == 126 and b"cwd /no/such/dir" in missing.stderr

    def test_user_by_name_and_by_ids(self, env, web):
        """run -u nobody / -u UID:GID runs with those ids; an unknown user is 126, nothing run."""
        by_name = cli(env, "run", "-u", "nobody", web, "--", "sh", "-c", "id -u; id -g; echo $HOME $USER")
        assert (by_name.returncode, by_name.stdout) == (0, b"65534\n65534\n/nonexistent nobody\n"), by_name.stderr
        by_ids = cli(env, "run", "-u", "1234:1235", web, "--", "sh", "-c", "id -u; id -g; touch /root/x")
        assert by_ids.stdout == b"1234\n1235\n" and by_ids.returncode == 1  # root's home is not its
        unknown = cli(env, "run", "-u", "nosuchuser", web, "--", "id", "-u")
        assert (unknown.returncode, unknown.stdout) == (126, b"")
        assert b"user nosuchuser: no such user" in unknown.stderr


class TestKill:
    def test_kill_without_id_ends_the_only_run_command(self, env, web):
        """kill NAME signals the one command run started (SIGTERM): that run exits 143."""
        proc = started(env, "run", web, "--", "sh", "-c", "echo ready; sleep 100")
        try:
            killed = cli(env, "kill", web)
            assert killed.returncode == 0, killed.stderr
            assert proc.wait(timeout=30) == 143
        finally:
            proc.kill()
            proc.wait()

    def test_kill_by_id_with_a_signal(self, env, web, svc):
        """kill NAME CMD-ID --signal KILL ends that command: its run exits 137; with two running,
        kill without an id refuses and lists both."""
        first = started(env, "run", web, "--", "sh", "-c", "echo ready; sleep 100")
        second = started(env, "run", web, "--", "sh", "-c", "echo ready; sleep 100")
        try:
            ids = svc.get(web).running_commands()
            assert len(ids) == 2
            refused = cli(env, "kill", web)
            assert refused.returncode == 1 and " ".join(ids).encode() in refused.stderr
            assert cli(env, "kill", web, ids[0], "--signal", "KILL").returncode == 0
            assert first.wait(timeout=30) == 137
            assert second.poll() is None
            assert cli(env, "kill", web, "-s", "TERM").stdout == ids[1].encode() + b"\n"
            assert second.wait(timeout=30) == 143
        finally:
            for proc in (first, second):
                proc.kill()
                proc.wait()


class TestShell:
    def test_shell_on_a_terminal(self, env, web):
        """shell NAME: an interactive login shell on a pty; exit 4 gives 4."""
        out, code = _pty_session(env, ["shell", web], [b"echo $((6*7)) $(id -u)\n", b"exit 4\n"])
        assert b"42 0\r\n" in out and code == 4, out

    def test_shell_reads_piped_commands_as_user(self, env, web):
        """shell -u nobody with commands piped in runs them as nobody."""
        proc = subprocess.run([*CLI, "shell", "-u", "nobody", web], env=env, input=b"id -u\nexit 5\n",
                              capture_output=True, timeout=60)
        assert (proc.returncode, proc.stdout) == (5, b"65534\n"), proc.stderr
