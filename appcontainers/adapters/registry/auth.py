"""Registry credentials from the usual auth files, and the WWW-Authenticate challenge parsing.

Files, first match wins: $REGISTRY_AUTH_FILE, ${XDG_RUNTIME_DIR}/containers/auth.json,
~/.docker/config.json (the forms podman, skopeo and docker write: {"auths": {HOST: {"auth":
base64(user:password)}}}). Credential helpers are not run.
"""
from __future__ import annotations

import base64
import json
import os
import re
from typing import Mapping

_PARAM_RE = re.compile(r'([A-Za-z_]+)=(?:"([^"]*)"|([^,\s]*))')


def auth_files(environ: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    files = []
    if env.get("REGISTRY_AUTH_FILE"):
        files.append(env["REGISTRY_AUTH_FILE"])
    if env.get("XDG_RUNTIME_DIR"):
        files.append(os.path.join(env["XDG_RUNTIME_DIR"], "containers", "auth.json"))
    home = env.get("HOME") or os.path.expanduser("~")
    files.append(os.path.join(home, ".docker", "config.json"))
    return files


def _host_keys(host: str) -> list[str]:
    return [host, f"https://{host}", f"http://{host}", f"https://{host}/v2/", f"https://{host}/v1/"]


def credentials_in(data: object, host: str) -> tuple[str, str] | None:
    """(user, password) for host in one auth file's parsed JSON, or None."""
    auths = data.get("auths") if isinstance(data, dict) else None
    if not isinstance(auths, dict):
        return None
    for key in _host_keys(host):
        entry = auths.get(key)
        if isinstance(entry, dict) and isinstance(entry.get("auth"), str):
            try:
                user, sep, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                continue
            if sep:
                return user, password
    return None


def credentials(host: str, environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """The first credentials for host in the auth files, or None (anonymous)."""
    for path in auth_files(environ):
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read(1 << 20))
        except (OSError, ValueError):
            continue
        found = credentials_in(data, host)
        if found:
            return found
    return None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """('basic'|'bearer'|..., params) of a WWW-Authenticate header."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
              for m in _PARAM_RE.finditer(rest)}
    return scheme.lower(), params


def basic_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
