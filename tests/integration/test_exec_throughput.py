"""Big outputs and inputs, exact to the byte: 100 MB of random bytes out and in through the real
agent (a host process, then a container through the CLI and the service), and bounded memory when
the consumer is slower than the command."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from tests.integration.test_agent_process import ROOT, agent, run_dir, start_agent  # noqa: F401 -- fixtures

CLI = [sys.executable, "-m", "appcontainers.entrypoints.cli"]
SIZE = 100_000_000
TAILS = [b"", b"\n"]

# A consumer that stalls 2 s on the first chunk while the command writes 200 MB as fast as it can.
SLOW_CLIENT = r"""
import json, sys, time
from appcontainers.adapters.bus.zmq_bus import AgentClient


def peak_kb():
    # VmHWM: this process's own peak (ru_maxrss would count the parent's RSS at the spawn)
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM:")).split()[1])

got = [0]

def on_data(stream, data):
    if got[0] == 0:
        time.sleep(2)
    got[0] += len(data)

code, out, _, _ = AgentClient(sys.argv[1], server_key=sys.argv[2]).run(
    shell="head -c 200000000 /dev/zero | tr '\\0' a", on_data=on_data, capture=False)
print(json.dumps([code, len(out), got[0], peak_kb()]))
"""


def producer(path: str, tail: bytes) -> str:
    """A shell line writing SIZE random bytes (and tail) to path, its sha256 to stderr, then itself."""
    printf = "printf '\\n'" if tail == b"\n" else "true"
    return f"head -c {SIZE} /dev/urandom > {path} && {printf} >> {path} && sha256sum {path} >&2 && cat {path}"


def random_file(path, tail: bytes) -> str:
    """SIZE random bytes (and tail) written to path; their sha256."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(SIZE >> 20):
            block = os.urandom(1 << 20)
            digest.update(block)
            f.write(block)
        block = os.urandom(SIZE % (1 << 20)) + tail
        digest.update(block)
        f.write(block)
    return digest.hexdigest()


class TestAgentProcess:
    @pytest.mark.parametrize("tail", TAILS)
    def test_hundred_megabytes_out_exactly(self, agent, run_dir, tail):  # noqa: F811
        """100 MB of random bytes (with and without a final newline) come back byte-identical."""
        _, client = agent
        code, out, err, _ = client.run(shell=producer(os.path.join(run_dir, "out.bin"), tail), timeout=120)
        assert code == 0 and len(out) == SIZE + len(tail)
        assert hashlib.sha256(out).hexdigest() == err.split()[0].decode()

    @pytest.mark.parametrize("kind", ["file", "bytes"])
    def test_hundred_megabytes_in_exactly(self, agent, tmp_path, kind):  # noqa: F811
        """100 MB of random bytes as stdin, from a file or as bytes, reach the command exactly."""
        _, client = agent
        path = tmp_path / "in.bin"
        want = random_file(path, b"")
        with open(path, "rb") as f:
            stdin = f if kind == "file" else f.read()
            code, out, _, _ = client.run(["sha256sum"], stdin=stdin, timeout=120)
        assert code == 0 and out.split()[0].decode() == want

    def test_fast_producer_slow_consumer_stays_bounded(self, agent):  # noqa: F811
        """The command writes 200 MB while the client stalls: the agent stops reading (the command
        blocks on its pipe), so neither side's memory grows with the output; nothing is lost."""
        proc, client = agent
        done = subprocess.run([sys.executable, "-c", SLOW_CLIENT, client.run_dir, client.server_key], cwd=ROOT,
                              capture_output=True, timeout=180, check=True)
        code, out_len, got, client_kb = json.loads(done.stdout)
        assert (code, out_len, got) == (0, 0, 200_000_000)
        assert client_kb < 120 * 1024, f"client peak RSS {client_kb} kB"
        with open(f"/proc/{proc.pid}/status") as f:
            agent_kb = int(next(line for line in f if line.startswith("VmHWM:")).split()[1])
        assert agent_kb < 100 * 1024, f"agent peak RSS {agent_kb} kB"


@pytest.fixture(scope="module")
def web(svc):
    c = svc.provision()
    try:
        c.start()
        yield c
    finally:
        c.destroy()


class TestContainer:
    @pytest.mark.parametrize("tail", TAILS)
    def test_cli_hundred_megabytes_out(self, env, web, tmp_path, tail):
        """run NAME -- (100 MB of random bytes) > file: the file is what the command wrote."""
        out = tmp_path / "out.bin"
        with open(out, "wb") as f:
            proc = subprocess.run([*CLI, "run", web.name, "--", "sh", "-c", producer("/tmp/out.bin", tail)], env=env,
                                  stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.PIPE, timeout=300)
        assert proc.returncode == 0, proc.stderr
        digest = hashlib.sha256()
        with open(out, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        assert out.stat().st_size == SIZE + len(tail)
        assert digest.hexdigest() == proc.stderr.split()[0].decode()

    @pytest.mark.parametrize("tail", TAILS)
    def test_cli_hundred_megabytes_in(self, env, web, tmp_path, tail):
        """run NAME -- sha256sum < (100 MB of random bytes): the hash of those bytes."""
        path = tmp_path / "in.bin"
        want = random_file(path, tail)
        with open(path, "rb") as f:
            proc = subprocess.run([*CLI, "run", web.name, "--", "sha256sum"], env=env, stdin=f, capture_output=True,
                                  timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split()[0].decode() == want

    def test_api_lines_of_seq_in_order(self, web):
        """c.run('seq 1000000', on_output=...) gets every line, in order, without its newline."""
        lines = []
        r = web.run(["seq", "1000000"], on_output=lambda stream, line: lines.append(line), timeout=120)
        assert r.exit_code == 0 and len(r.stdout_bytes) == 6888896
        assert lines == [str(i) for i in range(1, 1000001)]

    def test_api_hundred_megabytes_in_and_out(self, web):
        """stdin=100 MB of bytes through the service, echoed back by cat: the same bytes."""
        data = os.urandom(SIZE)
        r = web.run(["cat"], stdin=data, timeout=300)
        assert r.exit_code == 0 and r.stdout_bytes == data
