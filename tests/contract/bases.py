"""BaseBuilder: the default base's build key, and the image it builds."""
from __future__ import annotations

from appcontainers.domain.image import Manifest

CREATED = 1_700_000_000.0


class BaseBuilderContract:
    """Fixtures: `builder`, `codec` (the codec it packs with, to read the image back), `world`
    with path(name) (a fresh path to write to)."""

    def test_key_is_stable(self, builder):
        """key() is a non-empty string, the same at every call (nothing it is made from changed)."""
        key = builder.key()
        assert isinstance(key, str) and key and builder.key() == key

    def test_build_writes_a_base_with_init_and_name(self, builder, codec, world):
        """build() writes a valid image at dest: a base (no parent) with the name, the time,
        an init and the build key; the id and manifest it returns are the file's."""
        dest = world.path("default.aimg")
        image_id, manifest = builder.build(dest, "default", CREATED)
        assert codec.verify(dest) == (image_id, manifest)
        m = Manifest.from_dict(manifest)
        assert (m.name, m.created, m.parent) == ("default", CREATED, None)
        assert m.init and m.init[0].startswith("/") and m.build_key == builder.key()
