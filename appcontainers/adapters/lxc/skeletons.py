"""Tempita skeletons: the LXC config and files bind-mounted into the container.

The package ships defaults; a file of the same relative path under the data
root's skeletons/ overrides one, and extra files there under rootfs/ are added.
Rendered files are bind-mounted, so they never land in an overlay or an image.
"""
from __future__ import annotations

import os

import tempita

from ...domain.exceptions import InvalidValue

SECCOMP = "/usr/share/lxc/config/common.seccomp"
PACKAGED = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "skeletons")


class Skeletons:
    def __init__(self, override_dir: str):
        self.override_dir = override_dir

    def _source(self, rel: str) -> str:
        user = os.path.join(self.override_dir, rel)
        return user if os.path.isfile(user) else os.path.join(PACKAGED, rel)

    def _render(self, rel: str, context: dict) -> str:
        path = self._source(rel)
        with open(path) as f:
            text = f.read()
        try:
            return tempita.Template(text, name=path).substitute(context)
        except Exception as e:  # tempita raises plain NameError/SyntaxError with its position
            raise InvalidValue(f"skeleton {path} failed to render: {e}") from None

    def render_config(self, context: dict) -> str:
        # LXC's default seccomp profile, where this host's LXC ships it.
        context = {"seccomp": SECCOMP if os.path.exists(SECCOMP) else None, **context}
        return self._render("lxc.conf.tmpl", context)

    def rootfs_files(self) -> list[str]:
        """Container paths of every rootfs skeleton (packaged and the user's)."""
        found = set()
        for base in (PACKAGED, self.override_dir):
            top = os.path.join(base, "rootfs")
            for dirpath, _dirs, files in os.walk(top):
                for f in files:
                    if f.endswith(".tmpl"):
                        rel = os.path.relpath(os.path.join(dirpath, f[:-5]), top)
                        found.add("/" + rel)
        return sorted(found)

    def render_files(self, context: dict) -> dict[str, str]:
        """{container path: rendered text}."""
        return {p: self._render("rootfs" + p + ".tmpl", context) for p in self.rootfs_files()}
