"""Trust: signing images (push --sign, save --sign) and the policy pull, load and import check.

The policy (settings.trust, domain/trust.TrustPolicy): "any" accepts an image whose checksums
verify; a list of public key files accepts only an image with a signature, by one of those
keys, over exactly the id chain received. An OCI import carries no signature of ours: under a
key policy it is refused unless the caller allows unsigned imports explicitly.
"""
from __future__ import annotations

import os

from ..domain.exceptions import InvalidValue, Untrusted
from ..domain.image import validate_image_name
from ..domain.ports import Signing
from ..domain.trust import Signature, TrustPolicy, payload
from .ports import Ports


class TrustService:
    def __init__(self, ports: Ports) -> None:
        self.p = ports
        self.layout = ports.settings.layout

    @property
    def policy(self) -> TrustPolicy:
        return TrustPolicy.parse(self.p.settings.trust)

    def _signing(self) -> Signing:
        if self.p.signing is None:
            raise InvalidValue("signing needs the cryptography library (pip install appcontainers[oci])")
        return self.p.signing

    # ---- keys and signing -------------------------------------------------------------
    def key_file(self, key: str) -> str:
        """A private key by path, or by the name `trust keygen NAME` gave it."""
        if "/" in key:
            return os.path.abspath(key)
        validate_image_name(key)  # the same charset as an image name: a plain file name
        return os.path.join(self.layout.keys, key + ".key")

    def keygen(self, name: str, directory: str | None = None) -> dict[str, str]:
        """A new ed25519 key pair NAME.key (0600) and NAME.pub, in directory (default: the data
        root's keys/, 0700)."""
        validate_image_name(name)
        if directory is None:
            directory = self.layout.keys
            self.p.fs.make_dirs(directory, mode=0o700)
        elif not self.p.fs.is_dir(directory):
            raise InvalidValue(f"cannot write keys to {directory}: not a directory")
        private, public = (os.path.join(os.path.abspath(directory), name + ext) for ext in (".key", ".pub"))
        key_id = self._signing().generate(private, public)
        return {"private": private, "public": public, "key": key_id}

    def sign(self, key: str, chain: list[str]) -> bytes:
        """A signature document of the chain (top first) with the private key."""
        key_id, signature = self._signing().sign(self.key_file(key), payload(chain))
        return Signature(chain=tuple(chain), key_id=key_id, signature=signature).to_bytes()

    # ---- the policy -------------------------------------------------------------------
    @staticmethod
    def claims(chain: list[str], docs: list[bytes]) -> list[Signature]:
        """The well-formed signatures among docs that claim exactly chain (unverified)."""
        found = []
        for doc in docs:
            try:
                sig = Signature.from_bytes(doc)
            except InvalidValue:
                continue  # malformed: counts as none
            if list(sig.chain) == list(chain) and sig not in found:
                found.append(sig)
        return found

    def admit(self, what: str, chain: list[str], docs: list[bytes]) -> list[bytes]:
        """The signatures of docs claiming exactly chain; under a key policy, raises Untrusted
        unless one of them verifies with a trusted key."""
        claims = self.claims(chain, docs)
        policy = self.policy
        if policy.accepts_any:
            return [s.to_bytes() for s in claims]
        if not claims:
            raise Untrusted(what, "it is not signed" if not docs else "no signature covers its image chain")
        data = payload(chain)
        for sig in claims:
            if any(self._signing().verify(key, data, sig.key_id, sig.signature) for key in policy.keys):
                return [s.to_bytes() for s in claims]
        raise Untrusted(what, f"bad signature: none of its {len(claims)} signature(s) verifies with a "
                              f"trusted key ({', '.join(policy.keys)})")

    def admit_import(self, what: str, allow_unsigned: bool) -> None:
        """An OCI import has no signature of ours: refused under a key policy unless allowed."""
        if not self.policy.accepts_any and not allow_unsigned:
            raise Untrusted(what, "an imported OCI image carries no appcontainers signature; the "
                                  "policy accepts only signed images (allow unsigned imports explicitly)")

    # ---- signatures beside files and stored images -------------------------------------
    def read(self, path: str) -> list[bytes]:
        if self.p.signing is None:
            return []
        try:
            return self.p.signing.read_signatures(path)
        except InvalidValue:
            return []  # an unreadable signature file is no signature

    def write(self, path: str, docs: list[bytes]) -> None:
        self._signing().write_signatures(path, docs)

    def stored(self, image_id: str, kind: str) -> list[bytes]:
        return self.read(self.layout.signature_file(image_id, kind))

    def keep(self, image_id: str, kind: str, docs: list[bytes]) -> None:
        """Add docs to the signatures kept beside the stored image."""
        if not docs or self.p.signing is None:
            return
        path = self.layout.signature_file(image_id, kind)
        kept = self.stored(image_id, kind)
        merged = kept + [d for d in docs if d not in kept]
        if merged != kept:
            self.p.signing.write_signatures(path, merged)
