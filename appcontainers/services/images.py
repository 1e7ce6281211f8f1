"""Use cases on images: save a container to a .aimg, load one back, list and remove."""
from __future__ import annotations

import builtins
import os
from typing import Any, Iterable

import attrs

from ..domain.exceptions import (ContainerStateError, ImageCorrupt, InUse, InvalidValue, UnknownImage)
from ..domain.image import FORMAT_VERSION, Image, Manifest, RunConfig, lineage, validate_image_name
from ..domain.operations import ImportStaging, LoadMoveOp, SaveOp
from ..domain.ports import JsonDict, Progress
from ..domain.reservation import READY, Reservation
from . import plans
from .bases import BaseService
from .containers import ContainerService
from .faults import checkpoint
from .host_errors import host_errors
from .ports import Ports
from .trust import TrustService


def foreign_binds(images: dict[str, Image], image: Image) -> list[str]:
    """The host paths image asks to bind that no base built on this host provides: an image
    from elsewhere must not expose /etc or other containers' sockets."""
    allowed = {b for i in images.values() if i.kind == "base" for b in i.manifest.host_binds}
    return [b for b in image.manifest.host_binds if b not in allowed]


class ImageService:
    def __init__(self, ports: Ports, containers: ContainerService, bases: BaseService) -> None:
        self.p, self.containers, self.bases = ports, containers, bases
        self.layout = ports.settings.layout
        self.trust = TrustService(ports)

    # ---- save -------------------------------------------------------------------------
    @host_errors("save")
    def save(self, name: str, path: str, flatten: bool = True, image_name: str | None = None,
             progress: Progress | None = None, level: int | None = None, sign: str | None = None) -> Image:
        """Squash the container (merged view, or only its upper layer) into the file path;
        sign (a private key file or keygen name) writes a signature of its id chain to path.sig."""
        r = self.containers.get(name)
        if not flatten and r.mounter == "raw":
            raise InvalidValue(f"container {name} is raw (a plain directory, no layers): save it flattened")
        if r.status != READY:
            raise ContainerStateError(f"container {name} is {r.status}; it cannot be saved")
        image_name = validate_image_name(image_name or name)
        path = os.path.abspath(path)
        if not self.p.fs.is_dir(os.path.dirname(path)):
            raise InvalidValue(f"cannot save to {path}: directory {os.path.dirname(path)} does not exist")
        if self.p.fs.is_dir(path):
            raise InvalidValue(f"cannot save to {path}: it is a directory")
        if sign is not None and not self.p.fs.is_file(self.trust.key_file(sign)):
            raise InvalidValue(f"no private key {self.trust.key_file(sign)} to sign with")
        state = self.p.repo.read()
        chain = lineage(state.images, r.image)
        manifest = {
            "format_version": FORMAT_VERSION, "name": image_name, "created": self.p.clock(),
            "parent": None if flatten else r.image, "startup_commands": list(r.startup_commands),
            "environment": plans.environment(chain), "host_binds": plans.host_binds(chain),
            "base": chain[-1].manifest.base or chain[-1].name,
            "init": plans.init_argv(chain) if plans.has_agent(chain) else [],
            "config": _config_dict(plans.run_config(chain)),  # how it runs goes on with it
        }
        with self.containers.locked(name):  # no start, stop or destroy while the copy is made
            r = self.containers.get(name)  # it may have gone while we waited for the lock
            image_id = self._pack(r, path, manifest, flatten, level, progress)
        if sign is not None:  # trust: a signature beside the file, checked by load under a key policy
            ids = [image_id] + ([] if flatten else [i.id for i in chain])
            self.trust.write(path + ".sig", [self.trust.sign(sign, ids)])
        return Image(id=image_id, manifest=Manifest.from_dict(manifest), kind="user")

    def _pack(self, r: Reservation, path: str, manifest: JsonDict, flatten: bool, level: int | None,
              progress: Progress | None) -> str:
        name = r.name
        self.containers.ensure_mounted(r)
        source = self.layout.rootfs(name) if flatten else self.containers.upper(r)
        running = self.p.driver.state(name) == "RUNNING"
        op = SaveOp(id=f"save-{os.getpid()}-{self.p.rng.getrandbits(32):08x}", owner=self.p.procs.token(),
                    container=name, dest=path, frozen=running)
        with self.p.repo.transaction() as state:
            # The intent: if this process dies, reconcile undoes it (services/undo.py).
            state.begin(op)
        checkpoint("save.recorded")
        frozen = viewing = False
        try:
            try:
                if running:  # a consistent copy of a running container
                    self.p.driver.freeze(name)
                    frozen = True
                if flatten and r.idmap is not None and r.mounter == "raw":
                    source = self.containers.upper(r)  # the directory itself holds unshifted ids
                elif flatten and r.idmap is not None:
                    # Its merged rootfs shows ids shifted; pack an unshifted read-only view instead,
                    # in a root-only directory (.views is 0700) and without suid or devices.
                    layers = [os.path.join(self.layout.layer_mount(name, i), "rootfs")
                              for i in range(len(lineage(self.p.repo.read().images, r.image)))]
                    source = self.layout.view(name)
                    viewer = self.p.mounters.viewer(r.mounter)  # kernel (idmapped layers) or fuse
                    viewer.mount_view([self.containers.upper(r), *layers], source)
                    viewing = True
                image_id: str = self.p.codec.pack(source, manifest, path,
                                             level=level or self.p.settings.squashfs_level, progress=progress)
                checkpoint("save.packed")
            finally:
                try:
                    if frozen:  # thaw first: whatever else fails, the container runs on
                        self.p.driver.unfreeze(name)
                finally:
                    if viewing:
                        viewer.unmount_view(source)
        finally:
            with self.p.repo.transaction() as state:
                state.end(op.id)
        return image_id

    # ---- load -------------------------------------------------------------------------
    def _import(self, path: str, move: bool = False) -> tuple[Image, str | None, LoadMoveOp | None]:
        """Verify path and stage it in the store: (image, staged temp file or None, the move
        record if the caller's file itself was moved: put back if the load fails)."""
        if not self.p.fs.is_file(path):
            raise ImageCorrupt(path, "not a regular file" if self.p.fs.exists(path) else "no such file")
        image_id = self.p.codec.image_id(path)  # cheap: the trailer; full check below
        state = self.p.repo.read()
        if image_id in state.images and self.p.fs.exists(self.layout.image_file(image_id, state.images[image_id].kind)):
            # Already in the store: our copy is used (a moved file stays where it is), but a
            # damaged file is still refused, and our copy is checked too.
            self.p.codec.verify(path)
            return self._checked_store_copy(path, state.images[image_id]), None, None
        self.p.fs.make_dirs(self.layout.user_images)
        tmp = self._staging_file(self.layout.user_images, image_id)
        moved = self._move_in(path, tmp, image_id) if move else None
        try:
            if moved:
                verified_id, manifest = self.p.codec.verify(tmp)
            else:
                # Checked as it is copied: what we verify is our own copy, which cannot change after.
                verified_id, manifest = self.p.codec.copy_verified(path, tmp)
            checkpoint("load.staged")
            if verified_id != image_id:
                raise ImageCorrupt(path, "the file changed while it was being loaded")
            image = Image(id=image_id, manifest=Manifest.from_dict(manifest), kind="user")
            # Host paths an image may ask for are those of a base built on this host, no others.
            foreign = foreign_binds(state.images, image)
            if foreign:
                raise ImageCorrupt(path, f"it asks to bind the host paths {', '.join(foreign)} into its "
                                         f"containers, which no base image of this host provides")
        except BaseException:
            self._unstage(tmp, moved)
            raise
        return image, tmp, moved

    def _staging_file(self, directory: str, image_id: str) -> str:
        # Its name says whose it is: reconcile removes it once we are gone.
        staging = ImportStaging(image_id=image_id, owner=self.p.procs.token(), rand=f"{self.p.rng.getrandbits(32):08x}")
        return os.path.join(directory, staging.file_name())

    def _checked_store_copy(self, path: str, image: Image) -> Image:
        """The store's copy of image, verified; if it no longer matches its id (it cannot change
        once stored, but when in doubt we check rather than trust), it is replaced by a verified
        copy of path, itself just verified: a damaged copy is never mounted again."""
        stored = self.layout.image_file(image.id, image.kind)
        try:
            if self.p.codec.verify(stored)[0] == image.id:  # consistent, and the image it should be
                return image
        except ImageCorrupt:
            pass
        tmp = self._staging_file(os.path.dirname(stored), image.id)
        copied_id, _ = self.p.codec.copy_verified(path, tmp)
        if copied_id != image.id:
            self.p.fs.remove_file(tmp)
            raise ImageCorrupt(path, "the file changed while it was being loaded")
        self.p.fs.move(tmp, stored)
        return image

    def _move_in(self, path: str, tmp: str, image_id: str) -> LoadMoveOp | None:
        """Move the caller's file itself into the store (no copy), when it is on the same
        filesystem: the record of it comes first, so if we die reconcile puts the file back."""
        moved = LoadMoveOp.for_staging(owner=self.p.procs.token(), staged=tmp, restore=path, image=image_id)
        with self.p.repo.transaction() as st:
            st.begin(moved)
        file_owner = self.p.fs.try_move(path, tmp)
        if file_owner is None:
            self._forget_move(moved)
            return None
        uid, gid, mode = file_owner
        moved = attrs.evolve(moved, file_owner=(uid, gid, mode))
        with self.p.repo.transaction() as st:
            st.begin(moved)
        return moved

    def _forget_move(self, moved: LoadMoveOp) -> None:
        with self.p.repo.transaction() as st:
            st.end(moved.id)

    def _unstage(self, staged: str | None, moved: LoadMoveOp | None, image_id: str | None = None) -> None:
        """A failed load leaves the caller's file where it was and nothing in the store.
        staged None with a move: the file already went to the store under image_id; it goes
        back if nothing uses it."""
        if moved is None:
            if staged is not None:
                self.p.fs.remove_file(staged)
            return
        if staged is None and image_id is not None:
            with self.p.repo.transaction() as st:
                if st.users_of(image_id):
                    return self._forget_move(moved)
                st.images.pop(image_id, None)
            staged = self.layout.image_file(image_id, "user")
        if staged is None:  # nothing was staged and no image recorded: nothing to put back
            return self._forget_move(moved)
        self.p.fs.put_back(staged, moved.restore, moved.owner_of_file())
        self._forget_move(moved)

    @host_errors("load")
    def load(self, path: str, ephemeral: bool = False, name: str | None = None, raw: bool = False,
             move: bool = False, privileged: bool = False, disk: int | str | None = None,
             caps_add: Iterable[str] = (), pids: int | None = None, memory: str | None = None,
             cpus: float | None = None, publish: Iterable[str] = ()) -> Reservation:
        """A new container from the .aimg at path; the options as for provision."""
        image, staged, moved = self._import(os.path.abspath(path), move=move)
        try:
            if image.parent is not None:
                try:
                    lineage(self.p.repo.read().images, image.parent)
                except UnknownImage:
                    raise UnknownImage(f"{image.parent} (parent of {path}): load the parent image first") from None
            signatures = self._admit(path, image)
            r = self.containers.reserve(name, image.id, ephemeral=ephemeral,
                                        startup_commands=image.startup_commands, new_image=image, raw=raw,
                                        privileged=privileged, caps_add=caps_add, pids=pids,
                                        memory=memory, cpus=cpus, disk=disk, publish=publish)
        except BaseException:
            self._unstage(staged, moved)
            raise
        checkpoint("load.reserved")
        with self.containers.locked(r.name):
            try:
                if staged:
                    self.p.fs.move(staged, self.layout.image_file(image.id, "user"))
                    staged = None
                checkpoint("load.imported")
                self.trust.keep(image.id, "user", signatures)
                self.containers.materialize(r)
            except BaseException:
                self.containers.roll_back(r.name)
                self._unstage(staged, moved, image.id)
                raise
            ready = self.containers.mark_ready(r.name)
        if moved:
            self._forget_move(moved)
        return ready

    def _admit(self, path: str, image: Image) -> list[bytes]:
        """The trust policy over the file's signatures (path.sig, as save --sign writes it)."""
        chain = [image.id] + ([] if image.parent is None else
                              [i.id for i in lineage(self.p.repo.read().images, image.parent)])
        return self.trust.admit(path, chain, self.trust.read(os.path.abspath(path) + ".sig"))

    # ---- store ------------------------------------------------------------------------
    def list(self, layers: bool = False) -> list[Image]:
        """The stored images; the lower layers of imported OCI images (kind "layer") only if asked."""
        return sorted((i for i in self.p.repo.read().images.values() if layers or i.kind != "layer"),
                      key=lambda i: (i.kind, i.name, i.created))

    def resolve(self, ref: str, images: dict[str, Image] | None = None, unique: bool = False) -> Image:
        """An image by id, unique id prefix (>= 4 hex digits) or name (the newest of that name;
        unique=True refuses a name several images have, listing their ids)."""
        images = self.p.repo.read().images if images is None else images
        if ref in images:
            return images[ref]
        if len(ref) >= 4 and all(c in "0123456789abcdef" for c in ref):
            hits = [i for k, i in images.items() if k.startswith(ref)]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                ids = ", ".join(sorted(f"{i.id[:12]} ({i.name})" for i in hits))
                raise InvalidValue(f"image id prefix {ref!r} is ambiguous: {ids}")
        named = [i for i in images.values() if i.name == ref]
        if unique and len(named) > 1:
            ids = ", ".join(i.id[:12] for i in sorted(named, key=lambda i: i.created))
            raise InvalidValue(f"{len(named)} images are named {ref!r} ({ids}): give the id of the one to use")
        if named:
            return max(named, key=lambda i: i.created)
        raise UnknownImage(ref)

    @host_errors("remove image")
    def remove(self, ref: str) -> Image:
        """Remove an image from the store; refused while a container or child image uses it."""
        with self.p.repo.transaction() as state:
            image = self.resolve(ref, state.images, unique=True)
            users = state.users_of(image.id)
            if users:
                raise InUse(f"image {image.id[:12]} ({image.name}) is used by {', '.join(users)}")
            del state.images[image.id]
            gone = [image, *_unused_layers(state, image)]
        for img in gone:
            self.p.fs.remove_file(self.layout.image_file(img.id, img.kind))
            if self.p.fs.exists(self.layout.signature_file(img.id, img.kind)):
                self.p.fs.remove_file(self.layout.signature_file(img.id, img.kind))
        return image

    def layer_files(self, ref: str) -> builtins.list[str]:
        """The files of an image and its ancestors, top first, every one verified.

        ref: an .aimg file (its parents must be in the store) or a store id/prefix/name."""
        state = self.p.repo.read()
        files = []
        if self.p.fs.is_file(ref):
            image_id, manifest = self.p.codec.verify(ref)
            files.append(os.path.abspath(ref))
            parent = Manifest.from_dict(manifest).parent
        else:
            image = self.resolve(ref, state.images)
            parent = image.id
        if parent is not None:
            for img in lineage(state.images, parent):
                path = self.layout.image_file(img.id, img.kind)
                self.p.codec.verify(path)
                files.append(path)
        return files


def _config_dict(config: RunConfig | None) -> JsonDict | None:
    return None if config is None else config.to_dict()
def _unused_layers(state: Any, image: Image) -> builtins.list[Image]:
    """The lower layers of an imported image (kind "layer") that nothing uses once image is gone,
    removed from state: a layer shared with another image stays."""
    gone: builtins.list[Image] = []
    layer = state.images.get(image.parent) if image.parent else None
    while layer is not None and layer.kind == "layer" and not state.users_of(layer.id):
        del state.images[layer.id]
        gone.append(layer)
        layer = state.images.get(layer.parent) if layer.parent else None
    return gone
