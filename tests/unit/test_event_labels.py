"""watch_events names an event by the agent that proved its key, never by what the event says."""
from __future__ import annotations

import threading
import time

import zmq

from appcontainers.adapters.bus.zmq_bus import AgentClient, watch_events
from appcontainers.agent import protocol as p


def test_an_agent_cannot_sign_its_events_as_another_container(tmp_path):
    """A keyed publisher (root inside A holds A's key) sending {"container": "B"} is heard as A."""
    public, secret = AgentClient.new_keys()
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.curve_server = True
    pub.curve_secretkey = secret.encode()
    pub.bind(f"ipc://{tmp_path}/events.sock")
    heard: list[dict] = []
    stream = watch_events(lambda: {"A": (str(tmp_path), public)}, rescan=0.1)

    def listen():
        for event in stream:
            heard.append(event)
            return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 5
        while not heard and time.monotonic() < deadline:  # until the subscription is through
            pub.send_multipart([b"event", p.encode({"type": "command_started", "container": "B"})])
            time.sleep(0.05)
        t.join(2)
        assert heard, "precondition: the forged event reached the watcher over an authenticated session"
        assert heard[0]["container"] == "A"
    finally:
        stream.close()
        pub.close(linger=0)
