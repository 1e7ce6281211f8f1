"""The registry artifact (references, manifest building and parsing) and push/pull over fakes."""
from __future__ import annotations

import json

import attrs
import pytest

from appcontainers.domain import artifact as A
from appcontainers.domain.exceptions import (ImageCorrupt, InvalidValue, NotAnArtifact, RegistryError,
                                             UnknownImage, Untrusted)
from appcontainers.domain.oci import OciImage, OciLayer, RunConfig
from tests.fakes import FakeRegistries, make_service

HOST = "127.0.0.1:5000"
ID1, ID2, ID3 = "1" * 64, "2" * 64, "3" * 64


def blob(image_id, parent):
    return A.layer_blob("sha256:" + image_id, 10, image_id, parent)


class TestReference:
    @pytest.mark.parametrize("text, host, repo, tag, digest", [
        ("127.0.0.1:5000/app:v1", "127.0.0.1:5000", "app", "v1", None),
        ("docker://localhost:5000/team/app", "localhost:5000", "team/app", None, None),
        ("reg.example/a/b@sha256:" + "a" * 64, "reg.example", "a/b", None, "sha256:" + "a" * 64),
        ("[::1]:5000/app:latest", "[::1]:5000", "app", "latest", None),
    ])
    def test_parses(self, text, host, repo, tag, digest):
        """A reference names its host, repository and tag or digest."""
        ref = A.Reference.parse(text)
        assert (ref.host, ref.repo, ref.tag, ref.digest) == (host, repo, tag, digest)

    def test_reference_text(self):
        """A reference prints as HOST/REPO:TAG (latest by default) or HOST/REPO@DIGEST."""
        assert str(A.Reference.parse("h:1/app")) == "h:1/app:latest"
        assert A.Reference.parse("h:1/app").reference == "latest"
        d = "sha256:" + "b" * 64
        assert A.Reference.parse(f"h:1/app@{d}").reference == d

    @pytest.mark.parametrize("text", ["app:v1", "h:1/", "h:1/App", "h:1/app@sha256:12", "h:1/app:bad tag",
                                      "h:1/a//b", "/app", "h:1/app:" + "x" * 200])
    def test_refuses(self, text):
        """No host, upper case, bad digest or tag: refused, never guessed."""
        with pytest.raises(InvalidValue):
            A.Reference.parse(text)


class TestManifest:
    def test_round_trip(self):
        """build_manifest's bytes parse back to the same chain, signatures apart."""
        sig = A.Blob("sha256:" + "f" * 64, 99, A.SIGNATURE_MEDIA_TYPE)
        data = A.build_manifest([blob(ID1, None), blob(ID2, ID1)], [sig], "web")
        parsed = json.loads(data)
        assert parsed["artifactType"] == A.ARTIFACT_TYPE and parsed["mediaType"] == A.OCI_MANIFEST
        assert parsed["config"]["mediaType"] == A.EMPTY_MEDIA_TYPE
        assert parsed["config"]["digest"] == A.digest_of(A.EMPTY_CONFIG)
        assert A.is_artifact(parsed)
        art = A.parse_manifest(A.load_manifest(data, "x"), "x")
        assert art.chain == (ID2, ID1) and art.top == ID2 and art.name == "web"
        assert art.signatures == (sig,)
        assert [layer.parent for layer in art.layers] == [None, ID1]
        assert art.layers[1].blob.annotations[A.ANN_TITLE] == f"{ID2}.aimg"

    def test_an_ordinary_image_is_not_ours(self):
        """An ordinary image manifest (no artifactType, an image config) is not an artifact."""
        assert not A.is_artifact({"config": {"mediaType": "application/vnd.oci.image.config.v1+json"}})

    @pytest.mark.parametrize("layers, match", [
        ([blob(ID1, None), blob(ID2, ID3)], "not the layer below"),
        ([blob(ID1, ID3)], "parent outside"),
        ([], "missing, empty"),
        ([{"mediaType": A.AIMG_MEDIA_TYPE, "digest": "sha256:12", "size": 1}], "not sha256"),
        ([{"mediaType": "text/plain", "digest": "sha256:" + "1" * 64, "size": 1}], "media type"),
        ([A.Blob("sha256:" + "1" * 64, 1, A.AIMG_MEDIA_TYPE)], "annotation"),
    ])
    def test_refuses_a_broken_chain(self, layers, match):
        """A chain whose parents do not line up, or a malformed layer, is refused."""
        raw = [b.to_dict() if isinstance(b, A.Blob) else b for b in layers]
        with pytest.raises(RegistryError, match=match):
            A.parse_manifest({"layers": raw}, "x")

    def test_refuses_oversize_and_non_json(self):
        """A manifest over the size bound or not a JSON object is refused."""
        with pytest.raises(RegistryError, match="larger"):
            A.load_manifest(b" " * (A.MAX_MANIFEST_BYTES + 1), "x")
        with pytest.raises(RegistryError, match="not JSON"):
            A.load_manifest(b"{", "x")
        with pytest.raises(RegistryError, match="not a JSON object"):
            A.load_manifest(b"[]", "x")


def put_plain(svc):
    """An ordinary image manifest (an image config, not our artifact) at HOST/plain:v1."""
    plain = {"schemaVersion": 2, "mediaType": A.OCI_MANIFEST, "layers": [],
             "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": "sha256:" + "0" * 64, "size": 2}}
    svc.ports.registries(HOST).put_manifest("plain", "v1", json.dumps(plain).encode(), A.OCI_MANIFEST)


def stored_image(svc, name="web"):
    """A user image (layered on the default base) in svc's store, as a save and load make it."""
    svc.ports.fs.dirs.add("/out")
    c = svc.provision()
    image = c.save_image("/out/x.aimg", flatten=False, name=name)
    svc.load_image("/out/x.aimg")
    del svc.ports.fs.files["/out/x.aimg"]
    return image


@pytest.fixture
def pair():
    """Two roots (two hosts, as far as their stores go) that reach the same fake registry."""
    a, b = make_service(), make_service()
    b.ports.registries = FakeRegistries(b.ports.fs, hosts=a.ports.registries.hosts)
    return a, b


class TestPushPull:
    def test_push_then_pull_gives_the_same_chain(self, pair):
        """A pushed chain pulled on another root: the same ids, recorded and filed."""
        a, b = pair
        image = stored_image(a)
        pushed = a.push_image(image.id, f"{HOST}/app:v1")
        assert (pushed.uploaded, pushed.skipped, pushed.signatures) == (2, 0, 0)
        pulled = b.pull_image(f"docker://{HOST}/app:v1")
        assert pulled.id == image.id and pulled.name == "web"
        images = b.ports.repo.read().images
        assert image.parent in images
        for i in (image.id, image.parent):
            assert b.ports.fs.exists(b.settings.layout.image_file(i, "user"))

    def test_a_shared_base_is_sent_once_and_fetched_once(self, pair):
        """Second push of a chain on the same base sends its own layer only; the second pull
        downloads only its own layer; a repeated pull downloads nothing."""
        a, b = pair
        one, two = stored_image(a, "one"), stored_image(a, "two")
        assert one.parent == two.parent
        assert a.push_image("one", f"{HOST}/app:one").uploaded == 2
        second = a.push_image("two", f"{HOST}/app:two")
        assert (second.uploaded, second.skipped) == (1, 1)
        first = b.registry.pull(f"{HOST}/app:one")
        again = b.registry.pull(f"{HOST}/app:two")
        assert (first.downloaded, again.downloaded, again.present) == (2, 1, 1)
        assert b.registry.pull(f"{HOST}/app:two").downloaded == 0

    def test_pull_by_digest_and_rename(self, pair):
        """pull REPO@DIGEST gets the pushed manifest; --name names the top image."""
        a, b = pair
        image = stored_image(a)
        pushed = a.push_image(image.id, f"{HOST}/app:v1")
        pulled = b.pull_image(f"{HOST}/app@{pushed.digest}", name="renamed")
        assert pulled.id == image.id and pulled.name == "renamed"

    def test_a_corrupted_blob_leaves_nothing(self, pair):
        """A blob whose bytes changed in the registry: refused, no record, no file, no temp file."""
        a, b = pair
        image = stored_image(a)
        a.push_image(image.id, f"{HOST}/app:v1")
        registry = a.ports.registries.hosts[HOST]
        top = json.loads(registry.manifests[("app", "v1")][0])["layers"][-1]["digest"]
        registry.blobs[top] = registry.blobs[top].replace(b"web", b"wEb")
        before_files, before_images = sorted(b.ports.fs.files), set(b.ports.repo.read().images)
        with pytest.raises(RegistryError, match="does not match"):
            b.pull_image(f"{HOST}/app:v1")
        assert sorted(b.ports.fs.files) == before_files and set(b.ports.repo.read().images) == before_images

    def test_a_blob_holding_another_image_is_refused(self, pair):
        """The manifest names one image id, the blob holds another: refused, nothing stored."""
        a, b = pair
        one, two = stored_image(a, "one"), stored_image(a, "two")
        a.push_image("one", f"{HOST}/app:v1")
        a.push_image("two", f"{HOST}/app:v2")
        registry = a.ports.registries.hosts[HOST]
        m1 = json.loads(registry.manifests[("app", "v1")][0])
        m2 = json.loads(registry.manifests[("app", "v2")][0])
        m1["layers"][-1]["digest"], m1["layers"][-1]["size"] = m2["layers"][-1]["digest"], m2["layers"][-1]["size"]
        registry.manifests[("app", "v1")] = (json.dumps(m1).encode(), A.OCI_MANIFEST)
        before = sorted(b.ports.fs.files)
        with pytest.raises(ImageCorrupt, match="holds image"):
            b.pull_image(f"{HOST}/app:v1")
        assert sorted(b.ports.fs.files) == before and one.id not in b.ports.repo.read().images

    def test_host_binds_no_base_here_provides_are_refused(self, pair):
        """A pulled layer asking for host paths this root's bases do not bind: refused."""
        a, b = pair
        a.ports.base_builder.host_binds = ["/usr/lib/python3"]
        image = stored_image(a)
        a.push_image(image.id, f"{HOST}/app:v1")
        with pytest.raises(ImageCorrupt, match="host paths"):
            b.pull_image(f"{HOST}/app:v1")
        assert image.parent not in b.ports.repo.read().images

    def test_the_default_base_is_built_for_binds_it_provides(self, pair):
        """A pulled chain asking for the host paths this host's default base binds: the base is
        built (if it was not) and the chain accepted."""
        a, b = pair
        a.ports.base_builder.host_binds = b.ports.base_builder.host_binds = ["/usr/lib/python3"]
        image = stored_image(a)
        a.push_image(image.id, f"{HOST}/app:v1")
        assert not [i for i in b.ports.repo.read().images.values() if i.kind == "base"]
        assert b.pull_image(f"{HOST}/app:v1").id == image.id
        assert [i.name for i in b.ports.repo.read().images.values() if i.kind == "base"] == ["default"]

    def test_an_ordinary_image_needs_import(self, pair):
        """A manifest that is an ordinary image: NotAnArtifact from the registry service, and
        pull_image falls back to import_image of docker://REF (the OCI source is asked for it)."""
        a, b = pair
        put_plain(a)
        with pytest.raises(NotAnArtifact):
            b.registry.pull(f"{HOST}/plain:v1")
        b.ports.oci.images[f"docker://{HOST}/plain:v1"] = OciImage(
            layers=(OciLayer(digest="sha256:" + "a" * 64, diff_id="sha256:" + "b" * 64, size=100),),
            config=RunConfig(cmd=("/bin/sh",)), layout="/x")
        pulled = b.pull_image(f"{HOST}/plain:v1", name="plain")
        assert pulled.name == "plain" and pulled.id in b.ports.repo.read().images
        assert len(b.ports.oci.fetched) == 1
        assert b.ports.fs.exists(b.settings.layout.image_file(pulled.id, "user"))

    def test_an_ordinary_image_under_a_key_policy_is_refused_before_fetching(self, pair):
        """Under a trust policy of keys, the import fallback is refused (Untrusted) before the OCI
        source fetches anything, unless allow_unsigned_import; then it is imported."""
        a, b = pair
        put_plain(a)
        b.ports.oci.images[f"docker://{HOST}/plain:v1"] = OciImage(
            layers=(OciLayer(digest="sha256:" + "a" * 64, diff_id="sha256:" + "b" * 64, size=100),),
            config=RunConfig(cmd=("/bin/sh",)), layout="/x")
        b.ports.settings = attrs.evolve(b.ports.settings, trust="/keys/k.pub")
        before = set(b.ports.repo.read().images)
        with pytest.raises(Untrusted, match="import"):
            b.pull_image(f"docker://{HOST}/plain:v1")
        assert b.ports.oci.fetched == [] and set(b.ports.repo.read().images) == before
        assert a.ports.registries.hosts[HOST].fetched == []
        pulled = b.pull_image(f"docker://{HOST}/plain:v1", allow_unsigned_import=True)
        assert len(b.ports.oci.fetched) == 1 and pulled.id in b.ports.repo.read().images

    def test_unknown_image_and_digest_push_refused(self, pair):
        """push of an image not in the store, or to a digest, is refused before any upload."""
        a, _ = pair
        with pytest.raises(UnknownImage):
            a.push_image("nope", f"{HOST}/app:v1")
        image = stored_image(a)
        with pytest.raises(InvalidValue, match="tag, not a digest"):
            a.push_image(image.id, f"{HOST}/app@sha256:" + "a" * 64)
        assert HOST not in a.ports.registries.hosts or a.ports.registries.hosts[HOST].uploads == 0

    def test_progress_names_each_layer(self, pair):
        """progress(what, done, total) is called per layer sent or fetched, with its label."""
        a, b = pair
        image = stored_image(a)
        sent, fetched = [], []
        a.push_image(image.id, f"{HOST}/app:v1", progress=lambda what, done, total: sent.append(what))
        b.pull_image(f"{HOST}/app:v1", progress=lambda what, done, total: fetched.append(what))
        expected = [f"layer 1/2 {image.parent[:12]}", f"layer 2/2 {image.id[:12]}"]
        assert sent == fetched == expected


class TestAuthFiles:
    def test_the_usual_files_in_order(self):
        """$REGISTRY_AUTH_FILE, then $XDG_RUNTIME_DIR/containers/auth.json, then ~/.docker/config.json."""
        from appcontainers.adapters.registry.auth import auth_files

        env = {"REGISTRY_AUTH_FILE": "/a.json", "XDG_RUNTIME_DIR": "/run/user/0", "HOME": "/root"}
        assert auth_files(env) == ["/a.json", "/run/user/0/containers/auth.json", "/root/.docker/config.json"]
        assert auth_files({"HOME": "/h"}) == ["/h/.docker/config.json"]

    def test_credentials_by_host(self):
        """The auths entry of the host (bare or as a URL) gives user and password; others none."""
        import base64

        from appcontainers.adapters.registry.auth import credentials_in

        token = base64.b64encode(b"alice:pa:ss").decode()
        assert credentials_in({"auths": {"h:5000": {"auth": token}}}, "h:5000") == ("alice", "pa:ss")
        assert credentials_in({"auths": {"https://h:5000": {"auth": token}}}, "h:5000") == ("alice", "pa:ss")
        assert credentials_in({"auths": {"other": {"auth": token}}}, "h:5000") is None
        assert credentials_in({"auths": {"h:5000": {"auth": "!!"}}}, "h:5000") is None
        assert credentials_in([], "h:5000") is None

    def test_credentials_read_from_a_file(self, tmp_path):
        """credentials() reads the first file that names the host, skipping unreadable ones."""
        import base64

        from appcontainers.adapters.registry.auth import credentials

        (tmp_path / "bad.json").write_text("{")
        good = tmp_path / "good.json"
        good.write_text(json.dumps({"auths": {"h:1": {"auth": base64.b64encode(b"u:p").decode()}}}))
        assert credentials("h:1", {"REGISTRY_AUTH_FILE": str(tmp_path / "bad.json"), "HOME": str(tmp_path)}) is None
        assert credentials("h:1", {"REGISTRY_AUTH_FILE": str(good), "HOME": str(tmp_path)}) == ("u", "p")

    def test_challenges(self):
        """WWW-Authenticate: the scheme and its parameters, quoted or not."""
        from appcontainers.adapters.registry.auth import parse_challenge

        assert parse_challenge('Bearer realm="https://auth.test/token",service="reg",scope="repository:a:pull"') == (
            "bearer", {"realm": "https://auth.test/token", "service": "reg", "scope": "repository:a:pull"})
        assert parse_challenge('Basic realm=x') == ("basic", {"realm": "x"})
