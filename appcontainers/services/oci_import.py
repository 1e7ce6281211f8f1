"""Use case: import an OCI image (or a plain rootfs tar) as a chain of layered .aimg images.

Each OCI layer becomes one .aimg layer (parent = the layer below), converted from its tar
stream by the codec (OciSource.members -> ImageCodec.pack_tar); the image config becomes the
top layer's RunConfig. A lower layer already stored with the same diff_id on the same parent
is reused, so a base shared by two images is stored once. Nothing enters the store before
every layer is converted: they wait in the import's work directory (named by an ImportOp
record, so reconcile removes it if the process dies), then enter in one transaction.
"""
from __future__ import annotations

import os

import attrs

from ..domain.exceptions import InvalidValue
from ..domain.image import FORMAT_VERSION, Image, Manifest, validate_image_name
from ..domain.oci import ImportLimits, OciImage, OciLayer, parse_source
from ..domain.operations import ImportOp
from ..domain.ports import JsonDict, OciSource, Progress
from ..domain.state import State
from .faults import checkpoint
from .host_errors import host_errors
from .ports import Ports

WORK_PREFIX = ".oci-import."


def layer_name(diff_id: str) -> str:
    """The name of a lower layer: from its content, the same whichever image brought it."""
    return f"layer-{diff_id[7:19]}"


def find_layer(images: dict[str, Image], diff_id: str | None, parent: str | None) -> Image | None:
    """A stored lower layer an import converted itself holding diff_id on parent, if any.

    Only kind "layer" (the store's own record, set by import alone): a loaded or pulled image's
    manifest can claim any diff_id, and reusing it would put its tree under every later import
    of an image built on that layer."""
    if diff_id is None:
        return None
    for image in images.values():
        if image.manifest.diff_id == diff_id and image.parent == parent and image.kind == "layer":
            return image
    return None


@attrs.define
class _Progress:
    """Overall percent from the compressed bytes read, layer after layer."""

    report: Progress | None
    total: int
    done: int = 0
    last: int = -1

    def at(self, count: int) -> None:
        if self.report is None:
            return
        pct = min(99, (self.done + count) * 100 // max(self.total, 1))
        if pct > self.last:
            self.last = pct
            self.report(pct)

    def layer_done(self, size: int) -> None:
        self.done += size
        self.at(0)


class OciImportService:
    def __init__(self, ports: Ports) -> None:
        self.p = ports
        self.layout = ports.settings.layout

    def _oci(self) -> OciSource:
        if self.p.oci is None:
            raise InvalidValue("OCI import is not available here (no OCI source configured)")
        return self.p.oci

    @host_errors("import")
    def import_image(self, source: str, name: str | None = None, progress: Progress | None = None,
                     tls_verify: bool = True, limits: ImportLimits = ImportLimits()) -> Image:
        """Import source (oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE,
        docker://REF or a rootfs tar) as the image name; the top image of the chain."""
        src = parse_source(source)
        name = validate_image_name(name or src.default_name())
        oci = self._oci()
        self.p.fs.make_dirs(self.layout.user_images)
        rand = f"{self.p.rng.getrandbits(32):08x}"
        op = ImportOp(id=f"import-{rand}", owner=self.p.procs.token(),
                      work_dir=os.path.join(self.layout.user_images, f"{WORK_PREFIX}{rand}"))
        with self.p.repo.transaction() as state:
            state.begin(op)  # if we die, reconcile removes the work directory
        try:
            self.p.fs.make_dirs(op.work_dir, mode=0o700)
            image = oci.fetch(src, os.path.join(op.work_dir, "layout"), tls_verify)
            checkpoint("import.fetched")
            staged = self._convert(oci, image, name, op.work_dir, _Progress(progress, image.total_size), limits)
            checkpoint("import.converted")
            top = self._commit(staged)
        finally:
            self.p.fs.remove_tree(op.work_dir)
            with self.p.repo.transaction() as state:
                state.end(op.id)
        if progress is not None:
            progress(100)
        return top

    def _convert(self, oci: OciSource, image: OciImage, name: str, work_dir: str, prog: _Progress,
                 limits: ImportLimits) -> list[tuple[Image, str | None]]:
        """Every layer as (image, its converted file in work_dir, or None if already stored)."""
        staged: list[tuple[Image, str | None]] = []
        parent: str | None = None
        images = self.p.repo.read().images
        for i, layer in enumerate(image.layers):
            top = i == len(image.layers) - 1
            manifest = self._manifest(layer, name if top else None, parent, image if top else None)
            found = _reusable(images, layer, parent, Manifest.from_dict(manifest), top)
            if found is not None and self.p.fs.exists(self.layout.image_file(found.id, found.kind)):
                staged.append((found, None))
            else:
                dest = os.path.join(work_dir, f"{i}.aimg")
                members = oci.members(image, layer, limits, on_read=prog.at)
                image_id = self.p.codec.pack_tar(members, manifest, dest, level=self.p.settings.squashfs_level)
                self.p.fs.chmod(dest, 0o600)  # as every store file: root's only
                checkpoint("import.layer")
                staged.append((Image(id=image_id, manifest=Manifest.from_dict(manifest),
                                     kind="user" if top else "layer", origin="import" if top else None), dest))
            prog.layer_done(layer.size)
            parent = staged[-1][0].id
        return staged

    def _manifest(self, layer: OciLayer, name: str | None, parent: str | None, image: OciImage | None) -> JsonDict:
        # A lower layer's manifest holds nothing but its content's identity (created 0): tar2sqfs
        # is deterministic, so its id is the same wherever and whenever it is imported.
        return {"format_version": FORMAT_VERSION, "name": name or layer_name(layer.diff_id or ""),
                "created": self.p.clock() if name else 0, "parent": parent, "diff_id": layer.diff_id,
                "config": image.config.to_dict() if image is not None and image.config is not None else None}

    def _commit(self, staged: list[tuple[Image, str | None]]) -> Image:
        """Move the converted layers into the store and record them, in one transaction."""
        with self.p.repo.transaction() as state:
            for image, path in staged:
                self._enter(state, image, path)
        return staged[-1][0]

    def _enter(self, state: State, image: Image, path: str | None) -> None:
        if path is None:
            return
        if image.id not in state.images:
            self.p.fs.move(path, self.layout.image_file(image.id, image.kind))
        state.images.setdefault(image.id, image)


def _reusable(images: dict[str, Image], layer: OciLayer, parent: str | None, wanted: Manifest,
              top: bool) -> Image | None:
    """A stored image that is this layer already: a lower layer by diff_id and parent; the top
    one only if its name and config are the same too (an import repeated)."""
    found = find_layer(images, layer.diff_id, parent) if not top else None
    if top and layer.diff_id is not None:
        found = next((i for i in images.values() if i.kind == "user" and i.origin == "import"
                      and i.manifest.diff_id == layer.diff_id and i.parent == parent
                      and i.name == wanted.name and i.manifest.config == wanted.config), None)
    return found

