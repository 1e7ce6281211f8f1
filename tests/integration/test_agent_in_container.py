"""The agent as a real container's init: streaming, timeouts, startup commands, logs, events."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from appcontainers.domain.exceptions import AgentUnavailable, CommandTimeout


class TestAgentRun:
    def test_the_agent_is_pid_one(self, container):
        """The container's init is the agent (appcontainers-tools), not busybox init."""
        r = container.run("tr '\\0' ' ' < /proc/1/cmdline")
        assert "appcontainers_agent" in r.stdout

    def test_first_line_arrives_before_the_command_ends(self, container):
        """Output streams: the first line is seen well before a command that sleeps has ended."""
        container.start()
        seen = []
        t0 = time.monotonic()
        r = container.run("echo first; sleep 2; echo second",
                          on_output=lambda s, line: seen.append((time.monotonic() - t0, line)))
        assert r.stdout == "first\nsecond\n"
        assert seen[0][1].rstrip("\n") == "first" and seen[0][0] < 1.5
        assert time.monotonic() - t0 >= 2

    def test_signal_and_exit_codes(self, container):
        """A non-zero exit comes back as is; a command killed by a signal as -signal."""
        assert container.run("exit 42").exit_code == 42
        assert container.run("kill -9 $$").exit_code == -signal.SIGKILL

    def test_missing_command_is_127_with_a_message(self, container):
        """A command that does not exist: exit 127 and a message, not a hang."""
        r = container.run(["no-such-program-xyz"], timeout=10)
        assert r.exit_code == 127 and "no-such-program-xyz" in r.stderr

    def test_timeout_kills_the_command_inside(self, container):
        """A 10-second command with timeout=1 raises CommandTimeout and is gone from the container."""
        t0 = time.monotonic()
        with pytest.raises(CommandTimeout):
            container.run("sleep 10; echo never", timeout=1)
        assert time.monotonic() - t0 < 5
        assert "sleep 10" not in container.run("ps -o args").stdout

    def test_bytes_are_kept_exactly(self, container):
        """Invalid UTF-8 and a last line without newline come back byte for byte."""
        r = container.run("printf 'a\\377b\\nlast'")
        assert r.stdout_bytes == b"a\xffb\nlast"

    def test_stdin_and_env_and_cwd(self, container):
        """stdin data, environment and working directory reach the command."""
        r = container.run("cat; echo $GREETING; pwd", stdin=b"in\n", env={"GREETING": "hi"}, cwd="/tmp")
        assert r.stdout == "in\nhi\n/tmp\n"

    def test_dead_agent_is_reported_not_waited_for(self, svc):
        """If the agent dies, run() says so instead of waiting forever."""
        c = svc.provision()
        try:
            c.start()
            holder = {}

            def run_long():
                try:
                    holder["r"] = c.run("sleep 30", timeout=60)
                except Exception as e:  # noqa: BLE001 - the error is the result
                    holder["e"] = e

            t = threading.Thread(target=run_long)
            t.start()
            time.sleep(0.5)
            pid = svc.ports.driver.pid(c.name)
            os.kill(pid, signal.SIGKILL)  # the agent is pid 1 of the container: the container dies too
            t.join(20)
            assert not t.is_alive()
            assert isinstance(holder.get("e"), (AgentUnavailable,)), holder
        finally:
            c.destroy()


class TestStartupAndLogs:
    def test_startup_commands_run_at_every_start_and_failures_do_not_stop_others(self, container):
        """Each start runs the startup commands in order; a failing one is logged and the next still runs."""
        container.add_startup_command("echo run >> /root/starts")
        container.add_startup_command("exit 3")
        container.add_startup_command("echo after-failure > /root/after")
        container.stop()
        container.start()
        container.stop()
        container.start()
        time.sleep(0.3)
        assert container.run("cat /root/starts /root/after").stdout == "run\nrun\nafter-failure\n"
        records = [rec for _, rec in container.logs()]
        exits = [r for r in records if r.get("type") == "exit" and str(r.get("id", "")).startswith("startup-1")]
        assert exits and all(r.get("code") == 3 for r in exits)
        assert container.remove_startup_command(1) == ("echo run >> /root/starts", "echo after-failure > /root/after")

    def test_logs_survive_a_host_process_that_was_not_listening(self, container):
        """Output of a command whose caller went away is in the log, with its exit."""
        container.start()
        with pytest.raises(CommandTimeout):
            container.run("echo before; sleep 0.5; echo unseen-by-caller", timeout=0.2)
        time.sleep(0.2)
        # timeout kills the command, so the second line never comes; run one detached instead:
        container.run("(sleep 0.3; echo detached-line) >/dev/null 2>&1 &")
        text = "".join(str(rec.get("data", "")) for _, rec in container.logs())
        assert "before" in text

    def test_logs_follow_yields_new_records(self, container):
        """logs(follow=True) yields records written after it started."""
        container.start()
        last = 0
        for last, _ in container.logs():
            pass
        got = []

        def follow():
            for _, rec in container.logs(since=last, follow=True):
                if "followed-line" in str(rec.get("data", "")):
                    got.append(rec)
                    return

        t = threading.Thread(target=follow, daemon=True)
        t.start()
        time.sleep(0.3)
        container.run("echo followed-line")
        t.join(10)
        assert got and got[0]["stream"] == "stdout"

    def test_events_show_command_exits(self, svc, container):
        """The agent publishes command_exited events to subscribers."""
        container.start()
        client = svc.containers.agent(container.name)
        with client.events(timeout=5) as stream:
            container.run("exit 9")
            exited = [e for e in stream if e.get("type") == "command_exited"]
            break_after = exited
        assert any(e.get("code") == 9 for e in break_after)


class TestStdinStream:
    def test_a_file_or_an_iterable_streams_into_stdin(self, container):
        """stdin= may be a binary file or an iterable of bytes/str: sent as the command runs."""
        import io
        assert container.run("wc -c", stdin=io.BytesIO(b"x" * 3_000_000), timeout=30).stdout.strip() == "3000000"
        lines = (f"line {i}\n" for i in range(3))
        assert container.run("cat", stdin=lines, timeout=30).stdout == "line 0\nline 1\nline 2\n"

    def test_stream_into_a_command_that_exits_early_is_not_an_error(self, container):
        """A command that ends (or closes stdin) before reading it all: its exit, not an error."""
        assert container.run(["true"], stdin=iter([b"x" * 10] * 5), timeout=30).exit_code == 0
        big = (b"y" * 65536 for _ in range(320))  # 20 MiB
        r = container.run("head -c 1", stdin=big, timeout=30)
        assert (r.exit_code, r.stdout) == (0, "y")

    def test_slow_reader_does_not_make_the_agent_buffer_the_stream(self, svc, container):
        """Flow control: 64 MiB into a command that sleeps first; the agent's memory stays small."""
        container.start()
        pid = svc.ports.driver.pid(container.name)
        data = (b"z" * 65536 for _ in range(1024))
        r = container.run("sleep 1; wc -c", stdin=data, timeout=60)
        assert r.stdout.strip() == str(64 * 1024 * 1024)
        with open(f"/proc/{pid}/status") as f:
            hwm_kb = int(next(line for line in f if line.startswith("VmHWM")).split()[1])
        assert hwm_kb < 64 * 1024, f"agent peak RSS {hwm_kb} kB"
