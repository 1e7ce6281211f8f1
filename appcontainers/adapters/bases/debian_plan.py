"""The Debian base as data: packages, the mmdebstrap command line, what is trimmed, the cache key,
and the apt sources made from the host's own (pure functions, no I/O; debian_base.py runs them).

mmdebstrap given no MIRROR uses the Debian project's default mirror, not the host's apt sources,
so the sources are read from the host (sources.list, sources.list.d/*.list and *.sources) and
rewritten for the suite asked for: the base comes from the mirror apt already uses here.
"""
from __future__ import annotations

import hashlib
import json
import re

import attrs

from ...domain.exceptions import InvalidValue

BUILDER_VERSION = "2"  # 2: an empty /etc/resolv.conf placeholder
VARIANT = "essential"  # Essential: yes packages only (no apt): the smallest system dpkg can run
REQUIRED = ("iproute2", "python3", "python3-cffi-backend", "python3-zmq")  # the agent and `ip`
MERGED_USR_HOOKS = "/usr/share/mmdebstrap/hooks/merged-usr"
TOOLS_DIR = "/opt/appcontainers-tools"
INIT = "/sbin/appcontainers-init"
PYTHON = "/usr/bin/python3"
# dpkg never unpacks these (order matters: a later include re-admits what an exclude dropped).
DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*", "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*", "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*", "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*", "path-exclude=/usr/share/linda/*",
)
# Left out of the squashfs (mksquashfs wildcards relative to the rootfs): apt's lists and caches,
# logs, backups.
TRIM = (
    "var/lib/apt/lists/*", "var/cache/apt/*", "var/cache/debconf/*-old", "var/lib/dpkg/*-old",
    "var/log/*", "tmp/*", "var/tmp/*",
)
# Emptied after mmdebstrap (whatever it left there, the build host's copy included, is replaced by
# an empty regular file): the placeholder the container's skeleton file is bind-mounted on.
EMPTY_FILES = ("etc/resolv.conf",)
# Suites with no -updates or -security companions.
_NO_COMPANIONS = frozenset({"sid", "unstable", "experimental", "rc-buggy"})
_COMPANIONS = ("updates", "security")
_SUITE_RE = re.compile(r"^[a-z][a-z0-9.+-]{0,39}$")
_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]{1,99}$")


def init_script() -> str:
    """The image's init: Debian's own python3 runs the agent (no host binds)."""
    return (
        "#!/bin/sh\n# appcontainers-tools: the agent is this container's init, run by Debian's python3.\n"
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        f"export PYTHONPATH={TOOLS_DIR}\n"
        "export PYTHONDONTWRITEBYTECODE=1\n"
        "# Its own errors go to the host-side agent directory, next to its log.\n"
        f"exec {PYTHON} -m appcontainers_agent \"$@\" 2>>/run/appcontainers/agent.stderr\n"
    )


# What the build copies into the rootfs: (path under the stage's inject/, directory inside).
# /usr/sbin, not /sbin: with merged /usr, /sbin is a symlink the copy must not replace.
INJECT = (
    (TOOLS_DIR.lstrip("/"), "/opt"),
    ("usr/sbin/appcontainers-init", "/usr/sbin"),
    ("etc/hostname", "/etc"),  # placeholders the container's skeleton files are bind-mounted on
    ("etc/hosts", "/etc"),
)
INJECT_FILES = {
    "usr/sbin/appcontainers-init": (init_script(), 0o755),
    "etc/hostname": ("localhost\n", 0o644),
    "etc/hosts": ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n", 0o644),
}


def validate_suite(suite) -> str:
    if not isinstance(suite, str) or not _SUITE_RE.fullmatch(suite):
        raise InvalidValue(f"invalid Debian suite {suite!r}: a release name such as bookworm or trixie")
    return suite


def packages(include=()) -> tuple[str, ...]:
    """The sorted package list: what the agent needs plus include (names or 'a,b' strings)."""
    if isinstance(include, str):
        include = [include]
    names = set(REQUIRED)
    for item in include:
        if not isinstance(item, str):
            raise InvalidValue(f"invalid package {item!r}: give package names")
        for name in filter(None, (n.strip() for n in item.split(","))):
            if not _PACKAGE_RE.fullmatch(name):
                raise InvalidValue(f"invalid package name {name!r}: Debian names use a-z, 0-9, '+', '-', '.'")
            names.add(name)
    return tuple(sorted(names))


def build_key(suite: str, pkgs, agent_hash: str, builder_hash: str) -> str:
    """Changes when anything the base is made from changes (not the mirror's contents)."""
    data = {"builder": BUILDER_VERSION, "builder_hash": builder_hash, "agent_hash": agent_hash,
            "suite": suite, "variant": VARIANT, "packages": sorted(pkgs), "dpkg": list(DPKG_OPTIONS),
            "trim": list(TRIM), "empty": list(EMPTY_FILES), "init": init_script()}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@attrs.frozen
class DebianPlan:
    """One build: the command to run, what to write first and what to leave out of the image."""

    suite: str
    packages: tuple[str, ...]
    key: str
    rootfs: str
    sources_file: str
    inject_dir: str
    argv: tuple[str, ...]
    trim: tuple[str, ...] = TRIM


def plan(suite: str, include, *, agent_hash: str, builder_hash: str, stage: str,
         hook_dir: str = MERGED_USR_HOOKS) -> DebianPlan:
    """The build of suite plus include, staged in the directory stage (paths without whitespace)."""
    suite = validate_suite(suite)
    pkgs = packages(include)
    if any(c.isspace() for c in stage):
        raise InvalidValue(f"cannot stage a build in {stage!r}: mmdebstrap hooks split on whitespace")
    rootfs, sources, inject = f"{stage}/rootfs", f"{stage}/debian.sources", f"{stage}/inject"
    argv = ["mmdebstrap", "--mode=unshare",  # as root: a private mount namespace, nothing leaks on failure
            f"--variant={VARIANT}", "--format=directory", "--include=" + ",".join(pkgs),
            f"--hook-dir={hook_dir}", *(f"--dpkgopt={o}" for o in DPKG_OPTIONS),
            *(f"--customize-hook=copy-in {inject}/{rel} {inside}" for rel, inside in INJECT),
            "--", suite, rootfs, sources]
    return DebianPlan(suite=suite, packages=pkgs, key=build_key(suite, pkgs, agent_hash, builder_hash),
                      rootfs=rootfs, sources_file=sources, inject_dir=inject, argv=tuple(argv))


# ---- apt sources ---------------------------------------------------------------------------

@attrs.frozen
class AptSource:
    """One apt source entry (deb822 fields; a one-line entry converted)."""

    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    options: tuple[tuple[str, str], ...] = ()  # other fields, e.g. ("Signed-By", path)


_LIST_FIELDS = {"types", "uris", "suites", "components"}
_ONE_LINE_OPTIONS = {"arch": "Architectures", "lang": "Languages", "target": "Targets"}


def _field_name(option: str) -> str:
    return _ONE_LINE_OPTIONS.get(option) or "-".join(w.capitalize() for w in option.split("-"))


def parse_deb822(text: str) -> list[AptSource]:
    """Entries of a .sources file; disabled ones (Enabled: no) left out."""
    out = []
    for para in re.split(r"\n[ \t]*\n", text):
        fields, last = {}, None
        for line in para.splitlines():
            if line.startswith("#"):
                continue
            if line[:1] in (" ", "\t") and last:
                fields[last] += "\n" + line.strip()
                continue
            key, sep, value = line.partition(":")
            if sep and key.strip():
                last = key.strip()
                fields[last] = value.strip()
        lower = {k.lower(): (k, v) for k, v in fields.items()}
        if not {"types", "uris", "suites"} <= set(lower):
            continue
        if lower.get("enabled", ("", "yes"))[1].lower() == "no":
            continue
        lists = {k: tuple(lower[k][1].split()) if k in lower else () for k in _LIST_FIELDS}
        options = tuple((k, v) for k, v in fields.items() if k.lower() not in _LIST_FIELDS | {"enabled"})
        out.append(AptSource(options=options, **lists))
    return out


def parse_one_line(text: str) -> list[AptSource]:
    """Entries of a sources.list (`deb [opt=value ...] uri suite component...`)."""
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        options = []
        m = re.match(r"^(\S+)\s+\[([^\]]*)\]\s+(.*)$", line)
        if m:
            kind, opts, rest = m.groups()
            for opt in opts.split():
                key, _, value = opt.partition("=")
                options.append((_field_name(key.rstrip("+-")), value.replace(",", " ")))
        else:
            kind, _, rest = line.partition(" ")
        words = rest.split()
        if kind not in ("deb", "deb-src") or len(words) < 2:
            continue
        out.append(AptSource(types=(kind,), uris=(words[0],), suites=(words[1],),
                             components=tuple(words[2:]), options=tuple(options)))
    return out


def parse_os_release(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip().strip('"\'')
    return out


def host_codename(sources: list[AptSource], os_release: dict) -> str | None:
    """The host's Debian codename: from os-release, else the suite its Debian entries name most."""
    name = os_release.get("VERSION_CODENAME")
    if name:
        return name
    counts: dict[str, int] = {}
    for s in sources:
        if "main" in s.components:
            for suite in s.suites:
                base = suite.split("-", 1)[0].split("/", 1)[0]
                counts[base] = counts.get(base, 0) + 1
    return max(sorted(counts), key=lambda s: counts[s]) if counts else None


def mirror_sources(sources: list[AptSource], codename: str | None, suite: str) -> list[AptSource]:
    """The host's Debian entries (binary, with component main, for its own codename and its
    -updates/-security), pointed at suite instead. Other repositories are left out."""
    out = []
    for s in sources:
        if "deb" not in s.types or "main" not in s.components or codename is None:
            continue
        suites = []
        for host_suite in s.suites:
            base, sep, companion = host_suite.partition("-")
            if base != codename or (companion and companion not in _COMPANIONS):
                continue
            if companion and suite in _NO_COMPANIONS:
                continue
            if suite + sep + companion not in suites:
                suites.append(suite + sep + companion)
        if suites:
            out.append(attrs.evolve(s, types=("deb",), suites=tuple(suites)))
    return out


def render_deb822(sources: list[AptSource]) -> str:
    paras = []
    for s in sources:
        lines = [f"Types: {' '.join(s.types)}", f"URIs: {' '.join(s.uris)}",
                 f"Suites: {' '.join(s.suites)}", f"Components: {' '.join(s.components)}"]
        for key, value in s.options:
            first, *rest = value.split("\n")
            lines.append(f"{key}: {first}")
            lines += [f" {r}" if r else " ." for r in rest]
        paras.append("\n".join(lines) + "\n")
    return "\n".join(paras)


# ---- mmdebstrap's output -------------------------------------------------------------------

_NETWORK_RE = re.compile(r"Could not connect|Unable to connect|Could not resolve|Temporary failure "
                         r"resolving|Connection (timed out|refused)|Network is unreachable|No route to host")
# mmdebstrap's own summary lines, which say only that something failed.
_GENERIC_RE = re.compile(r"^E: (mmdebstrap failed|apt-get .*failed$|setup failed: E: apt-get|Some index "
                         r"files failed|run_chroot failed|.* failed to run$)")


def failure_reason(output: str) -> tuple[bool, list[str]]:
    """(is it the network?, the lines that say what went wrong) from mmdebstrap's output."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("E: ") and not _GENERIC_RE.match(line)]
    network = any(_NETWORK_RE.search(line) for line in errors)
    return network, (errors[:3] if errors else lines[-3:])
