"""RuntimeBuilder: a stable key; build(dest) makes the whole tree at dest, never over one there."""
from __future__ import annotations

import pytest


class RuntimeBuilderContract:
    """Fixtures: `runtime`, `world` with path(name) (a new path in a directory that exists) and
    exists(path)."""

    def test_key_is_stable_text(self, runtime):
        """key() names what the runtime is made from: the same text on every call."""
        key = runtime.key()
        assert isinstance(key, str) and len(key) >= 8 and runtime.key() == key

    def test_build_makes_the_tree_once(self, runtime, world):
        """build(dest) makes the tree at dest (the interpreter at bin/python); a second build
        onto it fails (OSError) and leaves it."""
        dest = world.path("runtime")
        runtime.build(dest)
        assert world.exists(dest + "/bin/python")
        with pytest.raises(OSError):
            runtime.build(dest)
        assert world.exists(dest + "/bin/python")
