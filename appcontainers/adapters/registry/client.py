"""A small client of the OCI distribution API over http.client: blobs and manifests.

Anonymous, basic and bearer-token auth (credentials from the usual auth files, auth.py).
tls_verify=False: https without certificate checks, and plain http if the registry speaks no
TLS (a local registry); by default only verified https is tried. Every failure is one
RegistryError line.

Credentials go to the registry's own host only: the Authorization header is never sent to a
redirect target, a 401 from another host is an error, and basic credentials go to a token
service only over https (or, with tls_verify off, over http to the registry's own host[:port]).
Replies we do not keep (redirects, 401s, upload answers) are read to at most 64 KiB, a token
reply to at most 1 MiB: a bigger one is an error.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import ssl
import urllib.parse
from typing import IO, Any, Iterable, Mapping

from ...domain.artifact import MAX_MANIFEST_BYTES
from ...domain.exceptions import RegistryError
from ...domain.ports import ByteProgress
from . import auth

log = logging.getLogger("appcontainers.registry")
_CHUNK = 1 << 20
_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_REPLY = 1 << 16  # a reply whose body we do not keep
_MAX_TOKEN_REPLY = 1 << 20


class _Reader:
    """A file body that reports how much of it was sent."""

    def __init__(self, f: IO[bytes], size: int, progress: ByteProgress | None) -> None:
        self.f, self.size, self.progress, self.done = f, size, progress, 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n if n and n > 0 else _CHUNK)
        self.done += len(data)
        if self.progress and data:
            self.progress(self.done, self.size)
        return data


def file_digest(path: str) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return "sha256:" + h.hexdigest(), size


class HttpRegistry:
    """The RegistryClient port for one registry host[:port]."""

    def __init__(self, host: str, tls_verify: bool = True, timeout: float = 60,
                 environ: Mapping[str, str] | None = None) -> None:
        self.host, self.tls_verify, self.timeout = host, tls_verify, timeout
        self.scheme = "https"
        self._creds = auth.credentials(host, environ)
        self._auth: str | None = None
        self._scopes: set[str] = set()  # the bearer scopes a token was asked for

    # ---- the port ---------------------------------------------------------------------
    def push_file(self, repo: str, path: str, progress: ByteProgress | None = None) -> tuple[str, int, bool]:
        digest, size = file_digest(path)
        if self._has_blob(repo, digest):
            return digest, size, False
        with open(path, "rb") as f:
            self._upload(repo, digest, _Reader(f, size, progress), size)
        return digest, size, True

    def push_bytes(self, repo: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not self._has_blob(repo, digest):
            self._upload(repo, digest, data, len(data))
        return digest

    def fetch_file(self, repo: str, digest: str, size: int, dest: str,
                   progress: ByteProgress | None = None) -> None:
        # Made first, and only then ours to remove: an existing file is never touched.
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                resp = self._send("GET", f"/v2/{repo}/blobs/{digest}", ok=(200,), what=f"blob {digest[:19]}")
                try:
                    got = _copy_checked(resp, out, size, progress)
                finally:
                    resp.close()
        except BaseException:
            _remove(dest)
            raise
        if got != digest:
            _remove(dest)
            raise RegistryError(self.host, f"blob {digest} does not match its digest (its bytes hash to "
                                           f"{got}): refused")

    def fetch_bytes(self, repo: str, digest: str, max_bytes: int) -> bytes:
        resp = self._send("GET", f"/v2/{repo}/blobs/{digest}", ok=(200,), what=f"blob {digest[:19]}")
        data = resp.read(max_bytes + 1)
        resp.close()
        if len(data) > max_bytes:
            raise RegistryError(self.host, f"blob {digest} is larger than {max_bytes} bytes")
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise RegistryError(self.host, f"blob {digest} does not match its digest: refused")
        return data

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str:
        resp = self._send("PUT", f"/v2/{repo}/manifests/{reference}", body=data, ok=(201, 200),
                          headers={"Content-Type": media_type}, what=f"manifest {repo}:{reference}")
        self._drain(resp, what=f"manifest {repo}:{reference}")
        return "sha256:" + hashlib.sha256(data).hexdigest()

    def get_manifest(self, repo: str, reference: str, accept: Iterable[str]) -> tuple[bytes, str, str]:
        resp = self._send("GET", f"/v2/{repo}/manifests/{reference}", headers={"Accept": ", ".join(accept)},
                          ok=(200,), what=f"manifest {repo}:{reference}")
        data = resp.read(MAX_MANIFEST_BYTES + 1)
        media = (resp.getheader("Content-Type") or "").split(";")[0].strip()
        resp.close()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise RegistryError(self.host, f"manifest {reference} does not match its digest: refused")
        return data, media, digest

    # ---- the protocol -----------------------------------------------------------------
    def _has_blob(self, repo: str, digest: str) -> bool:
        resp = self._send("HEAD", f"/v2/{repo}/blobs/{digest}", ok=(200, 404), what=f"blob {digest[:19]}")
        self._drain(resp, what=f"blob {digest[:19]}")
        return resp.status == 200

    def _upload(self, repo: str, digest: str, body: Any, size: int) -> None:
        start = self._send("POST", f"/v2/{repo}/blobs/uploads/", ok=(202,), body=b"", what="an upload")
        self._drain(start, what="an upload")
        location = start.getheader("Location")
        if not location:
            raise RegistryError(self.host, "the registry started an upload without a Location")
        sep = "&" if "?" in location else "?"
        url = location + sep + urllib.parse.urlencode({"digest": digest})
        resp = self._send("PUT", url, body=body, ok=(201,), what=f"blob {digest[:19]}",
                          headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
        self._drain(resp, what=f"blob {digest[:19]}")

    def _send(self, method: str, url: str, *, ok: tuple[int, ...], what: str, body: Any = None,
              headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
        """One request, with the auth a 401 asks for and the redirects a blob GET may get."""
        for _ in range(6):
            resp = self._request(method, url, body, headers or {})
            if resp.status == 401:
                resp = self._with_auth(resp, method, url, body, headers or {}, what)
            if resp.status in _REDIRECTS and method in ("GET", "HEAD"):
                self._drain(resp, what)
                url = urllib.parse.urljoin(self._base() + url if url.startswith("/") else url,
                                           resp.getheader("Location") or "")
                continue
            if resp.status not in ok:
                raise self._failure(resp, what)
            return resp
        raise RegistryError(self.host, f"{what}: too many redirects")

    def _with_auth(self, resp: http.client.HTTPResponse, method: str, url: str, body: Any,
                   headers: dict[str, str], what: str) -> http.client.HTTPResponse:
        """The request again with the auth a 401 asks for, or resp if there is nothing to try.
        Only our own host gets credentials: a 401 from another one (a redirect target) is an error."""
        full = self._split(url)
        if not self._ours(full):
            self._drain(resp, what)
            raise RegistryError(self.host, f"{what}: {full.scheme}://{full.netloc} asks for authentication: "
                                           f"refused (credentials go to {self._base()} only)")
        if not self._authenticate(resp, what):
            return resp
        if isinstance(body, _Reader):
            body.f.seek(0)
            body.done = 0
        return self._request(method, url, body, headers)

    def _base(self) -> str:
        return f"{self.scheme}://{self.host}"

    def _split(self, url: str) -> urllib.parse.SplitResult:
        return urllib.parse.urlsplit(self._base() + url if url.startswith("/") else url)

    def _ours(self, full: urllib.parse.SplitResult) -> bool:
        """The registry itself, by the scheme it is spoken to: never a redirect to plain http."""
        return full.netloc == self.host and full.scheme == self.scheme

    def _drain(self, resp: http.client.HTTPResponse, what: str, limit: int = _MAX_REPLY) -> bytes:
        """The body of a reply, at most limit bytes (a bigger one is an error); resp closed."""
        try:
            data = resp.read(limit + 1)
        except OSError as e:
            raise RegistryError(self.host, f"{what}: the reply broke off: {e.strerror or e}") from None
        finally:
            resp.close()
        if len(data) > limit:
            raise RegistryError(self.host, f"{what}: a reply larger than {limit} bytes (HTTP {resp.status}): refused")
        return data

    def _request(self, method: str, url: str, body: Any, headers: dict[str, str]) -> http.client.HTTPResponse:
        full = self._split(url)
        ours = self._ours(full)
        hdrs = {"User-Agent": "appcontainers", "Connection": "close", **headers}  # one request per connection
        if self._auth and ours:
            hdrs["Authorization"] = self._auth
        target = full.path + (f"?{full.query}" if full.query else "")
        try:
            conn = self._connection(full.scheme, full.netloc)
            conn.request(method, target, body=body, headers=hdrs)
            return conn.getresponse()
        except ssl.SSLError as e:
            if ours and not self.tls_verify and self.scheme == "https":
                log.info("registry %s speaks no TLS: trying plain http", self.host)
                self.scheme = "http"
                return self._request(method, url if url.startswith("/") else
                                     url.replace("https://", "http://", 1), body, headers)
            raise RegistryError(self.host, f"TLS failed ({e.reason or e}): for a plain-HTTP or self-signed "
                                           f"local registry give --tls-verify=false") from None
        except OSError as e:
            raise RegistryError(self.host, f"cannot reach it: {e.strerror or e}") from None

    def _connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        if scheme == "http":
            return http.client.HTTPConnection(netloc, timeout=self.timeout, blocksize=_CHUNK)
        context = ssl.create_default_context()
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return http.client.HTTPSConnection(netloc, timeout=self.timeout, context=context, blocksize=_CHUNK)

    def _authenticate(self, resp: http.client.HTTPResponse, what: str) -> bool:
        """Take the credentials or token a 401 asks for; False if there is nothing new to try."""
        self._drain(resp, what)
        scheme, params = auth.parse_challenge(resp.getheader("WWW-Authenticate") or "")
        if scheme == "basic" and self._creds and self._auth is None:
            self._auth = auth.basic_header(*self._creds)
            return True
        # A token is for a scope (pull, then pull+push for an upload): a challenge for a scope
        # not asked yet gets a new token; the same one again means the token was refused.
        scope = params.get("scope", "")
        if scheme == "bearer" and params.get("realm") and scope not in self._scopes:
            self._scopes.add(scope)
            self._auth = "Bearer " + self._token(params)
            return True
        return False

    def _token(self, params: dict[str, str]) -> str:
        query = urllib.parse.urlencode({k: params[k] for k in ("service", "scope") if params.get(k)})
        realm = urllib.parse.urlsplit(params["realm"])
        if realm.scheme not in ("http", "https") or not realm.netloc:
            raise RegistryError(self.host, f"the token service {params['realm']!r} is not an http(s) URL")
        headers = {"User-Agent": "appcontainers"}
        withheld = bool(self._creds) and not self._may_send_credentials(realm)
        if self._creds and not withheld:
            headers["Authorization"] = auth.basic_header(*self._creds)
        conn = self._connection(realm.scheme, realm.netloc)
        try:
            conn.request("GET", realm.path + (f"?{realm.query}&" if realm.query else "?") + query, headers=headers)
            resp = conn.getresponse()
            body = self._drain(resp, f"a token from {realm.netloc}", _MAX_TOKEN_REPLY)
        except OSError as e:
            raise RegistryError(self.host, f"cannot get a token from {realm.netloc}: {e.strerror or e}") from None
        finally:
            conn.close()
        if resp.status != 200:
            why = (f"credentials not sent to {realm.scheme}://{realm.netloc} (not https)" if withheld
                   else "credentials refused" if self._creds else "log in first")
            raise RegistryError(self.host, f"the token service refused (HTTP {resp.status}): {why}")
        return _token_of(body, realm.netloc, self.host)

    def _may_send_credentials(self, realm: urllib.parse.SplitResult) -> bool:
        """Basic credentials go to a token service over https (any host: Docker Hub's is another
        one), or over plain http only with tls_verify off and only to the registry's own host:port."""
        if realm.scheme == "https":
            return True
        return not self.tls_verify and realm.netloc == self.host

    def _failure(self, resp: http.client.HTTPResponse, what: str) -> RegistryError:
        code, message = _error_of(resp.read(1 << 16))
        resp.close()
        if resp.status == 401:
            hint = "credentials refused" if self._creds else "authentication required: log in (auth.json or ~/.docker/config.json)"
            return RegistryError(self.host, f"{what}: 401 unauthorized, {hint}")
        if resp.status == 404:
            known = {"MANIFEST_UNKNOWN": "unknown manifest", "BLOB_UNKNOWN": "unknown blob",
                     "NAME_UNKNOWN": "unknown repository"}
            return RegistryError(self.host, f"{what}: {known.get(code, 'not found')} (404)")
        return RegistryError(self.host, f"{what}: HTTP {resp.status} {code or resp.reason}"
                                        f"{': ' + message if message else ''}")


def _token_of(body: bytes, netloc: str, host: str) -> str:
    """The token of a token service's JSON reply."""
    try:
        data = json.loads(body)
        token = data.get("token") or data.get("access_token")
    except (ValueError, AttributeError):
        token = None
    if not isinstance(token, str):
        raise RegistryError(host, f"the token service at {netloc} gave no token")
    return token


def _error_of(body: bytes) -> tuple[str, str]:
    """(code, message) of the first error in a distribution API error body."""
    try:
        first = json.loads(body)["errors"][0]
        return str(first.get("code", "")), str(first.get("message", ""))[:200]
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return "", ""


def _copy_checked(resp: http.client.HTTPResponse, out: IO[bytes], size: int,
                  progress: ByteProgress | None) -> str:
    """Copy at most size bytes (a longer blob is cut off: its digest then cannot match); the
    sha256 of what came."""
    h, done = hashlib.sha256(), 0
    while done <= size:
        chunk = resp.read(min(_CHUNK, size + 1 - done))
        if not chunk:
            break
        h.update(chunk)
        out.write(chunk)
        done += len(chunk)
        if progress:
            progress(min(done, size), size)
    resp.close()
    return "sha256:" + h.hexdigest()


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class HttpRegistries:
    """The Registries port: a client per host, made when a push or pull needs one."""

    def __call__(self, host: str, tls_verify: bool = True) -> HttpRegistry:
        return HttpRegistry(host, tls_verify=tls_verify)
