"""RegistryClient (one registry's blobs and manifests) and Signing (keys, signatures, the
signature files): the promises push, pull and trust rely on."""
from __future__ import annotations

import hashlib
import json
import re

import pytest

from appcontainers.domain.exceptions import InvalidValue, RegistryError
from appcontainers.domain.trust import Signature

MEDIA = "application/vnd.oci.image.manifest.v1+json"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class RegistryClientContract:
    """Fixtures: `client`, `world` with path(name) (a new file's path), write(path, bytes),
    read(path), exists(path) and tamper(digest) (flip a byte of the stored blob)."""

    def test_a_blob_is_sent_once(self, client, world):
        """push_file: (digest, size, True) the first time, (digest, size, False) once it is there."""
        data = b"layer bytes " * 1000
        path = world.path("layer")
        world.write(path, data)
        assert client.push_file("c/repo", path) == (_digest(data), len(data), True)
        assert client.push_file("c/repo", path) == (_digest(data), len(data), False)

    def test_a_blob_comes_back_the_same(self, client, world):
        """fetch_file writes the very bytes pushed to a new file; progress ends at the size."""
        data = bytes(range(256)) * 300
        path, dest = world.path("up"), world.path("down")
        world.write(path, data)
        digest, size, _ = client.push_file("c/repo", path)
        seen = []
        client.fetch_file("c/repo", digest, size, dest, lambda done, total: seen.append((done, total)))
        assert world.read(dest) == data and seen[-1] == (size, size)

    def test_fetch_never_overwrites(self, client, world):
        """fetch_file to an existing path fails and leaves that file alone."""
        digest = client.push_bytes("c/repo", b"small")
        dest = world.path("there")
        world.write(dest, b"mine")
        with pytest.raises(FileExistsError):
            client.fetch_file("c/repo", digest, 5, dest)
        assert world.read(dest) == b"mine"

    def test_a_tampered_blob_is_refused_and_nothing_written(self, client, world):
        """A stored blob whose bytes changed: RegistryError, and dest does not exist."""
        data = b"x" * 10000
        path, dest = world.path("t-up"), world.path("t-down")
        world.write(path, data)
        digest, size, _ = client.push_file("c/tampered", path)
        world.tamper(digest)
        with pytest.raises(RegistryError, match="does not match"):
            client.fetch_file("c/tampered", digest, size, dest)
        assert not world.exists(dest)

    def test_small_blobs(self, client):
        """push_bytes and fetch_bytes round-trip; above max_bytes it is refused."""
        digest = client.push_bytes("c/repo", b'{"a":1}')
        assert digest == _digest(b'{"a":1}') and client.fetch_bytes("c/repo", digest, 100) == b'{"a":1}'
        with pytest.raises(RegistryError):
            client.fetch_bytes("c/repo", digest, 3)

    def test_manifests_by_tag_and_digest(self, client):
        """put_manifest returns the digest; get_manifest by tag or digest gives the same bytes."""
        config = client.push_bytes("c/m", b"{}")
        manifest = json.dumps({"schemaVersion": 2, "mediaType": MEDIA, "layers": [],
                               "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                                          "digest": config, "size": 2}}).encode()
        digest = client.put_manifest("c/m", "v1", manifest, MEDIA)
        assert digest == _digest(manifest)
        assert client.get_manifest("c/m", "v1", [MEDIA]) == (manifest, MEDIA, digest)
        assert client.get_manifest("c/m", digest, [MEDIA]) == (manifest, MEDIA, digest)

    def test_an_unknown_manifest_is_one_error(self, client):
        """get_manifest of a tag nobody pushed: RegistryError naming it."""
        with pytest.raises(RegistryError, match="unknown manifest"):
            client.get_manifest("c/none", "nope", [MEDIA])


class SigningContract:
    """Fixtures: `signing`, `world` with path(name), mode(path), read(path)."""

    def test_keygen_makes_a_private_key_only_root_reads(self, signing, world):
        """generate: an ed25519 key id, the private file 0600, never overwriting either file."""
        private, public = world.path("k.key"), world.path("k.pub")
        key_id = signing.generate(private, public)
        assert re.fullmatch(r"ed25519:[0-9a-f]{64}", key_id) and world.mode(private) == 0o600
        with pytest.raises(InvalidValue):
            signing.generate(private, world.path("other.pub"))

    def test_a_signature_verifies_with_its_key_over_its_bytes_only(self, signing, world):
        """sign/verify: true for the key and data signed; false for another key, other data or
        another key id."""
        a = signing.generate(world.path("a.key"), world.path("a.pub"))
        signing.generate(world.path("b.key"), world.path("b.pub"))
        key_id, sig = signing.sign(world.path("a.key"), b"chain")
        assert key_id == a and signing.verify(world.path("a.pub"), b"chain", key_id, sig)
        assert not signing.verify(world.path("a.pub"), b"other", key_id, sig)
        assert not signing.verify(world.path("b.pub"), b"chain", key_id, sig)
        assert not signing.verify(world.path("a.pub"), b"chain", "ed25519:" + "0" * 64, sig)

    def test_signature_files_round_trip(self, signing, world):
        """read_signatures: none for a missing file; what write_signatures wrote otherwise."""
        path = world.path("x.sig")
        assert signing.read_signatures(path) == []
        docs = [Signature(chain=(c * 64,), key_id="ed25519:" + "a" * 64, signature="AA==").to_bytes()
                for c in "12"]
        signing.write_signatures(path, docs[:1])
        assert signing.read_signatures(path) == docs[:1]
        signing.write_signatures(path, docs)
        assert signing.read_signatures(path) == docs
