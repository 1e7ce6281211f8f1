"""Trust: the policy, signatures as data, TrustService over fakes, the real ed25519 adapter in a
temp dir, and the CLI's push/pull/trust commands over the fake service."""
from __future__ import annotations

import json
import os

import attrs
import pytest
from click.testing import CliRunner

from appcontainers.adapters.registry.signing import Ed25519Signing
from appcontainers.config import Settings
from appcontainers.domain.exceptions import InvalidValue, Untrusted
from appcontainers.domain.trust import Signature, TrustPolicy, payload
from appcontainers.entrypoints.cli import main
from tests.fakes import FakeRegistries, make_service

HOST = "127.0.0.1:5000"
ID1, ID2 = "1" * 64, "2" * 64


def with_policy(svc, trust):
    svc.ports.settings = attrs.evolve(svc.ports.settings, trust=trust)
    return svc


class TestPolicy:
    def test_any_is_the_default(self):
        """The default setting accepts any image whose checksums verify."""
        assert Settings().trust == "any" and TrustPolicy.parse("any").accepts_any

    def test_keys_from_a_list_or_commas(self):
        """Key files as a list or comma-separated text (the env var's form)."""
        assert TrustPolicy.parse("/k/a.pub, /k/b.pub").keys == ("/k/a.pub", "/k/b.pub")
        assert Settings(trust=["/k/a.pub"]).trust == "/k/a.pub"
        assert Settings.from_env({"APPCONTAINERS_TRUST": "/k/a.pub,/k/b.pub"}).trust == "/k/a.pub,/k/b.pub"

    @pytest.mark.parametrize("value", ["relative.pub", "any,/k/a.pub"])
    def test_refuses(self, value):
        """A relative key path, or any mixed with keys, is refused."""
        with pytest.raises(InvalidValue):
            TrustPolicy.parse(value)


class TestSignature:
    def test_round_trip(self):
        """A signature document parses back to the same value."""
        sig = Signature(chain=(ID2, ID1), key_id="ed25519:" + "a" * 64, signature="c2ln")
        assert Signature.from_bytes(sig.to_bytes()) == sig

    def test_payload_is_the_chain(self):
        """The signed bytes name the chain top first and the signature type, nothing else."""
        assert json.loads(payload([ID2, ID1])) == {"chain": [ID2, ID1], "type": "appcontainers-signature/v1"}
        with pytest.raises(InvalidValue):
            payload([])

    @pytest.mark.parametrize("doc", [b"{", b"[]", b'{"type": "other"}',
                                     json.dumps({"type": "appcontainers-signature/v1", "chain": ["x"],
                                                 "key": "ed25519:" + "a" * 64, "signature": "AA=="}).encode()])
    def test_malformed_refused(self, doc):
        """Not JSON, another type, a bad chain: refused."""
        with pytest.raises(InvalidValue):
            Signature.from_bytes(doc)


@pytest.fixture
def svc():
    s = make_service()
    s.ports.fs.dirs.add("/keys")
    return s


class TestTrustService:
    def test_keygen_under_the_data_root(self, svc):
        """keygen NAME writes NAME.key 0600 and NAME.pub under the data root's keys/ (0700)."""
        made = svc.trust_keygen("me")
        keys = svc.settings.layout.keys
        assert made["private"] == f"{keys}/me.key" and made["public"] == f"{keys}/me.pub"
        assert svc.ports.fs.modes[made["private"]] == 0o600 and keys in svc.ports.fs.dirs
        with pytest.raises(InvalidValue):
            svc.trust_keygen("me")

    def test_admit_under_any_and_under_keys(self, svc):
        """any: unsigned passes; keys: the trusted key's signature passes, another key's or none fails."""
        good, bad = svc.trust_keygen("good", "/keys"), svc.trust_keygen("bad", "/keys")
        trust = svc.images.trust
        signed, wrong = trust.sign(good["private"], [ID2, ID1]), trust.sign(bad["private"], [ID2, ID1])
        assert trust.admit("x", [ID2, ID1], []) == []
        with_policy(svc, good["public"])
        assert trust.admit("x", [ID2, ID1], [wrong, signed]) == [wrong, signed]
        with pytest.raises(Untrusted, match="not signed"):
            trust.admit("x", [ID2, ID1], [])
        with pytest.raises(Untrusted, match="bad signature"):
            trust.admit("x", [ID2, ID1], [wrong])
        with pytest.raises(Untrusted, match="no signature covers"):
            trust.admit("x", [ID2], [signed])  # a signature of another chain

    def test_import_refused_under_keys_unless_allowed(self, svc):
        """An OCI import has no signature: under keys, refused unless allowed explicitly."""
        svc.images.trust.admit_import("docker://h/x", allow_unsigned=False)  # any: fine
        with_policy(svc, "/keys/k.pub")
        with pytest.raises(Untrusted, match="import"):
            svc.images.trust.admit_import("docker://h/x", allow_unsigned=False)
        svc.images.trust.admit_import("docker://h/x", allow_unsigned=True)


def stored_image(svc, name="web"):
    svc.ports.fs.dirs.add("/out")
    c = svc.provision()
    image = c.save_image("/out/x.aimg", flatten=False, name=name)
    svc.load_image("/out/x.aimg")
    return image


class TestSignedPushPull:
    def test_signed_push_pulled_under_the_key_policy(self, svc):
        """push --sign, pull under a policy of that key: accepted and the signature kept beside it."""
        other = make_service()
        other.ports.registries = FakeRegistries(other.ports.fs, hosts=svc.ports.registries.hosts)
        key = svc.trust_keygen("k", "/keys")
        other.ports.fs.write_text("/trusted.pub", svc.ports.fs.files[key["public"]])
        image = stored_image(svc)
        assert svc.push_image(image.id, f"{HOST}/app:v1", sign=key["private"]).signatures == 1
        assert svc.ports.fs.exists(svc.settings.layout.signature_file(image.id, "user"))
        svc.push_image(image.id, f"{HOST}/app:unsigned-but-kept")  # the kept signature goes along
        with_policy(other, "/trusted.pub")
        assert other.pull_image(f"{HOST}/app:v1").id == image.id
        assert other.ports.fs.exists(other.settings.layout.signature_file(image.id, "user"))
        assert other.pull_image(f"{HOST}/app:unsigned-but-kept").id == image.id

    def test_unsigned_pull_refused_leaves_nothing(self, svc):
        """An unsigned chain under a key policy: refused before any layer is fetched."""
        other = make_service()
        other.ports.registries = FakeRegistries(other.ports.fs, hosts=svc.ports.registries.hosts)
        image = stored_image(svc)
        svc.push_image(image.id, f"{HOST}/app:v1")
        with_policy(other, "/trusted.pub")
        before = sorted(other.ports.fs.files)
        with pytest.raises(Untrusted):
            other.pull_image(f"{HOST}/app:v1")
        assert sorted(other.ports.fs.files) == before and image.id not in other.ports.repo.read().images
        assert svc.ports.registries.hosts[HOST].fetched == []


class TestSaveLoad:
    def test_save_sign_then_load_under_policy(self, svc):
        """save --sign writes PATH.sig; load under the key policy accepts it, refuses it unsigned."""
        key = svc.trust_keygen("k", "/keys")
        svc.ports.fs.dirs.add("/out")
        c = svc.provision()
        image = c.save_image("/out/s.aimg", sign=key["private"])
        assert svc.ports.fs.exists("/out/s.aimg.sig")
        with_policy(svc, key["public"])
        loaded = svc.load_image("/out/s.aimg")
        assert loaded.image == image.id
        assert svc.ports.fs.exists(svc.settings.layout.signature_file(image.id, "user"))
        del svc.ports.fs.files["/out/s.aimg.sig"]
        with pytest.raises(Untrusted, match="not signed"):
            svc.load_image("/out/s.aimg")

    def test_a_layered_save_signs_its_whole_chain(self, svc):
        """A layered save's signature covers its id and its parents' ids."""
        key = svc.trust_keygen("k", "/keys")
        svc.ports.fs.dirs.add("/out")
        c = svc.provision()
        image = c.save_image("/out/l.aimg", flatten=False, sign="/keys/k.key")
        doc = svc.ports.signing.read_signatures("/out/l.aimg.sig")[0]
        assert Signature.from_bytes(doc).chain == (image.id, image.parent)
        assert key["key"] == Signature.from_bytes(doc).key_id

    def test_save_with_a_missing_key_refused_before_packing(self, svc):
        """save --sign with no such key: refused, nothing packed."""
        svc.ports.fs.dirs.add("/out")
        c = svc.provision()
        with pytest.raises(InvalidValue, match="no private key"):
            c.save_image("/out/s.aimg", sign="nokey")
        assert svc.ports.codec.packed == []

    def test_remove_image_removes_its_signatures(self, svc):
        """rmi of a signed image removes the signature file beside it."""
        key = svc.trust_keygen("k", "/keys")
        image = stored_image(svc)
        svc.push_image(image.id, f"{HOST}/app:v1", sign=key["private"])
        for c in svc.list_containers():
            c.destroy()
        svc.remove_image(image.id)
        assert not svc.ports.fs.exists(svc.settings.layout.signature_file(image.id, "user"))


class TestEd25519:
    def test_sign_and_verify(self, tmp_path):
        """A real key pair: its signature verifies with its public key only, over those bytes only."""
        s = Ed25519Signing()
        a = s.generate(str(tmp_path / "a.key"), str(tmp_path / "a.pub"))
        s.generate(str(tmp_path / "b.key"), str(tmp_path / "b.pub"))
        assert os.stat(tmp_path / "a.key").st_mode & 0o777 == 0o600
        key_id, sig = s.sign(str(tmp_path / "a.key"), b"data")
        assert key_id == a and s.verify(str(tmp_path / "a.pub"), b"data", key_id, sig)
        assert not s.verify(str(tmp_path / "a.pub"), b"other", key_id, sig)
        assert not s.verify(str(tmp_path / "b.pub"), b"data", key_id, sig)
        with pytest.raises(InvalidValue, match="never overwritten"):
            s.generate(str(tmp_path / "a.key"), str(tmp_path / "c.pub"))
        with pytest.raises(InvalidValue, match="not a PEM public key"):
            s.verify(str(tmp_path / "a.key"), b"data", key_id, sig)

    def test_signature_files(self, tmp_path):
        """One signature is written as an object, several as a list; both read back."""
        s = Ed25519Signing()
        path = str(tmp_path / "x.sig")
        assert s.read_signatures(path) == []
        one = Signature(chain=(ID1,), key_id="ed25519:" + "a" * 64, signature="AA==").to_bytes()
        two = Signature(chain=(ID2,), key_id="ed25519:" + "a" * 64, signature="AA==").to_bytes()
        s.write_signatures(path, [one])
        assert isinstance(json.load(open(path)), dict) and s.read_signatures(path) == [one]
        s.write_signatures(path, [one, two])
        assert s.read_signatures(path) == [one, two]


class TestCli:
    def run(self, svc, *args):
        return CliRunner().invoke(main, list(args), obj=lambda reconcile=True: svc)

    def test_keygen_push_pull_json(self, svc):
        """trust keygen, push --sign and pull print JSON; the pushed image comes back."""
        made = json.loads(self.run(svc, "trust", "keygen", "k", "--json").output)
        image = stored_image(svc)
        out = self.run(svc, "push", image.id, f"{HOST}/app:v1", "--sign", "k", "--tls-verify=false", "--json")
        assert out.exit_code == 0, out.output
        pushed = json.loads(out.output)
        assert pushed["id"] == image.id and pushed["signatures"] == 1 and pushed["uploaded"] == 2
        pulled = json.loads(self.run(svc, "pull", f"{HOST}/app:v1", "--json").output)
        assert pulled["id"] == image.id and made["key"].startswith("ed25519:")

    def test_errors_are_one_line(self, svc):
        """An unknown manifest and an untrusted pull: exit 1 and one line on stderr."""
        out = self.run(svc, "pull", f"{HOST}/app:none")
        assert out.exit_code == 1 and out.output.count("\n") == 1 and "unknown manifest" in out.output
        image = stored_image(svc)
        self.run(svc, "push", image.id, f"{HOST}/app:v1")
        with_policy(svc, "/keys/none.pub")
        out = self.run(svc, "pull", f"{HOST}/app:v1")
        assert out.exit_code == 1 and out.output.strip() == (
            f"appcontainers: error: {HOST}/app:v1 refused by the trust policy: it is not signed")

    def test_policy_and_save_sign(self, svc):
        """trust policy prints the setting; save --sign writes PATH.sig through the CLI."""
        assert json.loads(self.run(svc, "trust", "policy", "--json").output) == {"trust": "any"}
        self.run(svc, "trust", "keygen", "k")
        svc.ports.fs.dirs.add("/out")
        c = svc.provision()
        out = self.run(svc, "save", c.name, "/out/c.aimg", "--sign", "k", "--json")
        assert out.exit_code == 0, out.output
        doc = svc.ports.signing.read_signatures("/out/c.aimg.sig")[0]
        assert Signature.from_bytes(doc).chain == (json.loads(out.output)["id"],)
