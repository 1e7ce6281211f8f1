"""join(): make this Ray node a host of the fleet (its subnet claimed, its actor placed)."""
from __future__ import annotations

import json
from typing import Any

from . import ray_side, subnets
from .errors import FleetError
from .images import describe, make_spec

DEFAULT_CONCURRENCY = 64  # calls one host's actor serves at once (most wait on a container)


def join(address: str | None, name: str, root: str, bridge: str, subnet: str | None = None, *,
         image_dir: str | None = None, registry: str | None = None, tls_verify: bool = True,
         fleet_range: str | None = None, max_containers: int | None = None,
         concurrency: int = DEFAULT_CONCURRENCY, timeout: float = 300.0, **settings: Any) -> dict[str, Any]:
    """Place host name's actor on the Ray node started with the resource appcontainers-host-NAME,
    over a Service on root and bridge; returns the host's record once it is up (its data root
    reconciled, its default base there). subnet: claimed as given (and registered), or a free
    /24 of the fleet range. registry (HOST:PORT[/prefix]; tls_verify=False for a plain-HTTP
    or self-signed one) or image_dir (a directory every host sees): how the fleet's images
    travel, fixed by the first join that gives one (a later join may leave it out; one that
    asks for another is refused: connect(..., registry=) switches the fleet). Other keyword settings go to setup_service (nat=, isolation=, ...)."""
    ray = ray_side.connect(address)
    if not ray_side.node_alive(ray, name):
        raise FleetError(f"no live Ray node has the resource {ray_side.resource(name)}: start it with "
                         f"ray start --address HEAD:PORT --resources '{{\"{ray_side.resource(name)}\": 1}}'")
    kv = ray_side.RayKV()
    images = _images_spec(kv, make_spec(image_dir, registry, tls_verify))
    net = subnets.claim(kv, name, subnets.fleet_range(kv, fleet_range), subnet)
    record = {"name": name, "root": root, "bridge": bridge, "subnet": net, "images": images}
    old = ray_side.get_actor(ray, name)
    if old is not None:
        ray.kill(old)  # a host joining again: its new actor reconciles what the old one left
    conf = dict(settings, root=root, bridge=bridge, subnet=net, mac_prefix=subnets.mac_prefix(net))
    actor = ray_side.start_actor(ray, name, conf, images, max_containers, concurrency)
    try:
        ray.get(actor.ping.remote(), timeout=timeout)
    except Exception as e:
        ray.kill(actor)
        raise FleetError(f"host {name} did not come up: {_cause(e)}") from None
    kv.put(f"hosts/{name}", json.dumps(record))
    return record


def _images_spec(kv: ray_side.RayKV, wanted: dict[str, Any] | None) -> dict[str, Any]:
    if wanted is not None:
        kv.put_if_absent("images", json.dumps(wanted))
    spec = kv.get_json("images")
    if spec is None:
        raise FleetError("the fleet has no image distribution yet: give registry= (HOST:PORT) or image_dir= "
                         "(a directory every host sees) to the first join")
    if wanted is not None and spec != wanted:
        raise FleetError(f"the fleet's images travel by {describe(spec)}, not {describe(wanted)}: leave it out, "
                         f"or switch the fleet with connect(..., registry=/image_dir=)")
    return dict(spec)


def _cause(e: BaseException) -> str:
    cause = getattr(e, "cause", None) or getattr(getattr(e, "error", None), "cause", None)
    text = str(cause or e).strip().splitlines()
    return text[-1] if text else type(e).__name__


def leave(address: str | None, name: str, release_subnet: bool = False) -> None:
    """Stop host name's actor (its containers stay on its data root: a later join finds them);
    release_subnet=True gives its subnet back to the fleet."""
    ray = ray_side.connect(address)
    actor = ray_side.get_actor(ray, name)
    if actor is not None:
        ray.kill(actor)
    kv = ray_side.RayKV()
    if release_subnet:
        subnets.release(kv, name)
        kv.delete(f"hosts/{name}")
        kv.delete(f"containers/{name}")
