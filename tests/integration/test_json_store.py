"""JsonStore on real files with real processes: atomicity, locking, crash safety, corruption."""
import ipaddress
import json
import multiprocessing
import os
import random
import re
import signal
import time

import pytest

from appcontainers.adapters.store.json_store import JsonStore
from appcontainers.domain.exceptions import InvalidValue, StateCorrupt
from appcontainers.domain.image import Image, Manifest
from appcontainers.domain.network import MacGenerator
from appcontainers.domain.reservation import Reservation
from appcontainers.domain.state import State

NET = "10.20.0.0/16"
ID_A = "a" * 64
TMP_RE = re.compile(r"\.resources\..+\.tmp")
FORK = multiprocessing.get_context("fork")


def _reserve(state, name, rng=None):
    ip = state.pool.allocate(name)
    mac = MacGenerator(rng or random.Random()).generate(state.macs())
    state.add(Reservation(name=name, ip=ip, mac=mac, image=ID_A))
    return ip


def _stray_files(directory):
    return sorted(set(os.listdir(directory)) - {"resources.json", "resources.json.lock"})


@pytest.fixture
def path(tmp_path):
    return tmp_path / "resources.json"


@pytest.fixture
def store(path):
    return JsonStore(str(path), NET)


class TestTransaction:
    def test_round_trip(self, store, path):
        """What a transaction commits is what read(), a new store and the file itself hold."""
        with store.transaction() as state:
            _reserve(state, "web", random.Random(1))
            _reserve(state, "db", random.Random(2))
            state.images[ID_A] = Image(id=ID_A, manifest=Manifest(name="base", created=1.5), kind="base")
            expected = state.to_dict()
        assert store.read().to_dict() == expected
        assert JsonStore(str(path), NET).read() == State.from_dict(expected)
        assert json.loads(path.read_bytes()) == expected
        assert path.stat().st_mode & 0o777 == 0o600
        assert _stray_files(path.parent) == []

    def test_missing_file_is_empty_state(self, store, path):
        """Without a file read() gives an empty state of the configured subnet and writes nothing."""
        state = store.read()
        assert state == State.empty(NET)
        assert not path.exists()

    def test_first_transaction_creates_file(self, store, path):
        """Even an unchanged first transaction leaves a valid file behind."""
        with store.transaction():
            pass
        assert State.from_dict(json.loads(path.read_bytes())) == State.empty(NET)

    def test_unchanged_transaction_does_not_rewrite(self, store, path):
        """A transaction that changes nothing keeps the very same file (same inode)."""
        with store.transaction() as state:
            _reserve(state, "web")
        inode = path.stat().st_ino
        with store.transaction() as state:
            state.get("web")
        assert path.stat().st_ino == inode

    def test_exception_leaves_file_unchanged(self, store, path):
        """An exception inside the block propagates and nothing of the block is saved."""
        with store.transaction() as state:
            _reserve(state, "web")
        before = path.read_bytes()

        class Boom(Exception):
            pass

        with pytest.raises(Boom):
            with store.transaction() as state:
                _reserve(state, "db")
                state.remove("web")
                raise Boom
        assert path.read_bytes() == before
        assert set(store.read().reservations) == {"web"}
        assert _stray_files(path.parent) == []

    def test_exception_on_first_transaction_writes_nothing(self, store, path):
        """A failed first transaction does not create the file."""
        with pytest.raises(RuntimeError):
            with store.transaction() as state:
                state.pool.allocate("web")
                raise RuntimeError("stop")
        assert not path.exists()

    def test_equivalent_subnet_spelling(self, store, path):
        """A subnet written as a netmask is the same subnet: reservations load fine."""
        with store.transaction() as state:
            _reserve(state, "web")
        state = JsonStore(str(path), "10.20.0.0/255.255.0.0").read()
        assert state.get("web").ip == "10.20.0.2"


def _allocate_many(path, worker, count, barrier):
    barrier.wait(timeout=20)
    store = JsonStore(path, NET)
    for j in range(count):
        with store.transaction() as state:
            _reserve(state, f"w{worker}-{j}")


class TestConcurrency:
    WORKERS, EACH = 8, 25

    def test_parallel_allocations(self, store, path):
        """8 processes x 25 one-allocation transactions end with 200 distinct addresses and MACs."""
        barrier = FORK.Barrier(self.WORKERS)
        procs = [FORK.Process(target=_allocate_many, args=(str(path), w, self.EACH, barrier))
                 for w in range(self.WORKERS)]
        try:
            for p in procs:
                p.start()
            for p in procs:
                p.join(timeout=60)
                assert p.exitcode == 0
        finally:
            for p in procs:
                if p.is_alive():
                    p.kill()
                    p.join()
        state = State.from_dict(json.loads(path.read_bytes()))
        expected = {f"w{w}-{j}" for w in range(self.WORKERS) for j in range(self.EACH)}
        assert set(state.reservations) == expected == set(state.pool.allocations())
        addresses = {r.ip for r in state.reservations.values()}
        assert len(addresses) == len(expected) == len(state.macs())
        # Lowest free first, nothing lost: exactly the first 200 host addresses.
        first = ipaddress.IPv4Network(NET).network_address + 2
        assert addresses == {str(first + i) for i in range(len(expected))}
        assert store.read() == state
        assert _stray_files(path.parent) == []


WINDOW = 5


def _churn(path, ready):
    """Commits forever: step k holds names n(k-WINDOW+1)..n(k) and a PAD of k % 4000 bytes."""
    store = JsonStore(path, NET)
    while True:
        with store.transaction() as state:
            held = [int(n[1:]) for n in state.pool.allocations()]
            k = max(held, default=-1) + 1
            _reserve(state, f"n{k}")
            state.remove(f"n{k - WINDOW}")
            manifest = Manifest(name="pad", created=k, environment={"PAD": "x" * (k % 4000)})
            state.images = {ID_A: Image(id=ID_A, manifest=manifest)}
        ready.set()


def _check_committed(raw):
    """raw must be one whole state _churn committed: returns its step."""
    state = State.from_dict(json.loads(raw))
    ks = sorted(int(n[1:]) for n in state.pool.allocations())
    top = ks[-1]
    assert ks == list(range(max(0, top - WINDOW + 1), top + 1))
    assert set(state.reservations) == {f"n{k}" for k in ks}
    assert state.images[ID_A].environment["PAD"] == "x" * (top % 4000)
    return top


class TestCrashSafety:
    KILLS = 20

    def test_sigkill_mid_write(self, store, path):
        """A writer SIGKILLed at random moments always leaves a whole old or new state."""
        rng = random.Random(20240601)
        steps = []
        for _ in range(self.KILLS):
            ready = FORK.Event()
            child = FORK.Process(target=_churn, args=(str(path), ready))
            child.start()
            try:
                assert ready.wait(timeout=20), "the writer never committed"
                time.sleep(rng.uniform(0, 0.03))
            finally:
                os.kill(child.pid, signal.SIGKILL)
                child.join(timeout=20)
            assert child.exitcode == -signal.SIGKILL
            steps.append(_check_committed(path.read_bytes()))
            assert _check_committed(json.dumps(store.read().to_dict())) == steps[-1]
        assert steps == sorted(steps) and steps[-1] > self.KILLS  # every child made progress

        strays = _stray_files(path.parent)
        assert all(TMP_RE.fullmatch(f) for f in strays), strays
        assert len(strays) <= self.KILLS
        sizes = {f: (path.parent / f).stat().st_size for f in strays}
        time.sleep(0.1)
        assert {f: (path.parent / f).stat().st_size for f in strays} == sizes  # nobody writes them
        # The dead writers' locks are gone: a new transaction goes through at once.
        start = time.monotonic()
        with store.transaction() as state:
            state.pool.allocate("after")
        assert time.monotonic() - start < 5
        assert store.read().pool.address_of("after") is not None


def _valid_bytes():
    state = State.empty(NET)
    _reserve(state, "web", random.Random(3))
    return json.dumps(state.to_dict(), indent=1).encode()


CORRUPT = {
    "garbage": b"\x00\xff\xfe\x80 not json at all \x9c",
    "truncated": _valid_bytes()[: len(_valid_bytes()) // 2],
    "empty": b"",
    "deeply-nested": b"[" * 200_000,
    "not-an-object": b"[1, 2, 3]",
    "wrong-schema": json.dumps({"schema_version": 99, "pool": {"network": NET, "allocations": {}}}).encode(),
    "no-pool": json.dumps({"schema_version": 1}).encode(),
    "pool-disagrees": _valid_bytes().replace(b'"10.20.0.2"', b'"10.20.0.9"', 1),
    "bad-reservation": _valid_bytes().replace(b'"ready"', b'"sleeping"'),
}


class TestCorruptFile:
    @pytest.mark.parametrize("content", CORRUPT.values(), ids=CORRUPT.keys())
    def test_read_refuses_and_keeps_file(self, store, path, content):
        """read() of a corrupt file raises StateCorrupt naming the file and leaves its bytes alone."""
        path.write_bytes(content)
        with pytest.raises(StateCorrupt) as exc:
            store.read()
        assert exc.value.path == str(path)
        assert str(path) in str(exc.value)
        assert path.read_bytes() == content

    @pytest.mark.parametrize("content", CORRUPT.values(), ids=CORRUPT.keys())
    def test_transaction_refuses_and_keeps_file(self, store, path, content):
        """transaction() on a corrupt file raises StateCorrupt before the block and writes nothing."""
        path.write_bytes(content)
        ran = []
        with pytest.raises(StateCorrupt, match=re.escape(str(path))):
            with store.transaction() as state:
                ran.append(state)
        assert ran == []
        assert path.read_bytes() == content
        assert _stray_files(path.parent) == []

    def test_unreadable_path(self, store, path):
        """A state path that is a directory raises StateCorrupt naming it."""
        path.mkdir()
        with pytest.raises(StateCorrupt) as exc:
            store.read()
        assert exc.value.path == str(path)


class TestSubnetChange:
    def test_adopted_without_reservations(self, store, path):
        """A new subnet replaces the old one when no container holds an address."""
        with store.transaction() as state:
            _reserve(state, "web")
            state.remove("web")
        moved = JsonStore(str(path), "10.30.0.0/24")
        assert moved.read().pool.network == "10.30.0.0/24"
        with moved.transaction() as state:
            assert state.pool.allocate("db") == "10.30.0.2"
        assert json.loads(path.read_bytes())["pool"] == {"network": "10.30.0.0/24",
                                                         "allocations": {"db": "10.30.0.2"}}

    def test_refused_with_reservations(self, store, path):
        """A new subnet while containers hold addresses raises InvalidValue naming both and writes nothing."""
        with store.transaction() as state:
            _reserve(state, "web")
        before = path.read_bytes()
        moved = JsonStore(str(path), "10.30.0.0/24")
        with pytest.raises(InvalidValue, match=r"10\.20\.0\.0/16.*10\.30\.0\.0/24"):
            moved.read()
        with pytest.raises(InvalidValue):
            with moved.transaction():
                pass
        assert path.read_bytes() == before
