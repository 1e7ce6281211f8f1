"""Trust: which images a host accepts (the policy) and what a signature says (pure values).

An .aimg trailer is a checksum: it tells a damaged file, not who made it. A signature is an
ed25519 signature over the image's id chain (top first). Each id is the sha256 of that layer's
squashfs, manifest.json included, and each manifest names its parent's id, so the chain of ids
covers every byte and manifest of the image.
"""
from __future__ import annotations

import json
import re
from typing import Any, Iterable

import attrs

from .exceptions import InvalidValue

SIGNATURE_TYPE = "appcontainers-signature/v1"
ANY = "any"
MAX_SIGNATURE_BYTES = 64 << 10
_ID_RE = re.compile(r"^[0-9a-f]{64}$")
_KEY_ID_RE = re.compile(r"^ed25519:[0-9a-f]{64}$")


def payload(chain: Iterable[str]) -> bytes:
    """The bytes a signature signs: the id chain, top first, as canonical JSON."""
    ids = list(chain)
    if not ids or not all(isinstance(i, str) and _ID_RE.fullmatch(i) for i in ids):
        raise InvalidValue("a signed chain is a non-empty list of image ids")
    return json.dumps({"chain": ids, "type": SIGNATURE_TYPE}, sort_keys=True, separators=(",", ":")).encode()


def _chain(value: Any) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen
class Signature:
    """One signature: the chain it claims, the key (id = "ed25519:" + sha256 of the raw public
    key) and the signature bytes (base64). Only verification against a trusted key file and the
    chain actually received makes it mean anything."""

    chain: tuple[str, ...] = attrs.field(converter=_chain)
    key_id: str = attrs.field()
    signature: str = attrs.field()

    @key_id.validator
    def _check_key(self, _attr: object, value: Any) -> None:
        if not isinstance(value, str) or not _KEY_ID_RE.fullmatch(value):
            raise InvalidValue(f"invalid key id {value!r}: ed25519: and 64 hex digits")

    @chain.validator
    def _check_chain(self, _attr: object, value: tuple[Any, ...]) -> None:
        payload(value)  # raises on a malformed chain

    @signature.validator
    def _check_signature(self, _attr: object, value: Any) -> None:
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9+/=]{1,200}", value):
            raise InvalidValue("invalid signature: base64 text")

    def to_dict(self) -> dict[str, Any]:
        return {"type": SIGNATURE_TYPE, "chain": list(self.chain), "key": self.key_id, "signature": self.signature}

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, data: Any) -> "Signature":
        if not isinstance(data, dict) or data.get("type") != SIGNATURE_TYPE:
            raise InvalidValue(f"not an appcontainers signature (type {SIGNATURE_TYPE})")
        chain = data.get("chain")
        if not isinstance(chain, list):
            raise InvalidValue("a signature's chain is a list of image ids")
        key: Any = data.get("key")
        signature: Any = data.get("signature")
        return cls(chain=tuple(chain), key_id=key, signature=signature)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Signature":
        if len(data) > MAX_SIGNATURE_BYTES:
            raise InvalidValue("a signature of more than 64 KiB")
        try:
            return cls.from_dict(json.loads(data))
        except ValueError as e:
            raise InvalidValue(f"a signature that is not JSON: {e}") from None


def _keys(value: Any) -> tuple[str, ...]:
    if value is None or value == ANY or value == (ANY,):
        return ()
    if isinstance(value, str):
        value = [p for p in re.split(r"[,\n]", value)]
    keys = tuple(str(p).strip() for p in value if str(p).strip())
    if ANY in keys:
        raise InvalidValue("trust: 'any' cannot be combined with key files")
    return keys


@attrs.frozen
class TrustPolicy:
    """`any` (no keys): accept an image whose checksums verify. Keys (public key files): only an
    image signed by one of them; an OCI import (which carries no signature of ours) only when
    the caller allows it explicitly."""

    keys: tuple[str, ...] = attrs.field(default=(), converter=_keys)

    @keys.validator
    def _check_paths(self, _attr: object, value: tuple[str, ...]) -> None:
        for p in value:
            if not p.startswith("/"):
                raise InvalidValue(f"trust key file {p!r} must be an absolute path")

    @property
    def accepts_any(self) -> bool:
        return not self.keys

    def __str__(self) -> str:
        return ANY if self.accepts_any else ",".join(self.keys)

    @classmethod
    def parse(cls, value: Any) -> "TrustPolicy":
        """From the setting: "any", or key files separated by commas (or a list of them)."""
        return value if isinstance(value, TrustPolicy) else cls(keys=value)
