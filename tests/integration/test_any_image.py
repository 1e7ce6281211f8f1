"""Any image runs under the agent: images without Python (busybox-static only) or with musl
instead of glibc, made here with the codec as the OCI importer makes them (init [], a RunConfig),
run under the agent's runtime bound read-only at /.appcontainers."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
import urllib.request

import pytest

from appcontainers.adapters.aimg.squashfs import SquashfsCodec
from appcontainers.adapters.bases.busybox_base import find_busybox
from appcontainers.domain.exceptions import InvalidValue
from tests.contract.runtime import RuntimeBuilderContract

MUSL_LOADER = "/lib/ld-musl-x86_64.so.1"
HELLO_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd)) return 9;
    const char *g = getenv("GREETING"), *py = getenv("PYTHONHOME");
    printf("greeting=%s cwd=%s uid=%d pythonhome=%s", g ? g : "-", cwd, (int)getuid(), py ? py : "-");
    for (int i = 1; i < argc; i++) printf(" arg=%s", argv[i]);
    printf("\n");
    return argc - 1;
}
"""
# What may differ between an image's tree and the container's: the kernel's filesystems, the
# files the host binds in and the runtime's mount point.
EXCLUDED = ("/proc", "/sys", "/dev", "/run", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/.appcontainers")


def _manifest(name: str, config: dict) -> dict:
    return {"format_version": 1, "name": name, "created": time.time(), "parent": None, "startup_commands": [],
            "environment": {}, "host_binds": [], "base": None, "init": [], "config": config}


def _busybox_tree(root: str) -> None:
    """Only busybox-static and its applet links: no libc, no Python, no /etc, no /proc."""
    os.makedirs(f"{root}/bin")
    shutil.copy2(find_busybox(), f"{root}/bin/busybox")
    applets = subprocess.run([f"{root}/bin/busybox", "--list"], capture_output=True, text=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            os.symlink("busybox", f"{root}/bin/{applet}")
    os.makedirs(f"{root}/www")
    with open(f"{root}/www/index.html", "w") as f:
        f.write("served-by-default-command\n")
    os.makedirs(f"{root}/data/sub")
    with open(f"{root}/data/sub/file", "w") as f:
        f.write("content\n")
    os.chmod(f"{root}/data/sub/file", 0o640)
    os.chown(f"{root}/data/sub/file", 1234, 5678)


def _musl_tree(root: str, work: str) -> None:
    """A musl program and the musl loader: no shell, no Python, no glibc."""
    src = os.path.join(work, "hello.c")
    with open(src, "w") as f:
        f.write(HELLO_C)
    os.makedirs(f"{root}/app")
    os.makedirs(f"{root}/lib")
    os.makedirs(f"{root}/work/here")
    subprocess.run(["musl-gcc", "-O1", "-o", f"{root}/app/hello", src], check=True)
    shutil.copy2(os.path.realpath(MUSL_LOADER), f"{root}{MUSL_LOADER}")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """{kind: .aimg path} for a busybox-only image and a musl image."""
    if shutil.which("musl-gcc") is None:
        pytest.skip("musl-tools is not installed (scripts/setup-host installs it)")
    work = tmp_path_factory.mktemp("anyimage")
    codec = SquashfsCodec()
    made = {}
    bb = str(work / "bb")
    _busybox_tree(bb)
    made["busybox"] = (bb, str(work / "bb.aimg"))
    codec.pack(bb, _manifest("o2-busybox", {
        "env": {"PATH": "/bin", "FROM_IMAGE": "yes"}, "cmd": ["httpd", "-f", "-p", "8080", "-h", "/www"],
        "workdir": "/data", "exposed_ports": ["8080/tcp"]}), made["busybox"][1], level=1)
    musl = str(work / "musl")
    _musl_tree(musl, str(work))
    made["musl"] = (musl, str(work / "musl.aimg"))
    codec.pack(musl, _manifest("o2-musl", {
        "env": {"GREETING": "hi from musl", "PATH": "/app"}, "entrypoint": ["/app/hello"],
        "cmd": ["default-arg"], "workdir": "/work/here", "user": "1000"}), made["musl"][1], level=1)
    return made


@pytest.fixture
def made(svc):
    """Containers a test makes, destroyed after it whatever happens."""
    containers: list = []
    yield containers
    for c in containers:
        try:
            c.destroy()
        except Exception:
            pass


def _load(svc, made, images, kind, **kw):
    c = svc.load_image(images[kind][1], **kw)
    made.append(c)
    return c


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as f:
            return f.read().decode().strip()
    except OSError:
        return None


class TestBusyboxOnly:
    def test_runs_commands_with_output_and_exit_codes(self, svc, made, images):
        """A busybox-only image (no Python, no libc) runs commands under the agent: output, exit
        code, the image's env and workdir; nothing of the runtime's env reaches them."""
        c = _load(svc, made, images, "busybox")
        r = c.run("echo out; echo err >&2; pwd; echo $FROM_IMAGE; exit 7")
        assert (r.exit_code, r.stdout, r.stderr) == (7, "out\n/data\nyes\n", "err\n")
        env = c.run(["env"]).stdout
        assert "FROM_IMAGE=yes" in env
        assert not [line for line in env.splitlines() if line.startswith(("PYTHON", "LD_"))], env
        assert c.run(["cat", "/data/sub/file"], cwd="/").stdout == "content\n"

    def test_startup_command_runs_at_start(self, svc, made, images):
        """A startup command (a shell string: the image has busybox's sh) runs at every start."""
        c = _load(svc, made, images, "busybox")
        c.add_startup_command("echo started >> /data/started")
        c.start()
        deadline = time.monotonic() + 10
        while c.run(["cat", "/data/started"]).stdout != "started\n" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert c.run(["cat", "/data/started"]).stdout == "started\n"

    def test_the_tree_is_the_images_apart_from_the_listed_paths(self, svc, made, images):
        """Walked inside the container, the tree is the image's (paths, types, modes, owners,
        contents) apart from /proc, /sys, /dev, /run, /etc/{hostname,hosts,resolv.conf} and the
        runtime's mount point."""
        c = _load(svc, made, images, "busybox")
        listing = c.run("find / -xdev | while read -r p; do "
                        "if [ -f \"$p\" ] && [ ! -L \"$p\" ]; then s=$(md5sum < \"$p\" | cut -c1-32); else s=-; fi; "
                        "echo \"$p $(stat -c '%f %u %g' \"$p\") $s\"; done", timeout=120)
        assert listing.exit_code == 0, listing.stderr
        inside = {}
        for line in listing.stdout.splitlines():
            path, mode, uid, gid, digest = line.rsplit(" ", 4)
            inside[path] = (int(mode, 16), int(uid), int(gid), digest)
        assert "/.appcontainers" in inside and "/proc" in inside, "precondition: the mount points are seen"
        expected = _walk(images["busybox"][0])
        # /etc is made (empty but for the bound files) when the image has none
        kept = {p: v for p, v in inside.items() if not _excluded(p) and not (p == "/etc" and p not in expected)}
        assert kept == expected

    @pytest.mark.parametrize("privileged", [False, True])
    def test_nothing_of_the_runtime_is_writable_from_inside(self, svc, made, images, privileged):
        """Root in the container (unprivileged, or the host's root with privileged=True) can read
        the runtime but cannot write, replace, remove or remount it; the host's files are unchanged."""
        c = _load(svc, made, images, "busybox", privileged=privileged)
        target = "/.appcontainers/bin/python"
        assert c.run(["test", "-r", target]).exit_code == 0, "precondition: the runtime is there and readable"
        host = _runtime_file(svc, "bin/python")
        before = _digest(host)
        attacks = [f"echo x > {target}", f"echo x >> {target}", f"rm -f {target}", f"mv {target} /tmp-x",
                   f"touch /.appcontainers/new", f"chmod 777 {target}",
                   "mount -o remount,rw /.appcontainers", "umount /.appcontainers",
                   f"cp /bin/busybox {target}"]
        failed = {attack: c.run(attack).exit_code != 0 for attack in attacks}
        assert all(failed.values()), failed
        assert c.run(["test", "-r", target]).exit_code == 0
        [line] = [l for l in c.run("cat /proc/self/mountinfo").stdout.splitlines() if " /.appcontainers " in l]
        options = set(line.split()[5].split(","))
        assert {"ro", "nosuid", "nodev"} <= options, line
        assert _digest(host) == before
        assert not os.path.exists(os.path.join(os.path.dirname(os.path.dirname(host)), "new"))
        assert stat.S_IMODE(os.stat(host).st_mode) == 0o555 and os.stat(host).st_uid == 0

    def test_start_default_and_publish_all(self, svc, made, images):
        """provision(image=NAME, start_default=True, publish_all=True): the default command
        (busybox httpd on 8080) runs at start, and the exposed 8080/tcp is published on a free
        host port the host reaches over loopback."""
        _load(svc, made, images, "busybox", name="o2-bb-src")
        c = svc.provision(image="o2-busybox", start_default=True, publish_all=True)
        made.append(c)
        info = c.info()
        [spec] = info["ports"]
        host_port = int(spec.split(":")[0])
        assert spec == f"{host_port}:8080/tcp" and 32768 <= host_port <= 60999
        c.start()
        deadline = time.monotonic() + 15
        while _get(f"http://127.0.0.1:{host_port}/") is None and time.monotonic() < deadline:
            time.sleep(0.3)
        assert _get(f"http://127.0.0.1:{host_port}/") == "served-by-default-command"


class TestMusl:
    def test_default_command_with_env_workdir_and_user(self, svc, made, images):
        """run with no command runs the musl program (entrypoint + cmd) in its workdir, with its
        env and user; args replace cmd and keep the entrypoint; a given command runs as given."""
        c = _load(svc, made, images, "musl")
        r = c.run()
        assert r.stdout == "greeting=hi from musl cwd=/work/here uid=1000 pythonhome=- arg=default-arg\n", r.stderr
        assert r.exit_code == 1
        r = c.run(args=["a", "b"], env={"GREETING": "over"})
        assert (r.exit_code, r.stdout) == (2, "greeting=over cwd=/work/here uid=1000 pythonhome=- arg=a arg=b\n")
        r = c.run(["/app/hello", "x"], cwd="/", user="0")
        assert r.stdout == "greeting=hi from musl cwd=/ uid=0 pythonhome=- arg=x\n"
        r = c.run("echo no shell here")
        assert r.exit_code == 127  # no /bin/sh in the image, as it should be

    def test_cli_run_without_a_command(self, svc, made, images, settings):
        """`appcontainers run NAME` runs the default command, its output and exit code."""
        c = _load(svc, made, images, "musl")
        env = {**os.environ, "APPCONTAINERS_ROOT": settings["root"], "APPCONTAINERS_BRIDGE": settings["bridge"],
               "APPCONTAINERS_SUBNET": settings["subnet"]}
        out = subprocess.run([sys.executable, "-m", "appcontainers.entrypoints.cli", "run", c.name],
                             env=env, capture_output=True, text=True, timeout=120)
        assert (out.returncode, out.stdout) == (1, "greeting=hi from musl cwd=/work/here uid=1000 pythonhome=- "
                                                   "arg=default-arg\n"), out.stderr

    def test_saved_container_carries_the_config_on(self, svc, made, images, tmp_path):
        """A container saved from a musl image, flattened or layered, keeps its run config: a
        container of the saved image runs the same default command."""
        c = _load(svc, made, images, "musl")
        c.stop()
        for flatten in (True, False):
            path = str(tmp_path / f"saved-{flatten}.aimg")
            image = c.save_image(path, flatten=flatten, name=f"o2-saved-{int(flatten)}")
            assert image.manifest.config.entrypoint == ("/app/hello",)
            d = svc.load_image(path)
            made.append(d)
            assert d.run().stdout.startswith("greeting=hi from musl cwd=/work/here uid=1000")

    def test_image_by_id_prefix_and_ambiguous_name(self, svc, made, images):
        """provision(image=) takes an id prefix; a name two images share is refused, naming them."""
        c = _load(svc, made, images, "musl")
        d = svc.provision(image=c.image[:12])
        made.append(d)
        assert d.image == c.image
        assert d.run().stdout.startswith("greeting=hi from musl")
        e = _load(svc, made, images, "busybox")
        with pytest.raises(InvalidValue, match="give the id"):
            _rename_clash(svc, e.image, "o2-musl")
            svc.provision(image="o2-musl")


class TestFuse:
    def test_the_runtime_serves_a_fuse_container(self, settings, made, images):
        """mounter="fuse" (squashfuse + fuse-overlayfs, ids shifted by fuse-overlayfs): the musl
        image's default command runs under the runtime; the runtime stays read-only."""
        import appcontainers
        from appcontainers.adapters.mounts.fuse_overlay import fuse_available
        from appcontainers.adapters.mounts.mountinfo import mounts

        if not fuse_available():
            pytest.skip("needs /dev/fuse, squashfuse and fuse-overlayfs")
        fsvc = appcontainers.setup_service(**settings, mounter="fuse")
        c = _load(fsvc, made, images, "musl")
        assert dict(mounts()).get(os.path.join(settings["root"], "mnt", c.name, "rootfs")) == "fuse.fuse-overlayfs"
        assert c.run().stdout == "greeting=hi from musl cwd=/work/here uid=1000 pythonhome=- arg=default-arg\n"
        b = _load(fsvc, made, images, "busybox")
        assert b.run("echo x > /.appcontainers/bin/python; echo $?").stdout.strip() != "0"
        assert b.run(["cat", "/data/sub/file"]).stdout == "content\n"


def _rename_clash(svc, image_id: str, name: str) -> None:
    """Give a stored image a name another image has (as two imports of one tag would)."""
    import attrs

    with svc.ports.repo.transaction() as state:
        img = state.images[image_id]
        state.images[image_id] = attrs.evolve(img, manifest=attrs.evolve(img.manifest, name=name))


def _walk(root: str) -> dict[str, tuple[int, int, int, str]]:
    """(st_mode, uid, gid, md5 of a regular file's content or -) of every path of a tree."""
    found = {"/": _entry(root)}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            full = os.path.join(dirpath, n)
            found["/" + os.path.relpath(full, root)] = _entry(full)
    return found


def _entry(path: str) -> tuple[int, int, int, str]:
    st = os.lstat(path)
    digest = "-"
    if stat.S_ISREG(st.st_mode):
        with open(path, "rb") as f:
            digest = hashlib.md5(f.read()).hexdigest()
    return st.st_mode, st.st_uid, st.st_gid, digest


def _excluded(path: str) -> bool:
    return any(path == x or path.startswith(x + "/") for x in EXCLUDED)


def _runtime_file(svc, rel: str) -> str:
    from appcontainers.config import Layout

    layout = Layout(svc.settings.root)
    key = svc.ports.runtime.key()
    return os.path.join(layout.runtime(key), rel)


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_runtime_report(svc, made, images):
    """Start times (printed): a runtime container vs a default-base one; both answer."""
    times = {}
    for kind in ("busybox", "default"):
        c = _load(svc, made, images, kind) if kind != "default" else svc.provision()
        if kind == "default":
            made.append(c)
        t = time.monotonic()
        c.start()
        times[kind] = time.monotonic() - t
        assert c.run(["true"]).exit_code == 0
    print(json.dumps({"start_seconds": times}))


class TestRuntimeBuilder(RuntimeBuilderContract):
    """The real builder (about 5 s a build); the tree is sealed: root's, read-only."""

    class World:
        def __init__(self, base):
            self.base = base

        def path(self, name):
            return os.path.join(self.base, name)

        def exists(self, path):
            return os.path.exists(path)

    @pytest.fixture
    def world(self, tmp_path):
        yield self.World(str(tmp_path))
        for dirpath, _dirs, _files in os.walk(tmp_path):  # sealed: writable again to be removed
            os.chmod(dirpath, 0o755)

    @pytest.fixture
    def runtime(self):
        from appcontainers.adapters.bases.runtime import RuntimeBuilder
        return RuntimeBuilder()

    def test_the_tree_is_sealed_and_runs_the_agent(self, runtime, world):
        """(The real adapter) every file root's and not writable; its loader runs its Python,
        which imports zmq and the agent from the tree alone, with an empty environment."""
        dest = world.path("runtime")
        runtime.build(dest)
        for dirpath, dirs, files in os.walk(dest):
            for n in [*dirs, *files]:
                st = os.lstat(os.path.join(dirpath, n))
                assert st.st_uid == 0 and not st.st_mode & 0o222, os.path.join(dirpath, n)
        code = "import sys, zmq, appcontainers_agent.server; print(sys.prefix, zmq.__file__)"
        out = subprocess.run([f"{dest}/lib/ld.so", "--inhibit-cache", "--library-path", f"{dest}/lib",
                              f"{dest}/bin/python", "-I", "-S", "-c", code], env={}, capture_output=True,
                             text=True, timeout=60)
        assert out.stdout.split() == [dest, f"{dest}/lib/python{sys.version_info[0]}.{sys.version_info[1]}/zmq/__init__.py"], out.stderr
