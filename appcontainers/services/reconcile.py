"""Reconcile: compare the state file with reality and repair every difference.

There is no daemon, so this does what a daemon's bookkeeping would: it finishes or
undoes operations whose process died, removes ephemeral containers that outlived
their run, and removes anything under our data root that no reservation explains.
It touches only what lives under our own data root, our lxcpath and our bridge.
"""
from __future__ import annotations

import fnmatch
import os

from ..domain.exceptions import AppContainersError
from ..domain.image import lineage
from ..domain.reservation import READY


ORPHAN_AGE = 600  # seconds


class Reconciler:
    def __init__(self, ports, containers):
        self.p, self.containers = ports, containers
        self.layout = ports.settings.layout

    def plan(self) -> list[tuple[str, str, tuple]]:
        """What reconcile would do: (description, action, args), computed from state and reality."""
        L, procs, fs = self.layout, self.p.procs, self.p.fs
        # Reality first, then the state: whatever existed when we looked was reserved before
        # it was made, so a reservation made meanwhile is in the state we read next.
        lxc_names = self.p.driver.list()
        dir_names = {name for parent in (L.mnt(""), L.run_dir(""), L.overlay("", True), L.overlay("", False), L.raw(""))
                     for name in fs.list_dir(parent) if not name.startswith(".")}
        binds = []
        for mounter in self.p.mounters.values():
            for point in mounter.mounted(L.mnt("")):
                first = os.path.relpath(point, L.mnt("")).split("/")[0]
                if first == ".binds":
                    binds.append((mounter, point))
                elif not first.startswith("."):
                    dir_names.add(first)
        veths = self.p.net.veths_on(self.p.settings.bridge)
        temp_files = [(d, f) for d in (L.user_images, L.bases) for f in fs.list_dir(d)
                      if fnmatch.fnmatch(f, ".import-*@*.tmp")]
        store_files = [(d, f) for d in (L.user_images, L.bases) for f in fs.list_dir(d)
                       if f.endswith(".aimg") and not f.startswith(".")]
        state = self.p.repo.read()
        actions = []
        known = set(state.reservations)
        boot = procs.boot_id()
        # Each teardown carries what must still hold when it runs under the container's lock:
        # another process may have finished, or made a new container of that name, meanwhile.
        for r in state.reservations.values():
            same = (lambda seen: lambda now: now is not None and now == seen)(r)
            if r.status != READY:
                if not procs.alive(r.owner):
                    actions.append((f"container {r.name}: {r.status} by a process that is gone: removing it",
                                    "teardown", (r.name, same)))
            elif r.ephemeral:
                if boot is not None and r.boot is not None and r.boot != boot:
                    actions.append((f"ephemeral container {r.name} is from an earlier boot: removing it",
                                    "teardown", (r.name, same)))
                elif r.started and self.p.driver.state(r.name) in ("STOPPED", "MISSING"):
                    still_stopped = (lambda seen: lambda now: now is not None and now == seen and
                                     self.p.driver.state(seen.name) in ("STOPPED", "MISSING"))(r)
                    actions.append((f"ephemeral container {r.name} stopped on its own: removing it",
                                    "teardown", (r.name, still_stopped)))
        absent = lambda now: now is None  # noqa: E731
        for name in lxc_names:
            if name not in known:
                actions.append((f"LXC container {name} has no reservation: removing it", "teardown",
                                (name, absent)))
        for name in sorted(dir_names - known - {a[2][0] for a in actions if a[1] == "teardown"}):
            actions.append((f"leftovers of {name} (mounts or directories) without a reservation: removing them",
                            "teardown", (name, absent)))
        if binds and not any(r.idmap for r in state.reservations.values()):
            for mounter, point in binds:
                actions.append((f"host path re-bind {point} is used by no unprivileged container: "
                                f"unmounting it", "unbind", (mounter, point)))
        for op_id, op in state.operations.items():
            if not procs.alive(op.get("owner")):
                actions.append((f"{op.get('kind')} {op_id} of a process that is gone: undoing it",
                                "undo_operation", (op_id,)))
        moved_files = {op.get("staged") for op in state.operations.values() if op.get("kind") == "load-move"}
        for d, f in temp_files:
            if os.path.join(d, f) in moved_files:
                continue  # a caller's own file: its operation puts it back (below)
            if not procs.alive(f[:-4].split("@", 1)[-1].split(".")[0].replace("+", ":")):
                actions.append((f"temp file {f} of a dead load: removing it", "remove_file", (os.path.join(d, f),)))
        now = self.p.clock()
        for d, f in store_files if fs.exists(L.resources) else ():  # no state file: no judgement
            # A file is moved into the store just before its record is written: only an old one
            # without a record is a leftover (of a crash, or of an older appcontainers).
            path = os.path.join(d, f)
            if f[:-5] not in state.images and now - fs.mtime(path) > ORPHAN_AGE:
                actions.append((f"image file {path} has no record: removing it", "remove_orphan", (path,)))
        for image in list(state.images.values()):
            if not fs.exists(L.image_file(image.id, image.kind)):
                users = [r.name for r in state.reservations.values()
                         if image.id in {i.id for i in self._chain(state, r.image)}]
                if not users:
                    actions.append((f"image {image.id[:12]} ({image.name}) has no file: forgetting it",
                                    "forget_image", (image.id,)))
        # Only this root's veths (by their prefix): another root may share the bridge (H5).
        from .plans import stray_veths
        for veth in stray_veths(self.p.settings.root_id, veths, known):
            actions.append((f"veth {veth} on {self.p.settings.bridge} belongs to no container: deleting it",
                            "delete_link", (veth,)))
        return actions

    @staticmethod
    def _chain(state, image_id):
        try:
            return lineage(state.images, image_id)
        except Exception:
            return []

    def run(self, dry_run: bool = False) -> list[str]:
        """Repair every difference; returns what was (or, dry_run, would be) done."""
        done = []
        for _round in range(1 if dry_run else 3):
            # One repair can reveal the next (a removed container frees its image record).
            actions = [a for a in self.plan() if a[0] not in done]
            if not actions:
                break
            done += self._apply(actions, dry_run)
        if not dry_run:
            done += self._sync_rules()
        return done

    # ---- nftables (H5): the root's rules follow its reservations; a container gone without
    # its teardown loses its rules here, and the tables go with the root's last container.
    def _sync_rules(self) -> list[str]:
        try:
            self.containers.sync_rules()
        except AppContainersError as e:  # reported, not raised: a start refuses on its own
            return [f"nftables rules of this data root could not be applied (failed: {e})"]
        return []

    def _apply(self, actions, dry_run):
        done = []
        for description, action, args in actions:
            if not dry_run:
                try:
                    getattr(self, "_" + action)(*args)
                except (AppContainersError, OSError) as e:
                    # Another process may be removing the same thing; report, go on with the rest.
                    description += f" (failed: {e})"
            done.append(description)
        return done

    def _teardown(self, name, expect):
        # Never wait: a container whose lock is held is being worked on by a live process.
        self.containers.teardown(name, expect=expect, wait=False)

    def _unbind(self, mounter, point):
        with self.p.fs.lock(self.layout.lock_file(".binds"), wait=False):  # not while a start re-binds
            if not any(r.idmap for r in self.p.repo.read().reservations.values()):
                mounter.unmount(point, [])

    def _remove_orphan(self, path):
        with self.p.repo.transaction() as state:  # checked again, under the state lock
            if os.path.basename(path)[:-5] not in state.images \
                    and self.p.clock() - self.p.fs.mtime(path) > ORPHAN_AGE:
                self.p.fs.remove_file(path)

    def _remove_file(self, path):
        self.p.fs.remove_file(path)

    def _forget_image(self, image_id):
        with self.p.repo.transaction() as state:
            image = state.images.get(image_id)
            # Checked again: a load may have brought the file back, or started to use it.
            if image and not self.p.fs.exists(self.layout.image_file(image.id, image.kind)) \
                    and not state.users_of(image_id):
                del state.images[image_id]

    def _delete_link(self, name):
        self.p.net.delete_link(name)

    def _undo_operation(self, op_id):
        op = self.p.repo.read().operations.get(op_id)
        if not op:
            return
        if op.get("kind") == "load-move":
            # A load that moved the caller's file into the store died: the file goes back,
            # unless the load got far enough that a container uses it.
            staged, image_id, restore = op.get("staged"), op.get("image"), op.get("restore")
            owner = tuple(op.get("file_owner") or (0, 0, 0o644))
            if staged and self.p.fs.exists(staged):
                if not self.p.fs.exists(restore):
                    self.p.fs.put_back(staged, restore, owner)
            elif image_id:
                stored = self.layout.image_file(image_id, "user")
                with self.p.repo.transaction() as state:
                    unused = not state.users_of(image_id)
                    if unused:
                        state.images.pop(image_id, None)
                if unused and self.p.fs.exists(stored) and not self.p.fs.exists(restore):
                    self.p.fs.put_back(stored, restore, owner)
        elif op.get("kind") == "save":
            dest = op.get("dest", "")
            directory, base = os.path.split(dest)
            for f in self.p.fs.list_dir(directory):
                if fnmatch.fnmatch(f, f".{base}.*.tmp"):
                    self.p.fs.remove_file(os.path.join(directory, f))
            name = op.get("container", "")
            with self.containers.locked(name, wait=False):  # not under a live save's feet
                if op.get("frozen") and self.p.driver.state(name) == "FROZEN":
                    self.p.driver.unfreeze(name)
                self.containers.unmount_view(name)
        # Forgotten only once undone, so a crash here leaves it for the next reconcile.
        with self.p.repo.transaction() as state:
            state.operations.pop(op_id, None)
