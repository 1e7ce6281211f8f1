"""Reconcile: compare the state file with reality and repair every difference.

There is no daemon, so this does what a daemon's bookkeeping would: it finishes or
undoes operations whose process died, removes ephemeral containers that outlived
their run, and removes anything under our data root that no reservation explains.
It touches only what lives under our own data root, our lxcpath and our bridge.

plan() is a list of small checks, one per record kind and one per kind of orphan; each
returns Actions, which carry what must still hold when they run (checked again under a lock).
"""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Callable, Iterable, NamedTuple

import attrs

from ..domain.exceptions import AppContainersError
from ..domain.image import Image, lineage
from ..domain.operations import ImportStaging
from ..domain.reservation import READY, Reservation
from ..domain.state import State
from .plans import stray_veths
from .undo import undo

if TYPE_CHECKING:
    from .containers import ContainerService
    from .ports import Ports

log = logging.getLogger("appcontainers.reconcile")

ORPHAN_AGE = 600  # seconds

Expect = Callable[[Reservation | None], bool]


class Action(NamedTuple):
    """One repair: what it does, in words, and the call that does it."""

    description: str
    do: Callable[..., object]
    args: tuple[Any, ...] = ()


@attrs.frozen
class Seen:
    """What reconcile looked at. Reality first, then the state: whatever existed when we
    looked was reserved before it was made, so a reservation made meanwhile is in the state."""

    lxc_names: list[str]
    dir_names: set[str]  # first path parts under our per-container directories and mounts
    binds: list[tuple[Any, str]]  # (mounter, point) of host path re-binds
    veths: list[str]
    temp_files: list[str]  # import staging files in the store
    store_files: list[str]  # .aimg files in the store
    state: State
    boot: str | None
    has_state_file: bool

    @property
    def known(self) -> set[str]:
        return set(self.state.reservations)


class Reconciler:
    def __init__(self, ports: Ports, containers: ContainerService) -> None:
        self.p, self.containers = ports, containers
        self.layout = ports.settings.layout

    # ---- looking ------------------------------------------------------------------------
    def look(self) -> Seen:
        L, fs = self.layout, self.p.fs
        lxc_names = list(self.p.driver.list())
        dir_names = {name for parent in (L.mnt(""), L.run_dir(""), L.overlay("", True), L.overlay("", False),
                                         L.raw(""), L.disks) for name in fs.list_dir(parent) if not name.startswith(".")}
        binds = []
        for mounter in self.p.mounters.values():
            for point in mounter.mounted(L.mnt("")):
                first = os.path.relpath(point, L.mnt("")).split("/")[0]
                if first == ".binds":
                    binds.append((mounter, point))
                elif not first.startswith("."):
                    dir_names.add(first)
        veths = list(self.p.net.veths_on(self.p.settings.bridge))
        store = [os.path.join(d, f) for d in (L.user_images, L.bases) for f in fs.list_dir(d)]
        state = self.p.repo.read()
        return Seen(lxc_names=lxc_names, dir_names=dir_names, binds=binds, veths=veths,
                    temp_files=[f for f in store if ImportStaging.parse(os.path.basename(f))],
                    store_files=[f for f in store if f.endswith(".aimg") and not os.path.basename(f).startswith(".")],
                    state=state, boot=self.p.procs.boot_id(), has_state_file=fs.exists(L.resources))

    def plan(self) -> list[Action]:
        """What reconcile would do, computed from state and reality."""
        seen = self.look()
        checks: Iterable[Callable[[Seen], list[Action]]] = (
            self._reservations, self._unreserved_lxc, self._leftover_dirs, self._unused_binds,
            self._dead_operations, self._dead_temp_files, self._orphan_store_files,
            self._images_without_files, self._stray_veths)
        return [action for check in checks for action in check(seen)]

    # ---- one check per record kind ---------------------------------------------------------
    def _reservations(self, seen: Seen) -> list[Action]:
        found = (self._reservation(seen, r) for r in seen.state.reservations.values())
        return [a for a in found if a is not None]

    def _reservation(self, seen: Seen, r: Reservation) -> Action | None:
        """A provision or destroy of a dead process; an ephemeral container that outlived its run."""
        if r.status != READY:
            return None if self.p.procs.alive(r.owner) else self._teardown_action(
                f"container {r.name}: {r.status} by a process that is gone: removing it", r.name, _same(r))
        if not r.ephemeral:
            return None
        if seen.boot is not None and r.boot is not None and r.boot != seen.boot:
            return self._teardown_action(f"ephemeral container {r.name} is from an earlier boot: removing it",
                                         r.name, _same(r))
        if r.started and self._stopped(r.name):
            return self._teardown_action(f"ephemeral container {r.name} stopped on its own: removing it",
                                         r.name, lambda now: _same(r)(now) and self._stopped(r.name))
        return None

    def _dead_operations(self, seen: Seen) -> list[Action]:
        """An operation record (save, load-move, ...) whose process is gone: its kind's undo."""
        return [Action(f"{op.KIND} {op_id} of a process that is gone: undoing it", self._undo_operation, (op_id,))
                for op_id, op in seen.state.operations.items() if not self.p.procs.alive(op.owner)]

    # ---- one check per kind of orphan ------------------------------------------------------
    def _unreserved_lxc(self, seen: Seen) -> list[Action]:
        return [self._teardown_action(f"LXC container {name} has no reservation: removing it", name, _absent)
                for name in seen.lxc_names if name not in seen.known]

    def _leftover_dirs(self, seen: Seen) -> list[Action]:
        names = seen.dir_names - seen.known - set(seen.lxc_names)  # those are torn down above
        return [self._teardown_action(f"leftovers of {name} (mounts or directories) without a reservation: "
                                      f"removing them", name, _absent) for name in sorted(names)]

    def _unused_binds(self, seen: Seen) -> list[Action]:
        if any(r.idmap for r in seen.state.reservations.values()):
            return []
        return [Action(f"host path re-bind {point} is used by no unprivileged container: unmounting it",
                       self._unbind, (mounter, point)) for mounter, point in seen.binds]

    def _dead_temp_files(self, seen: Seen) -> list[Action]:
        """An import staging file of a dead load (not a caller's file a live record keeps)."""
        ops = seen.state.operations.values()
        return [Action(f"temp file {os.path.basename(path)} of a dead load: removing it", self.p.fs.remove_file,
                       (path,)) for path in seen.temp_files
                if not any(op.keeps(path) for op in ops) and not self.p.procs.alive(_staging_owner(path))]

    def _orphan_store_files(self, seen: Seen) -> list[Action]:
        # A file is moved into the store just before its record is written: only an old one
        # without a record is a leftover (of a crash, or of an older appcontainers).
        if not seen.has_state_file:  # no state file: no judgement
            return []
        return [Action(f"image file {path} has no record: removing it", self._remove_orphan, (path,))
                for path in seen.store_files if self._orphan(path, seen.state)]

    def _images_without_files(self, seen: Seen) -> list[Action]:
        state = seen.state
        return [Action(f"image {image.id[:12]} ({image.name}) has no file: forgetting it",
                       self._forget_image, (image.id,))
                for image in list(state.images.values())
                if not self.p.fs.exists(self.layout.image_file(image.id, image.kind)) and not _in_use(state, image)]

    def _stray_veths(self, seen: Seen) -> list[Action]:
        """Only this data root's veths (by their prefix): another root on the same bridge keeps its own."""
        return [Action(f"veth {veth} on {self.p.settings.bridge} belongs to no container: deleting it",
                       self.p.net.delete_link, (veth,))
                for veth in stray_veths(self.p.settings.root_id, seen.veths, seen.known)]

    # ---- running -----------------------------------------------------------------------------
    def run(self, dry_run: bool = False) -> list[str]:
        """Repair every difference; returns what was (or, dry_run, would be) done."""
        done: list[str] = []
        for _round in range(1 if dry_run else 3):
            # One repair can reveal the next (a removed container frees its image record).
            actions = [a for a in self.plan() if a.description not in done]
            if not actions:
                break
            done += self._apply(actions, dry_run)
        if not dry_run:
            done += self._sync_rules()
            done += self._sync_dns()
        return done

    # ---- nftables: the root's rules follow its reservations; a container gone without
    # its teardown loses its rules here, and the tables go with the root's last container.
    def _sync_rules(self) -> list[str]:
        try:
            self.containers.sync_rules()
        except AppContainersError as e:  # reported, not raised: a start refuses on its own
            return [f"nftables rules of this data root could not be applied (failed: {e})"]
        return []

    # ---- the resolver follows the reservations too: a dead one is started again while a
    # container runs, a stale one restarted, and it goes (pid file and all) with the last one.
    def _sync_dns(self) -> list[str]:
        try:
            running = any(s == "RUNNING" for s in self.containers.states().values())
            self.containers.sync_dns(start=running)
        except (AppContainersError, OSError) as e:
            return [f"the DNS resolver of this data root could not be set up (failed: {e})"]
        return []

    def _apply(self, actions: list[Action], dry_run: bool) -> list[str]:
        if dry_run:
            for action in actions:
                log.info("would: %s", action.description)
            return [a.description for a in actions]
        return [self._do(action) for action in actions]

    @staticmethod
    def _do(action: Action) -> str:
        log.info("%s", action.description)
        try:
            action.do(*action.args)
        except (AppContainersError, OSError) as e:
            # Another process may be removing the same thing; report, go on with the rest.
            log.warning("%s: failed: %s", action.description, e)
            return f"{action.description} (failed: {e})"
        return action.description

    # ---- the repairs, each checking again what it acts on ---------------------------------
    def _teardown_action(self, description: str, name: str, expect: Expect) -> Action:
        return Action(description, self._teardown, (name, expect))

    def _teardown(self, name: str, expect: Expect) -> None:
        # Never wait: a container whose lock is held is being worked on by a live process.
        # expect: what must still hold under the container's lock (another process may have
        # finished, or made a new container of that name, meanwhile).
        self.containers.teardown(name, expect=expect, wait=False)

    def _stopped(self, name: str) -> bool:
        return self.p.driver.state(name) in ("STOPPED", "MISSING")

    def _unbind(self, mounter: Any, point: str) -> None:
        with self.p.fs.lock(self.layout.lock_file(".binds"), wait=False):  # not while a start re-binds
            if not any(r.idmap for r in self.p.repo.read().reservations.values()):
                mounter.unmount(point, [])

    def _orphan(self, path: str, state: State) -> bool:
        return os.path.basename(path)[:-5] not in state.images and self.p.clock() - self.p.fs.mtime(path) > ORPHAN_AGE

    def _remove_orphan(self, path: str) -> None:
        with self.p.repo.transaction() as state:  # checked again, under the state lock
            if self._orphan(path, state):
                self.p.fs.remove_file(path)

    def _forget_image(self, image_id: str) -> None:
        with self.p.repo.transaction() as state:
            image = state.images.get(image_id)
            # Checked again: a load may have brought the file back, or started to use it.
            if image and not self.p.fs.exists(self.layout.image_file(image.id, image.kind)) \
                    and not state.users_of(image_id):
                del state.images[image_id]

    def _undo_operation(self, op_id: str) -> None:
        op = self.p.repo.read().operations.get(op_id)
        if op is not None:
            undo(op, self.p, self.containers)


def _same(seen: Reservation) -> Expect:
    return lambda now: now is not None and now == seen


def _absent(now: Reservation | None) -> bool:
    return now is None


def _staging_owner(path: str) -> str:
    staging = ImportStaging.parse(os.path.basename(path))
    return staging.owner if staging else ""


def _in_use(state: State, image: Image) -> bool:
    """Whether a container's layers include the image (a broken lineage counts as none)."""
    for r in state.reservations.values():
        try:
            chain = lineage(state.images, r.image)
        except Exception:
            continue
        if image.id in {i.id for i in chain}:
            return True
    return False
