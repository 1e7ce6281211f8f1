#!/usr/bin/env python3
"""appcontainers benchmarks: each library operation against the raw tool doing the same work,
measured in the same run, reported as a ratio. Not part of the test suite.

    make bench                                  # everything (~6-10 min; first run also builds the cache)
    .venv/bin/python bench/run.py --quick        # fewer reps, smaller trees, no 3x load (~2 min)
    .venv/bin/python bench/run.py --only run,cli # some benchmarks (names: see --list)
    .venv/bin/python bench/run.py --only run --profile   # also a pyinstrument profile of the library side

Runs as root with its own data root (/var/tmp/appcontainers-bench-run.*), its own bridges
(acbench0 10.0.210.0/24, acbench1 10.0.224.0/20) and its own lxcpaths; removes all of it at
the end, on failure and on Ctrl-C. The generated trees are cached in
/var/tmp/appcontainers-bench-cache (delete it to regenerate, or pass --drop-cache).
Results: bench/results.json (every sample) and bench/RESULTS.md (the table); a partial run
(--only) replaces only its own rows.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

import benchlib as B  # noqa: E402
from benchlib import log  # noqa: E402

MB = 1e6


class Context:
    """Lazy fixtures shared by the benchmarks of one run."""

    def __init__(self, sandbox: B.Sandbox, quick: bool, profile: bool):
        self.sb, self.quick, self.profile = sandbox, quick, profile
        self._svc = None
        self._images = {}
        self.profilers = {}

    # reps: (full, quick)
    def reps(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    @property
    def svc(self):
        if self._svc is None:
            import appcontainers

            self._svc = appcontainers.setup_service(root=self.sb.path("main"), bridge="acbench0",
                                                    subnet=B.SUBNETS["acbench0"])
            self._svc.bases.ensure_default()  # built once, before anything is timed
            self._svc.ports.net.ensure_bridge("acbench0", "10.0.210.1", 24)
        return self._svc

    def tree(self, big: bool = False) -> dict:
        return B.ensure_tree("quick" if self.quick else ("full3x" if big else "full"))

    def image(self, big: bool = False) -> str:
        """An .aimg of the tree, packed by the library's codec (per run: the format may change)."""
        key = "big" if big else "normal"
        if key not in self._images:
            from appcontainers.adapters.aimg.squashfs import SquashfsCodec

            tree = self.tree(big)
            os.makedirs(self.sb.path("images"), exist_ok=True)
            dest = self.sb.path("images", f"tree-{key}.aimg")
            t0 = time.perf_counter()
            SquashfsCodec().pack(tree["dir"], {"format_version": 1, "name": f"bench-{key}",
                                               "created": time.time(), "parent": None}, dest)
            log(f"  packed {dest} ({os.path.getsize(dest) / MB:.0f} MB) in {time.perf_counter() - t0:.1f} s")
            self._images[key] = dest
        return self._images[key]

    def lib(self, name: str, fn):
        """fn, wrapped in a pyinstrument profiler named name when --profile is on."""
        if not self.profile:
            return fn
        import pyinstrument

        prof = self.profilers.setdefault(name, pyinstrument.Profiler(interval=0.0005))

        def wrapped():
            prof.start()
            try:
                return fn()
            finally:
                prof.stop()
        return wrapped

    def write_profiles(self) -> None:
        if not self.profilers:
            return
        out = os.path.join(HERE, "profiles")
        os.makedirs(out, exist_ok=True)
        for name, prof in self.profilers.items():
            path = os.path.join(out, f"{name}.txt")
            with open(path, "w") as f:
                f.write(prof.output_text(unicode=False, color=False, show_all=False))
            log(f"profile of {name}: {path}")


def row(bench, metric, lib, raw, unit="s", kind="time", goal=None, note="", lib_label="appcontainers",
        raw_label="raw"):
    """One result line. kind 'time': ratio = lib median / raw median (lower is better);
    'throughput': lib / raw of the rates (higher is better); 'ratio': lib and raw are given."""
    ratio = lib["median"] / raw["median"] if raw and raw["median"] else None
    met = None
    if goal is not None and ratio is not None:
        op, value = goal
        met = ratio <= value if op == "<=" else ratio >= value
    r = {"bench": bench, "metric": metric, "unit": unit, "kind": kind, "lib": lib, "raw": raw,
         "lib_label": lib_label, "raw_label": raw_label, "ratio": ratio,
         "goal": f"{goal[0]} {goal[1]}x" if goal else None, "met": met, "note": note}
    log(f"  {metric}: {lib_label} {B.fmt_stat(lib, unit)} | {raw_label} {B.fmt_stat(raw, unit) if raw else '-'}"
        f" | ratio {ratio:.3f}x" + (f" (goal {r['goal']}: {'met' if met else 'MISSED'})" if goal else ""))
    return r


def rates(nbytes: float, times: list[float]) -> dict:
    return B.stats([nbytes / MB / t for t in times])


# ===================================================================================
# 1. provision + start to agent-ready vs the same by hand
# ===================================================================================

HAND_CONFIG = """\
lxc.uts.name = {name}
lxc.rootfs.path = dir:{rootfs}
lxc.mount.auto = proc:mixed sys:ro cgroup:mixed
lxc.autodev = 1
lxc.tty.max = 0
lxc.pty.max = 64
lxc.console.path = none
lxc.cap.drop = mac_admin mac_override sys_time sys_module sys_rawio
lxc.seccomp.profile = /usr/share/lxc/config/common.seccomp
lxc.cgroup.devices.deny = a
lxc.cgroup.devices.allow = c *:* m
lxc.cgroup.devices.allow = b *:* m
{devices1}
lxc.cgroup2.devices.deny = a
lxc.cgroup2.devices.allow = c *:* m
lxc.cgroup2.devices.allow = b *:* m
{devices2}
lxc.init.cmd = {init}
lxc.signal.halt = SIGTERM
lxc.net.0.type = veth
lxc.net.0.link = acbench0
lxc.net.0.flags = up
lxc.net.0.name = eth0
lxc.net.0.hwaddr = {mac}
lxc.net.0.ipv4.address = {ip}/24 10.0.210.255
lxc.net.0.ipv4.gateway = 10.0.210.1
lxc.net.0.veth.pair = {veth}
lxc.mount.entry = {agent} run/appcontainers none bind,create=dir 0 0
{binds}
lxc.mount.entry = {skel}/etc/hostname etc/hostname none bind,optional 0 0
lxc.mount.entry = {skel}/etc/hosts etc/hosts none bind,optional 0 0
"""
DEVICES = ("1:3", "1:5", "1:7", "5:0", "5:1", "5:2", "1:8", "1:9", "136:*", "10:229")


class HandContainer:
    """The raw equivalent of provision + start: what an operator would type, in Python."""

    def __init__(self, sb: B.Sandbox, image: str, manifest, index: int = 0, init: str | None = None):
        self.name = f"acbench-hand{index}"
        self.image, self.manifest = image, manifest
        self.lxcpath = sb.path("hand", "containers")
        d = sb.path("hand", self.name)
        self.dir, self.lower, self.upper = d, f"{d}/lower", f"{d}/upper"
        self.work, self.rootfs, self.agent, self.skel = f"{d}/work", f"{d}/rootfs", f"{d}/agent", f"{d}/skel"
        self.ip, self.mac = f"10.0.210.{250 - index}", f"02:be:0c:00:00:{index:02x}"
        self.veth = f"{B.HAND_VETH_PREFIX}hand{index}"
        self.init = init or " ".join(manifest.init)
        self.up_done = False

    def up(self) -> None:
        from appcontainers.adapters.bus.zmq_bus import AgentClient

        for d in (self.lower, self.upper, self.work, self.rootfs, self.agent, self.skel + "/etc",
                  os.path.join(self.lxcpath, self.name)):
            os.makedirs(d, exist_ok=True)
        self.up_done = True
        B.sh(["mount", "-t", "squashfs", "-o", "ro,loop,nodev,nosuid", self.image, self.lower])
        B.sh(["mount", "-t", "overlay", "overlay", "-o",
              f"lowerdir={self.lower}/rootfs,upperdir={self.upper},workdir={self.work}", self.rootfs])
        with open(f"{self.skel}/etc/hostname", "w") as f:
            f.write(self.name + "\n")
        with open(f"{self.skel}/etc/hosts", "w") as f:
            f.write(f"127.0.0.1\tlocalhost\n{self.ip}\t{self.name}\n")
        self.key, secret = AgentClient.new_keys()  # as the service does at every start
        with open(f"{self.agent}/agent.json", "w") as f:
            json.dump({"v": 1, "startup_commands": [], "environment": {}, "log_max_bytes": 10 << 20,
                       "hostname": self.name, "curve_secret_key": secret}, f)
        binds = "\n".join(f"lxc.mount.entry = {p} {p.lstrip('/')} none ro,bind,create=dir 0 0"
                          for p in self.manifest.host_binds)
        config = HAND_CONFIG.format(
            name=self.name, rootfs=self.rootfs, init=self.init, mac=self.mac, ip=self.ip, veth=self.veth,
            agent=self.agent, skel=self.skel, binds=binds,
            devices1="\n".join(f"lxc.cgroup.devices.allow = c {d} rwm" for d in DEVICES),
            devices2="\n".join(f"lxc.cgroup2.devices.allow = c {d} rwm" for d in DEVICES))
        with open(os.path.join(self.lxcpath, self.name, "config"), "w") as f:
            f.write(config)
        B.sh(["lxc-start", "-P", self.lxcpath, "-n", self.name, "-d",
              "-o", os.path.join(self.lxcpath, self.name, "lxc.log"), "-l", "WARN"])
        if self.manifest.init and self.init == " ".join(self.manifest.init):
            if not AgentClient(self.agent, server_key=self.key).wait_ready(15):
                raise RuntimeError(f"hand-made container {self.name}: the agent did not answer")

    def pids(self) -> list[int]:
        return B.cgroup_pids(self.name)

    def down(self) -> None:
        if not self.up_done:
            return
        B.sh(["lxc-stop", "-P", self.lxcpath, "-n", self.name, "-k"], check=False)
        for point in (self.rootfs, self.lower):
            if os.path.ismount(point):
                B.sh(["umount", point], check=False)
        import shutil
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(os.path.join(self.lxcpath, self.name), ignore_errors=True)
        self.up_done = False


def bench_provision(ctx: Context) -> list[dict]:
    """provision + start to agent-ready vs mount + config + lxc-start by hand (goal <= 1.3x)"""
    svc = ctx.svc
    base = svc.bases.ensure_default()
    image = svc.settings.layout.image_file(base.id, "base")
    hand = HandContainer(ctx.sb, image, base.manifest)
    ctx.sb.on_cleanup(hand.down)
    held = {}

    def lib():
        held["c"] = svc.provision()
        held["c"].start()

    def lib_down():
        c = held.pop("c", None)
        if c is not None:
            c.destroy()

    reps = ctx.reps(15, 3)
    ta, tb = B.paired(ctx.lib("provision", lib), hand.up, reps, warmup=2, teardown_a=lib_down,
                      teardown_b=hand.down)
    # Where the library's time goes: provision alone, start alone.
    tp, ts = [], []
    for _ in range(ctx.reps(5, 2)):
        dt, c = B.timed(svc.provision)
        tp.append(dt)
        dt, _ = B.timed(c.start)
        ts.append(dt)
        c.destroy()
    note = (f"provision alone {B.fmt_time(B.stats(tp)['median'])}, start alone "
            f"{B.fmt_time(B.stats(ts)['median'])}; raw = mount loop squashfs + overlay, write config, "
            f"lxc-start -d, AgentClient.wait_ready")
    return [row("provision", "provision + start to agent-ready", B.stats(ta), B.stats(tb),
                goal=("<=", 1.3), note=note, raw_label="by hand")]


# ===================================================================================
# 2. run('true') via the agent vs lxc-attach
# ===================================================================================

def bench_run(ctx: Context) -> list[dict]:
    """run('true') via the agent vs lxc-attach -- true, medians of 50 (goal <= 0.5x)"""
    svc = ctx.svc
    c = svc.provision()
    ctx.sb.on_cleanup(lambda: _destroy_quietly(c))
    c.start()
    lxcpath = svc.settings.layout.lxcpath

    def lib():
        r = c.run("true")
        assert r.exit_code == 0, r

    def raw():
        B.sh(["lxc-attach", "-P", lxcpath, "-n", c.name, "--", "true"])

    n = ctx.reps(50, 20)
    ta, tb = B.paired(ctx.lib("run", lib), raw, n, warmup=5)
    client = svc.containers.agent(c.name)
    tc = [B.timed(client.run, shell="true")[0] for _ in range(n)]
    tp = [B.timed(client.ping)[0] for _ in range(n)]  # connect + CURVE handshake + one round trip
    tl = [B.timed(lambda: svc.ports.driver.state(c.name))[0] for _ in range(min(n, 20))]
    _destroy_quietly(c)
    return [
        row("run", "run('true')", B.stats(ta), B.stats(tb), goal=("<=", 0.5), raw_label="lxc-attach -- true",
            note=f"medians of {n}; the bare AgentClient.run(shell='true') round trip (no service layer) "
                 f"takes {B.fmt_time(B.stats(tc)['median'])}; a ping (connect, CURVE handshake, one "
                 f"round trip) {B.fmt_time(B.stats(tp)['median'])}; one lxc-info state check "
                 f"{B.fmt_time(B.stats(tl)['median'])}"),
        row("run", "AgentClient.run('true') alone (diagnostic)", B.stats(tc), B.stats(tb),
            raw_label="lxc-attach -- true", note="the agent round trip without the service layer"),
    ]


SEQ_BYTES = 6888896  # bytes of seq 1000000
BIN_BYTES = 100_000_000


class Throughput:
    """One running container and the commands the throughput rows time against lxc-attach."""

    def __init__(self, ctx: Context):
        svc = ctx.svc
        self.c = c = svc.provision()
        ctx.sb.on_cleanup(lambda: _destroy_quietly(c))
        c.start()
        self.lxcpath = svc.settings.layout.lxcpath
        self.exe = os.path.join(os.path.dirname(sys.executable), "appcontainers")
        self.env = {**os.environ, "APPCONTAINERS_ROOT": svc.settings.root, "APPCONTAINERS_BRIDGE": "acbench0",
                    "APPCONTAINERS_SUBNET": B.SUBNETS["acbench0"]}
        # 100 MB of random bytes on the host, for stdin
        self.host_bin = ctx.sb.path("rand.bin")
        digest = hashlib.sha256()
        with open(self.host_bin, "wb") as f:
            for size in [1 << 20] * (BIN_BYTES >> 20) + [BIN_BYTES % (1 << 20)]:
                block = os.urandom(size)
                digest.update(block)
                f.write(block)
        self.sha = digest.hexdigest().encode()
        self.out_file = ctx.sb.path("out.bin")

    def cpu(self, fn) -> float:
        """CPU seconds fn() costs in all: the container's cgroup (agent, command), this process
        (its zmq threads too) and its children (the CLI, lxc-attach); independent of the load."""
        def now():
            import glob
            import resource
            usage = 0
            for path in glob.glob(f"/sys/fs/cgroup/cpuacct/*payload.{self.c.name}/cpuacct.usage"):
                with open(path) as f:
                    usage += int(f.read()) / 1e9
            me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            return usage + me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
        t0 = now()
        fn()
        return now() - t0

    def attach(self, argv, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL):
        subprocess.run(["lxc-attach", "-P", self.lxcpath, "-n", self.c.name, "--", *argv], stdout=stdout,
                       stdin=stdin, check=True)

    def cli(self, argv, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL):
        subprocess.run([self.exe, "run", self.c.name, "--", *argv], stdout=stdout, stdin=stdin, env=self.env,
                       check=True)

    def to_file(self, fn, argv, size):
        with open(self.out_file, "wb") as f:
            fn(argv, stdout=f)
        assert os.path.getsize(self.out_file) == size

    def from_file(self, fn, argv):
        with open(self.host_bin, "rb") as f:
            fn(argv, stdin=f)

    def api_capture(self, argv, size):
        assert len(self.c.run(argv).stdout_bytes) == size

    def api_lines(self, argv, lines):
        got = [0]

        def count(stream, line):
            got[0] += 1
        self.c.run(argv, on_output=count)
        assert got[0] == lines

    def api_stdin(self):
        with open(self.host_bin, "rb") as f:
            r = self.c.run(["sha256sum"], stdin=f)
        assert r.stdout_bytes.split()[0] == self.sha, r

    def cli_stdin(self):
        with open(self.host_bin, "rb") as f:
            out = subprocess.run([self.exe, "run", self.c.name, "--", "sha256sum"], stdin=f, env=self.env,
                                 check=True, stdout=subprocess.PIPE).stdout
        assert out.split()[0] == self.sha, out


def bench_run_output(ctx: Context) -> list[dict]:
    """output and input throughput through the API and the CLI vs lxc-attach, each pair timed
    alternately (goal: within 1.5x): seq 1000000 (6.9 MB in 1M lines), 100 MB binary out and in"""
    t = Throughput(ctx)
    seq, cat = ["seq", "1000000"], ["head", "-c", str(BIN_BYTES), "/dev/urandom"]
    n = ctx.reps(9, 3)
    raw_seq = ("lxc-attach -- seq 1000000 > /dev/null", lambda: t.attach(seq))
    raw_cat = ("lxc-attach -- head -c 100000000 /dev/urandom > /dev/null", lambda: t.attach(cat))
    raw_in = ("lxc-attach -- sha256sum < 100 MB file", lambda: t.from_file(t.attach, ["sha256sum"]))
    cases = [
        ("c.run(seq 1000000) collecting stdout", lambda: t.api_capture(seq, SEQ_BYTES), raw_seq),
        ("c.run(seq 1000000, on_output=...) per line", lambda: t.api_lines(seq, 1000000), raw_seq),
        ("CLI run -- seq 1000000 > /dev/null", lambda: t.cli(seq), raw_seq),
        ("CLI run -- seq 1000000 > file", lambda: t.to_file(t.cli, seq, SEQ_BYTES), raw_seq),
        ("c.run(head -c 100 MB of /dev/urandom) collecting stdout", lambda: t.api_capture(cat, BIN_BYTES),
         raw_cat),
        ("CLI run -- head -c 100 MB of /dev/urandom > /dev/null", lambda: t.cli(cat), raw_cat),
        ("CLI run -- head -c 100 MB of /dev/urandom > file", lambda: t.to_file(t.cli, cat, BIN_BYTES), raw_cat),
        ("c.run(sha256sum, stdin=100 MB binary file)", t.api_stdin, raw_in),
        ("CLI run -- sha256sum < 100 MB binary file", t.cli_stdin, raw_in),
    ]
    rows = []
    for metric, lib, (raw_label, raw) in cases:
        ta, tb = B.paired(ctx.lib("run_output", lib), raw, n, warmup=1)
        ca, cb = min(t.cpu(lib) for _ in range(2)), min(t.cpu(raw) for _ in range(2))
        rows.append(row("run_output", metric, B.stats(ta), B.stats(tb), goal=("<=", 1.5), raw_label=raw_label,
                        note=f"CPU time in all (cgroup + host processes, the better of 2): {ca:.2f} s vs "
                             f"{cb:.2f} s ({ca / cb:.2f}x)"))
    tt = [B.timed(t.cli, ["true"])[0] for _ in range(n)]
    _destroy_quietly(t.c)
    rows[2]["note"] += (f"; whole CLI process: `appcontainers run NAME -- true` alone took "
                        f"{B.fmt_time(B.stats(tt)['median'])} in this run (start, imports, connect)")
    return rows


def _destroy_quietly(c) -> None:
    try:
        c.destroy()
    except Exception:  # noqa: BLE001 - already gone
        pass


# ===================================================================================
# 3. save (flatten) vs raw mksquashfs with the same settings; layered vs flatten
# ===================================================================================

def bench_save(ctx: Context) -> list[dict]:
    """save (flatten) of a ~300 MB tree vs raw mksquashfs, same argv (goal >= 0.9x); layered vs flatten"""
    from appcontainers.adapters.aimg.squashfs import DEFAULT_LEVEL, mksquashfs_argv

    svc = ctx.svc
    tree = ctx.tree()
    # Privileged, as before the unprivileged default: the raw baseline packs the same merged rootfs,
    # and cp as host root cannot create files in an idmapped tree (see the unpriv benchmark).
    c = svc.provision(privileged=True)
    ctx.sb.on_cleanup(lambda: _destroy_quietly(c))
    rootfs = svc.settings.layout.rootfs(c.name)
    log(f"  copying the tree ({tree['bytes'] / MB:.0f} MB, {tree['files']} files) into container {c.name} ...")
    B.sh(["cp", "-a", tree["dir"] + "/data", os.path.join(rootfs, "root", "data")], timeout=1800)
    src_bytes = _tree_bytes(rootfs)
    out = ctx.sb.path("out")
    os.makedirs(out, exist_ok=True)
    lib_dest, raw_dest = os.path.join(out, "lib.aimg"), os.path.join(out, "raw.sqfs")
    manifest_dir = ctx.sb.path("out", "manifest")
    os.makedirs(manifest_dir, exist_ok=True)
    with open(os.path.join(manifest_dir, "manifest.json"), "w") as f:
        json.dump({"format_version": 1, "name": "raw"}, f)
    argv = mksquashfs_argv(rootfs, os.path.join(manifest_dir, "manifest.json"), raw_dest,
                           level=svc.settings.squashfs_level or DEFAULT_LEVEL, threads=os.cpu_count() or 1)

    def rm(*paths):
        def go():
            for p in paths:
                if os.path.exists(p):
                    os.unlink(p)
        return go

    reps = ctx.reps(7, 2)
    ta, tb = B.paired(ctx.lib("save", lambda: c.save_image(lib_dest)), lambda: B.sh(argv, timeout=1800),
                      reps, warmup=1, setup_a=rm(lib_dest), setup_b=rm(raw_dest))
    lib_size = os.path.getsize(lib_dest)
    rows = [row("save", "save (flatten) throughput", rates(src_bytes, ta), rates(src_bytes, tb),
                unit="MB/s", kind="throughput", goal=(">=", 0.9), raw_label="mksquashfs (same argv)",
                note=f"{src_bytes / MB:.0f} MB source (tree + base) in a stopped container, zstd level "
                     f"{svc.settings.squashfs_level}; times {B.fmt_time(B.stats(ta)['median'])} vs "
                     f"{B.fmt_time(B.stats(tb)['median'])}; image {lib_size / MB:.0f} MB")]
    os.unlink(raw_dest)

    # Layered: an image loaded back, 1 MB changed, saved with only its changes vs flattened.
    loaded = svc.load_image(lib_dest, name="bench-layered", privileged=True)
    ctx.sb.on_cleanup(lambda: _destroy_quietly(loaded))
    loaded.create_file("/root/change.bin", os.urandom(1 << 20), mode=0o644)
    layered_dest, flat_dest = os.path.join(out, "layered.aimg"), os.path.join(out, "flat2.aimg")
    tl, tf = B.paired(ctx.lib("save-layered", lambda: loaded.save_image(layered_dest, flatten=False)),
                      lambda: loaded.save_image(flat_dest, flatten=True), ctx.reps(3, 2), warmup=1,
                      setup_a=rm(layered_dest), setup_b=rm(flat_dest))
    rows.append(row("save", "layered save of a 1 MB change", B.stats(tl), B.stats(tf),
                    raw_label="flatten save of the same", goal=None,
                    note=f"layered image {os.path.getsize(layered_dest) / 1e3:.0f} kB vs "
                         f"{os.path.getsize(flat_dest) / MB:.0f} MB"))
    image_id = loaded.image
    _destroy_quietly(loaded)
    _destroy_quietly(c)
    with contextlib.suppress(Exception):
        svc.remove_image(image_id)
    for p in (lib_dest, layered_dest, flat_dest):
        rm(p)()
    return rows


def _tree_bytes(root: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, f))
                if not os.path.islink(os.path.join(dirpath, f)):
                    total += st.st_size
    return total


# ===================================================================================
# 4. load vs tar -xf of the same tree; at 3x the size
# ===================================================================================

def bench_load(ctx: Context) -> list[dict]:
    """load of the tree's image vs tar -xf of the tree (goal <= 0.05x), at 1x and 3x size"""
    import shutil

    svc = ctx.svc
    sizes = [False] if ctx.quick else [False, True]
    rows, loads = [], {}
    for big in sizes:
        tree, image = ctx.tree(big), ctx.image(big)
        dest = ctx.sb.path("extract")
        held = {}

        def lib():
            held["c"] = svc.load_image(image)

        def lib_down():
            c = held.pop("c", None)
            if c is not None:
                image_id = c.image
                c.destroy()
                svc.remove_image(image_id)  # the next load imports it again, as a new image would be
                os.sync()  # as after tar: the next measurement must not pay for this one's writeback

        def raw():
            B.sh(["tar", "-xf", tree["tar"], "-C", dest], timeout=1800)

        def raw_setup():
            os.makedirs(dest, exist_ok=True)

        def raw_down():
            shutil.rmtree(dest, ignore_errors=True)
            os.sync()  # the next measurement must not pay for this one's writeback

        reps = ctx.reps(5, 2) if not big else 3
        ta, tb = B.paired(ctx.lib("load", lib), raw, reps, warmup=1, teardown_a=lib_down,
                          setup_b=raw_setup, teardown_b=raw_down)
        label = "3x" if big else "1x"
        loads[label] = (B.stats(ta), B.stats(tb))
        # load --move: the file itself goes into the store (same filesystem): verify, no copy.
        movable = ctx.sb.path("movable.aimg")

        def lib_move():
            held["c"] = svc.load_image(movable, move=True)

        def move_setup():
            shutil.copyfile(image, movable)
            os.sync()  # the copy's writeback is not the load's

        tm, tb2 = B.paired(ctx.lib("load_move", lib_move), raw, reps, warmup=1, setup_a=move_setup,
                           teardown_a=lib_down, setup_b=raw_setup, teardown_b=raw_down)
        moves = (B.stats(tm), B.stats(tb2))
        rows.append(row("load", f"load image ({label}: {tree['bytes'] / MB:.0f} MB, {tree['files']} files)",
                        B.stats(ta), B.stats(tb), goal=("<=", 0.05), raw_label="tar -xf",
                        note=f"image {os.path.getsize(image) / MB:.0f} MB; load = verify + copy into the "
                             f"store + reserve + mount (image removed from the store between reps)"))
        rows.append(row("load", f"load --move ({label})", moves[0], moves[1], goal=("<=", 0.05),
                        raw_label="tar -xf", note="the file is renamed into the store and verified there "
                                                  "(same filesystem): no copy, no writeback"))
    if "3x" in loads:
        (l1, t1), (l3, t3) = loads["1x"], loads["3x"]
        rows.append(row("load", "load time at 3x size / at 1x (flatness)", l3, l1,
                        lib_label="load 3x", raw_label="load 1x", goal=None,
                        note=f"tar -xf grows {t3['median'] / t1['median']:.2f}x over the same step"))
    return rows


# ===================================================================================
# 5. provision with 1, 100, 1000 reservations in the state
# ===================================================================================

def bench_reservations(ctx: Context) -> list[dict]:
    """provision with 1, 100, 1000 reservations in the state (goal 1000 <= 1.2x of 1)"""
    import appcontainers
    from appcontainers.domain.reservation import Reservation

    svc = appcontainers.setup_service(root=ctx.sb.path("svc5"), bridge="acbench1", subnet=B.SUBNETS["acbench1"])
    base = svc.bases.ensure_default()
    have = 0

    def fill(n):
        nonlocal have
        with svc.ports.repo.transaction() as state:
            while have < n:
                name = f"fake-{have:05d}"
                ip = state.pool.allocate(name)
                state.add(Reservation(name=name, ip=ip, mac=f"02:fa:ce:00:{have >> 8:02x}:{have & 255:02x}",
                                      image=base.id, created=time.time()))
                have += 1

    held = {}

    def lib():
        held["c"] = svc.provision()

    def down():
        c = held.pop("c", None)
        if c is not None:
            c.destroy()

    results = {}
    reps = ctx.reps(11, 3)
    for n in (1, 100, 1000):
        fill(n)
        samples = []
        for i in range(reps + 2):
            try:
                dt, _ = B.timed(ctx.lib(f"provision-{n}", lib))
            finally:
                down()
            if i >= 2:
                samples.append(dt)
        results[n] = B.stats(samples)
        log(f"  {n} reservations: provision {B.fmt_stat(results[n])}")
    size = os.path.getsize(svc.settings.layout.resources)
    return [
        row("reservations", "provision with 100 reservations", results[100], results[1], goal=None,
            lib_label="100 held", raw_label="1 held"),
        row("reservations", "provision with 1000 reservations", results[1000], results[1], goal=("<=", 1.2),
            lib_label="1000 held", raw_label="1 held",
            note=f"resources.json {size / 1e3:.0f} kB with 1000; provision = reserve, mount, config (no start)"),
    ]


# ===================================================================================
# 6. CLI process time vs python -c pass
# ===================================================================================

def console_script(ctx: Context) -> tuple[str, str]:
    """The `appcontainers` console script for setup.py's entry point, and a note: the venv's own
    if it runs that entry, else (an install older than the entry) pip's script text for it,
    written into the sandbox."""
    import re

    exe = os.path.join(os.path.dirname(sys.executable), "appcontainers")
    with open(os.path.join(REPO, "setup.py")) as f:
        module, func = re.search(r'"appcontainers=([\w.]+):(\w+)"', f.read()).groups()
    with open(exe) as f:
        if f"from {module} import {func}\n" in f.read():
            return exe, "the installed console script"
    os.makedirs(ctx.sb.path("bin"), exist_ok=True)
    path = ctx.sb.path("bin", "appcontainers")
    with open(path, "w") as f:  # what pip writes for a console_scripts entry
        f.write(f"#!{sys.executable}\n# -*- coding: utf-8 -*-\nimport re\nimport sys\n"
                f"from {module} import {func}\nif __name__ == '__main__':\n"
                f"    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n    sys.exit({func}())\n")
    os.chmod(path, 0o755)
    return path, f"pip's console script for {module}:{func} (the venv's predates that entry)"


def _cli_env(svc) -> dict:
    return {**os.environ, "APPCONTAINERS_ROOT": svc.settings.root, "APPCONTAINERS_BRIDGE": "acbench0",
            "APPCONTAINERS_SUBNET": B.SUBNETS["acbench0"]}


def bench_cli(ctx: Context) -> list[dict]:
    """appcontainers --help, --version and ls (20 containers, 4 running) process time vs python -c pass (goal <= 2x)"""
    svc = ctx.svc
    made = [svc.provision() for _ in range(20)]  # ls lists 20, 4 of them running
    for c in made:
        ctx.sb.on_cleanup(lambda c=c: _destroy_quietly(c))
    for c in made[:4]:
        c.start()
    exe, how = console_script(ctx)
    env = _cli_env(svc)
    run = lambda argv: (lambda: B.sh(argv, env=env))  # noqa: E731
    base = run([sys.executable, "-c", "pass"])
    reps = ctx.reps(21, 5)
    rows = []
    for args, goal in ((["--help"], 2.0), (["--version"], None), (["ls"], 2.0), (["ls", "--json"], None)):
        assert B.sh([exe, *args], env=env).returncode == 0
        ta, tb = B.paired(run([exe, *args]), base, reps, warmup=2)
        rows.append(row("cli", f"appcontainers {' '.join(args)}" + (" (20 containers)" if args[0] == "ls" else ""),
                        B.stats(ta), B.stats(tb), goal=("<=", goal) if goal else None, raw_label="python -c pass",
                        note=f"whole process, wall time; {how}"))
    for c in made:
        _destroy_quietly(c)
    return rows


def bench_cli_run(ctx: Context) -> list[dict]:
    """appcontainers run NAME -- true as a process vs python -c pass (goal <= 2.5x) and vs lxc-attach -- true"""
    svc = ctx.svc
    c = svc.provision()
    ctx.sb.on_cleanup(lambda: _destroy_quietly(c))
    c.start()
    exe, how = console_script(ctx)
    env = _cli_env(svc)
    lxcpath = svc.settings.layout.lxcpath

    def cli():
        B.sh([exe, "run", c.name, "--", "true"], env=env)

    def python():
        B.sh([sys.executable, "-c", "pass"], env=env)

    def attach():
        B.sh(["lxc-attach", "-P", lxcpath, "-n", c.name, "--", "true"])

    reps = ctx.reps(31, 7)
    ta, tb = B.paired(cli, python, reps, warmup=2)
    tc, td = B.paired(cli, attach, reps, warmup=2)
    click_run = [sys.executable, "-m", "appcontainers.entrypoints.cli", "run", c.name, "--", "true"]
    tk = [B.timed(B.sh, click_run, env=env)[0] for _ in range(ctx.reps(11, 3))]
    _destroy_quietly(c)
    note = (f"whole process, wall time; {how}; the same through the click CLI (python -m "
            f"appcontainers.entrypoints.cli) takes {B.fmt_time(B.stats(tk)['median'])}")
    return [
        row("cli", "appcontainers run NAME -- true", B.stats(ta), B.stats(tb), goal=("<=", 2.5),
            raw_label="python -c pass", note=note),
        row("cli", "appcontainers run NAME -- true vs lxc-attach", B.stats(tc), B.stats(td),
            raw_label="lxc-attach -- true", note="the same container, running"),
    ]


def bench_start(ctx: Context) -> list[dict]:
    """start() of a stopped container until its agent answers vs lxc-start -d + lxc-attach -- true
    of the same container (its config, rootfs mounted) (goal <= 4x)"""
    svc = ctx.svc
    c = svc.provision()
    ctx.sb.on_cleanup(lambda: _destroy_quietly(c))
    c.start()
    c.stop()  # the rootfs stays mounted: the raw start below uses the same config and tree
    lxcpath = svc.settings.layout.lxcpath
    base = ["-P", lxcpath, "-n", c.name]

    def raw():
        B.sh(["lxc-start", *base, "-d"])
        B.sh(["lxc-attach", *base, "--", "true"])

    def raw_down():
        B.sh(["lxc-stop", *base, "-k"], check=False)

    reps = ctx.reps(15, 4)
    ta, tb = B.paired(ctx.lib("start", c.start), raw, reps, warmup=2, teardown_a=c.stop, teardown_b=raw_down)
    c.start()
    client = svc.containers.agent(c.name)  # after the start: it made a new key
    tr = [B.timed(client.run, shell="true")[0] for _ in range(10)]
    _destroy_quietly(c)
    return [row("start", "start() to agent-ready", B.stats(ta), B.stats(tb), goal=("<=", 4.0),
                raw_label="lxc-start -d + lxc-attach -- true",
                note=f"a stopped, provisioned container (rootfs mounted); start() returns when the agent "
                     f"answers; a first run('true') after it takes {B.fmt_time(B.stats(tr)['median'])}")]


# ===================================================================================
# 7. 50 containers one after another; memory per idle container
# ===================================================================================

def bench_many(ctx: Context) -> list[dict]:
    """50 containers one after another: start time last 10 vs first 10; memory per idle container"""
    svc = ctx.svc
    n, k = (20, 5) if ctx.quick else (50, 10)
    made, total, starts = [], [], []
    try:
        for i in range(n):
            t0 = time.perf_counter()
            c = svc.provision()
            made.append(c)
            t1 = time.perf_counter()
            c.start()
            t2 = time.perf_counter()
            total.append(t2 - t0)
            starts.append(t2 - t1)
        time.sleep(2.0)  # idle
        mem = [B.memory_of(B.cgroup_pids(c.name)) for c in made]
        nprocs = [len(B.cgroup_pids(c.name)) for c in made]
        # The raw runtime the agent is made of: a bare host Python with pyzmq imported, idle.
        import subprocess
        import zmq

        site = os.path.dirname(os.path.dirname(zmq.__file__))
        bare = subprocess.Popen([sys.executable, "-S", "-c",
                                 "import zmq, sys, time; print('up', flush=True); time.sleep(120)"],
                                env={"PYTHONPATH": site}, stdout=subprocess.PIPE)
        try:
            bare.stdout.readline()
            bare_mem = B.memory_of([bare.pid])
        finally:
            bare.kill()
            bare.wait()
    finally:
        for c in made:
            _destroy_quietly(c)
    first, last = B.stats(total[:k]), B.stats(total[-k:])
    pss, rss = B.stats([m["pss"] / MB for m in mem]), B.stats([m["rss"] / MB for m in mem])
    return [
        row("many", f"start to agent-ready, last {k} vs first {k} of {n}", B.stats(starts[-k:]),
            B.stats(starts[:k]), goal=("<=", 1.2), lib_label=f"last {k}", raw_label=f"first {k}",
            note="containers started one after another, all left running; start = Container.start()"),
        row("many", f"provision + start, last {k} vs first {k} of {n}", last, first, goal=None,
            lib_label=f"last {k}", raw_label=f"first {k}"),
        row("many", f"memory per idle container (PSS, {n} running)", pss, B.stats([bare_mem["pss"] / MB]),
            unit="MB", raw_label="bare python -S + import zmq (PSS)", goal=None,
            note=f"processes per container: {max(set(nprocs), key=nprocs.count)}; RSS per container "
                 f"{B.fmt_stat(rss, 'MB')} vs bare {bare_mem['rss'] / MB:.1f} MB"),
    ]


# ===================================================================================
# 8. FUSE image reader vs squashfuse
# ===================================================================================

def bench_fuse(ctx: Context) -> list[dict]:
    """FUSE image reader vs squashfuse_ll sequential read (goal >= 0.5x); skipped if absent"""
    import shutil
    import subprocess

    try:
        import appcontainers.adapters.aimg.image_reader  # noqa: F401
    except Exception as e:  # noqa: BLE001 - absent or broken: skip
        log(f"  skipped: the image reader does not import ({type(e).__name__}: {e})")
        return [{"bench": "fuse", "metric": "FUSE image reader", "skipped": f"does not import: {e}"}]
    tree, image = ctx.tree(), ctx.image()
    with open(image, "rb") as f:  # the .aimg in the page cache for both readers
        while f.read(1 << 20):
            pass
    files = tree["big"]
    nbytes = sum(os.path.getsize(os.path.join(tree["dir"], p)) for p in files)
    mnt = ctx.sb.path("fusemnt")
    os.makedirs(mnt, exist_ok=True)

    def unmount():
        if os.path.ismount(mnt):
            B.sh(["fusermount3", "-u", mnt], check=False)
            for _ in range(100):
                if not os.path.ismount(mnt):
                    break
                time.sleep(0.05)
    ctx.sb.on_cleanup(unmount)

    def mount_reader():
        proc = subprocess.run([sys.executable, "-m", "appcontainers.adapters.aimg.image_reader", image, mnt],
                              capture_output=True, timeout=60, cwd=REPO)
        if proc.returncode != 0 or not os.path.ismount(mnt):
            raise RuntimeError(f"image reader mount failed ({proc.returncode}): "
                               f"{proc.stderr.decode(errors='replace').strip()[-300:]}")

    def mount_squashfuse(tool):
        def go():
            B.sh([tool, "-o", "ro", image, mnt], timeout=60)
        return go

    def read_all(prefix):
        def go():
            for p in files:
                fd = os.open(os.path.join(mnt, prefix, p), os.O_RDONLY)
                try:
                    while os.read(fd, 1 << 20):
                        pass
                finally:
                    os.close(fd)
        return go

    reps = ctx.reps(6, 2)
    try:
        mount_reader()
        unmount()
    except Exception as e:  # noqa: BLE001
        unmount()
        log(f"  skipped: {e}")
        return [{"bench": "fuse", "metric": "FUSE image reader", "skipped": str(e)}]
    try:
        ta, tb = B.paired(read_all(""), read_all("rootfs"), reps, warmup=1, setup_a=mount_reader,
                          teardown_a=unmount, setup_b=mount_squashfuse("squashfuse_ll"), teardown_b=unmount)
    except (OSError, RuntimeError) as e:  # a reader that mounts but fails to read: skip, say why
        unmount()
        log(f"  skipped: reading through the image reader failed: {e}")
        return [{"bench": "fuse", "metric": "FUSE image reader", "skipped": f"read failed: {e}"}]
    rows = [row("fuse", "FUSE image reader sequential read", rates(nbytes, ta), rates(nbytes, tb), unit="MB/s",
                kind="throughput", goal=(">=", 0.5), raw_label="squashfuse_ll",
                note=f"{len(files)} large files, {nbytes / MB:.0f} MB (half random, half text); fresh mount per "
                     f"rep, image file in the page cache")]
    if shutil.which("squashfuse"):
        _, tc = B.paired(read_all("rootfs"), read_all("rootfs"), 1, warmup=0,
                         setup_a=mount_squashfuse("squashfuse"), teardown_a=unmount,
                         setup_b=mount_squashfuse("squashfuse"), teardown_b=unmount)
        rows[0]["note"] += f"; plain squashfuse {nbytes / MB / B.stats(tc)['median']:.0f} MB/s"
    return rows


# ===================================================================================
# 9. the unprivileged default (user namespace, overlay over idmapped layers) vs privileged
# ===================================================================================

def bench_unpriv(ctx: Context) -> list[dict]:
    """the unprivileged default vs privileged=True, both on the kernel overlay: provision + start,
    run('true'), file reads (upper and lower layers), save (flatten)"""
    svc = ctx.svc
    tree = ctx.tree()
    held: dict = {}

    def up(privileged):
        def go():
            held[privileged] = svc.provision(privileged=privileged)
            held[privileged].start()
        return go

    def down(privileged):
        def go():
            c = held.pop(privileged, None)
            if c is not None:
                c.destroy()
        return go

    ta, tb = B.paired(up(False), up(True), ctx.reps(15, 3), warmup=2, teardown_a=down(False),
                      teardown_b=down(True))
    rows = [row("unpriv", "provision + start to agent-ready", B.stats(ta), B.stats(tb),
                lib_label="unprivileged", raw_label="privileged",
                note=f"mounter of the default: {svc.settings.mounter} -> "
                     f"{_mounter_of(svc)} (idmapped squashfs + upper binds under a kernel overlay)")]
    cu, cp = svc.provision(), svc.provision(privileged=True)
    for c in (cu, cp):
        ctx.sb.on_cleanup(lambda c=c: _destroy_quietly(c))
        c.start()
    n = ctx.reps(50, 20)
    ta, tb = B.paired(lambda: cu.run("true"), lambda: cp.run("true"), n, warmup=5)
    rows.append(row("unpriv", "run('true')", B.stats(ta), B.stats(tb), lib_label="unprivileged",
                    raw_label="privileged", note=f"medians of {n}"))
    log(f"  extracting the tree ({tree['bytes'] / MB:.0f} MB) into both containers ...")
    for c in (cu, cp):
        c.load_archive(tree["tar"], "/root")
    big = " ".join("/root/" + p for p in tree["big"])
    nbytes = sum(os.path.getsize(os.path.join(tree["dir"], p)) for p in tree["big"])
    read = f"cat {big} > /dev/null"
    ta, tb = B.paired(lambda: cu.run(read), lambda: cp.run(read), ctx.reps(7, 3), warmup=1)
    rows.append(row("unpriv", "file reads inside (upper layer, page cache)", rates(nbytes, ta), rates(nbytes, tb),
                    unit="MB/s", kind="throughput", lib_label="unprivileged", raw_label="privileged",
                    note=f"cat of the tree's {len(tree['big'])} large files ({nbytes / MB:.0f} MB)"))
    out = ctx.sb.path("unpriv")
    os.makedirs(out, exist_ok=True)
    dest = {cu.name: os.path.join(out, "u.aimg"), cp.name: os.path.join(out, "p.aimg")}
    for c in (cu, cp):
        c.stop()

    def rm(path):
        return lambda: os.path.exists(path) and os.unlink(path)

    ta, tb = B.paired(lambda: cu.save_image(dest[cu.name]), lambda: cp.save_image(dest[cp.name]),
                      ctx.reps(5, 2), warmup=1, setup_a=rm(dest[cu.name]), setup_b=rm(dest[cp.name]))
    rows.append(row("unpriv", "save (flatten)", B.stats(ta), B.stats(tb), lib_label="unprivileged",
                    raw_label="privileged",
                    note="unprivileged packs a read-only kernel overlay view of its upper and layers (ids "
                         "as stored); privileged packs its merged rootfs"))
    lu, lp = svc.load_image(dest[cu.name]), svc.load_image(dest[cp.name], privileged=True)
    for c in (lu, lp):
        ctx.sb.on_cleanup(lambda c=c: _destroy_quietly(c))
    images = {lu.image, lp.image}
    for c in (cu, cp):
        _destroy_quietly(c)
    ta, tb = B.paired(lambda: lu.run(read), lambda: lp.run(read), ctx.reps(7, 3), warmup=1)
    rows.append(row("unpriv", "file reads inside (squashfs lower, page cache)", rates(nbytes, ta),
                    rates(nbytes, tb), unit="MB/s", kind="throughput", lib_label="unprivileged",
                    raw_label="privileged", note="the saved images loaded back: reads from the lower layer"))
    for c in (lu, lp):
        _destroy_quietly(c)
    for image_id in images:
        with contextlib.suppress(Exception):
            svc.remove_image(image_id)
    return rows


def _mounter_of(svc) -> str:
    c = svc.provision()
    try:
        return svc.containers.get(c.name).mounter
    finally:
        _destroy_quietly(c)


# ===================================================================================
# 10. published ports (DNAT) vs the container's address directly; provision cost of -p
# ===================================================================================

PORTS_SINK = """\
import socket, threading
def serve(conn):
    buf = bytearray(1 << 20)
    with conn:
        while conn.recv_into(buf):
            pass
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80))
s.listen(256)
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""


def _send_through(addr: tuple[str, int], nbytes: int) -> None:
    """Send nbytes on one TCP connection, then wait for the sink to have read them all (its close)."""
    import socket

    chunk = memoryview(bytes(1 << 20))
    with socket.create_connection(addr, timeout=30) as s:
        left = nbytes
        while left:
            left -= s.send(chunk[:min(left, len(chunk))])
        s.shutdown(socket.SHUT_WR)
        while s.recv(4096):
            pass


def _connects(addr: tuple[str, int], n: int) -> None:
    """n short connections: connect, close our side, wait for the sink's close."""
    import socket

    for _ in range(n):
        with socket.create_connection(addr, timeout=10) as s:
            s.shutdown(socket.SHUT_WR)
            s.recv(16)


def _start_sink(c) -> None:
    """A Python TCP sink on port 80 in c (the agent's own Python), run by a daemon thread until c goes."""
    import socket
    import threading

    out = bytearray()
    c.run(["cat", "/proc/1/cmdline"], on_data=lambda _stream, data: out.extend(data))
    python = bytes(out).split(b"\0")[0].decode()
    c.create_file("/root/sink.py", PORTS_SINK)
    threading.Thread(target=_run_quietly, args=(c, [python, "/root/sink.py"]), daemon=True).start()
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection((c.ip, 80), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _run_quietly(c, argv) -> None:
    try:
        c.run(argv)
    except Exception:  # noqa: BLE001 - ends with the container
        pass


def _provision_publish_cost(svc, reps: int) -> dict:
    """provision(publish=[...]) vs provision(), provision alone (destroy untimed)."""
    held: dict = {}

    def prov(publish):
        def go():
            held["c"] = svc.provision(publish=publish)
        return go

    def down():
        d = held.pop("c", None)
        if d is not None:
            d.destroy()

    nsock = sum(1 for n in ("tcp", "tcp6", "udp", "udp6") for _ in open(f"/proc/net/{n}")) - 4
    ta, tb = B.paired(prov(["18091:80"]), prov([]), reps, warmup=2, teardown_a=down, teardown_b=down)
    return row("ports", "provision with publish=['18091:80']", B.stats(ta), B.stats(tb),
               goal=("<=", 1.1), raw_label="provision without",
               note=f"provision alone (the rules are made at start); the extra is reading the host's "
                    f"sockets (/proc/net/{{tcp,udp}}{{,6}}: {nsock} entries at the start of this measure; "
                    f"the kernel's cost grows with the count) and other roots' published sets (nft)")


def bench_ports(ctx: Context) -> list[dict]:
    """published port (127.0.0.1 and the bridge address) vs the container's ip:port directly:
    throughput of one TCP connection (goal >= 0.9x), connection rate; provision with -p vs without
    (goal <= 1.1x)"""
    svc = ctx.svc
    # First: the connection-rate runs leave thousands of TIME_WAIT sockets, which /proc/net/tcp lists.
    rows = [_provision_publish_cost(svc, ctx.reps(15, 5))]
    c = svc.provision(publish=["18090:80"])
    ctx.sb.on_cleanup(lambda: _destroy_quietly(c))
    c.start()
    _start_sink(c)
    direct, gateway = (c.ip, 80), ("10.0.210.1", 18090)
    targets = [("127.0.0.1:18090", ("127.0.0.1", 18090)), ("bridge address 10.0.210.1:18090", gateway)]
    nbytes = (50 if ctx.quick else 200) * 1000 * 1000
    nconn = ctx.reps(300, 100)
    for label, addr in targets:
        ta, tb = B.paired(lambda a=addr: _send_through(a, nbytes), lambda: _send_through(direct, nbytes),
                          ctx.reps(9, 3), warmup=1)
        rows.append(row("ports", f"TCP throughput via {label}", rates(nbytes, ta), rates(nbytes, tb),
                        unit="MB/s", kind="throughput", goal=(">=", 0.9), lib_label="published",
                        raw_label="container ip:80",
                        note=f"{nbytes / MB:.0f} MB on one connection from the host into a Python sink in "
                             f"the container, until the sink's close"))
    for label, addr in targets:
        ta, tb = B.paired(lambda a=addr: _connects(a, nconn), lambda: _connects(direct, nconn),
                          ctx.reps(7, 3), warmup=1)
        rows.append(row("ports", f"connection rate via {label}", B.stats([nconn / t for t in ta]),
                        B.stats([nconn / t for t in tb]), unit="conn/s", kind="throughput",
                        lib_label="published", raw_label="container ip:80",
                        note=f"{nconn} connections one after another: connect, shutdown, wait for the close"))
    _destroy_quietly(c)
    return rows

# ===================================================================================
# OCI import vs the enroot-style pipeline (umoci unpack, then mksquashfs of the tree)
# ===================================================================================

def _oci_layout(ctx: Context) -> str:
    """An OCI layout of the tree in three gzip layers made by umoci (small files, big files, a
    whiteout of one directory); cached next to the tree."""
    tree = ctx.tree()
    layout = os.path.join(B.CACHE, f"oci-{os.path.basename(tree['dir'])}")
    if os.path.exists(os.path.join(layout, "index.json")):
        return layout
    import shutil

    shutil.rmtree(layout, ignore_errors=True)
    log(f"  building the OCI image {layout} with umoci (once; cached) ...")
    B.sh(["umoci", "init", "--layout", layout])
    B.sh(["umoci", "new", "--image", f"{layout}:t"])
    for sub in ("small", "big"):
        B.sh(["umoci", "insert", "--image", f"{layout}:t", os.path.join(tree["dir"], "data", sub), f"/data/{sub}"],
             timeout=1800)
    B.sh(["umoci", "insert", "--image", f"{layout}:t", "--whiteout", "/data/small/d0000"])
    return layout


def bench_oci_import(ctx: Context) -> list[dict]:
    """import of a ~300 MB 3-layer OCI image vs umoci unpack + mksquashfs of it (goal <= 0.5x)"""
    import shutil

    import appcontainers
    from appcontainers.adapters.aimg.squashfs import DEFAULT_LEVEL, mksquashfs_argv

    layout = _oci_layout(ctx)
    # Its own data root: import needs no bridge, containers or base.
    svc = appcontainers.setup_service(root=ctx.sb.path("oci"), bridge="acbench0", subnet=B.SUBNETS["acbench0"])
    work = ctx.sb.path("oci-raw")
    os.makedirs(work, exist_ok=True)
    bundle, raw_dest = os.path.join(work, "bundle"), os.path.join(work, "raw.sqfs")
    manifest = os.path.join(work, "manifest.json")
    with open(manifest, "w") as f:
        json.dump({"format_version": 1, "name": "raw"}, f)
    argv = mksquashfs_argv(os.path.join(bundle, "rootfs"), manifest, raw_dest,
                           level=svc.settings.squashfs_level or DEFAULT_LEVEL, threads=os.cpu_count() or 1)
    imported = []

    def lib():
        imported.append(svc.import_image(f"oci:{layout}:t"))

    def lib_down():
        svc.remove_image(imported.pop().id)

    def raw():
        B.sh(["umoci", "unpack", "--image", f"{layout}:t", bundle], timeout=1800)
        B.sh(argv, timeout=1800)

    def raw_down():
        shutil.rmtree(bundle, ignore_errors=True)
        if os.path.exists(raw_dest):
            os.unlink(raw_dest)

    ta, tb = B.paired(ctx.lib("oci_import", lib), raw, ctx.reps(3, 2), warmup=1, teardown_a=lib_down,
                      teardown_b=raw_down)
    blobs = sum(os.path.getsize(os.path.join(layout, "blobs", "sha256", b))
                for b in os.listdir(os.path.join(layout, "blobs", "sha256")))
    return [row("oci_import", "import of a 3-layer OCI image", B.stats(ta), B.stats(tb), goal=("<=", 0.5),
                raw_label="umoci unpack + mksquashfs",
                note=f"{ctx.tree()['bytes'] / MB:.0f} MB tree in 3 gzip layers by umoci insert ({blobs / MB:.0f} MB of "
                     f"blobs; the third whites out a directory); import streams each layer through the "
                     f"checking filter into tar2sqfs (one .aimg per layer, nothing extracted), the raw side "
                     f"unpacks to disk then packs one squashfs with the codec's mksquashfs argv")]


# ===================================================================================
# export to docker-archive vs skopeo copy of the same image from an OCI layout
# ===================================================================================

def bench_export(ctx: Context) -> list[dict]:
    """export of the ~300 MB tree image to docker-archive vs `skopeo copy oci:LAYOUT docker-archive:FILE`"""
    import shutil

    if not shutil.which("skopeo"):
        return [{"bench": "export", "metric": "export to docker-archive", "skipped": "no skopeo"}]
    svc = ctx.svc
    c = svc.load_image(ctx.image(), name="bench-export", privileged=True)
    ctx.sb.on_cleanup(lambda: _destroy_quietly(c))
    image_id = c.image
    out = ctx.sb.path("export")
    os.makedirs(out, exist_ok=True)
    layout, lib_dest, raw_dest = (os.path.join(out, n) for n in ("layout", "lib.tar", "raw.tar"))
    t0 = time.perf_counter()
    svc.export_image(image_id, layout, format="oci")  # skopeo's input, made once
    oci_time = time.perf_counter() - t0

    def rm(path):
        def go():
            if os.path.exists(path):
                os.unlink(path)
        return go

    ta, tb = B.paired(ctx.lib("export", lambda: svc.export_image(image_id, lib_dest, format="docker-archive")),
                      lambda: B.sh(["skopeo", "copy", "-q", f"oci:{layout}:latest", f"docker-archive:{raw_dest}"],
                                   timeout=1800),
                      ctx.reps(5, 2), warmup=1, setup_a=rm(lib_dest), setup_b=rm(raw_dest))
    size = os.path.getsize(lib_dest)
    rows = [row("export", f"export to docker-archive ({size / MB:.0f} MB archive, 1 layer)", B.stats(ta),
                B.stats(tb), raw_label="skopeo copy oci: docker-archive:",
                note=f"the same image: ours reads the .aimg (verified first), skopeo the gzip layout we exported "
                     f"(oci form, gzip level {svc.settings.oci_gzip_level}: {B.fmt_time(oci_time)}); "
                     f"skopeo's archive {os.path.getsize(raw_dest) / MB:.0f} MB")]
    _destroy_quietly(c)
    with contextlib.suppress(Exception):
        svc.remove_image(image_id)
    shutil.rmtree(out, ignore_errors=True)
    return rows


BENCHES = {
    "cli": bench_cli,
    "cli_run": bench_cli_run,
    "start": bench_start,
    "provision": bench_provision,
    "run": bench_run,
    "run_output": bench_run_output,
    "reservations": bench_reservations,
    "many": bench_many,
    "save": bench_save,
    "load": bench_load,
    "fuse": bench_fuse,
    "unpriv": bench_unpriv,
    "ports": bench_ports,
    "oci_import": bench_oci_import,
    "export": bench_export,
}


# ===================================================================================
# results
# ===================================================================================

def merge_results(new: dict) -> dict:
    path = os.path.join(HERE, "results.json")
    old = {}
    if os.path.exists(path):
        with contextlib.suppress(ValueError, OSError):
            with open(path) as f:
                old = json.load(f)
    benches = {**old.get("benchmarks", {}), **new["benchmarks"]}
    order = list(BENCHES)
    merged = {**new, "benchmarks": {k: benches[k] for k in order if k in benches}}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(merged, f, indent=1)
    os.replace(tmp, path)
    return merged


def _kept(text: str, fresh: set) -> dict:
    """What RESULTS.md holds for benchmarks this run did not measure: their table rows, notes and
    run entries by name, and whatever follows the Runs line (bench/fleet.py's section), so a partial
    run in a checkout without results.json (it is not in git) loses nobody's rows."""
    kept: dict = {"rows": {}, "notes": {}, "runs": {}, "tail": ""}
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.startswith("Runs: "):
            for entry in line[len("Runs: "):].split("; "):
                if entry.split(" ", 1)[0] not in fresh:
                    kept["runs"][entry.split(" ", 1)[0]] = entry
            kept["tail"] = "\n".join(lines[i + 1:]).strip("\n")
            break
        name = line[2:].split(" ", 1)[0] if line.startswith(("| ", "- ")) else ""
        if name and name not in fresh and name not in ("benchmark", "---|---|---|---|---|---|---|"):
            kept["rows" if line.startswith("| ") else "notes"].setdefault(name, []).append(line)
    return kept


def write_markdown(results: dict) -> str:
    path = os.path.join(HERE, "RESULTS.md")
    old = ""
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
    kept = _kept(old, set(results["benchmarks"]))
    lines = ["# Benchmark results", "",
             f"Machine: {results['machine']}. Ratios are appcontainers / the raw tool (times: lower is "
             f"better; MB/s: higher is better), medians of the repetitions, min..max in brackets. "
             f"Written by `bench/run.py`; see bench/README.md.", "",
             "| benchmark | measure | appcontainers | raw baseline | ratio | goal | met |",
             "|---|---|---|---|---|---|---|"]
    order = [*BENCHES, *kept["rows"]]
    for name in dict.fromkeys(order):
        lines += kept["rows"].get(name, [])
        entry = results["benchmarks"].get(name)
        if entry is None:
            continue
        tag = " (quick)" if entry.get("quick") else ""
        if entry.get("error"):
            lines.append(f"| {name} | error{tag} | {entry['error'][:80]} | | | | |")
            continue
        for r in entry["rows"]:
            if r.get("skipped"):
                lines.append(f"| {name} | {r['metric']}{tag} | skipped: {r['skipped'][:80]} | | | | |")
                continue
            met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
            lines.append(
                f"| {name} | {r['metric']}{tag} | {r['lib_label']}: {B.fmt_stat(r['lib'], r['unit'])} | "
                f"{r['raw_label']}: {B.fmt_stat(r['raw'], r['unit'])} | {r['ratio']:.3f}x | {r['goal'] or ''} "
                f"| {met} |")
    notes = [f"- {name} / {r['metric']}: {r['note']}" for name, e in results["benchmarks"].items()
             for r in e.get("rows", []) if r.get("note")] + [n for ns in kept["notes"].values() for n in ns]
    if notes:
        lines += ["", "Notes:", ""] + notes
    runs = [f"{name} {e['when']} ({'quick' if e.get('quick') else 'full'}, {e.get('seconds', '?')} s)"
            for name, e in results["benchmarks"].items()] + list(kept["runs"].values())
    lines += ["", "Runs: " + "; ".join(runs)]
    if kept["tail"]:
        lines += ["", kept["tail"]]
    text = "\n".join(lines) + "\n"
    with open(path, "w") as f:
        f.write(text)
    return text


def machine() -> str:
    import platform

    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024 // 1024
    lxc = B.sh(["lxc-start", "--version"], check=False).stdout.decode().strip()
    commit = B.sh(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], check=False).stdout.decode().strip()
    dirty = B.sh(["git", "-C", REPO, "status", "--porcelain", "--", "appcontainers"], check=False).stdout.strip()
    return (f"{os.cpu_count()} cores, {mem} GB RAM, kernel {platform.release()}, LXC {lxc}, Python "
            f"{platform.python_version()}; library at commit {commit or '?'}{' + local changes' if dirty else ''}")


# ===================================================================================

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma-separated benchmarks: " + ",".join(BENCHES))
    ap.add_argument("--quick", action="store_true", help="fewer reps, smaller trees, no 3x load")
    ap.add_argument("--profile", action="store_true", help="pyinstrument profiles of the library side, "
                                                          "written to bench/profiles/ (results not saved)")
    ap.add_argument("--list", action="store_true", help="list the benchmarks")
    ap.add_argument("--drop-cache", action="store_true", help=f"remove {B.CACHE} first")
    args = ap.parse_args(argv)
    if args.list:
        for name, fn in BENCHES.items():
            print(f"{name:14} {fn.__doc__ or ''}".rstrip())
        return 0
    names = list(BENCHES) if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    if os.geteuid() != 0:
        print("bench: root is needed (LXC, loop devices, mounts)", file=sys.stderr)
        return 1
    if args.profile:
        try:
            import pyinstrument  # noqa: F401
        except ImportError:
            print("bench: --profile needs pyinstrument: .venv/bin/pip install pyinstrument", file=sys.stderr)
            return 1
    for name in os.listdir("/var/tmp"):
        if name.startswith(B.ROOT_PREFIX):
            with contextlib.suppress(OSError, ValueError):
                with open(os.path.join("/var/tmp", name, "owner.pid")) as f:
                    pid = int(f.read())
                if os.path.exists(f"/proc/{pid}") and pid != os.getpid():
                    print(f"bench: another bench run (pid {pid}) is running", file=sys.stderr)
                    return 1
    if args.drop_cache:
        import shutil
        shutil.rmtree(B.CACHE, ignore_errors=True)

    def on_term(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    t_start = time.perf_counter()
    sb = B.Sandbox()
    ctx = Context(sb, args.quick, args.profile)
    log(f"bench: data root {sb.root}, bridges {', '.join(B.BRIDGES)}; {'quick' if args.quick else 'full'} run "
        f"of {', '.join(names)}")
    results = {"machine": machine(), "benchmarks": {}}
    failed = interrupted = False
    try:
        for name in names:
            log(f"\n[{name}] {BENCHES[name].__name__}")
            t0 = time.perf_counter()
            entry = {"when": datetime.datetime.now().isoformat(timespec="seconds"), "quick": args.quick}
            try:
                entry["rows"] = BENCHES[name](ctx)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001 - report it, go on with the others
                failed = True
                traceback.print_exc()
                entry["error"] = f"{type(e).__name__}: {e}"
                entry["rows"] = []
            entry["seconds"] = round(time.perf_counter() - t0, 1)
            results["benchmarks"][name] = entry
            log(f"[{name}] {entry['seconds']} s")
    except KeyboardInterrupt as e:
        interrupted = True
        log(f"\nbench: interrupted ({str(e) or 'Ctrl-C'})")
    finally:
        log("\nbench: cleaning up ...")
        problems = sb.cleanup()
        for p in problems:
            log(f"bench: CLEAN-UP PROBLEM: {p}")
        left = B.leftovers()
        for what, items in left.items():
            if items:
                log(f"bench: LEFT BEHIND ({what}): {items}")
        ctx.write_profiles()
    goals = [r for e in results["benchmarks"].values() for r in e.get("rows", []) if r.get("met") is not None]
    if goals:
        log(f"bench: goals met {sum(r['met'] for r in goals)} of {len(goals)}; missed: "
            + (", ".join(f"{r['bench']}/{r['metric']} ({r['ratio']:.3g}x, goal {r['goal']})"
                         for r in goals if not r["met"]) or "none"))
    if args.profile:
        log("bench: --profile distorts the timings: results.json and RESULTS.md left as they were")
    elif results["benchmarks"] and not interrupted:
        merged = merge_results(results)
        log("\n" + write_markdown(merged))
        log(f"bench: wrote {os.path.join(HERE, 'results.json')} and {os.path.join(HERE, 'RESULTS.md')}")
    log(f"bench: done in {time.perf_counter() - t_start:.0f} s")
    return 130 if interrupted else (1 if failed or problems else 0)


if __name__ == "__main__":
    sys.exit(main())
