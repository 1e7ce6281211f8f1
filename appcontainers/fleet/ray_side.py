"""Everything that touches Ray: connecting, its key-value store, the host actor.

Ray stays quiet and local unless told otherwise: no usage stats, no dashboard; with
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (set here if unset) Ray 2.60 keeps the address it is
given (127.0.0.1 stays 127.0.0.1 instead of becoming the host's own address).
"""
from __future__ import annotations

import json
import os
import threading
from typing import Any

NAMESPACE = "appcontainers"
KV_NAMESPACE = "appcontainers-fleet"
RESOURCE_PREFIX = "appcontainers-host-"

_INIT_LOCK = threading.Lock()
_QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def quiet_env() -> None:
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)


def resource(host: str) -> str:
    """The custom resource a host's Ray node is started with: it names the host."""
    return RESOURCE_PREFIX + host


def actor_name(host: str) -> str:
    return RESOURCE_PREFIX + host


def connect(address: str | None) -> Any:
    """ray.init on the cluster at address (HOST:PORT of the head, "auto", or ray://...), once."""
    quiet_env()
    import ray

    with _INIT_LOCK:
        if not ray.is_initialized():
            ray.init(address=address or "auto", namespace=NAMESPACE, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
    return ray


class RayKV:
    """The subnets.KV port on Ray's own key-value store (in its control service, the GCS):
    put-if-absent there is atomic, which makes a claim safe between hosts."""

    def __init__(self) -> None:
        from ray.experimental import internal_kv

        self._kv = internal_kv

    def put_if_absent(self, key: str, value: str) -> bool:
        existed = self._kv._internal_kv_put(key, value, overwrite=False, namespace=KV_NAMESPACE)
        return not existed

    def put(self, key: str, value: str) -> None:
        self._kv._internal_kv_put(key, value, overwrite=True, namespace=KV_NAMESPACE)

    def get(self, key: str) -> str | None:
        raw = self._kv._internal_kv_get(key, namespace=KV_NAMESPACE)
        return None if raw is None else raw.decode()

    def delete(self, key: str) -> None:
        self._kv._internal_kv_del(key, namespace=KV_NAMESPACE)

    def keys(self, prefix: str) -> list[str]:
        return sorted(k.decode() for k in self._kv._internal_kv_list(prefix, namespace=KV_NAMESPACE))

    def get_json(self, key: str) -> Any:
        raw = self.get(key)
        return None if raw is None else json.loads(raw)


def node_alive(ray: Any, host: str) -> bool:
    """A live Ray node declares the host's resource."""
    name = resource(host)
    return any(n.get("Alive") and name in n.get("Resources", {}) for n in ray.nodes())


class HostActor:
    """The Ray actor of one host: builds its Service (setup_service: reconcile runs) and a
    fleet.host.Host over it; every other method is the Host's."""

    def __init__(self, name: str, settings: dict[str, Any], images: dict[str, Any],
                 max_containers: int | None) -> None:
        from ..entrypoints.api import setup_service
        from .host import Host
        from .images import Configured, from_spec

        svc = setup_service(**settings)
        svc.bases.ensure_default()  # a loaded image's host paths must be a base's of this host
        kv = RayKV()
        # The fleet's distribution as its store says at each use (images: the one at join, if none).
        distribution = Configured(lambda: kv.get_json("images") or images,
                                  lambda spec: from_spec(spec, svc.ports.codec, svc.ports.registries))
        self.host = Host(name, svc, distribution,
                         publish=lambda infos: kv.put(f"containers/{name}", json.dumps(infos, default=str)),
                         max_containers=max_containers)
        self.host.ls()

    def ping(self) -> str:
        return self.host.name

    def view(self) -> dict[str, Any]:
        return self.host.view()

    def ls(self) -> list[dict[str, Any]]:
        return self.host.ls()

    def fetch_counts(self) -> dict[str, int]:
        return self.host.fetch_counts()

    def layer_counts(self) -> dict[str, int]:
        return self.host.layer_counts()

    def create(self, image: str | None, name: str | None, ephemeral: bool, opts: dict[str, Any]) -> str:
        return self.host.create(image, name=name, ephemeral=ephemeral, **opts)

    def call(self, name: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self.host.call(name, method, *args, **kwargs)

    def load_archive_bytes(self, name: str, data: bytes, dest: str) -> int:
        return self.host.load_archive_bytes(name, data, dest)

    def run(self, name: str, command: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        return self.host.run(name, command, **kwargs)

    def run_stream(self, name: str, command: Any, kwargs: dict[str, Any]) -> Any:
        yield from self.host.run_stream(name, command, **kwargs)

    def job(self, image: str | None, command: Any, timeout: float | None) -> dict[str, Any]:
        return self.host.job(image, command, timeout=timeout)

    def save(self, name: str, image_name: str | None, flatten: bool) -> dict[str, Any]:
        return self.host.save(name, image_name=image_name, flatten=flatten)

    def events_since(self, seq: int, wait: float) -> list[tuple[int, dict[str, Any]]]:
        return self.host.events_since(seq, wait)


def start_actor(ray: Any, host: str, settings: dict[str, Any], images: dict[str, Any],
                max_containers: int | None, concurrency: int) -> Any:
    """The host's detached actor on the node holding its resource (num_cpus=0: it mostly waits
    on containers, it does not count against the node's CPUs)."""
    remote = ray.remote(HostActor)
    return remote.options(name=actor_name(host), namespace=NAMESPACE, lifetime="detached",
                          resources={resource(host): 0.001}, num_cpus=0, max_concurrency=concurrency,
                          max_restarts=0).remote(host, settings, images, max_containers)


def get_actor(ray: Any, host: str) -> Any | None:
    try:
        return ray.get_actor(actor_name(host), namespace=NAMESPACE)
    except ValueError:
        return None
