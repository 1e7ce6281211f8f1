"""Helpers for bench/run.py: timing and statistics, the benchmark's own sandbox (data root,
bridges, lxcpaths) with a clean-up that undoes everything, and the generated test trees.

Nothing here is part of the library or its test suite.
"""
from __future__ import annotations

import glob
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import time

CACHE = "/var/tmp/appcontainers-bench-cache"
ROOT_PREFIX = "appcontainers-bench-run."
BRIDGES = ("acbench0", "acbench1")  # main service, reservations benchmark's service
SUBNETS = {"acbench0": "10.0.210.0/24", "acbench1": "10.0.224.0/20"}
HAND_VETH_PREFIX = "acbv"  # host-side veths of the hand-made (raw) containers


def log(msg: str = "") -> None:
    print(msg, flush=True)


def sh(argv, check=True, timeout=600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], check=check, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


# ---- statistics ---------------------------------------------------------------------

def stats(samples: list[float]) -> dict:
    s = sorted(samples)
    return {"median": statistics.median(s), "min": s[0], "max": s[-1], "n": len(s), "samples": samples}


def fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def fmt_stat(st: dict, unit: str = "s") -> str:
    if unit == "s":
        f = fmt_time
    elif unit == "MB/s":
        f = lambda v: f"{v:.0f} MB/s"  # noqa: E731
    elif unit == "MB":
        f = lambda v: f"{v:.1f} MB"  # noqa: E731
    else:
        f = lambda v: f"{v:.3g} {unit}"  # noqa: E731
    if st["n"] == 1:
        return f(st["median"])
    return f"{f(st['median'])} [{f(st['min'])} .. {f(st['max'])}]"


def timed(fn, *args, **kw) -> tuple[float, object]:
    t0 = time.perf_counter()
    value = fn(*args, **kw)
    return time.perf_counter() - t0, value


def paired(a, b, reps: int, warmup: int = 1, setup_a=None, teardown_a=None,
           setup_b=None, teardown_b=None) -> tuple[list[float], list[float]]:
    """Time a() and b() alternately (a, b, b, a, a, b, ...) so drift on this noisy machine hits
    both alike; setup_*/teardown_* run untimed around each call. Warm-up rounds are dropped."""
    ta, tb = [], []

    def one(fn, setup, teardown, out):
        if setup:
            setup()
        try:
            dt, _ = timed(fn)
        finally:
            if teardown:
                teardown()
        if out is not None:
            out.append(dt)

    for i in range(warmup + reps):
        keep = i >= warmup
        order = [(a, setup_a, teardown_a, ta), (b, setup_b, teardown_b, tb)]
        if i % 2:
            order.reverse()
        for fn, setup, teardown, out in order:
            one(fn, setup, teardown, out if keep else None)
    return ta, tb


# ---- /proc and mounts ------------------------------------------------------------------

def mounts() -> list[tuple[str, str]]:
    """(mount point, fstype) in mount order, octal escapes undone: the library's own reading."""
    from appcontainers.adapters.mounts.mountinfo import mounts as library_mounts

    return library_mounts()


def mounted_under(prefix: str) -> list[tuple[str, str]]:
    prefix = prefix.rstrip("/") + "/"
    return [(p, t) for p, t in mounts() if p.startswith(prefix) or p == prefix[:-1]]


def memory_of(pids) -> dict:
    """Summed PSS and RSS (bytes) of pids, from /proc/PID/smaps_rollup."""
    pss = rss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
                    elif line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return {"pss": pss, "rss": rss}


def cgroup_pids(name: str) -> list[int]:
    """Every process of LXC container name, from its cgroup (v1 pids controller, else unified)."""
    for base in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        top = os.path.join(base, f"lxc.payload.{name}")
        if os.path.isdir(top):
            pids = set()
            for d, _dirs, files in os.walk(top):
                if "cgroup.procs" in files:
                    with open(os.path.join(d, "cgroup.procs")) as f:
                        pids.update(int(x) for x in f.read().split())
            return sorted(pids)
    return []


# ---- the sandbox and its clean-up ---------------------------------------------------------

class Sandbox:
    """The benchmark's own temporary data root under /var/tmp, its bridges and lxcpaths.

    cleanup() undoes everything, in an order that works whatever state a failure left:
    registered callbacks (newest first), then containers in every lxcpath under the root
    killed, FUSE and kernel mounts under the root unmounted (deepest first), loop devices
    backed by files under the root or the cache detached, veths on our bridges and our
    hand-made veths deleted, the bridges deleted, the root removed.
    """

    def __init__(self):
        self.sweep_stale()
        import tempfile
        self.root = tempfile.mkdtemp(prefix=ROOT_PREFIX, dir="/var/tmp")
        os.chmod(self.root, 0o711)  # unprivileged containers' roots pass through to their rootfs
        with open(os.path.join(self.root, "owner.pid"), "w") as f:
            f.write(str(os.getpid()))
        self._callbacks: list = []
        self.clean = False

    def path(self, *parts) -> str:
        p = os.path.join(self.root, *parts)
        return p

    def on_cleanup(self, fn, *args) -> None:
        self._callbacks.append((fn, args))

    @classmethod
    def sweep_stale(cls) -> None:
        """Remove what an earlier run killed with SIGKILL left (its owner pid is gone)."""
        for name in os.listdir("/var/tmp"):
            if not name.startswith(ROOT_PREFIX):
                continue
            root = os.path.join("/var/tmp", name)
            try:
                with open(os.path.join(root, "owner.pid")) as f:
                    pid = int(f.read().strip())
                if os.path.exists(f"/proc/{pid}"):
                    continue  # another bench run is alive: not ours to touch
            except (OSError, ValueError):
                pass
            log(f"removing a stale bench root {root}")
            cls._teardown_root(root, bridges=BRIDGES)

    def cleanup(self) -> list[str]:
        """Undo everything; returns what could not be undone (empty when clean)."""
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop the clean-up
        try:
            while self._callbacks:
                fn, args = self._callbacks.pop()
                try:
                    fn(*args)
                except Exception as e:  # noqa: BLE001 - keep cleaning
                    log(f"  clean-up step {getattr(fn, '__name__', fn)} failed: {e}")
            problems = self._teardown_root(self.root, bridges=BRIDGES)
            self.clean = not problems
            return problems
        finally:
            signal.signal(signal.SIGINT, old)

    @staticmethod
    def _teardown_root(root: str, bridges) -> list[str]:
        problems = []
        # 1. containers, in every lxcpath we use (root/containers, root/*/containers).
        for lxcpath in glob.glob(os.path.join(root, "containers")) + glob.glob(os.path.join(root, "*", "containers")):
            for name in os.listdir(lxcpath):
                if os.path.isdir(os.path.join(lxcpath, name)):
                    sh(["lxc-stop", "-P", lxcpath, "-n", name, "-k"], check=False, timeout=60)
        # 2. mounts, deepest first: FUSE with fusermount3, others with umount (lazy as a last resort).
        for _ in range(5):
            points = mounted_under(root)
            if not points:
                break
            for point, kind in sorted(points, key=lambda pt: len(pt[0]), reverse=True):
                if kind.startswith("fuse"):
                    sh(["fusermount3", "-u", point], check=False, timeout=30)
                else:
                    sh(["umount", point], check=False, timeout=60)
            if mounted_under(root):
                time.sleep(0.3)
        for point, kind in sorted(mounted_under(root), key=lambda pt: len(pt[0]), reverse=True):
            sh(["umount", "-l", point], check=False, timeout=60)
        if mounted_under(root):
            problems.append(f"mounts left under {root}: {mounted_under(root)}")
        # 3. loop devices backed by our files.
        for dev, backing in loop_devices():
            if backing.startswith(root + "/") or backing.startswith(CACHE + "/"):
                sh(["losetup", "-d", dev], check=False)
        # 4. veths: on our bridges, and the hand-made ones; then the bridges.
        for bridge in bridges:
            try:
                ports = os.listdir(f"/sys/class/net/{bridge}/brif")
            except FileNotFoundError:
                ports = []
            for port in ports:
                sh(["ip", "link", "del", port], check=False)
        for link in os.listdir("/sys/class/net"):
            if link.startswith(HAND_VETH_PREFIX):
                sh(["ip", "link", "del", link], check=False)
        for bridge in bridges:
            if os.path.exists(f"/sys/class/net/{bridge}"):
                sh(["ip", "link", "del", bridge], check=False)
                if os.path.exists(f"/sys/class/net/{bridge}"):
                    problems.append(f"bridge {bridge} is still there")
        # 5. the root itself.
        if not mounted_under(root):
            shutil.rmtree(root, ignore_errors=True)
        if os.path.exists(root):
            problems.append(f"{root} could not be removed")
        return problems


def loop_devices() -> list[tuple[str, str]]:
    proc = sh(["losetup", "-J", "-l"], check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return []
    data = json.loads(proc.stdout)
    return [(d["name"], d.get("back-file") or "") for d in data.get("loopdevices", [])]


def leftovers() -> dict:
    """What the final check looks at (the brief's list), restricted to what could be ours."""
    loops = [f"{d} {b}" for d, b in loop_devices() if ROOT_PREFIX in b or CACHE in b]
    mnts = [f"{p} ({t})" for p, t in mounts()
            if (t in ("overlay", "squashfs") or t.startswith("fuse")) and (ROOT_PREFIX in p or CACHE in p)]
    links = [n for n in os.listdir("/sys/class/net") if n in BRIDGES or n.startswith(HAND_VETH_PREFIX)]
    roots = [n for n in os.listdir("/var/tmp") if n.startswith(ROOT_PREFIX)]
    return {"loop devices": loops, "mounts": mnts, "links": links, "roots": roots}


# ---- generated trees ------------------------------------------------------------------------

TREES = {
    # name: (small files, (count, MiB) of random large files, (count, MiB) of text large files)
    "full": (15000, (4, 25), (4, 30)),        # ~300 MB
    "full3x": (45000, (12, 25), (12, 30)),    # ~900 MB, distinct content (squashfs dedups copies)
    "quick": (3000, (2, 10), (2, 10)),        # ~55 MB
}
TREE_VERSION = 1


def _corpus() -> bytes:
    """A few MB of real text (the stdlib's sources): compresses like real files do (~3-4x)."""
    stdlib = sysconfig.get_paths()["stdlib"]
    parts, total = [], 0
    for dirpath, _dirs, files in os.walk(stdlib):
        for f in sorted(files):
            if f.endswith(".py"):
                with open(os.path.join(dirpath, f), "rb") as fh:
                    data = fh.read()
                parts.append(data)
                total += len(data)
                if total > 6 << 20:
                    return b"".join(parts)
    return b"".join(parts)


def _text(rng: random.Random, corpus: bytes, n: int) -> bytes:
    out, left = [], n
    while left > 0:
        k = min(left, rng.randint(4096, 65536))
        at = rng.randrange(0, len(corpus) - k)
        out.append(corpus[at:at + k])
        left -= k
    return b"".join(out)


def ensure_tree(kind: str) -> dict:
    """The cached tree `kind` (generated once) and its tar: {"dir", "tar", "bytes", "files"}."""
    small, (nrand, mrand), (ntext, mtext) = TREES[kind]
    base = os.path.join(CACHE, f"tree-{kind}-v{TREE_VERSION}")
    info_path = base + ".json"
    if os.path.exists(info_path):
        with open(info_path) as f:
            info = json.load(f)
        if os.path.isdir(info["dir"]) and os.path.exists(info["tar"]):
            return info
    shutil.rmtree(base, ignore_errors=True)
    for p in (base + ".tar", base + ".tar.tmp"):
        if os.path.exists(p):
            os.unlink(p)
    os.makedirs(base)
    log(f"  generating the {kind} tree in {base} (once; cached) ...")
    t0 = time.perf_counter()
    rng = random.Random(f"appcontainers-bench-{kind}")
    corpus = _corpus()
    total, files = 0, 0
    for i in range(small):
        d = os.path.join(base, "data", "small", f"d{i // 50:04d}")
        if i % 50 == 0:
            os.makedirs(d)
        size = min(int(rng.lognormvariate(8.0, 1.1)), 64 << 10)  # median ~3 KB, mean ~5 KB
        binary = rng.random() < 0.1
        data = rng.randbytes(size) if binary else _text(rng, corpus, size)
        with open(os.path.join(d, f"f{i:06d}.{'bin' if binary else 'txt'}"), "wb") as f:
            f.write(data)
        total, files = total + size, files + 1
    big = os.path.join(base, "data", "big")
    os.makedirs(big)
    for kind_, count, mib in (("rand", nrand, mrand), ("text", ntext, mtext)):
        for i in range(count):
            path = os.path.join(big, f"{kind_}-{i:02d}.{'bin' if kind_ == 'rand' else 'txt'}")
            with open(path, "wb") as f:
                for _ in range(mib):
                    f.write(rng.randbytes(1 << 20) if kind_ == "rand" else _text(rng, corpus, 1 << 20))
            total, files = total + (mib << 20), files + 1
    sh(["tar", "-cf", base + ".tar.tmp", "-C", base, "."], timeout=1800)
    os.replace(base + ".tar.tmp", base + ".tar")
    info = {"dir": base, "tar": base + ".tar", "bytes": total, "files": files,
            "big": sorted(os.path.join("data", "big", f) for f in os.listdir(big))}
    with open(info_path + ".tmp", "w") as f:
        json.dump(info, f)
    os.replace(info_path + ".tmp", info_path)
    log(f"  generated {files} files, {total / 1e6:.0f} MB in {time.perf_counter() - t0:.1f} s")
    return info


def python_exe() -> str:
    return sys.executable
