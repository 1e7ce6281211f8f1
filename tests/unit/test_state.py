"""State: the aggregate of reservations, pool and images, and its serialization."""
import json

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appcontainers.domain.exceptions import InvalidValue, NameTaken, UnknownContainer
from appcontainers.domain.reservation import Reservation
from appcontainers.domain.state import SCHEMA_VERSION, State
from tests.strategies import states

NET = "10.9.0.0/24"
ID_A = "a" * 64


def _reserve(state, name, mac, **kw):
    ip = state.pool.allocate(name)
    r = Reservation(name=name, ip=ip, mac=mac, image=ID_A, **kw)
    state.add(r)
    return r


@pytest.fixture
def state():
    s = State.empty(NET)
    _reserve(s, "web", "02:00:00:00:00:01")
    return s


class TestState:
    @given(states())
    def test_dict_round_trip(self, s):
        """from_dict(to_dict()) through JSON gives an equal state."""
        again = State.from_dict(json.loads(json.dumps(s.to_dict())))
        assert again == s
        assert again.to_dict() == s.to_dict()
        assert again.to_dict()["schema_version"] == SCHEMA_VERSION

    def test_add_and_get(self, state):
        """An added reservation is returned by get()."""
        assert state.get("web").ip == "10.9.0.2"
        assert state.pool.holder_of("10.9.0.2") == "web"

    def test_get_unknown(self, state):
        """get() of an unknown name raises UnknownContainer naming it."""
        with pytest.raises(UnknownContainer) as exc:
            state.get("db")
        assert exc.value.name == "db"

    def test_duplicate_name_refused(self, state):
        """Adding a second reservation under a taken name raises NameTaken and keeps the first."""
        first = state.get("web")
        with pytest.raises(NameTaken) as exc:
            state.add(attrs.evolve(first, mac="02:00:00:00:00:99"))
        assert exc.value.name == "web"
        assert state.get("web") == first

    def test_unallocated_ip_refused(self, state):
        """A reservation whose address the pool has not given to it raises InvalidValue."""
        with pytest.raises(InvalidValue, match="not allocated to 'db'"):
            state.add(Reservation(name="db", ip="10.9.0.50", mac="02:00:00:00:00:02", image=ID_A))
        assert "db" not in state.reservations

    def test_someone_elses_ip_refused(self, state):
        """A reservation claiming another container's address raises InvalidValue."""
        state.pool.allocate("db")
        with pytest.raises(InvalidValue, match="not allocated"):
            state.add(Reservation(name="db", ip="10.9.0.2", mac="02:00:00:00:00:02", image=ID_A))

    @pytest.mark.parametrize("mac", ["02:00:00:00:00:01", "02-00-00-00-00-01", "02:00:00:00:00:01".upper()])
    def test_duplicate_mac_refused(self, state, mac):
        """A reservation reusing a held MAC (in any spelling) raises InvalidValue."""
        ip = state.pool.allocate("db")
        with pytest.raises(InvalidValue, match="MAC"):
            state.add(Reservation(name="db", ip=ip, mac=mac, image=ID_A))
        assert "db" not in state.reservations

    def test_remove_frees_the_address(self, state):
        """remove() returns the reservation and its address goes to the next name."""
        removed = state.remove("web")
        assert removed.name == "web"
        assert "web" not in state.reservations
        assert state.pool.address_of("web") is None
        assert state.pool.holder_of("10.9.0.2") is None
        assert state.pool.allocate("db") == "10.9.0.2"

    def test_remove_frees_a_bare_allocation(self, state):
        """remove() of a name with an address but no reservation still frees the address."""
        state.pool.allocate("half-made")
        assert state.remove("half-made") is None
        assert state.pool.address_of("half-made") is None

    def test_remove_unknown(self, state):
        """remove() of an unknown name returns None and changes nothing."""
        before = state.to_dict()
        assert state.remove("db") is None
        assert state.to_dict() == before

    def test_put_replaces(self, state):
        """put() stores an evolved reservation; an unknown name raises UnknownContainer."""
        state.put(attrs.evolve(state.get("web"), status="destroying"))
        assert state.get("web").status == "destroying"
        with pytest.raises(UnknownContainer):
            state.put(Reservation(name="db", ip="10.9.0.3", mac="02:00:00:00:00:02", image=ID_A))

    @pytest.mark.parametrize("version", [None, 0, SCHEMA_VERSION + 1, str(SCHEMA_VERSION), "x"])
    def test_schema_mismatch_refused(self, state, version):
        """A missing or different schema_version raises InvalidValue naming it."""
        data = state.to_dict()
        if version is None:
            del data["schema_version"]
        else:
            data["schema_version"] = version
        with pytest.raises(InvalidValue, match="schema version"):
            State.from_dict(data)

    @pytest.mark.parametrize("data", [None, [], "state", 1])
    def test_non_object_refused(self, data):
        """A state that is not a JSON object raises InvalidValue."""
        with pytest.raises(InvalidValue, match="not a JSON object"):
            State.from_dict(data)

    def _broken(self, state, change):
        data = json.loads(json.dumps(state.to_dict()))
        change(data)
        return data

    @pytest.mark.parametrize("change", [
        lambda d: d["reservations"]["web"].update(ip="10.9.0.3"),
        lambda d: d["pool"]["allocations"].pop("web"),
        lambda d: d["pool"]["allocations"].update(web="10.9.0.7"),
        lambda d: d["reservations"].update(api=d["reservations"].pop("web")),
        lambda d: d["reservations"]["web"].update(name="api"),
    ], ids=["ip-differs", "not-in-pool", "pool-elsewhere", "key-not-name", "name-not-key"])
    def test_reservation_pool_disagreement_refused(self, state, change):
        """A reservation whose address or name disagrees with the pool raises InvalidValue."""
        with pytest.raises(InvalidValue, match="disagrees with the address pool"):
            State.from_dict(self._broken(state, change))

    def test_duplicate_mac_in_file_refused(self, state):
        """Two reservations with one MAC in a record raise InvalidValue."""
        _reserve(state, "db", "02:00:00:00:00:02")
        data = self._broken(state, lambda d: d["reservations"]["db"].update(mac="02:00:00:00:00:01"))
        with pytest.raises(InvalidValue, match="MAC 02:00:00:00:00:01"):
            State.from_dict(data)

    @pytest.mark.parametrize("change", [
        lambda d: d.pop("pool"),
        lambda d: d.update(pool=[]),
        lambda d: d.update(reservations=[]),
        lambda d: d.update(images=[]),
        lambda d: d["pool"].update(network="10.9.0.0/31"),
        lambda d: d["pool"]["allocations"].update(gw="10.9.0.1"),
        lambda d: d["reservations"]["web"].pop("mac"),
        lambda d: d["reservations"]["web"].update(status="running"),
        lambda d: d["reservations"]["web"].update(ephemeral="no"),
        lambda d: d["reservations"]["web"].update(created=None),
        lambda d: d["images"].update(x={"id": "x", "manifest": {}}),
        lambda d: d["images"].update(x={"id": ID_A, "kind": "system",
                                        "manifest": {"format_version": 1, "name": "b", "created": 0}}),
    ], ids=["no-pool", "pool-list", "reservations-list", "images-list", "tiny-net", "gateway-held",
            "no-mac", "bad-status", "bad-ephemeral", "bad-created", "bad-image", "bad-kind"])
    def test_malformed_refused(self, state, change):
        """Any malformed part raises InvalidValue (never a bare KeyError/TypeError/ValueError)."""
        with pytest.raises(InvalidValue):
            State.from_dict(self._broken(state, change))

    @settings(max_examples=40)
    @given(states(), st.data())
    def test_remove_all_empties(self, s, data):
        """Removing every name leaves no reservation and an empty pool."""
        for name in data.draw(st.permutations(sorted(s.pool.allocations()))):
            s.remove(name)
        assert s.reservations == {}
        assert len(s.pool) == 0
