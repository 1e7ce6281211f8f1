"""Pure plans the container service executes: template context, agent config, argv."""
from __future__ import annotations

import hashlib

from ..domain.capabilities import kept
from ..domain.exceptions import InvalidValue

DEVICES = ("1:3", "1:5", "1:7", "5:0", "5:1", "5:2", "1:8", "1:9", "136:*", "10:229")


def veth_name(name: str) -> str:
    """Host-side veth name: ours by prefix, unique per container, within IFNAMSIZ."""
    return "acv" + hashlib.sha256(name.encode()).hexdigest()[:11]


def has_agent(chain) -> bool:
    return any(img.manifest.init for img in chain)


def init_argv(chain) -> list[str]:
    for img in chain:
        if img.manifest.init:
            return list(img.manifest.init)
    return ["/sbin/init"]


def host_binds(chain) -> list[str]:
    seen = []
    for img in reversed(chain):
        for b in img.manifest.host_binds:
            if b not in seen:
                seen.append(b)
    return seen


def environment(chain) -> dict:
    env = {}
    for img in reversed(chain):  # the top image wins
        env.update(img.manifest.environment)
    return env


def context(r, layout, settings, pool, chain) -> dict:
    return {
        "r": r, "layout": layout, "settings": settings, "rootfs": layout.rootfs(r.name),
        "bridge": settings.bridge, "prefixlen": pool.prefixlen, "gateway": pool.gateway,
        "broadcast": pool.broadcast, "veth": veth_name(r.name), "agent_dir": layout.agent_dir(r.name),
        "host_binds": [(b, b) for b in host_binds(chain)], "init": " ".join(init_argv(chain)),
        "devices": DEVICES, "caps": kept(r.caps_add),
        "files": [],
    }


def agent_config(r, chain, settings) -> dict:
    return {"v": 1, "startup_commands": list(r.startup_commands), "environment": environment(chain),
            "log_max_bytes": settings.log_max_bytes, "hostname": r.name}


def command(cmd) -> tuple[list[str] | None, str | None]:
    """(argv, shell): a str runs under /bin/sh -c, a list runs as argv."""
    if isinstance(cmd, str):
        if not cmd.strip():
            raise InvalidValue("empty command")
        return None, cmd
    if not isinstance(cmd, (list, tuple)):
        raise InvalidValue(f"invalid command {cmd!r}: a string or a non-empty list of strings")
    argv = list(cmd)
    if not argv or not all(isinstance(a, str) for a in argv):
        raise InvalidValue(f"invalid command {cmd!r}: a string or a non-empty list of strings")
    return argv, None
