"""ed25519 keys and signatures (the `cryptography` library), and the signature files beside
images: the Signing port.

Key files are PEM: the private key PKCS#8 (0600, never overwritten), the public key
SubjectPublicKeyInfo. A key's id is "ed25519:" + the sha256 of its 32 raw public bytes.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import tempfile

from ...domain.exceptions import InvalidValue

MAX_KEY_FILE = 16 << 10
MAX_SIGNATURE_FILE = 1 << 20


def _read(path: str, limit: int) -> bytes:
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise InvalidValue(f"{path} is too large for a key or signature file")
    return data


def _key_id(public) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()


class Ed25519Signing:
    def generate(self, private_path: str, public_path: str) -> str:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        for p in (private_path, public_path):
            if os.path.lexists(p):
                raise InvalidValue(f"{p} exists: a key is never overwritten")
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private)
        fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(public)
        return _key_id(key.public_key())

    def sign(self, private_path: str, data: bytes) -> tuple[str, str]:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        try:
            key = serialization.load_pem_private_key(_read(private_path, MAX_KEY_FILE), password=None)
        except (ValueError, TypeError) as e:
            raise InvalidValue(f"{private_path} is not an unencrypted PEM private key: {e}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidValue(f"{private_path} is not an ed25519 private key")
        return _key_id(key.public_key()), base64.b64encode(key.sign(data)).decode()

    def key_id(self, public_path: str) -> str:
        return _key_id(self._public(public_path))

    def verify(self, public_path: str, data: bytes, key_id: str, signature: str) -> bool:
        from cryptography.exceptions import InvalidSignature

        public = self._public(public_path)
        if _key_id(public) != key_id:
            return False
        try:
            public.verify(base64.b64decode(signature, validate=True), data)
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True

    @staticmethod
    def _public(public_path: str):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            key = serialization.load_pem_public_key(_read(public_path, MAX_KEY_FILE))
        except (ValueError, TypeError) as e:
            raise InvalidValue(f"trust key {public_path} is not a PEM public key: {e}") from None
        except OSError as e:
            raise InvalidValue(f"trust key {public_path} cannot be read: {e.strerror}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise InvalidValue(f"trust key {public_path} is not an ed25519 public key")
        return key

    def read_signatures(self, path: str) -> list[bytes]:
        try:
            data = json.loads(_read(path, MAX_SIGNATURE_FILE))
        except FileNotFoundError:
            return []
        except ValueError as e:
            raise InvalidValue(f"signature file {path} is not JSON: {e}") from None
        if isinstance(data, dict):  # one signature, as `save --sign` writes it
            data = [data]
        if not isinstance(data, list):
            raise InvalidValue(f"signature file {path} is neither a signature nor a list of them")
        return [json.dumps(d, sort_keys=True, separators=(",", ":")).encode() for d in data]

    def write_signatures(self, path: str, docs: list[bytes]) -> None:
        items = [json.loads(d) for d in docs]
        text = json.dumps(items[0] if len(items) == 1 else items, sort_keys=True, indent=1) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=".sig-", dir=os.path.dirname(path) or ".")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
