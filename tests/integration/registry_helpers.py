"""A real local registry for tests: Debian's docker-registry (distribution 2.8) on 127.0.0.1,
a free port and a temp storage directory, plain HTTP; stopped and removed after."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
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


def _bcrypt(password: str) -> str:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # glibc's libxcrypt makes $2b$ hashes; gone in Python 3.13

    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))


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
        except urllib.error.HTTPError as e:
            if e.code == 401:  # up, and asking for credentials
                return
            time.sleep(0.1)
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("docker-registry did not answer within 20 s")


AUTH = """\
auth:
  htpasswd:
    realm: appcontainers-test
    path: {htpasswd}
"""


def start_registry(user: tuple[str, str] | None = None) -> LocalRegistry:
    """user=(name, password): basic auth through an htpasswd file (bcrypt, as the registry wants)."""
    if not os.access(REGISTRY, os.X_OK):
        pytest.skip("docker-registry is not installed (apt install docker-registry)")
    work = tempfile.mkdtemp(prefix="appcontainers-registry-", dir="/var/tmp")
    port = _free_port()
    storage, config, log = (os.path.join(work, n) for n in ("storage", "config.yml", "registry.log"))
    os.mkdir(storage)
    text = CONFIG.format(storage=storage, port=port)
    if user is not None:
        htpasswd = os.path.join(work, "htpasswd")
        with open(htpasswd, "w") as f:
            f.write(f"{user[0]}:{_bcrypt(user[1])}\n")
        text += AUTH.format(htpasswd=htpasswd)
    with open(config, "w") as f:
        f.write(text)
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


class BearerFront:
    """A token-auth front for a LocalRegistry, as Docker Hub style registries work: /v2/ answers
    401 with a Bearer challenge naming /token; /token gives a token to basic-auth alice:s3cret;
    requests bearing it are forwarded to the registry (Host kept, so its Locations point here)."""

    def __init__(self, backend: LocalRegistry, user=("alice", "s3cret")) -> None:
        import base64
        import http.client
        import http.server
        import threading

        front = self
        expected = "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
        self.tokens_given = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _reply(self, code, body=b"", headers=()):
                self.send_response(code)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _proxy(self):
                if self.path.startswith("/token"):
                    if self.headers.get("Authorization") != expected:
                        return self._reply(401)
                    front.tokens_given += 1
                    token = "push-token" if "push" in self.path else "pull-token"
                    return self._reply(200, json.dumps({"token": token}).encode())
                # As real token registries: a pull token for reads only; writes ask for push scope.
                writes = self.command not in ("GET", "HEAD")
                allowed = ["Bearer push-token"] + ([] if writes else ["Bearer pull-token"])
                if self.headers.get("Authorization") not in allowed:
                    scope = "repository:x:pull,push" if writes else "repository:x:pull"
                    realm = f'Bearer realm="http://{front.host}/token",service="test",scope="{scope}"'
                    return self._reply(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', [("WWW-Authenticate", realm)])
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection(backend.host, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "authorization"}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                keep = [(k, v) for k, v in resp.getheaders() if k.lower() not in ("content-length", "connection",
                                                                                  "transfer-encoding")]
                if self.command == "HEAD":
                    self.send_response(resp.status)
                    for k, v in keep:
                        self.send_header(k, v)
                    self.send_header("Content-Length", resp.getheader("Content-Length") or "0")
                    self.end_headers()
                else:
                    self._reply(resp.status, data, keep)
                conn.close()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _proxy

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def ref(self, repo: str, tag: str = "latest") -> str:
        return f"{self.host}/{repo}:{tag}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
