"""Push an image chain to an OCI registry as an artifact, and pull one into the store.

Push: every layer of the chain (base first) as an .aimg blob, each uploaded only if the
registry lacks it, then the manifest (domain/artifact.py). Pull: the manifest (by tag or
digest), the trust policy over its signatures, then each layer not already stored by id,
downloaded to a staging file in the store, its digest and then its .aimg checksum verified
before it enters the store; nothing enters unless every layer passed.
"""
from __future__ import annotations

import os
from typing import Callable

import attrs

from ..domain.artifact import (ACCEPT, EMPTY_CONFIG, OCI_MANIFEST, SIGNATURE_MEDIA_TYPE, Blob, ChainArtifact,
                               Layer, Reference, build_manifest, is_artifact, layer_blob, load_manifest,
                               parse_manifest)
from ..domain.exceptions import ImageCorrupt, InvalidValue, NotAnArtifact
from ..domain.image import Image, Manifest, lineage, validate_image_name
from ..domain.operations import ImportStaging
from ..domain.ports import ByteProgress, RegistryClient
from ..domain.trust import MAX_SIGNATURE_BYTES
from .faults import checkpoint
from .host_errors import host_errors
from .images import ImageService, foreign_binds
from .ports import Ports

# (what: "layer 2/3 4f1c2a..", bytes done, bytes in all)
TransferProgress = Callable[[str, int, int], None]


@attrs.frozen
class PushResult:
    ref: str
    digest: str  # of the manifest: pull REPO@DIGEST gets exactly this
    image: Image
    uploaded: int  # layer blobs sent
    skipped: int  # layer blobs the registry had
    signatures: int


@attrs.frozen
class PullResult:
    ref: str
    digest: str
    image: Image
    downloaded: int  # layers fetched
    present: int  # layers already in the store


class RegistryService:
    def __init__(self, ports: Ports, images: ImageService) -> None:
        self.p, self.images, self.trust = ports, images, images.trust
        self.layout = ports.settings.layout

    def _client(self, ref: Reference, tls_verify: bool) -> RegistryClient:
        if self.p.registries is None:
            raise InvalidValue("no registry client is configured")
        return self.p.registries(ref.host, tls_verify)

    # ---- push -------------------------------------------------------------------------
    @host_errors("push")
    def push(self, image_ref: str, ref_text: str, sign: str | None = None, tls_verify: bool = True,
             progress: TransferProgress | None = None) -> PushResult:
        """Push a stored image (by id, prefix or name) and its parents to HOST/REPO:TAG; sign
        with a private key (path, or a keygen name) adds a signature of its id chain."""
        ref = Reference.parse(ref_text)
        if ref.digest:
            raise InvalidValue(f"push to a tag, not a digest: {ref_text}")
        state = self.p.repo.read()
        image = self.images.resolve(image_ref, state.images)
        chain = lineage(state.images, image.id)  # top first
        files = [self._verified_file(i) for i in chain]
        ids = [i.id for i in chain]
        docs = self.trust.stored(image.id, image.kind)
        if sign is not None:
            signed = self.trust.sign(sign, ids)
            self.trust.keep(image.id, image.kind, [signed])
            docs.append(signed)
        docs = [s.to_bytes() for s in self.trust.claims(ids, docs)]  # those of this very chain
        client = self._client(ref, tls_verify)
        blobs, uploaded = self._push_layers(client, ref, list(zip(reversed(chain), reversed(files))), progress)
        client.push_bytes(ref.repo, EMPTY_CONFIG)
        signatures = [Blob(client.push_bytes(ref.repo, d), len(d), SIGNATURE_MEDIA_TYPE) for d in docs]
        digest = client.put_manifest(ref.repo, ref.reference, build_manifest(blobs, signatures, image.name),
                                     OCI_MANIFEST)
        return PushResult(ref=str(ref), digest=digest, image=image, uploaded=uploaded,
                          skipped=len(blobs) - uploaded, signatures=len(signatures))

    def _verified_file(self, image: Image) -> str:
        path = self.layout.image_file(image.id, image.kind)
        if self.p.codec.verify(path)[0] != image.id:
            raise ImageCorrupt(path, f"the stored file is not image {image.id[:12]}")
        return path

    def _push_layers(self, client: RegistryClient, ref: Reference, layers: list[tuple[Image, str]],
                     progress: TransferProgress | None) -> tuple[list[Blob], int]:
        blobs, uploaded = [], 0
        for n, (image, path) in enumerate(layers, 1):
            label = f"layer {n}/{len(layers)} {image.id[:12]}"
            digest, size, sent = client.push_file(ref.repo, path, _labelled(progress, label))
            blobs.append(layer_blob(digest, size, image.id, image.parent))
            uploaded += sent
        return blobs, uploaded

    # ---- pull -------------------------------------------------------------------------
    @host_errors("pull")
    def pull(self, ref_text: str, name: str | None = None, tls_verify: bool = True,
             progress: TransferProgress | None = None) -> PullResult:
        """Pull HOST/REPO:TAG (or @sha256:DIGEST) into the store; name renames the top image.
        NotAnArtifact if the reference is an ordinary container image (to import instead)."""
        ref = Reference.parse(ref_text)
        if name is not None:
            validate_image_name(name)
        client = self._client(ref, tls_verify)
        data, media, digest = client.get_manifest(ref.repo, ref.reference, ACCEPT)
        manifest = load_manifest(data, str(ref))
        if not is_artifact(manifest):
            raise NotAnArtifact(str(ref), f"it is an ordinary container image ({media or 'no media type'}), "
                                          f"not an appcontainers image: import it")
        artifact = parse_manifest(manifest, str(ref))
        docs = [client.fetch_bytes(ref.repo, b.digest, MAX_SIGNATURE_BYTES) for b in artifact.signatures]
        signatures = self.trust.admit(str(ref), list(artifact.chain), docs)
        staged = self._download(client, ref, artifact, progress)
        checkpoint("pull.staged")  # killed here: gc removes the staging files (named for this process)
        try:
            top = self._commit(artifact, staged, name)
        except BaseException:
            self._unstage(staged)
            raise
        self.trust.keep(top.id, top.kind, signatures)
        return PullResult(ref=str(ref), digest=digest, image=top, downloaded=len(staged),
                          present=len(artifact.layers) - len(staged))

    def _stored(self, image_id: str) -> bool:
        image = self.p.repo.read().images.get(image_id)
        return image is not None and self.p.fs.exists(self.layout.image_file(image.id, image.kind))

    def _download(self, client: RegistryClient, ref: Reference, artifact: ChainArtifact,
                  progress: TransferProgress | None) -> list[tuple[Image, str]]:
        """Each layer not stored yet, in a verified staging file (base first); on any failure
        the files staged so far are removed."""
        staged: list[tuple[Image, str]] = []
        wanted = [layer for layer in artifact.layers if not self._stored(layer.image_id)]
        if wanted:
            self.p.fs.make_dirs(self.layout.user_images)
        try:
            for n, layer in enumerate(wanted, 1):
                tmp = self._staging_file(layer.image_id)
                label = f"layer {n}/{len(wanted)} {layer.image_id[:12]}"
                staged.append((self._fetch(client, ref, layer, tmp, _labelled(progress, label)), tmp))
        except BaseException:
            self._unstage(staged)
            raise
        return staged

    def _staging_file(self, image_id: str) -> str:
        """A staging file in the store named for this process (gc removes it once we are gone)."""
        staging = ImportStaging(image_id=image_id, owner=self.p.procs.token(),
                                rand=f"{self.p.rng.getrandbits(32):08x}")
        return os.path.join(self.layout.user_images, staging.file_name())

    def _fetch(self, client: RegistryClient, ref: Reference, layer: Layer, tmp: str,
               progress: ByteProgress | None) -> Image:
        where = f"{ref} layer {layer.image_id[:12]}"
        client.fetch_file(ref.repo, layer.blob.digest, layer.blob.size, tmp, progress)
        try:
            image_id, manifest = self.p.codec.verify(tmp)
            if image_id != layer.image_id:
                raise ImageCorrupt(where, f"the blob holds image {image_id[:12]}, not the one the manifest names")
            image = Image(id=image_id, manifest=Manifest.from_dict(manifest), kind="user")
            if image.parent != layer.parent:
                raise ImageCorrupt(where, "its parent is not the one the manifest names")
            foreign = foreign_binds(self.p.repo.read().images, image)
            if foreign:  # the default base binds this host's runtime: a chain made on it may need it
                self.images.bases.ensure_default()
                foreign = foreign_binds(self.p.repo.read().images, image)
            if foreign:
                raise ImageCorrupt(where, f"it asks to bind the host paths {', '.join(foreign)} into its "
                                          f"containers, which no base image of this host provides")
        except ImageCorrupt as e:
            self.p.fs.remove_file(tmp)
            raise ImageCorrupt(where, e.reason) from None
        except BaseException:
            self.p.fs.remove_file(tmp)
            raise
        return image

    def _commit(self, artifact: ChainArtifact, staged: list[tuple[Image, str]], name: str | None) -> Image:
        """Files into the store, then their records (the order reconcile expects of a load)."""
        for image, tmp in staged:
            self.p.fs.move(tmp, self.layout.image_file(image.id, "user"))
        with self.p.repo.transaction() as state:
            for image, _ in staged:
                state.images.setdefault(image.id, image)
            top = state.images[artifact.top]
            if name is not None and top.name != name:
                top = attrs.evolve(top, manifest=attrs.evolve(top.manifest, name=name))
                state.images[top.id] = top
        return top

    def _unstage(self, staged: list[tuple[Image, str]]) -> None:
        for _, tmp in staged:
            if self.p.fs.exists(tmp):
                self.p.fs.remove_file(tmp)


def _labelled(progress: TransferProgress | None, label: str) -> ByteProgress | None:
    if progress is None:
        return None
    report = progress
    return lambda done, total: report(label, done, total)
