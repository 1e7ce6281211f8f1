"""One host of the fleet: a thin adapter over its local Service (no Ray in here).

fleet/ray_side.py (HostActor) makes it a Ray actor pinned to its node; everything it does is a service call.
Results are plain dicts and bytes (what crosses Ray's wire). view() is the host's capacity
and what it holds; after each change the host publishes its container list (publish), so
the fleet can still show them, as lost, if the host dies.
"""
from __future__ import annotations

import collections
import os
import queue
import threading
import time
from typing import Any, Callable, Iterator

from ..domain.image import lineage
from ..domain.network import parse_network
from ..domain.sizes import parse_size
from .images import ImageDistribution, is_image_id
from .placement import HostView

Publish = Callable[[list[dict[str, Any]]], None]
_END = object()


def memory_info(path: str = "/proc/meminfo") -> tuple[int, int]:
    """(total, available) bytes of the host's memory."""
    fields = {}
    with open(path) as f:
        for line in f:
            key, _, rest = line.partition(":")
            fields[key] = int(rest.split()[0]) * 1024
    return fields.get("MemTotal", 0), fields.get("MemAvailable", 0)


class Host:
    def __init__(self, name: str, svc: Any, images: ImageDistribution, publish: Publish | None = None,
                 max_containers: int | None = None, meminfo: Callable[[], tuple[int, int]] = memory_info,
                 publish_interval: float = 1.0):
        self.name, self.svc, self.images = name, svc, images
        self._publish = publish or (lambda infos: None)
        # The list goes to the GCS at most once per interval (the fleet's first bottleneck at
        # scale, docs/fleet.md); a change inside it is published when the interval ends.
        self.publish_interval = publish_interval
        self._last_publish = float("-inf")
        self._pending: threading.Timer | None = None
        net_size = parse_network(svc.settings.subnet).num_addresses - 3  # network, gateway, broadcast
        self.max_containers = min(max_containers or net_size, net_size)
        self._meminfo = meminfo
        self._image_locks: dict[str, threading.Lock] = collections.defaultdict(threading.Lock)
        self._lock = threading.Lock()
        self.fetches: collections.Counter[str] = collections.Counter()  # image id -> times brought in
        self.layers_fetched: collections.Counter[str] = collections.Counter()  # image id -> layers that came
        self._events: collections.deque[tuple[int, dict[str, Any]]] = collections.deque(maxlen=10000)
        self._event_seq = 0
        self._watching = False

    # ---- the host itself ----------------------------------------------------------
    def view(self) -> dict[str, Any]:
        reservations = self.svc.containers.list()
        total, available = self._meminfo()
        reserved = sum(parse_size(r.memory, "memory") for r in reservations if r.memory)
        return HostView(name=self.name, alive=True, containers=len(reservations),
                        max_containers=self.max_containers, memory_total=total,
                        memory_available=available, memory_reserved=reserved, cpus=os.cpu_count() or 1,
                        load=os.getloadavg()[0], subnet=self.svc.settings.subnet).to_dict()

    def ls(self) -> list[dict[str, Any]]:
        """info() of every container (states read now), each with its host; published too."""
        infos = [dict(i, host=self.name) for i in self.svc.container_infos()]
        self._publish(infos)
        return infos

    def _changed(self) -> None:
        """Publish what the host holds after a change, now or at the end of the interval."""
        with self._lock:
            if self._pending is not None:
                return  # the pending publish will read the state then
            wait = self._last_publish + self.publish_interval - time.monotonic()
            if wait > 0:
                self._pending = threading.Timer(wait, self.flush)
                self._pending.daemon = True
                self._pending.start()
                return
            self._last_publish = time.monotonic()
        self._publish_state()

    def flush(self) -> None:
        """Publish now (a pending publish is done by this)."""
        with self._lock:
            if self._pending is not None:
                self._pending.cancel()
                self._pending = None
            self._last_publish = time.monotonic()
        self._publish_state()

    def _publish_state(self) -> None:
        """What the host holds, from its state alone (no lxc call: this runs twice per job):
        what the fleet shows as lost if the host dies."""
        self._publish([{"name": r.name, "ip": r.ip, "mac": r.mac, "image": r.image, "ephemeral": r.ephemeral,
                        "state": "unknown", "host": self.name} for r in self.svc.containers.list()])

    def fetch_counts(self) -> dict[str, int]:
        return dict(self.fetches)

    def layer_counts(self) -> dict[str, int]:
        """{image id: layers transferred when it was brought in} (its parents the host had: none)."""
        return dict(self.layers_fetched)

    # ---- images -------------------------------------------------------------------
    def _stored(self, image_id: str) -> bool:
        return image_id in self.svc.ports.repo.read().images

    def _image(self, ref: str | None) -> str:
        """The id for ref: an image id as is (stored, or fetched on first use), else a base
        (None: the default, built if needed) or a stored image by name or id prefix."""
        if ref is not None and is_image_id(ref):
            return ref
        if ref is None or ref == self.svc.settings.default_base:
            return str(self.svc.bases.resolve(ref).id)
        return str(self.svc.images.resolve(ref).id)

    def create(self, image: str | None = None, name: str | None = None, ephemeral: bool = False,
               **opts: Any) -> str:
        """A new container from image (a base name, a stored image, or an image id fetched on
        first use); its name."""
        ref = self._image(image)
        if self._stored(ref):
            return self._provision(ref, name, ephemeral, opts)
        with self._lock:
            image_lock = self._image_locks[ref]
        with image_lock:
            if self._stored(ref):  # another call fetched it meanwhile
                return self._provision(ref, name, ephemeral, opts)
            brought = self.images.bring(ref, self.svc)  # the chain, verified, into the store
            self.fetches[ref] += 1
            self.layers_fetched[ref] += brought.layers
            if brought.top_file is None:
                return self._provision(ref, name, ephemeral, opts)
            c = self.svc.load_image(brought.top_file, ephemeral=ephemeral, name=name, move=True, **opts)
        self._changed()
        return str(c.name)

    def _provision(self, image_id: str, name: str | None, ephemeral: bool, opts: dict[str, Any]) -> str:
        image = self.svc.ports.repo.read().images[image_id]
        r = self.svc.containers.provision(name=name, image_id=image_id, ephemeral=ephemeral,
                                          startup_commands=image.startup_commands, **opts)
        self._changed()
        return str(r.name)

    # ---- one container ------------------------------------------------------------
    def call(self, name: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """A Container method of the container name (info, start, stop, destroy, create_file,
        read_file, load_archive, copy_in, copy_out, logs, kill, ...)."""
        if method.startswith("_") or method in ("run",):
            raise AttributeError(method)
        c = self.svc.get(name)
        result = getattr(c, method)(*args, **kwargs)
        if method in ("stop", "destroy", "start"):
            self._changed()
        return list(result) if method == "logs" else result

    def load_archive_bytes(self, name: str, data: bytes, dest: str) -> int:
        """Unpack a tar stream (bytes) into dest in the container, checked as load_archive does."""
        tmp = os.path.join(self.svc.settings.layout.tmp, f"fleet-in-{name}-{threading.get_ident()}.tar")
        os.makedirs(os.path.dirname(tmp), exist_ok=True)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            return int(self.svc.get(name).load_archive(tmp, dest))
        finally:
            os.unlink(tmp)

    def run(self, name: str, command: Any, **kwargs: Any) -> dict[str, Any]:
        r = self.svc.get(name).run(command, **kwargs)
        return {"exit_code": r.exit_code, "stdout": r.stdout_bytes, "stderr": r.stderr_bytes}

    def run_stream(self, name: str, command: Any, **kwargs: Any) -> Iterator[tuple[str, Any]]:
        """("stdout"|"stderr", line) as the command prints, then ("exit", result dict)."""
        lines: queue.Queue[Any] = queue.Queue()

        def work() -> None:
            try:
                lines.put(("exit", self.run(name, command, on_output=lambda s, ln: lines.put((s, ln)), **kwargs)))
            except BaseException as e:  # handed to the caller's side
                lines.put(("error", e))
            lines.put(_END)

        threading.Thread(target=work, daemon=True).start()
        while (item := lines.get()) is not _END:
            if item[0] == "error":
                raise item[1]
            yield item

    def job(self, image: str | None, command: Any, timeout: float | None = None) -> dict[str, Any]:
        """A one-shot job: an ephemeral container from image runs command and goes."""
        started = time.monotonic()
        name = self.create(image, ephemeral=True)
        try:
            result = self.run(name, command, timeout=timeout)
        finally:
            self.svc.containers.destroy(name)
            self._changed()
        return dict(result, host=self.name, container=name, seconds=time.monotonic() - started)

    def save(self, name: str, image_name: str | None = None, flatten: bool = True) -> dict[str, Any]:
        """Save the container and publish the image to the fleet; {"id", "name"}."""
        fs = self.svc.ports.fs
        tmp = os.path.join(self.svc.settings.layout.tmp, f"fleet-save-{name}-{threading.get_ident()}.aimg")
        fs.make_dirs(os.path.dirname(tmp))
        try:
            image = self.svc.get(name).save_image(tmp, flatten=flatten, name=image_name)
            if image.parent is not None:
                self._publish_chain(image.parent)
            self.images.publish(tmp)
        finally:
            if fs.exists(tmp):
                fs.remove_file(tmp)
        return {"id": image.id, "name": image.name}

    def _publish_chain(self, image_id: str) -> None:
        """Publish image_id and its parents (oldest first) from the store, where not yet there:
        a layered save's parents must be in the fleet before it."""
        for image in reversed(lineage(self.svc.ports.repo.read().images, image_id)):
            if not self.images.has(image.id):
                self.images.publish(self.svc.settings.layout.image_file(image.id, image.kind))

    # ---- events -------------------------------------------------------------------
    def events_since(self, seq: int, wait: float = 1.0) -> list[tuple[int, dict[str, Any]]]:
        """(seq, event) pairs after seq, waiting up to wait seconds for one."""
        with self._lock:
            if not self._watching:
                self._watching = True
                threading.Thread(target=self._watch, daemon=True).start()
        deadline = time.monotonic() + wait
        while True:
            found = [(s, e) for s, e in list(self._events) if s > seq]
            if found or time.monotonic() >= deadline:
                return found
            time.sleep(0.05)

    def _watch(self) -> None:
        for event in self.svc.events():
            self._event_seq += 1
            self._events.append((self._event_seq, dict(event, host=self.name)))
