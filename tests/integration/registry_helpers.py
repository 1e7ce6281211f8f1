"""A real local registry for tests: Debian's docker-registry (distribution 2.8) on 127.0.0.1,
a free port and a temp storage directory, plain HTTP; stopped and removed after."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import attrs
import pytest

REGISTRY = "/usr/bin/docker-registry"

CONFIG = """\
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  secret: appcontainers-test
"""


@attrs.define
class LocalRegistry:
    host: str  # 127.0.0.1:PORT
    storage: str
    log: str
    proc: subprocess.Popen

    def blobs(self) -> dict[str, str]:
        """digest -> path of every blob file the registry stores."""
        found = {}
        base = os.path.join(self.storage, "docker", "registry", "v2", "blobs", "sha256")
        for dirpath, _dirs, files in os.walk(base):
            if "data" in files:
                found["sha256:" + os.path.basename(dirpath)] = os.path.join(dirpath, "data")
        return found

    def uploads(self) -> int:
        """Blob uploads completed so far (PUTs that ended an upload), from the access log."""
        with open(self.log, errors="replace") as f:
            return sum(1 for line in f if '"PUT /v2/' in line and "/blobs/uploads/" in line and '" 201 ' in line)

    def ref(self, repo: str, tag: str = "latest") -> str:
        return f"{self.host}/{repo}:{tag}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_up(host: str, proc: subprocess.Popen, log: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(log, errors="replace") as f:
                raise RuntimeError(f"docker-registry exited {proc.returncode}: {f.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://{host}/v2/", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("docker-registry did not answer within 20 s")


def start_registry() -> LocalRegistry:
    if not os.access(REGISTRY, os.X_OK):
        pytest.skip("docker-registry is not installed (apt install docker-registry)")
    work = tempfile.mkdtemp(prefix="appcontainers-registry-", dir="/var/tmp")
    port = _free_port()
    storage, config, log = (os.path.join(work, n) for n in ("storage", "config.yml", "registry.log"))
    os.mkdir(storage)
    with open(config, "w") as f:
        f.write(CONFIG.format(storage=storage, port=port))
    out = open(log, "wb")
    proc = subprocess.Popen([REGISTRY, "serve", config], stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    out.close()
    registry = LocalRegistry(host=f"127.0.0.1:{port}", storage=storage, log=log, proc=proc)
    try:
        _wait_up(registry.host, proc, log)
    except BaseException:
        stop_registry(registry)
        raise
    return registry


def stop_registry(registry: LocalRegistry) -> None:
    registry.proc.terminate()
    try:
        registry.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        registry.proc.kill()
        registry.proc.wait(timeout=10)
    shutil.rmtree(os.path.dirname(registry.storage), ignore_errors=True)


@pytest.fixture(scope="module")
def registry():
    """A docker-registry on 127.0.0.1 for the module, stopped and removed after."""
    r = start_registry()
    try:
        yield r
    finally:
        stop_registry(r)
