"""The fleet's pure parts as data: subnet claims, placement, the job batch with retries."""
from __future__ import annotations

import threading

import pytest

from appcontainers.fleet import subnets
from appcontainers.fleet.errors import HostLost, NoRoom, RangeExhausted, SubnetTaken
from appcontainers.fleet.jobs import Batch, Job
from appcontainers.fleet.placement import HostView, choose, fits, spread


class DictKV:
    """subnets.KV over a dict, put-if-absent under a lock (as Ray's GCS does it)."""

    def __init__(self):
        self.d: dict[str, str] = {}
        self.lock = threading.Lock()

    def put_if_absent(self, key, value):
        with self.lock:
            if key in self.d:
                return False
            self.d[key] = value
            return True

    def get(self, key):
        return self.d.get(key)

    def delete(self, key):
        self.d.pop(key, None)

    def keys(self, prefix):
        return sorted(k for k in self.d if k.startswith(prefix))


class TestSubnets:
    def test_blocks_of_a_subnet(self):
        """A /24 is one block, a /23 two, a /25 the /24 that holds it."""
        assert subnets.blocks("10.0.224.0/24") == ["10.0.224.0/24"]
        assert subnets.blocks("10.0.224.0/23") == ["10.0.224.0/24", "10.0.225.0/24"]
        assert subnets.blocks("10.0.224.128/25") == ["10.0.224.0/24"]

    def test_hosts_get_distinct_blocks_in_order(self):
        """Each host claims the first free /24 of the range."""
        kv = DictKV()
        got = [subnets.claim(kv, h, "10.0.224.0/22") for h in ("a", "b", "c")]
        assert got == ["10.0.224.0/24", "10.0.225.0/24", "10.0.226.0/24"]

    def test_a_host_joining_again_keeps_its_subnet(self):
        """The same name gets back what it holds, no new claim."""
        kv = DictKV()
        first = subnets.claim(kv, "a", "10.0.224.0/22")
        assert subnets.claim(kv, "a", "10.0.224.0/22") == first
        assert len(kv.keys("subnet/")) == 1

    def test_a_given_subnet_is_registered_and_skipped_by_others(self):
        """A subnet given to join is claimed as is; the free claims go around it."""
        kv = DictKV()
        assert subnets.claim(kv, "a", "10.0.224.0/22", "10.0.224.0/23") == "10.0.224.0/23"
        assert subnets.claim(kv, "b", "10.0.224.0/22") == "10.0.226.0/24"

    def test_an_overlapping_given_subnet_is_refused_and_claims_nothing(self):
        """All or nothing: a /23 half taken leaves no claim behind."""
        kv = DictKV()
        subnets.claim(kv, "a", "10.0.224.0/22")  # 10.0.224.0/24
        before = dict(kv.d)
        with pytest.raises(SubnetTaken, match="host a"):
            subnets.claim(kv, "b", "10.0.224.0/22", "10.0.224.0/23")
        assert kv.d == before

    def test_a_refused_move_keeps_the_old_subnet(self):
        """A host asking for another host's block is refused and still holds its own /24:
        the next host does not get it (its containers still use it)."""
        kv = DictKV()
        a = subnets.claim(kv, "a", "10.0.224.0/22")  # 10.0.224.0/24
        b = subnets.claim(kv, "b", "10.0.224.0/22")  # 10.0.225.0/24
        before = dict(kv.d)
        with pytest.raises(SubnetTaken, match="host b"):
            subnets.claim(kv, "a", "10.0.224.0/22", b)
        assert kv.d == before
        assert subnets.claim(kv, "c", "10.0.224.0/22") not in (a, b)

    def test_a_move_takes_the_new_blocks_then_gives_back_the_old(self):
        """Moving to a free subnet frees the old block; one overlapping it keeps the shared block."""
        kv = DictKV()
        subnets.claim(kv, "a", "10.0.224.0/22")  # 10.0.224.0/24
        assert subnets.claim(kv, "a", "10.0.224.0/22", "10.0.226.0/24") == "10.0.226.0/24"
        assert kv.keys("subnet/") == ["subnet/10.0.226.0/24"]
        assert subnets.claim(kv, "a", "10.0.224.0/22", "10.0.226.0/23") == "10.0.226.0/23"
        assert {k: kv.d[k] for k in kv.keys("subnet/")} == {"subnet/10.0.226.0/24": "a", "subnet/10.0.227.0/24": "a"}
        subnets.claim(kv, "b", "10.0.224.0/22", "10.0.228.0/24")
        with pytest.raises(SubnetTaken, match="host b"):  # overlaps a's blocks, then b's: a keeps its own
            subnets.claim(kv, "a", "10.0.224.0/22", "10.0.224.0/21")
        assert kv.get("host-subnet/a") == "10.0.226.0/23"
        assert kv.d["subnet/10.0.226.0/24"] == "a" and kv.d["subnet/10.0.227.0/24"] == "a"
        assert "subnet/10.0.224.0/24" not in kv.d

    def test_the_range_runs_out(self):
        """A /23 range holds two hosts; the third is refused with the range named."""
        kv = DictKV()
        subnets.claim(kv, "a", "10.0.224.0/23")
        subnets.claim(kv, "b", "10.0.224.0/23")
        with pytest.raises(RangeExhausted, match="10.0.224.0/23"):
            subnets.claim(kv, "c", "10.0.224.0/23")

    def test_racing_hosts_never_share_a_block(self):
        """32 hosts claiming at once from 32 threads get 32 different blocks."""
        kv = DictKV()
        got: dict[str, str] = {}
        threads = [threading.Thread(target=lambda h=h: got.__setitem__(h, subnets.claim(kv, h, "10.0.224.0/19")))
                   for h in [f"h{i}" for i in range(32)]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(got.values())) == 32

    def test_release_frees_the_blocks(self):
        """A released host's block goes to the next claimant."""
        kv = DictKV()
        a = subnets.claim(kv, "a", "10.0.224.0/24")
        subnets.release(kv, "a")
        assert subnets.claim(kv, "b", "10.0.224.0/24") == a

    def test_the_first_range_stays_the_fleets(self):
        """fleet_range: the first host's choice (or the default) wins."""
        kv = DictKV()
        assert subnets.fleet_range(kv, "10.0.224.0/20") == "10.0.224.0/20"
        assert subnets.fleet_range(kv, "10.9.0.0/16") == "10.0.224.0/20"
        assert subnets.fleet_range(DictKV(), None) == subnets.DEFAULT_RANGE

    def test_mac_prefixes_differ_per_block_and_are_unicast_local(self):
        """Two blocks, two prefixes; first octet 0x0a: unicast, locally administered."""
        a, b = subnets.mac_prefix("10.0.224.0/24"), subnets.mac_prefix("10.0.225.0/24")
        assert a != b and a == "0a:0a:00:e0"
        assert int(a.split(":")[0], 16) & 0b11 == 0b10


def view(name, **kw):
    return HostView(name=name, alive=kw.pop("alive", True), memory_total=8 << 30,
                    memory_available=kw.pop("avail", 6 << 30), **kw)


class TestPlacement:
    def test_a_dead_or_full_host_does_not_fit(self):
        """Dead, out of slots, or short of memory: no room there."""
        assert not fits(view("a", alive=False))
        assert not fits(view("a", containers=250, max_containers=250))
        assert not fits(view("a", avail=1 << 30), memory="2G")
        assert fits(view("a", containers=10, cpus=1, load=5.0))  # busy CPUs alone do not block

    def test_choose_takes_the_least_used_share_of_slots(self):
        """The host with the lowest share of its slots in use wins, whatever its CPU count."""
        hosts = [view("big", cpus=64, containers=100, max_containers=250),
                 view("small", cpus=1, containers=10, max_containers=250)]
        assert choose(hosts).name == "small"

    def test_memory_reserved_by_limits_counts(self):
        """Memory promised to a host's containers is not free for a new one."""
        hosts = [view("a", memory_reserved=7 << 30), view("b", containers=5)]
        assert choose(hosts, memory="2G").name == "b"

    def test_no_room_names_the_need(self):
        """Nothing fits: NoRoom saying what was asked."""
        with pytest.raises(NoRoom, match="4G"):
            choose([view("a", avail=1 << 30)], memory="4G")

    def test_spread_takes_the_host_with_fewest_in_flight(self):
        """A batch goes round the hosts; none past the limit."""
        hosts = [view("a"), view("b"), view("c")]
        count = {"a": 1, "b": 0, "c": 1}
        assert spread(hosts, count, 2).name == "b"
        assert spread(hosts, {"a": 2, "b": 2, "c": 2}, 2) is None


class FakeCluster:
    """Hosts that run jobs at once; a host in `dies` is lost for every job sent to it."""

    def __init__(self, dies=()):
        self.dies, self.sent = set(dies), []

    def submit(self, host, job):
        self.sent.append((host, job.index))
        return (host, job)

    def wait(self, refs):
        return refs[:1]

    def collect(self, host, ref):
        _, job = ref
        if host in self.dies:
            raise HostLost(host)
        return {"exit_code": job.index % 2, "stdout": f"{job.command}\n".encode(), "host": host}


class TestBatch:
    def run(self, cluster, n, limit=4, retries=2, hosts=("a", "b")):
        batch = Batch([view(h) for h in hosts], cluster.submit, cluster.wait, cluster.collect, limit, retries)
        return list(batch.run(Job(index=i, command=f"job{i}") for i in range(n)))

    def test_every_job_returns_spread_over_hosts(self):
        """Every job's result comes back once, from both hosts."""
        cluster = FakeCluster()
        results = self.run(cluster, 10)
        assert sorted(r.index for r in results) == list(range(10))
        assert {r.host for r in results} == {"a", "b"}
        assert all(r.exit_code == r.index % 2 and r.stdout == f"job{r.index}\n" for r in results)

    def test_a_job_on_a_dead_host_runs_again_elsewhere(self):
        """A host lost: its jobs go to the other, attempts counted, nothing lost."""
        cluster = FakeCluster(dies={"a"})
        results = self.run(cluster, 6)
        assert sorted(r.index for r in results) == list(range(6))
        assert {r.host for r in results} == {"b"} and all(r.error is None for r in results)
        assert {r.attempts for r in results if ("a", r.index) in cluster.sent} == {2}

    def test_retries_are_bounded(self):
        """Every host dead: each job gives up with the error after its tries."""
        results = self.run(FakeCluster(dies={"a", "b"}), 3, retries=1)
        assert len(results) == 3 and all(r.exit_code is None and r.error for r in results)
        assert all(r.attempts <= 2 for r in results)

    def test_in_flight_stays_under_the_limit(self):
        """Never more than limit jobs in flight."""
        cluster = FakeCluster()
        batch = Batch([view("a"), view("b")], cluster.submit, lambda refs: refs[:1], cluster.collect, 3, 0)
        peak = 0
        for _ in batch.run(Job(index=i, command="x") for i in range(20)):
            peak = max(peak, len(batch.inflight) + 1)
        assert peak <= 3
