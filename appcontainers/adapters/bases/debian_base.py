"""A Debian base built with mmdebstrap from the mirror this host's apt uses, carrying the agent,
run by Debian's own python3 and python3-zmq (no host binds). The plan is debian_plan.py's data;
this module reads the host's apt sources, runs the plan and packs the result.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import shutil
import tempfile

from ...domain.exceptions import BaseBuildFailed
from . import debian_plan as dp
from ..mounts import mountinfo
from ..host import process

AGENT_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "agent")
_BUILDER_FILES = (os.path.abspath(__file__), os.path.abspath(dp.__file__))
_STAGE_PREFIX = "debian-"
_STAGE_RE = re.compile(r"^debian-(\d+)-")
# Run in the new rootfs by its python3: compile the agent, then prove it imports with Debian's zmq
# and that this zmq can authenticate it (CURVE).
_CHECK = ("import compileall, sys\n"
          f"ok = compileall.compile_dir({dp.TOOLS_DIR!r}, quiet=1)\n"
          "sys.dont_write_bytecode = True\n"
          "import zmq, appcontainers_agent.server\n"
          "if not zmq.has('curve'):\n"
          "    sys.exit('this libzmq has no CURVE: the host could not authenticate the agent')\n"
          "print('python', sys.version.split()[0], 'pyzmq', zmq.__version__, 'libzmq', zmq.zmq_version())\n"
          "sys.exit(0 if ok else 1)\n")


def tree_hash(paths) -> str:
    """sha256 over the names and contents of the given files, in sorted order."""
    h = hashlib.sha256()
    for path in sorted(paths):
        with open(path, "rb") as f:
            h.update(os.path.basename(path).encode() + b"\0" + hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def agent_files() -> list[str]:
    return sorted(glob.glob(os.path.join(AGENT_SRC, "*.py")))


def read_host_sources(apt_etc: str = "/etc/apt") -> list[dp.AptSource]:
    """The host's apt entries, as apt reads them: sources.list, then sources.list.d/*.list|*.sources."""
    entries = []
    main = os.path.join(apt_etc, "sources.list")
    if os.path.isfile(main):
        with open(main) as f:
            entries += dp.parse_one_line(f.read())
    for path in sorted(glob.glob(os.path.join(apt_etc, "sources.list.d", "*"))):
        parse = (dp.parse_one_line if path.endswith(".list") else
                 dp.parse_deb822 if path.endswith(".sources") else None)
        if parse and os.path.isfile(path):
            with open(path) as f:
                entries += parse(f.read())
    return entries


def empty_placeholders(rootfs: str, names=dp.EMPTY_FILES) -> None:
    """Replace each of names (relative paths) in rootfs by an empty regular file, 0644: whatever
    was there (mmdebstrap leaves the build host's resolv.conf, or a symlink) is unlinked, never
    followed or kept."""
    for rel in names:
        parent, name = os.path.split(rel)
        dfd = os.open(os.path.join(rootfs, parent), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dfd)
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dfd)
            os.fchmod(fd, 0o644)
            os.close(fd)
        finally:
            os.close(dfd)


def _remove_stage(stage: str) -> None:
    """Remove a stage directory, never through something still mounted in it."""
    for point in sorted(mountinfo.mounted_under(stage), key=len, reverse=True):
        process.run(["umount", "-l", point], check=False, timeout=30)
    if mountinfo.mounted_under(stage):
        return  # leave it rather than delete through a mount; reported by nobody, harmless
    shutil.rmtree(stage, ignore_errors=True)


class DebianBaseBuilder:
    """Builds Debian bases with a codec; needs the mirror apt uses on this host (30-60 s)."""

    def __init__(self, codec, workdir: str, level: int = 3, timeout: float = 1800,
                 apt_etc: str = "/etc/apt", os_release: str = "/etc/os-release",
                 hook_dir: str = dp.MERGED_USR_HOOKS):
        self.codec, self.workdir, self.level, self.timeout = codec, workdir, level, timeout
        self.apt_etc, self.os_release, self.hook_dir = apt_etc, os_release, hook_dir

    def _plan(self, suite: str, include, stage: str = "/nonexistent") -> dp.DebianPlan:
        return dp.plan(suite, include, agent_hash=tree_hash(agent_files()),
                       builder_hash=tree_hash(_BUILDER_FILES), stage=stage, hook_dir=self.hook_dir)

    def key(self, suite: str, include=()) -> str:
        """The build key of suite plus include (cheap: hashes a few local files)."""
        return self._plan(suite, include).key

    def mirror(self, suite: str) -> str:
        """The deb822 sources the build uses: the host's Debian entries, for suite."""
        entries = read_host_sources(self.apt_etc)
        release = {}
        if os.path.isfile(self.os_release):
            with open(self.os_release) as f:
                release = dp.parse_os_release(f.read())
        found = dp.mirror_sources(entries, dp.host_codename(entries, release), suite)
        if not found:
            raise BaseBuildFailed(f"no Debian mirror in this host's apt sources ({self.apt_etc}/sources.list "
                                  f"or sources.list.d/*.list, *.sources): configure apt first")
        return dp.render_deb822(found)

    def build(self, dest: str, name: str, created: float, suite: str = "bookworm", include=(),
              progress=None) -> tuple[str, dict]:
        """Build and pack the base into dest; returns (image id, manifest dict).

        progress, if given, is called with one line of text per step."""
        say = progress or (lambda text: None)
        os.makedirs(self.workdir, exist_ok=True)
        self._remove_stale_stages()
        sources = self.mirror(dp.validate_suite(suite))
        stage = tempfile.mkdtemp(prefix=f"{_STAGE_PREFIX}{os.getpid()}-", dir=self.workdir)
        try:
            plan = self._plan(suite, include, stage)
            self._stage(plan, sources)
            say(f"mmdebstrap: {plan.suite} with {', '.join(plan.packages)}")
            self._mmdebstrap(plan, say)
            say("checking the agent under the image's python3")
            say(self._check(plan.rootfs))
            empty_placeholders(plan.rootfs)
            manifest = {"format_version": 1, "name": name, "created": created, "parent": None,
                        "startup_commands": [], "environment": {}, "host_binds": [], "base": name,
                        "init": [dp.INIT], "build_key": plan.key}
            last = [-1]

            def packing(pct):
                if pct >= last[0] + 20 or pct == 100:
                    last[0] = pct
                    say(f"packing: {int(pct)}%")

            image_id = self.codec.pack(plan.rootfs, manifest, dest, level=self.level,
                                       excludes=plan.trim, progress=packing)
            return image_id, manifest
        finally:
            _remove_stage(stage)

    def _remove_stale_stages(self) -> None:
        """Stages of builds whose process died (killed mid-build)."""
        for entry in os.listdir(self.workdir):
            m = _STAGE_RE.match(entry)
            if m and not os.path.exists(f"/proc/{m.group(1)}"):
                _remove_stage(os.path.join(self.workdir, entry))

    def _stage(self, plan: dp.DebianPlan, sources: str) -> None:
        with open(plan.sources_file, "w") as f:
            f.write(sources)
        tools = os.path.join(plan.inject_dir, dp.TOOLS_DIR.lstrip("/"))
        shutil.copytree(AGENT_SRC, os.path.join(tools, "appcontainers_agent"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for rel, (text, mode) in dp.INJECT_FILES.items():
            path = os.path.join(plan.inject_dir, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, mode)
        for root, dirs, files in os.walk(plan.inject_dir):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
            for n in files:
                if os.path.relpath(os.path.join(root, n), plan.inject_dir) not in dp.INJECT_FILES:
                    os.chmod(os.path.join(root, n), 0o644)

    def _mmdebstrap(self, plan: dp.DebianPlan, say) -> None:
        def on_line(_stream, line):
            if line.startswith("I: "):
                say("mmdebstrap: " + line[3:])

        code, out, err = process.stream(plan.argv, timeout=self.timeout, on_line=on_line)
        if code == 0:
            return
        output = (out[-65536:] + err[-65536:]).decode(errors="replace")
        network, lines = dp.failure_reason(output)
        detail = " | ".join(lines) or f"mmdebstrap exited with {code}"
        if network:
            raise BaseBuildFailed(f"the Debian mirror this host's apt uses is unreachable ({detail}); "
                                  f"check the network and {self.apt_etc}/sources.list(.d)", output)
        raise BaseBuildFailed(f"mmdebstrap failed for suite {plan.suite!r} with packages "
                              f"{', '.join(plan.packages)}: {detail}", output)

    def _check(self, rootfs: str) -> str:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": dp.TOOLS_DIR, "LC_ALL": "C"}
        proc = process.run(["chroot", rootfs, dp.PYTHON, "-c", _CHECK], env=env, timeout=300, check=False)
        text = (proc.stdout + proc.stderr).decode(errors="replace").strip()
        if proc.returncode != 0:
            tail = " | ".join(text.splitlines()[-3:])
            raise BaseBuildFailed(f"the agent does not run under the image's {dp.PYTHON}: {tail}", text)
        return text.splitlines()[-1] if text else "agent ok"
