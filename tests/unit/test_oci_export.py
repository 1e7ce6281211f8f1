"""export, the service side: the OCI config as data, and the use case over fakes (a fake OCI
writer that records what it was asked to write, checking its destination as the real one does)."""
from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from appcontainers.domain.exceptions import InvalidValue, UnknownImage
from appcontainers.domain.image import Image, Manifest
from appcontainers.entrypoints.cli import main
from appcontainers.services.oci_export import (OciExportService, architecture, check_tag, image_config,
                                               repo_tag, run_config)
from tests.fakes import make_service

ID = {n: f"{n:x}" * 64 for n in range(1, 4)}


def img(n: int, parent: int | None = None, **manifest) -> Image:
    m = {"format_version": 1, "name": f"img{n}", "created": 1_700_000_000.0 + n,
         "parent": ID[parent] if parent else None, **manifest}
    return Image(id=ID[n], manifest=Manifest.from_dict(m))


class FakeOciWriter:
    """Records each export; refuses a destination whose directory the fake fs lacks."""

    def __init__(self, fs):
        self.fs, self.calls = fs, []

    def check(self, dest, fmt):
        if not self.fs.is_dir(os.path.dirname(dest)):
            raise InvalidValue(f"cannot export to {dest}: directory does not exist")
        return dest

    def export(self, layers, config, dest, fmt, tag, repo_tag, level, progress=None):
        assert all(self.fs.is_file(p) for p in layers)  # the files exist while they are written
        self.calls.append({"layers": layers, "config": config, "dest": dest, "fmt": fmt, "tag": tag,
                           "repo_tag": repo_tag, "level": level})
        if progress:
            progress(100)
        return {"format": fmt, "config": "sha256:" + "c" * 64, "layers": [{} for _ in layers]}


class TestImageConfig:
    def test_run_config_of_the_manifest_is_the_oci_config(self):
        """A manifest's run config maps field by field; empty fields are left out."""
        top = img(2, 1, config={"env": {"A": "1"}, "entrypoint": ["/bin/app"], "cmd": ["-v"], "workdir": "/srv",
                                "user": "app", "exposed_ports": ["80/tcp"], "labels": {"k": "v"}})
        cfg = image_config([top, img(1)], "x86_64")
        assert cfg["config"] == {"Env": ["A=1"], "Entrypoint": ["/bin/app"], "Cmd": ["-v"], "WorkingDir": "/srv",
                                 "User": "app", "ExposedPorts": {"80/tcp": {}}, "Labels": {"k": "v"}}
        assert (cfg["architecture"], cfg["os"], "variant" in cfg) == ("amd64", "linux", False)

    def test_an_image_of_our_own_gives_its_environment_and_first_startup_command(self):
        """No run config: Env is the chain's environment (the top wins), Cmd the first startup command under sh -c."""
        chain = [img(2, 1, environment={"A": "top"}, startup_commands=["serve --port 80", "other"]),
                 img(1, environment={"A": "low", "B": "2"})]
        assert image_config(chain, "x86_64")["config"] == {"Env": ["A=top", "B=2"],
                                                          "Cmd": ["/bin/sh", "-c", "serve --port 80"]}
        assert image_config([img(1)], "x86_64")["config"] == {"Env": []}

    def test_the_nearest_run_config_down_the_chain_wins(self):
        """A layer saved over an imported image keeps the image's run config."""
        chain = [img(3, 2, startup_commands=["x"]), img(2, 1, config={"cmd": ["/bin/app"]}), img(1)]
        assert run_config(chain).cmd == ("/bin/app",)

    def test_history_is_one_entry_per_layer_bottom_first(self):
        """history lists the layers bottom first, each naming its .aimg id; created is the top's."""
        cfg = image_config([img(2, 1), img(1)], "aarch64")
        assert [h["comment"] for h in cfg["history"]] == [f"aimg {ID[1]}", f"aimg {ID[2]}"]
        assert cfg["created"] == "2023-11-14T22:13:22.000000Z" and cfg["architecture"] == "arm64"

    def test_architectures_and_tags(self):
        """uname machines map to Go's names; tags and docker repository names are checked."""
        assert architecture("armv7l") == ("arm", "v7") and architecture("mips") == ("mips", "")
        assert check_tag("v1.0_rc-2") == "v1.0_rc-2"
        for bad in ("", ".x", "-x", "a/b", "a:b", "x" * 129):
            with pytest.raises(InvalidValue):
                check_tag(bad)
        assert repo_tag("Web.App", "1") == "web.app:1" and repo_tag("web-", "1") is None


@pytest.fixture
def svc():
    s = make_service()
    s.ports.fs.dirs.add("/out")
    return s


def _service(svc) -> tuple[OciExportService, FakeOciWriter]:
    writer = FakeOciWriter(svc.ports.fs)
    return OciExportService(svc.ports, svc.containers, svc.images, writer, "x86_64"), writer


class TestExportService:
    def test_an_image_is_written_as_its_verified_chain(self, svc):
        """export(IMAGE) hands the writer the chain's files, top first, with its config and the setting's level."""
        c = svc.provision("web", privileged=True)
        exporter, writer = _service(svc)
        out = exporter.export(c.image[:8], "/out/x.tar", "docker-archive", tag="v1")
        (call,) = writer.calls
        image = svc.images.resolve(c.image)
        assert call["layers"] == svc.images.layer_files(image.id)
        assert (call["fmt"], call["tag"], call["repo_tag"], call["level"]) == \
            ("docker-archive", "v1", f"{image.name}:v1", svc.settings.oci_gzip_level)
        assert call["config"]["history"][-1]["comment"] == f"aimg {image.id}"
        assert out["image"] == image.id and out["dest"] == "/out/x.tar"

    def test_a_container_is_saved_layered_then_exported_and_the_temp_removed(self, svc):
        """export(NAME) saves the container's changes over its chain to a temp beside dest, exports
        that chain with the container's startup command, and removes the temp."""
        c = svc.provision("web")
        c.add_startup_command("serve")
        exporter, writer = _service(svc)
        seen = []
        exporter.export("web", "/out/lay", "oci", progress=seen.append)
        (call,) = writer.calls
        temp, *below = call["layers"]
        assert os.path.dirname(temp) == "/out" and temp.endswith(".export-tmp.aimg")
        assert below == svc.images.layer_files(c.image)
        assert call["config"]["config"]["Cmd"] == ["/bin/sh", "-c", "serve"]
        assert svc.ports.codec.packed[-1]["manifest"]["parent"] == c.image
        assert not svc.ports.fs.exists(temp) and seen[-1] == 100

    def test_unknown_image_bad_format_tag_or_destination_write_nothing(self, svc):
        """Each is refused before anything is written."""
        svc.provision("web")
        exporter, writer = _service(svc)
        with pytest.raises(UnknownImage):
            exporter.export("nope", "/out/x.tar", "oci-archive")
        with pytest.raises(InvalidValue, match="unknown export format"):
            exporter.export("web", "/out/x.tar", "tar")
        with pytest.raises(InvalidValue, match="invalid tag"):
            exporter.export("web", "/out/x.tar", "oci", tag="a b")
        with pytest.raises(InvalidValue, match="does not exist"):
            exporter.export("web", "/missing/x.tar", "oci")
        assert writer.calls == [] and svc.ports.codec.packed == []


class TestExportCli:
    def test_unknown_image_is_one_error_line(self, svc, tmp_path):
        """`appcontainers export nope DEST` fails with one line, exit 1, nothing written."""
        r = CliRunner().invoke(main, ["export", "nope", str(tmp_path / "x.tar")], obj=lambda reconcile=True: svc)
        assert (r.exit_code, r.output) == (1, "appcontainers: error: no image 'nope'\n")
        assert os.listdir(tmp_path) == []

    def test_unknown_format_is_a_usage_error(self, svc):
        """--format takes oci, oci-archive or docker-archive only."""
        r = CliRunner().invoke(main, ["export", "x", "/out/x", "--format", "tar"], obj=lambda reconcile=True: svc)
        assert r.exit_code != 0 and "'tar' is not one of 'oci', 'oci-archive', 'docker-archive'" in r.output
