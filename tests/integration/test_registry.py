"""push and pull through a real local registry (Debian's docker-registry on 127.0.0.1), between
two data roots of this host, with the trust policy: the issue's "Registry" and "Trust" checks."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import attrs
import pytest

from tests.conftest import TEST_BRIDGE, TEST_NET, _stop_containers, _umount_under, delete_nft_tables, stop_resolver
from tests.integration.registry_helpers import registry  # noqa: F401  (the fixture)

from appcontainers.domain.exceptions import RegistryError, Untrusted

OTHER_NET = list(TEST_NET.subnets(new_prefix=TEST_NET.prefixlen + 1))[1]  # the second root's addresses


@pytest.fixture(scope="module")
def other(svc):
    """A second data root (another host, as far as the store goes), without a base: the first
    pull builds its default base, whose host binds the pushed chain's base asks for."""
    import appcontainers

    root = tempfile.mkdtemp(prefix="appcontainers-test-reg-", dir="/var/tmp")
    os.chmod(root, 0o711)
    try:
        yield appcontainers.setup_service(root=root, bridge=TEST_BRIDGE, subnet=str(OTHER_NET))
    finally:
        _stop_containers(os.path.join(root, "containers"))
        _umount_under(root)
        delete_nft_tables(root)
        stop_resolver(root)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def keys():
    d = tempfile.mkdtemp(prefix="appcontainers-keys-", dir="/var/tmp")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def policy(service, trust: str):
    """The service's trust setting, for the block only."""
    before = service.ports.settings
    service.ports.settings = attrs.evolve(before, trust=trust)
    try:
        yield
    finally:
        service.ports.settings = before


def fresh_image(svc, marker: str) -> str:
    """A new user image in svc's store, layered on the default base (a file /root/marker
    holding marker); its id."""
    c = svc.provision()
    d = tempfile.mkdtemp(prefix="appcontainers-img-", dir="/var/tmp")
    loaded = None
    try:
        c.create_file("/root/marker", marker)
        img = c.save_image(os.path.join(d, "x.aimg"), flatten=False, name=f"reg-{marker}")
        loaded = svc.load_image(os.path.join(d, "x.aimg"))
        return img.id
    finally:
        c.destroy()
        if loaded is not None:
            loaded.destroy()
        shutil.rmtree(d, ignore_errors=True)


def store_snapshot(service) -> tuple[set[str], list[str]]:
    """(image ids recorded, files in the user store): what a refused pull must leave as it was."""
    layout = service.settings.layout
    files = sorted(os.listdir(layout.user_images)) if os.path.isdir(layout.user_images) else []
    return set(service.ports.repo.read().images), files


class TestPushPull:
    def test_pull_on_a_second_root_gives_the_same_image_and_it_runs(self, svc, other, registry):
        """push then pull on a second data root: the same image id, and a container of it runs."""
        image_id = fresh_image(svc, "first")
        pushed = svc.push_image(image_id, registry.ref("app/first"), tls_verify=False)
        assert pushed.uploaded == 2 and pushed.skipped == 0  # the layer and the default base
        pulled = other.pull_image(registry.ref("app/first"), tls_verify=False)
        assert pulled.id == image_id and pulled.name == "reg-first"
        assert any(i.kind == "base" for i in other.list_images())  # built for the binds the chain asks
        r = other.containers.provision(name=None, image_id=pulled.id)
        c = other.get(r.name)
        try:
            c.start()
            assert c.run(["cat", "/root/marker"]).stdout == "first"
        finally:
            c.destroy()

    def test_pull_by_digest(self, svc, other, registry):
        """pull REPO@sha256:DIGEST gets what the push printed; a layer already stored is not fetched."""
        image_id = fresh_image(svc, "bydigest")
        pushed = svc.push_image(image_id, registry.ref("app/bydigest"), tls_verify=False)
        result = other.registry.pull(f"{registry.host}/app/bydigest@{pushed.digest}", tls_verify=False)
        assert result.image.id == image_id and result.digest == pushed.digest
        again = other.registry.pull(f"docker://{registry.host}/app/bydigest@{pushed.digest}", tls_verify=False)
        assert (again.downloaded, again.present) == (0, 2)

    def test_a_shared_base_is_pushed_once_and_pulled_once(self, svc, other, registry):
        """Two images on one base: the second push sends only its own layer, the second pull
        downloads only its own layer."""
        one, two = fresh_image(svc, "one"), fresh_image(svc, "two")
        before = registry.uploads()
        first = svc.push_image(one, registry.ref("app/shared", "one"), tls_verify=False)
        middle = registry.uploads()
        second = svc.push_image(two, registry.ref("app/shared", "two"), tls_verify=False)
        assert (first.uploaded, second.uploaded, second.skipped) == (2, 1, 1)
        assert registry.uploads() - middle == 1 and middle - before >= 2  # + the empty config once
        base = svc.ports.repo.read().images[one].parent
        pulled_one = other.registry.pull(registry.ref("app/shared", "one"), tls_verify=False)
        pulled_two = other.registry.pull(registry.ref("app/shared", "two"), tls_verify=False)
        assert pulled_two.downloaded == 1 and pulled_two.present == 1
        assert pulled_one.image.parent == pulled_two.image.parent == base

    def test_a_corrupted_blob_is_refused_and_nothing_is_stored(self, svc, other, registry):
        """A byte flipped in the registry's stored blob: the pull fails on its digest, and the
        second root's store is as it was (no record, no file, no temp file)."""
        image_id = fresh_image(svc, "corrupt")
        pushed = svc.push_image(image_id, registry.ref("app/corrupt"), tls_verify=False)
        manifest = json.loads(open(registry.blobs()[pushed.digest], "rb").read())
        top = manifest["layers"][-1]["digest"]
        with open(registry.blobs()[top], "r+b") as f:
            f.seek(4096)
            byte = f.read(1)
            f.seek(4096)
            f.write(bytes([byte[0] ^ 0xFF]))
        other.bases.ensure_default()  # (a pull builds it if needed: not part of what is compared)
        before = store_snapshot(other)
        with pytest.raises(RegistryError, match="does not match its digest"):
            other.pull_image(registry.ref("app/corrupt"), tls_verify=False)
        assert store_snapshot(other) == before and image_id not in before[0]

    def test_failures_are_one_clear_line(self, other, registry):
        """Unreachable, plain HTTP without --tls-verify=false, unknown manifest: one line each."""
        with pytest.raises(RegistryError, match="cannot reach it"):
            other.pull_image("127.0.0.1:1/app/x:y", tls_verify=False)
        with pytest.raises(RegistryError, match="--tls-verify=false"):
            other.pull_image(registry.ref("app/first"))
        with pytest.raises(RegistryError, match="unknown manifest"):
            other.pull_image(registry.ref("app/none", "nope"), tls_verify=False)

    def test_the_cli_pushes_and_pulls(self, svc, other, registry, settings):
        """appcontainers push / pull --tls-verify=false, as a subprocess; an error is one line."""
        image_id = fresh_image(svc, "cli")
        env = {**os.environ, "APPCONTAINERS_ROOT": settings["root"], "APPCONTAINERS_BRIDGE": settings["bridge"],
               "APPCONTAINERS_SUBNET": settings["subnet"]}
        cli = [sys.executable, "-m", "appcontainers.entrypoints.cli"]
        ref = registry.ref("app/cli")
        out = subprocess.run([*cli, "push", image_id, ref, "--tls-verify=false", "--json"], env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["id"] == image_id
        other_env = {**env, "APPCONTAINERS_ROOT": other.settings.root, "APPCONTAINERS_SUBNET": str(OTHER_NET)}
        out = subprocess.run([*cli, "pull", ref, "--tls-verify=false", "--name", "cli-pulled", "--json"],
                             env=other_env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == {**json.loads(out.stdout), "id": image_id, "name": "cli-pulled"}
        bad = subprocess.run([*cli, "pull", registry.ref("app/none", "nope"), "--tls-verify=false"],
                             env=other_env, capture_output=True, text=True, timeout=120)
        assert bad.returncode == 1
        assert bad.stderr.strip().count("\n") == 0 and "unknown manifest" in bad.stderr


class TestTrust:
    def test_signed_push_is_accepted_under_a_key_policy(self, svc, other, registry, keys):
        """push --sign, then pull under a policy listing that key: accepted, signature kept."""
        made = svc.trust_keygen("good", keys)
        assert oct(os.stat(made["private"]).st_mode & 0o777) == "0o600"
        image_id = fresh_image(svc, "signed")
        pushed = svc.push_image(image_id, registry.ref("trust/signed"), sign=made["private"], tls_verify=False)
        assert pushed.signatures == 1
        with policy(other, made["public"]):
            assert other.pull_image(registry.ref("trust/signed"), tls_verify=False).id == image_id
        assert os.path.exists(other.settings.layout.signature_file(image_id, "user"))

    def test_unsigned_or_wrongly_signed_is_refused_and_leaves_nothing(self, svc, other, registry, keys):
        """Under a key policy: an unsigned image and one signed by another key are refused, the
        store untouched; under `any` the unsigned one is accepted."""
        trusted = svc.trust_keygen("trusted", keys)
        stranger = svc.trust_keygen("stranger", keys)
        unsigned, wrong = fresh_image(svc, "unsigned"), fresh_image(svc, "wrong")
        svc.push_image(unsigned, registry.ref("trust/unsigned"), tls_verify=False)
        svc.push_image(wrong, registry.ref("trust/wrong"), sign=stranger["private"], tls_verify=False)
        other.bases.ensure_default()  # (a pull builds it if needed: not part of what is compared)
        before = store_snapshot(other)
        with policy(other, trusted["public"]):
            with pytest.raises(Untrusted, match="not signed"):
                other.pull_image(registry.ref("trust/unsigned"), tls_verify=False)
            with pytest.raises(Untrusted, match="bad signature"):
                other.pull_image(registry.ref("trust/wrong"), tls_verify=False)
        assert store_snapshot(other) == before
        with policy(other, "any"):
            assert other.pull_image(registry.ref("trust/unsigned"), tls_verify=False).id == unsigned

    def test_save_sign_and_load_under_a_key_policy(self, svc, keys, tmp_path):
        """save --sign writes PATH.sig; load under the key policy accepts that file and refuses
        the same file without its signature."""
        made = svc.trust_keygen("saver", keys)
        c = svc.provision()
        loaded = []
        try:
            c.create_file("/root/marker", "saved")
            path = str(tmp_path / "s.aimg")
            img = c.save_image(path, sign=made["private"])
            assert os.path.exists(path + ".sig")
            with policy(svc, made["public"]):
                loaded.append(svc.load_image(path))
                assert loaded[0].image == img.id
                os.rename(path + ".sig", path + ".away")
                with pytest.raises(Untrusted, match="not signed"):
                    svc.load_image(path)
        finally:
            for x in [c, *loaded]:
                x.destroy()

    def test_an_ordinary_image_under_a_key_policy_is_refused(self, other, registry, keys, tmp_path):
        """A pull of an ordinary OCI image would be an import: refused under a key policy."""
        ref = push_ordinary_image(registry, tmp_path)
        made = other.trust_keygen("policy", keys)
        with policy(other, made["public"]):
            with pytest.raises(Untrusted, match="import"):
                other.pull_image(ref, tls_verify=False)


def _run(*argv):
    return subprocess.run(argv, check=True, capture_output=True, timeout=120)


def make_ordinary_layout(tmp_path) -> str:
    """An ordinary one-layer OCI image layout (umoci), tagged t: a file /hello."""
    for tool in ("umoci", "skopeo"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    layout, bundle = str(tmp_path / "layout"), str(tmp_path / "bundle")
    _run("umoci", "init", "--layout", layout)
    _run("umoci", "new", "--image", f"{layout}:t")
    _run("umoci", "unpack", "--image", f"{layout}:t", bundle)
    with open(os.path.join(bundle, "rootfs", "hello"), "w") as f:
        f.write("hello\n")
    _run("umoci", "repack", "--image", f"{layout}:t", bundle)
    return layout


def push_ordinary_image(registry, tmp_path) -> str:
    """That image, copied into the registry by skopeo."""
    layout = make_ordinary_layout(tmp_path)
    ref = registry.ref("plain/hello")
    _run("skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:t", f"docker://{ref}")
    return ref


class TestImportFallback:
    def test_an_ordinary_image_is_imported(self, other, registry, tmp_path):
        """pull of an ordinary container image falls back to import."""
        ref = push_ordinary_image(registry, tmp_path)
        image = other.pull_image(ref, name="plain-hello", tls_verify=False)
        assert image.name == "plain-hello" and image.id in other.ports.repo.read().images

    def test_a_direct_import_is_refused_under_a_key_policy(self, other, keys, tmp_path):
        """svc.import_image of an OCI layout under a key policy: refused (it carries no signature
        of ours), nothing stored; import must call images.trust.admit_import (docs/registry.md)."""
        layout = make_ordinary_layout(tmp_path)
        made = other.trust_keygen("import-policy", keys)
        other.bases.ensure_default()
        before = store_snapshot(other)
        with policy(other, made["public"]):
            with pytest.raises(Untrusted, match="import"):
                other.import_image(f"oci:{layout}:t")
            assert store_snapshot(other) == before
            image = other.import_image(f"oci:{layout}:t", name="allowed", allow_unsigned=True)
        assert image.name == "allowed" and image.id in other.ports.repo.read().images


@pytest.fixture(scope="module")
def private_registry():
    """A docker-registry asking for basic auth (user alice)."""
    from tests.integration.registry_helpers import start_registry, stop_registry

    r = start_registry(user=("alice", "s3cret"))
    try:
        yield r
    finally:
        stop_registry(r)


class TestAuth:
    def test_credentials_from_the_auth_file(self, svc, other, private_registry, tmp_path, monkeypatch):
        """Without credentials: one line saying 401; with them in $REGISTRY_AUTH_FILE: push and
        pull work; wrong ones: refused."""
        import base64

        image_id = fresh_image(svc, "private")
        ref = private_registry.ref("private/app")
        monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "none.json"))
        monkeypatch.setenv("HOME", str(tmp_path))
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
        with pytest.raises(RegistryError, match="401 unauthorized, authentication required"):
            svc.push_image(image_id, ref, tls_verify=False)
        auth = tmp_path / "auth.json"
        for password, works in (("wrong", False), ("s3cret", True)):
            token = base64.b64encode(f"alice:{password}".encode()).decode()
            auth.write_text(json.dumps({"auths": {private_registry.host: {"auth": token}}}))
            monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))
            if not works:
                with pytest.raises(RegistryError, match="credentials refused"):
                    svc.push_image(image_id, ref, tls_verify=False)
                continue
            svc.push_image(image_id, ref, tls_verify=False)
            assert other.pull_image(ref, tls_verify=False).id == image_id

    def test_bearer_token_auth(self, svc, other, registry, tmp_path, monkeypatch):
        """A registry behind token auth: the client follows the Bearer challenge to the token
        realm with the stored credentials, then pushes and pulls with the token."""
        import base64

        from tests.integration.registry_helpers import BearerFront

        front = BearerFront(registry)
        try:
            image_id = fresh_image(svc, "bearer")
            auth = tmp_path / "auth.json"
            token = base64.b64encode(b"alice:s3cret").decode()
            auth.write_text(json.dumps({"auths": {front.host: {"auth": token}}}))
            monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))
            svc.push_image(image_id, front.ref("bearer/app"), tls_verify=False)
            assert other.pull_image(front.ref("bearer/app"), tls_verify=False).id == image_id
            assert front.tokens_given == 3  # push: pull scope (HEAD), then push scope (upload); pull: one
            auth.write_text(json.dumps({"auths": {}}))
            with pytest.raises(RegistryError, match="token service refused.*log in"):
                other.pull_image(front.ref("bearer/app"), tls_verify=False)
        finally:
            front.stop()


PULL = """
import json, sys, appcontainers
svc = appcontainers.setup_service(**json.loads(sys.argv[1]))
svc.pull_image(sys.argv[2], tls_verify=False)
"""


class TestKilledPull:
    def test_a_pull_killed_after_staging_is_repaired_by_gc(self, svc, other, registry):
        """kill -9 of a pull with its layers staged: the store holds only staging files of a
        dead process, and gc removes them; the image is not recorded."""
        image_id = fresh_image(svc, "killed")
        svc.push_image(image_id, registry.ref("app/killed"), tls_verify=False)
        settings = {"root": other.settings.root, "bridge": TEST_BRIDGE, "subnet": str(OTHER_NET)}
        other.bases.ensure_default()  # (a pull builds it if needed: not part of what is compared)
        before = store_snapshot(other)
        proc = subprocess.run([sys.executable, "-c", PULL, json.dumps(settings), registry.ref("app/killed")],
                              env={**os.environ, "APPCONTAINERS_FAULT": "pull.staged"}, capture_output=True,
                              timeout=120)
        assert proc.returncode == -9, proc.stderr[-2000:]
        staged = [f for f in store_snapshot(other)[1] if f.startswith(".import-")]
        assert staged  # the precondition: the kill left staging files
        done = other.reconcile()
        assert any("temp file" in line for line in done)
        assert store_snapshot(other) == before and image_id not in other.ports.repo.read().images
