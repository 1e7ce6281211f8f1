"""Agent authentication's key plumbing: a fresh CURVE pair at every start, the public half kept
by the host in the reservation, the secret half only in the container's root-only agent.json."""
import json

import pytest

from appcontainers.agent.config import parse_config
from appcontainers.domain.exceptions import InvalidValue
from appcontainers.domain.reservation import Reservation
from appcontainers.services import plans
from tests.fakes import make_service

KEY = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"  # a Z85 key (40 characters)


@pytest.fixture
def svc():
    return make_service()


def agent_json(svc, name):
    return json.loads(svc.ports.fs.files[svc.settings.layout.agent_dir(name) + "/agent.json"])


class TestKeysAtStart:
    def test_start_makes_a_pair_and_splits_it(self, svc):
        """The reservation holds the public half, agent.json (0600) the secret half; the agent
        is awaited with that public key."""
        c = svc.provision("web")
        assert svc.containers.get("web").agent_key is None
        c.start()
        assert svc.containers.get("web").agent_key == "public-1"
        assert agent_json(svc, "web")["curve_secret_key"] == "secret-1"
        path = svc.settings.layout.agent_dir("web") + "/agent.json"
        assert svc.ports.fs.modes[path] == 0o600
        client = svc.ports.agents.clients[svc.settings.layout.agent_dir("web")]
        assert client.waits and client.server_key == "public-1"

    def test_every_start_gets_a_new_pair(self, svc):
        """A restart replaces the key: a client holding the old one is refused."""
        c = svc.provision("web")
        c.start()
        c.stop()
        c.start()
        assert svc.containers.get("web").agent_key == "public-2"
        assert agent_json(svc, "web")["curve_secret_key"] == "secret-2"

    def test_run_uses_the_key_of_the_start_it_caused(self, svc):
        """run() on a stopped container starts it and then talks with the new key, not the old one."""
        c = svc.provision("web")
        c.start()
        c.run("true")
        c.stop()
        c.run("true")
        client = svc.ports.agents.clients[svc.settings.layout.agent_dir("web")]
        assert client.run_keys == ["public-1", "public-2"]

    def test_agent_endpoints_name_dir_and_key(self, svc):
        """watch_events gets each container's agent dir and the key its agent must hold."""
        svc.provision("web").start()
        svc.provision("db")
        L = svc.settings.layout
        assert svc.containers.agent_endpoints() == {"web": (L.agent_dir("web"), "public-1"),
                                                   "db": (L.agent_dir("db"), None)}

    def test_a_running_container_keeps_its_key(self, svc):
        """Starting a running container makes no new key (its agent holds the current one)."""
        c = svc.provision("web")
        c.start()
        c.start()
        assert svc.ports.agents.made == 1 and svc.containers.get("web").agent_key == "public-1"


class TestKeyValues:
    def test_reservation_round_trip_keeps_the_key(self):
        """agent_key survives to_dict/from_dict; a record from before it reads as None."""
        r = Reservation(name="web", ip="10.0.0.2", mac="02:00:00:00:00:01", image="i", agent_key=KEY)
        assert Reservation.from_dict(r.to_dict()) == r
        old = {k: v for k, v in r.to_dict().items() if k != "agent_key"}
        assert Reservation.from_dict(old).agent_key is None

    def test_reservation_key_must_be_text(self):
        """A non-string key is refused like any malformed field."""
        with pytest.raises(InvalidValue):
            Reservation(name="web", ip="10.0.0.2", mac="02:00:00:00:00:01", image="i", agent_key=5)

    def test_agent_config_carries_the_secret_only_when_given(self, svc):
        """plans.agent_config puts the secret half in agent.json only when there is one."""
        r = Reservation(name="web", ip="10.0.0.2", mac="02:00:00:00:00:01", image="i")
        assert "curve_secret_key" not in plans.agent_config(r, [], svc.settings)
        assert plans.agent_config(r, [], svc.settings, KEY)["curve_secret_key"] == KEY

    @pytest.mark.parametrize("bad", [5, "short", KEY[:-1] + "~", KEY + "x"])
    def test_agent_ignores_a_malformed_key(self, bad):
        """The agent reads a Z85 key of 40 characters; anything else is reported and ignored."""
        config, problems = parse_config({"curve_secret_key": bad})
        assert config["curve_secret_key"] is None and problems == ["agent.json: ignoring invalid curve_secret_key"]
        assert parse_config({"curve_secret_key": KEY}) == ({**config, "curve_secret_key": KEY}, [])
