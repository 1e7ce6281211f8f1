"""connect(): the fleet as one thing: its hosts, containers anywhere, jobs spread over them."""
from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any, Callable, Iterable, Iterator

import attrs

from ..domain.exceptions import AppContainersError, InvalidValue, UnknownContainer
from . import placement, ray_side
from .errors import HostLost, UnknownHost
from .handle import FleetContainer
from .jobs import Batch, Job, JobResult
from .placement import HostView

PER_HOST = 4  # jobs in flight per live host when map() is given no concurrency


def _lost_errors(ray: Any) -> tuple[type[BaseException], ...]:
    ex = ray.exceptions
    names = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError", "NodeDiedError",
             "OwnerDiedError", "ObjectLostError")
    return tuple(getattr(ex, n) for n in names if hasattr(ex, n))


class Fleet:
    def __init__(self, address: str | None = None, retries: int = 2, call_timeout: float | None = None,
                 registry: str | None = None, image_dir: str | None = None, tls_verify: bool = True) -> None:
        self.ray = ray_side.connect(address)
        self.kv = ray_side.RayKV()
        if registry is not None or image_dir is not None:
            self.use_images(registry=registry, image_dir=image_dir, tls_verify=tls_verify)
        self.retries, self.call_timeout = retries, call_timeout
        self._lost = _lost_errors(self.ray)
        self._actors: dict[str, Any] = {}  # host -> its actor's handle (dropped when a call finds it dead)
        self._records: dict[str, dict[str, Any]] = {}

    # ---- talking to hosts ---------------------------------------------------------
    def records(self) -> dict[str, dict[str, Any]]:
        """Every host that ever joined: {name: {"name", "root", "bridge", "subnet", "images"}}."""
        keys = self.kv.keys("hosts/")
        self._records = {k.split("/", 1)[1]: self.kv.get_json(k) for k in keys}
        return dict(self._records)

    def actor(self, host: str) -> Any:
        """The host's actor handle, looked up once (a name lookup in the GCS) and then kept."""
        if host in self._actors:
            return self._actors[host]
        if host not in self._records and host not in self.records():
            raise UnknownHost(host)
        actor = ray_side.get_actor(self.ray, host)
        if actor is None:
            raise HostLost(host)
        self._actors[host] = actor
        return actor

    def get_result(self, host: str, ref: Any, timeout: float | None = None) -> Any:
        """ray.get of a host's call: a dead host is HostLost, the host's own error is raised as is."""
        try:
            return self.ray.get(ref, timeout=timeout or self.call_timeout)
        except self.ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, BaseException) and not isinstance(e.cause, self._lost):
                raise e.cause from None
            self._actors.pop(host, None)
            raise HostLost(host, "it died during the call") from None
        except self._lost:
            self._actors.pop(host, None)  # next time, look it up again: it may have rejoined
            raise HostLost(host, "it died during the call") from None
        except self.ray.exceptions.GetTimeoutError:
            raise HostLost(host, "it did not answer in time") from None

    def stream(self, host: str, method: str, *args: Any) -> Iterator[Any]:
        """The items a host's generator method yields, as they come (a dead host: HostLost)."""
        gen = getattr(self.actor(host), method).remote(*args)
        while True:
            try:
                ref = next(gen)
            except StopIteration:
                return
            except self._lost:
                self._actors.pop(host, None)
                raise HostLost(host, "it died during the call") from None
            yield self.get_result(host, ref)

    def fan_out(self, method: str, *args: Any, timeout: float = 10.0) -> dict[str, Any]:
        """{host: its answer, or the HostLost error} of method called on every host at once."""
        refs: dict[str, Any] = {}
        for name in sorted(self.records()):
            try:
                refs[name] = getattr(self.actor(name), method).remote(*args)
            except HostLost as e:
                refs[name] = e
        deadline = time.monotonic() + timeout
        out: dict[str, Any] = {}
        for name, ref in refs.items():
            try:
                out[name] = ref if isinstance(ref, HostLost) else self.get_result(
                    name, ref, timeout=max(0.1, deadline - time.monotonic()))
            except HostLost as e:
                out[name] = e
        return out

    def call(self, host: str, method: str, *args: Any, timeout: float | None = None) -> Any:
        return self.get_result(host, getattr(self.actor(host), method).remote(*args), timeout)

    # ---- hosts --------------------------------------------------------------------
    def hosts(self) -> list[dict[str, Any]]:
        """Every host: alive or not, its subnet, free capacity (memory, cpus, container slots)."""
        out = []
        answers = self.fan_out("view")
        for name, record in sorted(self._records.items()):
            got = answers.get(name)
            if isinstance(got, dict):
                view = dict(got)
            else:
                view = HostView(name=name, alive=False, subnet=record["subnet"]).to_dict()
            view.update(root=record["root"], bridge=record["bridge"],
                        memory_free=HostView.from_dict(view).memory_free)
            out.append(view)
        return out

    def views(self) -> list[HostView]:
        return [HostView.from_dict(h) for h in self.hosts()]

    def fetch_counts(self) -> dict[str, dict[str, int]]:
        """{host: {image id: times brought in from the distribution}} of the live hosts."""
        return {v.name: self.call(v.name, "fetch_counts") for v in self.views() if v.alive}

    def layer_counts(self) -> dict[str, dict[str, int]]:
        """{host: {image id: layers transferred when it was brought in}} of the live hosts."""
        return {v.name: self.call(v.name, "layer_counts") for v in self.views() if v.alive}

    # ---- containers ---------------------------------------------------------------
    def provision(self, image: str | None = None, host: str | None = None, name: str | None = None,
                  ephemeral: bool = False, **opts: Any) -> FleetContainer:
        """A container from image (None: the default base; an image id from push_image or a
        save is fetched by its host on first use) on host, or on the live host with the most
        room; opts as for Service.provision (memory=, cpus=, pids=, disk=, publish=, ...)."""
        target = host or placement.choose(self.views(), memory=opts.get("memory")).name
        created = self.call(target, "create", image, name, ephemeral, opts)
        return FleetContainer(self, target, created)

    def get(self, ref: str) -> FleetContainer:
        """A container by HOST/NAME, or by NAME if one host has it."""
        if "/" in ref:
            host, name = ref.split("/", 1)
            return FleetContainer(self, host, name)
        hits = [c for c in self.ls() if c["name"] == ref]
        if not hits:
            raise UnknownContainer(ref)
        if len(hits) > 1:
            raise InvalidValue(f"hosts {', '.join(h['host'] for h in hits)} each have a container {ref!r}: "
                               f"give HOST/{ref}")
        return FleetContainer(self, hits[0]["host"], ref)

    def ls(self) -> list[dict[str, Any]]:
        """Every container of every host with its host; those of a host that is gone are shown
        as they were last seen, with state "lost"."""
        out: list[dict[str, Any]] = []
        for name, got in self.fan_out("ls", timeout=30.0).items():
            if isinstance(got, HostLost):
                got = [dict(c, host=name, state="lost") for c in self.kv.get_json(f"containers/{name}") or []]
            out += got
        return out

    def rm(self, ref: str) -> None:
        self.get(ref).destroy()

    # ---- jobs ---------------------------------------------------------------------
    def run(self, image: str | None, command: Any, ephemeral: bool = True, host: str | None = None,
            retries: int | None = None, timeout: float | None = None) -> JobResult:
        """A one-shot job: an ephemeral container from image runs command and goes; if its host
        dies meanwhile, it runs again elsewhere (at most retries more times: it must be
        idempotent). ephemeral=False keeps the container (result.container) and never retries."""
        if not ephemeral:
            c = self.provision(image, host=host)
            r = c.run(command, timeout=timeout)
            return JobResult(index=0, command=command, host=c.host, exit_code=r.exit_code,
                             stdout_bytes=r.stdout_bytes, stderr_bytes=r.stderr_bytes, container=c.name)
        jobs = [Job(index=0, command=command, host=host)]
        return next(iter(self._batch(image, 1, retries, timeout).run(jobs)))

    def map(self, image: str | None, commands: Iterable[Any], concurrency: int | None = None,
            retries: int | None = None, timeout: float | None = None) -> Iterator[JobResult]:
        """Each command as a one-shot job (as run()), at most concurrency at once (default 4
        per live host), spread over every live host; results as they finish (result.index
        is the command's place in commands)."""
        batch = self._batch(image, concurrency, retries, timeout)
        return batch.run(Job(index=i, command=c) for i, c in enumerate(commands))

    def _batch(self, image: str | None, limit: int | None, retries: int | None, timeout: float | None) -> Batch:
        views = [v for v in self.views() if v.alive]

        def submit(host: str, job: Job) -> Any:
            try:
                return self.actor(host).job.remote(image, job.command, timeout)
            except HostLost as e:
                return _Failed(e)

        def wait(refs: list[Any]) -> list[Any]:
            failed = [r for r in refs if isinstance(r, _Failed)]
            if failed:
                return failed
            return list(self.ray.wait(refs, num_returns=1)[0])

        def collect(host: str, ref: Any) -> dict[str, Any]:
            if isinstance(ref, _Failed):
                raise ref.error
            return dict(self.get_result(host, ref))

        return Batch(views, submit, wait, collect, limit or PER_HOST * max(1, len(views)),
                     self.retries if retries is None else retries)

    # ---- images and events --------------------------------------------------------
    def images(self) -> dict[str, Any] | None:
        """How the fleet's images travel: its distribution's spec (None before the first join)."""
        spec = self.kv.get_json("images")
        return None if spec is None else dict(spec)

    def use_images(self, registry: str | None = None, image_dir: str | None = None, tls_verify: bool = True) -> None:
        """Switch how the fleet's images travel (hosts read it at their next fetch or save):
        registry HOST:PORT[/prefix] or image_dir. Images already on hosts stay; none is copied."""
        from .images import make_spec

        spec = make_spec(image_dir, registry, tls_verify)
        if spec is None:
            raise InvalidValue("give registry= or image_dir=")
        self.kv.put("images", json.dumps(spec))

    def push_image(self, path: str) -> str:
        """Make the .aimg at path (its parents published already) available to every host; its
        id (what provision(image=) takes). A registry is sent only the blobs it lacks."""
        from ..adapters.aimg.squashfs import SquashfsCodec
        from .images import from_spec

        spec = self.images()
        if spec is None:
            raise InvalidValue("the fleet has no image distribution: join a host with registry= or image_dir= first")
        return from_spec(spec, SquashfsCodec()).publish(path)

    def events(self, wait: float = 1.0) -> Iterator[dict[str, Any]]:
        """Live events of every host, merged as they come, each with its "host"; a host that
        cannot be asked says so ("type": "host_lost" or "host_error", then "host_resumed")."""
        merged: queue.Queue[dict[str, Any]] = queue.Queue()
        stop = threading.Event()
        for name in self.records():
            threading.Thread(target=self._follow, args=(name, merged, stop, wait), daemon=True).start()
        try:
            while True:
                yield merged.get()
        finally:
            stop.set()

    def _follow(self, host: str, out: "queue.Queue[dict[str, Any]]", stop: threading.Event, wait: float) -> None:
        def fetch(seq: int, w: float) -> list[tuple[int, dict[str, Any]]]:
            return list(self.call(host, "events_since", seq, w, timeout=w + 30))

        HostEvents(host, fetch, out, wait).run(stop)


class HostEvents:
    """One host's live events for Fleet.events, never ending on an error: the first failure of
    an outage is reported as an event ({"host", "type": "host_lost"} if the host is gone,
    "host_error" for any other error, with "error": its message), the calls go on every wait
    seconds, and when one answers again {"host", "type": "host_resumed"} comes, then the host's
    events: those after the last one seen, or, if the host's actor is a new one (it counts from
    1 again), all it has."""

    def __init__(self, host: str, fetch: Callable[[int, float], list[tuple[int, dict[str, Any]]]],
                 out: "queue.Queue[dict[str, Any]]", wait: float) -> None:
        self.host, self.fetch, self.out, self.wait = host, fetch, out, wait
        self.seq: int | None = None  # the last event seen (None: the host's watch not started yet)
        self.down = False

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:  # after an outage, ask for all the host has (wait 0) to see if it counts anew
                found = self.fetch(-1 if self.seq is None or self.down else self.seq, 0.0 if self.down else self.wait)
            except Exception as e:  # noqa: BLE001 (any error: reported, then tried again)
                self._failed(e)
                stop.wait(self.wait)
                continue
            self._take(found)

    def _failed(self, e: Exception) -> None:
        if not self.down:
            self.down = True
            kind = "host_lost" if isinstance(e, HostLost) else "host_error"
            self.out.put({"host": self.host, "type": kind, "error": str(e) or type(e).__name__})

    def _take(self, found: list[tuple[int, dict[str, Any]]]) -> None:
        top = max((s for s, _ in found), default=0)
        if self.down:
            self.down = False
            self.out.put({"host": self.host, "type": "host_resumed"})
            if self.seq is not None and top < self.seq:  # a new actor, counting from 1: all its events are new
                self.seq = 0
        if self.seq is None:  # the first answer only starts the host's watch: events from now on
            self.seq = top
            return
        for s, event in found:
            if s > self.seq:
                self.out.put(event)
        self.seq = max(self.seq, top)


@attrs.frozen
class _Failed:
    """A job that could not even be sent (its host already gone): collected as that error."""

    error: AppContainersError


def connect(address: str | None = None, **options: Any) -> Fleet:
    """The fleet on the Ray cluster at address (HEAD:PORT, or "auto" for this node's cluster);
    registry= (HOST:PORT[/prefix], tls_verify=) or image_dir= also switches how its images
    travel, for every host (Fleet.use_images)."""
    return Fleet(address, **options)


__all__ = ["Fleet", "connect", "JobResult"]
