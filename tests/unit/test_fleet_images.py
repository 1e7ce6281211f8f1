"""fleet.images.SharedDirectory on a temp directory, over a small codec of JSON files."""
from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest

from appcontainers.domain.exceptions import ImageCorrupt, UnknownImage
from appcontainers.fleet.images import SharedDirectory, from_spec


class JsonCodec:
    """An image is a JSON file {"manifest": ..., "data": ...}; its id the sha256 of its bytes."""

    def verify(self, path):
        with open(path, "rb") as f:
            raw = f.read()
        try:
            return hashlib.sha256(raw).hexdigest(), json.loads(raw)["manifest"]
        except ValueError:
            raise ImageCorrupt(path, "not JSON") from None

    def copy_verified(self, src, dest):
        shutil.copyfile(src, dest)
        return self.verify(dest)


def image(tmp_path, name, parent=None):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"manifest": {"name": name, "parent": parent}, "data": name}))
    return str(path), JsonCodec().verify(str(path))[0]


class TestSharedDirectory:
    def test_publish_then_fetch_by_id(self, tmp_path):
        """A published image is fetched by its id, a verified copy in the host's directory."""
        d = SharedDirectory(str(tmp_path / "shared"), JsonCodec())
        path, image_id = image(tmp_path, "app")
        assert d.publish(path) == image_id and d.has(image_id)
        files = d.fetch(image_id, str(tmp_path / "host"), have=lambda i: False)
        assert files == [str(tmp_path / "host" / f"{image_id}.aimg")]
        assert JsonCodec().verify(files[0])[0] == image_id

    def test_chain(self, tmp_path):
        """The image and its missing parents come, top first; a held parent is not copied."""
        d = SharedDirectory(str(tmp_path / "shared"), JsonCodec())
        p0, base = image(tmp_path, "base")
        p1, mid = image(tmp_path, "mid", parent=base)
        p2, top = image(tmp_path, "top", parent=mid)
        for p in (p0, p1, p2):
            d.publish(p)
        got = d.fetch(top, str(tmp_path / "h1"), have=lambda i: False)
        assert [os.path.basename(f)[:64] for f in got] == [top, mid, base]
        got = d.fetch(top, str(tmp_path / "h2"), have=lambda i: i == mid)
        assert [os.path.basename(f)[:64] for f in got] == [top]

    def test_a_parent_must_be_published_first(self, tmp_path):
        """publish refuses an image whose parent the directory lacks."""
        d = SharedDirectory(str(tmp_path / "shared"), JsonCodec())
        path, _ = image(tmp_path, "top", parent="ab" * 32)
        with pytest.raises(UnknownImage, match="publish the parent"):
            d.publish(path)

    def test_an_unknown_id_is_refused(self, tmp_path):
        """fetch of an id nobody published: UnknownImage naming the directory."""
        d = from_spec({"kind": "shared-dir", "path": str(tmp_path)}, JsonCodec())
        with pytest.raises(UnknownImage, match=str(tmp_path)):
            d.fetch("cd" * 32, str(tmp_path / "h"), have=lambda i: False)

    def test_a_changed_file_is_refused(self, tmp_path):
        """A file in the directory whose content is not its id's is refused, no copy kept."""
        d = SharedDirectory(str(tmp_path / "shared"), JsonCodec())
        path, image_id = image(tmp_path, "app")
        d.publish(path)
        other, _ = image(tmp_path, "evil")
        shutil.copyfile(other, d.file(image_id))
        with pytest.raises(ImageCorrupt):
            d.fetch(image_id, str(tmp_path / "h"), have=lambda i: False)
        assert os.listdir(tmp_path / "h") == []
