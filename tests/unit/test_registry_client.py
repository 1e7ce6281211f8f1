"""HttpRegistry (the distribution API client) against real http.server servers on 127.0.0.1:
where credentials may go, and the bounds on replies it does not keep."""
from __future__ import annotations

import base64
import hashlib
import http.server
import json
import threading
import urllib.parse
from typing import Callable

import pytest

from appcontainers.adapters.registry.client import HttpRegistry
from appcontainers.domain.exceptions import RegistryError

USER, PASSWORD = "alice", "s3cret"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
DATA = b"a small blob"
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()

Reply = tuple[int, dict[str, str], bytes]


class Server:
    """A loopback HTTP server answering every request with answer(method, path, headers);
    it records (method, path, Authorization header) of each request."""

    def __init__(self, answer: Callable[[str, str, dict[str, str]], Reply]) -> None:
        self.answer, self.seen = answer, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                outer.seen.append((self.command, self.path, self.headers.get("Authorization")))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                status, headers, body = outer.answer(self.command, self.path, dict(self.headers))
                self.send_response(status)
                for k, v in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    if self.command != "HEAD":
                        self.wfile.write(body)
                except OSError:
                    pass  # the client stopped reading: what a bounded read does

            do_GET = do_HEAD = do_PUT = do_POST = _any

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.netloc = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def auths(self) -> list[str]:
        return [a for _, _, a in self.seen if a]


@pytest.fixture
def servers():
    made: list[Server] = []

    def make(answer):
        made.append(Server(answer))
        return made[-1]

    yield make
    for s in made:
        s.close()


def client(tmp_path, host: str, tls_verify: bool = False) -> HttpRegistry:
    """A client of host with alice's credentials in an auth file, spoken to over plain http (as
    a tls_verify=False client falls back to once TLS fails)."""
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"auths": {host: {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}))
    reg = HttpRegistry(host, tls_verify=tls_verify, timeout=10,
                       environ={"REGISTRY_AUTH_FILE": str(auth), "HOME": str(tmp_path)})
    reg.scheme = "http"
    return reg


def token_service(method, path, headers) -> Reply:
    return 200, {"Content-Type": "application/json"}, b'{"token": "t0k"}'


class TestCredentialsStayHome:
    def test_a_redirect_target_asking_for_auth_gets_nothing(self, tmp_path, servers):
        """The registry (basic auth) redirects a blob to another host, which answers 401 with a
        bearer realm: an error naming that host, and neither it nor its realm sees credentials."""
        other = servers(lambda m, p, h: (200, {}, b'{"token": "t"}') if p.startswith("/token") else
                        (401, {"WWW-Authenticate": f'Bearer realm="http://{other.netloc}/token"'}, b""))

        def registry(method, path, headers) -> Reply:
            if headers.get("Authorization") != BASIC:
                return 401, {"WWW-Authenticate": 'Basic realm="reg"'}, b""
            return 307, {"Location": f"http://{other.netloc}/blob"}, b""
        home = servers(registry)
        with pytest.raises(RegistryError) as e:
            client(tmp_path, home.netloc).fetch_bytes("app", DIGEST, 100)
        assert home.auths() == [BASIC]
        assert other.auths() == [] and not [p for _, p, _ in other.seen if p.startswith("/token")]
        assert f"http://{other.netloc} asks for authentication" in str(e.value)

    def test_no_credentials_to_an_http_realm_with_tls_verify(self, tmp_path, servers):
        """tls_verify on: an http:// token realm (even the registry's own host) gets no basic
        credentials; the token it gives anonymously is still used."""
        home = servers(lambda m, p, h: token_service(m, p, h) if p.startswith("/token") else
                       (200, {}, DATA) if h.get("Authorization") == "Bearer t0k" else
                       (401, {"WWW-Authenticate": f'Bearer realm="http://{home.netloc}/token",scope="s"'}, b""))
        assert client(tmp_path, home.netloc, tls_verify=True).fetch_bytes("app", DIGEST, 100) == DATA
        assert [a for _, p, a in home.seen if p.startswith("/token")] == [None]

    def test_http_realm_of_another_host_gets_no_credentials(self, tmp_path, servers):
        """tls_verify off: an http:// realm on another host gets no credentials either; its
        refusal says why."""
        realm = servers(lambda m, p, h: (401, {}, b""))
        home = servers(lambda m, p, h: (401, {"WWW-Authenticate": f'Bearer realm="http://{realm.netloc}/token"'}, b""))
        with pytest.raises(RegistryError, match="credentials not sent"):
            client(tmp_path, home.netloc).fetch_bytes("app", DIGEST, 100)
        assert len(realm.seen) == 1 and realm.auths() == []

    def test_http_realm_of_the_registry_itself_without_tls_verify(self, tmp_path, servers):
        """tls_verify off (a local registry): its own http:// token realm gets the credentials."""
        home = servers(lambda m, p, h: token_service(m, p, h) if p.startswith("/token") else
                       (200, {}, DATA) if h.get("Authorization") == "Bearer t0k" else
                       (401, {"WWW-Authenticate": f'Bearer realm="http://{home.netloc}/token"'}, b""))
        assert client(tmp_path, home.netloc).fetch_bytes("app", DIGEST, 100) == DATA
        assert [a for _, p, a in home.seen if p.startswith("/token")] == [BASIC]

    @pytest.mark.parametrize("realm, tls_verify, sent", [
        ("https://auth.docker.io/token", True, True),  # Docker Hub: another https host
        ("https://reg.example/token", True, True),
        ("http://reg.example/token", True, False),
        ("http://reg.example/token", False, True),
        ("http://reg.example:81/token", False, False),
        ("http://auth.example/token", False, False),
    ])
    def test_the_realm_rule(self, tmp_path, realm, tls_verify, sent):
        """Credentials to a realm: https to any host; plain http only with tls_verify off and
        only to the registry's own host:port."""
        reg = client(tmp_path, "reg.example", tls_verify=tls_verify)
        assert reg._may_send_credentials(urllib.parse.urlsplit(realm)) is sent

    def test_a_redirect_to_plain_http_of_our_host_carries_no_token(self, tmp_path, servers):
        """A redirect from https to http of the same host:port is not 'our host': no Authorization."""
        reg = client(tmp_path, "reg.example", tls_verify=True)
        reg.scheme = "https"
        assert reg._ours(urllib.parse.urlsplit("https://reg.example/v2/x"))
        assert not reg._ours(urllib.parse.urlsplit("http://reg.example/v2/x"))


BIG = b"x" * ((1 << 16) + 1)


class TestBoundedReplies:
    def test_a_big_redirect_body_is_refused(self, tmp_path, servers):
        """A 3xx whose body is over 64 KiB: an error, not read to its end."""
        target = servers(lambda m, p, h: (200, {}, DATA))
        home = servers(lambda m, p, h: (307, {"Location": f"http://{target.netloc}/b"}, BIG))
        with pytest.raises(RegistryError, match="larger than 65536"):
            client(tmp_path, home.netloc).fetch_bytes("app", DIGEST, 100)
        assert target.seen == []

    def test_a_big_401_body_is_refused(self, tmp_path, servers):
        """A 401 whose body is over 64 KiB: an error."""
        home = servers(lambda m, p, h: (200, {}, DATA) if h.get("Authorization") == BASIC else
                       (401, {"WWW-Authenticate": 'Basic realm="r"'}, BIG))
        with pytest.raises(RegistryError, match="larger than 65536"):
            client(tmp_path, home.netloc).fetch_bytes("app", DIGEST, 100)

    def test_a_big_token_reply_is_refused(self, tmp_path, servers):
        """A token reply over 1 MiB: an error saying so (not a truncated JSON)."""
        big = b'{"token": "t0k", "pad": "' + b"x" * (1 << 20) + b'"}'
        home = servers(lambda m, p, h: (200, {}, big) if p.startswith("/token") else
                       (401, {"WWW-Authenticate": f'Bearer realm="http://{home.netloc}/token"'}, b""))
        with pytest.raises(RegistryError, match="larger than 1048576"):
            client(tmp_path, home.netloc).fetch_bytes("app", DIGEST, 100)

    def test_big_upload_and_manifest_answers_are_refused(self, tmp_path, servers):
        """The answers to an upload start and a manifest PUT are bounded too."""
        home = servers(lambda m, p, h: (202, {"Location": "/v2/app/blobs/uploads/u"}, BIG) if m == "POST" else
                       (404, {}, b"") if m == "HEAD" else (201, {}, BIG))
        reg = client(tmp_path, home.netloc)
        with pytest.raises(RegistryError, match="an upload: a reply larger"):
            reg.push_bytes("app", DATA)
        with pytest.raises(RegistryError, match="manifest app:v1: a reply larger"):
            reg.put_manifest("app", "v1", b"{}", "application/json")

    def test_small_answers_pass(self, tmp_path, servers):
        """A push and a manifest PUT with ordinary small answers still work."""
        home = servers(lambda m, p, h: (202, {"Location": "/v2/app/blobs/uploads/u"}, b"") if m == "POST" else
                       (404, {}, b"") if m == "HEAD" else (201, {}, b"ok"))
        reg = client(tmp_path, home.netloc)
        assert reg.push_bytes("app", DATA) == DIGEST
        assert reg.put_manifest("app", "v1", b"{}", "application/json").startswith("sha256:")
