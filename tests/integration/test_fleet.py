"""The fleet on a real Ray cluster of three nodes on this machine (127.0.0.1): each node a host
with its own data root, bridge and subnet; containers, jobs, images and a host that dies."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

ray = pytest.importorskip("ray")

from appcontainers.fleet import HostLost  # noqa: E402
from tests.conftest import clean_root  # noqa: E402

FLEET_RANGE = "10.0.240.0/20"
HOSTS = {"h1": "acg1", "h2": "acg2", "h3": "acg3"}
GIVEN = {"h1": "10.0.246.0/24"}  # a subnet given to join: used as is, and registered
UPSTREAM = "127.224.0.54"  # the resolvers forward here (nothing listens): no query leaves the machine


def _ray_procs() -> list[str]:
    out = subprocess.run(["pgrep", "-af", "ray::|raylet|gcs_server"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def _descendants(root: int) -> set[int]:
    """Every process under root (children, theirs, ...), from /proc."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/stat") as f:
                parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (ValueError, OSError):
            continue
    found, todo = set(), [root]
    while todo:
        p = todo.pop()
        kids = {c for c, pp in parent.items() if pp == p} - found
        found |= kids
        todo.extend(kids)
    return found


def _cluster_pids() -> set[int]:
    """This test process (the driver: it listens too) and every Ray process it started, by the
    process tree, not by name: gcs_server, raylets, the dashboard, monitor and log monitor, each
    node's agents and workers (under its raylet). The hosts' dnsmasq and LXC daemonize (their
    parent is init), and anything else under us without "ray" in its command line is left out."""
    def is_ray(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return b"ray" in f.read()
        except OSError:
            return False

    return {os.getpid()} | {p for p in _descendants(os.getpid()) if is_ray(p)}


def _listen_address(ss_line: str) -> str:
    """The local address of an `ss -ltunpH` line ("tcp LISTEN 0 4096 [::ffff:127.0.0.1]:43391
    *:* users:..."): 127.0.0.1 for a v4-mapped one; "*", "0.0.0.0" or "::" for a wildcard."""
    return ss_line.split()[4].rsplit(":", 1)[0].strip("[]").split("%")[0].removeprefix("::ffff:")


def remove_ray_session(session: str) -> None:
    """The session directory Ray wrote under its temp dir (/tmp/ray: logs, sockets), its
    session_latest link if that names it, and the temp dir itself if nothing else is left."""
    temp = os.path.dirname(session)
    shutil.rmtree(session, ignore_errors=True)
    latest = os.path.join(temp, "session_latest")
    if os.path.islink(latest) and os.path.realpath(latest) == os.path.realpath(session):
        os.unlink(latest)
    with contextlib.suppress(OSError):
        os.rmdir(temp)


class World:
    """The cluster, its nodes by host, the roots, the shared image directory, the fleet."""

    def __init__(self) -> None:
        from ray.cluster_utils import Cluster

        self.base = tempfile.mkdtemp(prefix="acg-fleet-", dir="/var/tmp")
        os.chmod(self.base, 0o711)
        self.upstream = os.path.join(self.base, "resolv.conf")
        with open(self.upstream, "w") as f:
            f.write(f"nameserver {UPSTREAM}\n")
        os.chmod(self.upstream, 0o644)
        self.image_dir = os.path.join(self.base, "images")
        self.roots = {h: os.path.join(self.base, h) for h in HOSTS}
        for r in self.roots.values():
            os.makedirs(r, mode=0o711)
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "include_dashboard": False, "node_ip_address": "127.0.0.1",
            "resources": {"appcontainers-host-h1": 1},
            "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}})
        self.nodes = {"h1": self.cluster.head_node}
        for h in ("h2", "h3"):
            self.add_node(h)
        self.address = self.cluster.address

    def add_node(self, host: str) -> None:
        self.nodes[host] = self.cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1",
                                                 resources={f"appcontainers-host-{host}": 1})

    def join(self, host: str, again: bool = False) -> dict:
        """The host joins; again: as a host that was there, giving no image distribution (it
        gets the fleet's, whichever that is now)."""
        import appcontainers.fleet as fleet

        return fleet.join(self.address, host, self.roots[host], HOSTS[host], GIVEN.get(host),
                          image_dir=None if again else self.image_dir, fleet_range=FLEET_RANGE, nat=False,
                          dns_upstream=self.upstream)

    def teardown(self) -> None:
        import appcontainers.fleet as fleet

        try:
            if ray.is_initialized():
                f = fleet.connect(self.address)
                for c in f.ls():
                    if c["state"] != "lost":
                        f.get(f"{c['host']}/{c['name']}").destroy()
                for h in HOSTS:
                    fleet.leave(self.address, h)
        finally:
            session = self.cluster.head_node.get_session_dir_path()
            ray.shutdown()
            self.cluster.shutdown()
            remove_ray_session(session)
            for h, r in self.roots.items():
                clean_root(r, HOSTS[h])
            shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def world():
    if os.geteuid() != 0:
        pytest.skip("the fleet's hosts run containers: root")
    if _ray_procs():
        pytest.skip(f"another Ray cluster runs on this machine: {_ray_procs()[:2]}")
    w = World()
    try:
        with ThreadPoolExecutor(3) as pool:  # the hosts come up at once (each builds its base)
            w.records = dict(zip(HOSTS, pool.map(w.join, HOSTS)))
        yield w
    finally:
        w.teardown()
        left = _ray_procs()
        assert not left, f"Ray processes left: {left}"
        _assert_nothing_left(w)


def _assert_nothing_left(w: World) -> None:
    """No bridge, nftables table, mount or process (LXC, dnsmasq) of the fleet's hosts is left."""
    from appcontainers.adapters.mounts.mountinfo import mounted_under
    from appcontainers.config import Settings
    from appcontainers.domain.firewall import table_name

    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert not [b for b in HOSTS.values() if f" {b}:" in links], "a bridge of the fleet is left"
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert not [r for r in w.roots.values() if table_name(Settings(root=r).root_id) in tables]
    assert not mounted_under(w.base)
    procs = subprocess.run(["pgrep", "-af", w.base], capture_output=True, text=True).stdout
    assert not [p for p in procs.splitlines() if "pgrep" not in p], procs


@pytest.fixture(scope="module")
def fleet(world):
    import appcontainers.fleet as fleet

    return fleet.connect(world.address)


class TestHosts:
    def test_every_ray_listener_is_on_loopback(self, world):
        """Every socket a process of the cluster listens on (TCP and UDP, IPv4 and IPv6, every
        process: see _cluster_pids) is bound to 127.0.0.1: nothing reachable from outside."""
        assert [_listen_address(x) for x in ("tcp LISTEN 0 4096 0.0.0.0:1 0.0.0.0:*", "tcp LISTEN 0 4096 *:2 *:*",
                                             "tcp LISTEN 0 4096 [::]:3 [::]:*", "udp UNCONN 0 0 [::ffff:127.0.0.1]:4 *:*")
                ] == ["0.0.0.0", "*", "::", "127.0.0.1"]  # the parse sees a wildcard as one
        pids = _cluster_pids()
        out = subprocess.run(["ss", "-ltunpH"], capture_output=True, text=True).stdout
        ours = [line for line in out.splitlines() if any(f"pid={p}," in line for p in pids)]
        assert any('"gcs_server"' in x for x in ours) and any('"raylet"' in x for x in ours), ours
        addrs = {_listen_address(line) for line in ours}
        assert addrs == {"127.0.0.1"}, ours  # (an IPv6 socket's v4-mapped ::ffff:127.0.0.1 included)

    def test_hosts_hold_distinct_subnets_and_report_capacity(self, world, fleet):
        """Each host has its own /24 (the given one as is), alive, with memory, cpus and slots."""
        hosts = {h["name"]: h for h in fleet.hosts()}
        assert set(hosts) == set(HOSTS)
        assert hosts["h1"]["subnet"] == GIVEN["h1"]
        assert len({h["subnet"] for h in hosts.values()}) == 3
        for h in hosts.values():
            assert h["alive"] and h["memory_free"] > 0 and h["cpus"] >= 1 and h["max_containers"] == 253
            assert h["subnet"].startswith("10.0.2")

    def test_the_cli_lists_hosts_and_runs_a_job(self, world):
        """`appcontainers fleet hosts --json` and `fleet run` as real processes on the cluster."""
        import json
        import sys

        cli = [sys.executable, "-m", "appcontainers.entrypoints.cli", "fleet", "--address", world.address]
        hosts = subprocess.run([*cli, "hosts", "--json"], capture_output=True, text=True, timeout=120)
        assert hosts.returncode == 0, hosts.stderr
        assert {h["name"] for h in json.loads(hosts.stdout) if h["alive"]} == set(HOSTS)
        run = subprocess.run([*cli, "run", "--", "sh", "-c", "echo from-cli; exit 7"], capture_output=True,
                             text=True, timeout=120)
        assert (run.returncode, run.stdout) == (7, "from-cli\n"), run.stderr


class TestContainers:
    def test_containers_on_each_host_have_distinct_subnets_ips_and_macs(self, world, fleet):
        """One container per host: in its host's subnet, every IP and MAC distinct; run streams
        its lines; a file goes in and comes back; ls shows each with its host; destroy."""
        import ipaddress

        hosts = {h["name"]: h for h in fleet.hosts()}
        made = [fleet.provision(host=h) for h in HOSTS]
        try:
            infos = [c.info() for c in made]
            for c, info in zip(made, infos):
                assert ipaddress.ip_address(info["ip"]) in ipaddress.ip_network(hosts[c.host]["subnet"])
            assert len({i["ip"] for i in infos}) == 3 and len({i["mac"] for i in infos}) == 3
            lines = []
            r = made[1].run("echo one; echo two >&2; echo three", on_output=lambda s, ln: lines.append((s, ln)))
            assert r.exit_code == 0 and r.stdout == "one\nthree\n"
            assert ("stdout", "one") in lines and ("stderr", "two") in lines
            made[2].create_file("/root/hello.txt", "hi from the fleet\n")
            assert made[2].read_file("/root/hello.txt") == b"hi from the fleet\n"
            tree = os.path.join(world.base, "tree")
            os.makedirs(os.path.join(tree, "sub"), exist_ok=True)
            with open(os.path.join(tree, "sub", "f.txt"), "w") as f:
                f.write("a tree\n")
            made[0].copy_in(tree, "/srv")  # a directory goes as a tar stream
            assert made[0].run("cat /srv/tree/sub/f.txt").stdout == "a tree\n"
            assert "exit" in {rec.get("type") for _, rec in made[1].logs()}  # the run above, in its log
            made[0].stop()
            assert made[0].state == "STOPPED"
            listed = {(c["host"], c["name"]) for c in fleet.ls()}
            assert {(c.host, c.name) for c in made} <= listed
        finally:
            for c in made:
                c.destroy()
        assert not [c for c in fleet.ls() if c["name"] in {m.name for m in made}]

    def test_an_image_saved_on_one_host_is_fetched_once_per_host(self, world, fleet):
        """A container saved on h1 is an image every host can use: h2 and h3 fetch it once each
        and their second container from it is a local load."""
        src = fleet.provision(host="h1")
        made = []
        try:
            src.create_file("/root/marker", "made on h1\n")
            image = src.save(name="fleet-test")
            assert os.path.isfile(os.path.join(world.image_dir, image["id"] + ".aimg"))
            for h in ("h2", "h3", "h2", "h3"):
                made.append(fleet.provision(image=image["id"], host=h))
            assert all(c.read_file("/root/marker") == b"made on h1\n" for c in made)
            job = fleet.run(image["id"], "cat /root/marker", host="h3")
            assert job.stdout == "made on h1\n" and job.host == "h3"
            counts = fleet.fetch_counts()
            assert counts["h2"] == {image["id"]: 1} and counts["h3"] == {image["id"]: 1}
            assert counts["h1"] == {}  # saved there: never fetched
            made[0].create_file("/root/top", "a layer on h2\n")
            top = made[0].save(name="fleet-top", flatten=False)["id"]  # its parent is in the directory
            made.append(fleet.provision(image=top, host="h1"))  # h1 lacks both: the chain comes
            made.append(fleet.provision(image=image["id"], host="h1"))  # the parent came with it
            assert made[-2].run("cat /root/marker /root/top").stdout == "made on h1\na layer on h2\n"
            assert (fleet.fetch_counts()["h1"], fleet.layer_counts()["h1"]) == ({top: 1}, {top: 2})
        finally:
            for c in [src, *made]:
                c.destroy()


class TestJobs:
    def test_map_of_40_jobs_uses_every_host_and_returns_every_result(self, world, fleet):
        """40 one-shot jobs: every exit code and output comes back, from all three hosts."""
        commands = [f"echo job-{i}; exit {i % 3}" for i in range(40)]
        results = list(fleet.map(None, commands, concurrency=6))
        assert sorted(r.index for r in results) == list(range(40))
        for r in results:
            assert (r.exit_code, r.stdout, r.error) == (r.index % 3, f"job-{r.index}\n", None)
        assert {r.host for r in results} == set(HOSTS)
        assert not [c for c in fleet.ls() if c["ephemeral"]]  # every job's container went

    def test_events_come_merged_with_their_host(self, world, fleet):
        """fleet.events(): a container made on h2 shows up as an event carrying host h2."""
        seen: list[dict] = []
        stream = fleet.events(wait=0.5)

        def read():
            for e in stream:
                seen.append(e)
                if e.get("host") == "h2" and "container" in e:  # (not a host_lost/host_error of h2)
                    return

        t = threading.Thread(target=read, daemon=True)
        t.start()
        time.sleep(3)  # the hosts' watches start
        c = fleet.provision(host="h2")
        try:
            c.run("true")
            t.join(timeout=20)
            assert any(e.get("host") == "h2" and e.get("container") == c.name for e in seen), seen
        finally:
            c.destroy()
            stream.close()


class TestHostLoss:
    def test_a_dead_host_is_lost_its_job_retried_and_it_catches_up_on_rejoin(self, world, fleet, via_registry):
        """h3's node dies: its container is `lost` in ls and calls to it raise HostLost; the
        ephemeral job running there (from an image in the registry, pulled by h3) runs again on
        another host, which pulls the image too; h3 joins again, reconciles, and ls shows its
        container back."""
        src = fleet.provision(host="h1")
        try:
            src.create_file("/root/job.sh", "sleep 4; echo done\n")
            image = src.save(name="retried")["id"]
        finally:
            src.destroy()
        kept = fleet.provision(host="h3")
        out: dict = {}

        def job():
            out["r"] = fleet.run(image, "sh /root/job.sh", host="h3", retries=2)

        t = threading.Thread(target=job)
        t.start()
        deadline = time.monotonic() + 30
        while not [c for c in fleet.ls() if c["host"] == "h3" and c["ephemeral"] and c["state"] == "RUNNING"]:
            assert time.monotonic() < deadline, "the job never started on h3"
            time.sleep(0.3)
        world.cluster.remove_node(world.nodes.pop("h3"))
        t.join(timeout=60)
        r = out["r"]
        assert (r.exit_code, r.stdout, r.attempts) == (0, "done\n", 2) and r.host in ("h1", "h2")
        assert fleet.fetch_counts()[r.host].get(image) == 1
        lost = [c for c in fleet.ls() if c["host"] == "h3"]
        assert kept.name in {c["name"] for c in lost} and {c["state"] for c in lost} == {"lost"}
        with pytest.raises(HostLost, match="h3"):
            kept.run("true")
        assert {h["name"]: h["alive"] for h in fleet.hosts()}["h3"] is False
        world.add_node("h3")
        assert world.join("h3", again=True)["subnet"] == world.records["h3"]["subnet"]  # its own subnet back
        back = {c["name"]: c["state"] for c in fleet.ls() if c["host"] == "h3"}
        assert kept.name in back and "lost" not in back.values()
        assert kept.run("echo back").stdout == "back\n"


@pytest.fixture(scope="module")
def local_registry():
    """A docker-registry on 127.0.0.1 (plain HTTP) for the module's registry tests."""
    from tests.integration.registry_helpers import start_registry, stop_registry

    r = start_registry()
    try:
        yield r
    finally:
        stop_registry(r)
        assert r.proc.poll() is not None


@pytest.fixture
def via_registry(world, fleet, local_registry):
    """The fleet's images travel by the local registry for the test, by the shared directory again after."""
    fleet.use_images(registry=f"{local_registry.host}/fleet", tls_verify=False)
    try:
        yield local_registry
    finally:
        fleet.use_images(image_dir=world.image_dir)


def _log(registry, method: str, digest: str) -> int:
    """Requests of method that name the blob digest (its hex, as a PUT's ?digest= encodes it) and succeeded."""
    hexdigest = digest.split(":")[1]
    with open(registry.log, errors="replace") as f:
        return sum(1 for line in f if f'"{method} /v2/' in line and hexdigest in line
                   and any(f'" {code} ' in line for code in (200, 201)))


def _layer_digests(registry, image_id: str) -> dict[str, str]:
    """{image id: blob digest} of the layers of the manifest tagged image_id."""
    import json
    import urllib.request

    req = urllib.request.Request(f"http://{registry.host}/v2/fleet/img/manifests/{image_id}",
                                 headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        layers = json.loads(r.read())["layers"]
    return {b["annotations"]["org.appcontainers.image.id"]: b["digest"] for b in layers}


class TestRegistryImages:
    def test_an_image_pushed_once_is_pulled_once_per_host(self, world, fleet, via_registry):
        """Through a real registry: x saved on h1 and y (a layer over x) saved on h2 are each
        uploaded once; every host pulls each layer once (y's chain brings x along), runs
        containers from them, and its second container is a local load; a job runs from y;
        pushing a file the registry has sends nothing."""
        import json
        import sys

        from appcontainers.config import Settings

        reg = via_registry
        src = fleet.provision(host="h1")
        made = []
        try:
            src.create_file("/root/marker", "via the registry\n")
            x = src.save(name="reg-x")["id"]
            made.append(fleet.provision(image=x, host="h2"))
            made[0].create_file("/root/top", "layered\n")
            y = made[0].save(name="reg-y", flatten=False)["id"]
            for h in ("h3", "h1", "h2", "h3", "h1", "h2"):  # each host's first: a pull; its second: local
                made.append(fleet.provision(image=y, host=h))
            made.append(fleet.provision(image=x, host="h3"))  # came with y's chain
            for c in made[1:-1]:
                assert c.run("cat /root/marker /root/top").stdout == "via the registry\nlayered\n", c.host
            assert made[-1].read_file("/root/marker") == b"via the registry\n"
            job = fleet.run(y, "cat /root/top", host="h1")
            assert (job.host, job.stdout) == ("h1", "layered\n")
            digests = _layer_digests(reg, y)
            assert set(digests) == {x, y}
            assert [_log(reg, "PUT", digests[i]) for i in (x, y)] == [1, 1]  # uploaded once each
            assert [_log(reg, "GET", digests[i]) for i in (x, y)] == [3, 3]  # once per host each
            counts, layers = fleet.fetch_counts(), fleet.layer_counts()
            assert [counts[h].get(x) for h in ("h1", "h2", "h3")] == [None, 1, None]
            assert [counts[h].get(y) for h in ("h1", "h2", "h3")] == [1, 1, 1]
            assert [layers[h].get(y) for h in ("h1", "h2", "h3")] == [2, 1, 2]
            stored = Settings(root=world.roots["h3"]).layout.image_file(y, "user")
            assert fleet.push_image(stored) == y  # a file the registry has: nothing sent
            assert [_log(reg, "PUT", digests[i]) for i in (x, y)] == [1, 1]
            shown = subprocess.run([sys.executable, "-m", "appcontainers.entrypoints.cli", "fleet", "--address",
                                    world.address, "images", "--json"], capture_output=True, text=True, timeout=120)
            assert json.loads(shown.stdout) == {"kind": "registry", "address": f"{reg.host}/fleet",
                                                "tls_verify": False}, shown.stderr
        finally:
            for c in [src, *made]:
                c.destroy()
