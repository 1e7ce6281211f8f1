"""Bench: fleet.map of one-shot ephemeral jobs on a 2-node local Ray cluster vs the same jobs
on one local Service with a thread pool of the same total concurrency.

    sudo PYTHONPATH=$PWD .venv/bin/python bench/fleet.py [--jobs 100] [--concurrency 4]

Both sides do the same work per job (an ephemeral container from the default base runs the
command and is destroyed): the local side calls the service directly from a thread pool; the
fleet adds Ray (an actor call per job, the placement, the result back) and its host's
bookkeeping (the container list published to Ray's KV store after each change).
Writes its rows between the fleet markers of bench/RESULTS.md.
Uses bridges acfb1/acfb2/acfb0 and 10.0.236.0/22, a data root per side under /var/tmp.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
BEGIN, END = "<!-- fleet rows: bench/fleet.py -->", "<!-- end fleet rows -->"
HOSTS = {"b1": ("acfb1", "10.0.236.0/24"), "b2": ("acfb2", "10.0.237.0/24")}
LOCAL = ("acfb0", "10.0.238.0/24")


def local_side(base: str, upstream: str):
    """One local Service and a Host over it (the same job code as the fleet's hosts)."""
    import appcontainers
    from appcontainers.fleet.host import Host
    from appcontainers.fleet.images import SharedDirectory

    root = os.path.join(base, "local")
    os.makedirs(root, mode=0o711)
    svc = appcontainers.setup_service(root=root, bridge=LOCAL[0], subnet=LOCAL[1], nat=False,
                                      dns_upstream=upstream)
    svc.bases.ensure_default()
    return Host("local", svc, SharedDirectory(os.path.join(base, "images"), svc.ports.codec))


def run_local(host, commands, concurrency):
    svc = host.svc
    base = svc.bases.resolve(None).id

    def one(cmd):  # the service alone: what Host.job does, without the fleet's bookkeeping
        t = time.monotonic()
        r = svc.containers.provision(None, base, ephemeral=True)
        try:
            assert svc.get(r.name).run(cmd).exit_code == 0
        finally:
            svc.containers.destroy(r.name)
        return time.monotonic() - t

    t0 = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        lat = list(pool.map(one, commands))
    return time.monotonic() - t0, lat


def run_fleet(fleet, commands, concurrency):
    t0 = time.monotonic()
    results = list(fleet.map(None, commands, concurrency=concurrency))
    wall = time.monotonic() - t0
    bad = [r for r in results if r.exit_code != 0]
    assert not bad, bad[:3]
    return wall, results


def interleaved(host, fleet, jobs, concurrency, rounds):
    """Both sides in alternating chunks (L F, F L, ...): the machine's load, which other
    sessions change all the time, falls on both alike."""
    chunk = -(-len(jobs) // rounds)
    lw = fw = 0.0
    ll, fr = [], []
    for i in range(rounds):
        part = jobs[i * chunk:(i + 1) * chunk]
        for side in (("local", "fleet") if i % 2 == 0 else ("fleet", "local")):
            if side == "local":
                w, lat = run_local(host, part, concurrency)
                lw, ll = lw + w, ll + lat
            else:
                w, res = run_fleet(fleet, part, concurrency)
                fw, fr = fw + w, fr + res
    return lw, ll, fw, fr


def ping_ms(fleet, n=200):
    """Median round trip of a no-op call to a host's actor (Ray's share of each call)."""
    actor = fleet.actor("b1")
    samples = []
    for _ in range(n):
        t = time.monotonic()
        fleet.ray.get(actor.ping.remote())
        samples.append(time.monotonic() - t)
    return statistics.median(samples) * 1000


def start_cluster(base: str, upstream: str):
    import appcontainers.fleet as fleet
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "node_ip_address": "127.0.0.1",
        "resources": {"appcontainers-host-b1": 1}})
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", resources={"appcontainers-host-b2": 1})
    for h, (bridge, subnet) in HOSTS.items():
        root = os.path.join(base, h)
        os.makedirs(root, mode=0o711)
        fleet.join(cluster.address, h, root, bridge, subnet, image_dir=os.path.join(base, "images"),
                   fleet_range="10.0.236.0/22", nat=False, dns_upstream=upstream)
    return cluster, fleet.connect(cluster.address)


def measure(args, base, upstream):
    true_jobs = ["true"] * args.jobs
    sleep_jobs = ["sleep 1"] * args.jobs
    host = local_side(base, upstream)
    cluster, fleet = start_cluster(base, upstream)
    try:
        run_local(host, ["true"] * 4, args.concurrency)  # warm both sides (page cache, first starts)
        run_fleet(fleet, ["true"] * 4, args.concurrency)
        out = {"ping": ping_ms(fleet)}
        for label, jobs in (("true", true_jobs), ("sleep 1", sleep_jobs)):
            lw, ll, fw, fr = interleaved(host, fleet, jobs, args.concurrency, args.rounds)
            out[label] = (lw, ll, fw, fr)
            fl = [r.latency for r in fr]
            print(f"{label}: local {lw:.1f}s mean {statistics.mean(ll)*1000:.0f} ms/job; fleet {fw:.1f}s "
                  f"mean {statistics.mean(fl)*1000:.0f} ms/job on {sorted({r.host for r in fr})}; "
                  f"fleet transport {statistics.mean([r.latency - r.seconds for r in fr])*1000:.1f} ms/job",
                  flush=True)
        return out
    finally:
        import ray

        for h in HOSTS:
            import appcontainers.fleet as f

            f.leave(cluster.address, h)
        session = cluster.head_node.get_session_dir_path()
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(session, ignore_errors=True)  # Ray's logs and sockets under /tmp/ray


def rows(out, args) -> list[str]:
    n, c = args.jobs, args.concurrency
    lw, ll, fw, fr = out["true"]
    fl = [r.latency for r in fr]
    added = statistics.mean(fl) - statistics.mean(ll)
    transport = statistics.mean([r.latency - r.seconds for r in fr])
    sw, sl, sfw, sfr = out["sleep 1"]
    sfl = [r.latency for r in sfr]
    ratio = (n / sfw) / (n / sw)
    return [
        f"| fleet | `true` jobs: the fleet's own share of a job's latency (caller's latency - host's job time) "
        f"| fleet: {transport*1000:.1f} ms | actor call round trip (no-op): {out['ping']:.1f} ms |  | <= 20 ms "
        f"| {'yes' if transport <= 0.020 else '**no**'} |",
        f"| fleet | map of {n} `true` jobs, concurrency {c}: mean latency per job | fleet (2 nodes): "
        f"{statistics.mean(fl)*1000:.0f} ms (median {statistics.median(fl)*1000:.0f}) | local pool: "
        f"{statistics.mean(ll)*1000:.0f} ms (median {statistics.median(ll)*1000:.0f}) | {added*1000:+.0f} ms "
        f"| <= +20 ms | {'yes' if added <= 0.020 else '**no**'} |",
        f"| fleet | map of {n} `true` jobs, concurrency {c}: throughput | fleet: {n/fw:.2f} jobs/s | local: "
        f"{n/lw:.2f} jobs/s | {(n/fw)/(n/lw):.2f}x |  |  |",
        f"| fleet | map of {n} `sleep 1` jobs, concurrency {c}: throughput | fleet: {n/sfw:.2f} jobs/s | local: "
        f"{n/sw:.2f} jobs/s | {ratio:.2f}x | >= 0.8x | {'yes' if ratio >= 0.8 else '**no**'} |",
        f"| fleet | map of {n} `sleep 1` jobs: mean latency per job | fleet: {statistics.mean(sfl)*1000:.0f} ms | "
        f"local: {statistics.mean(sl)*1000:.0f} ms | {(statistics.mean(sfl)-statistics.mean(sl))*1000:+.0f} ms |  |  |",
    ]


def write(lines: list[str], note: str) -> None:
    text = open(RESULTS).read()
    block = "\n".join([BEGIN, "", "| bench | measure | measured | baseline | ratio | goal | met |",
                       "|---|---|---|---|---|---|---|", *lines, "", note, END])
    if BEGIN in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n## Fleet (bench/fleet.py)\n\n" + block + "\n"
    with open(RESULTS, "w") as f:
        f.write(text)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=4, help="alternating chunks of each side")
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="acf-bench-", dir="/var/tmp")
    os.chmod(base, 0o711)
    upstream = os.path.join(base, "resolv.conf")
    with open(upstream, "w") as f:
        f.write("nameserver 127.236.0.54\n")
    os.chmod(upstream, 0o644)
    load = os.getloadavg()
    try:
        out = measure(args, base, upstream)
    finally:
        from tests.conftest import clean_root

        for h, (bridge, _) in HOSTS.items():
            clean_root(os.path.join(base, h), bridge)
        clean_root(os.path.join(base, "local"), LOCAL[0])
        shutil.rmtree(base, ignore_errors=True)
    note = (f"Run {time.strftime('%Y-%m-%dT%H:%M', time.gmtime())} UTC on this 2-core machine shared with other "
            f"sessions' tests (load average {load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end): "
            f"both sides ran here, the 2 Ray nodes "
            f"on the same 2 cores as the local pool, so the fleet gains no capacity; latency = from a job sent "
            f"to its result seen by the caller (the fleet: JobResult.latency; local: the pool thread's time). "
            f"The sides ran in {args.rounds} alternating chunks each, so the load falls on both; the first row "
            f"is what the fleet layer itself adds (Ray's call, placement, the result back), the second the "
            f"end-to-end difference, which also holds the load's noise and the two hosts' own overheads.")
    write(rows(out, args), note)
    print("\n".join(rows(out, args)))


if __name__ == "__main__":
    main()
