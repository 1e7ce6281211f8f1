"""Base images: the default busybox base built on first use, Debian bases built on request,
looked up by name; removal refused while something uses them."""
from __future__ import annotations

import builtins
import os
from typing import Callable, Iterable

from ..domain.exceptions import BaseNameTaken, InUse, InvalidValue, UnknownImage
from ..domain.image import Image, Manifest, validate_image_name
from ..domain.ports import JsonDict
from .host_errors import host_errors
from .ports import Ports

BUILDABLE = ("debian",)


class BaseService:
    def __init__(self, ports: Ports):
        self.p = ports
        self.layout = ports.settings.layout

    def find(self, name: str, images: dict[str, Image] | None = None) -> Image | None:
        """The newest base image tagged name."""
        images = self.p.repo.read().images if images is None else images
        found = [i for i in images.values() if i.kind == "base" and i.name == name]
        return max(found, key=lambda i: i.created) if found else None

    def list(self) -> list[Image]:
        return sorted((i for i in self.p.repo.read().images.values() if i.kind == "base"),
                      key=lambda i: (i.name, i.created))

    def ensure_default(self) -> Image:
        """The default base, (re)built when missing or when what it is made from changed."""
        name = self.p.settings.default_base
        key = self.p.base_builder.key()
        if (current := self._current(name, key)):
            return current
        self.p.fs.make_dirs(self.layout.bases)
        with self.p.fs.lock(os.path.join(self.layout.bases, ".build.lock")):
            if (current := self._current(name, key)):  # another process built it meanwhile
                return current
            return self._install(name, lambda tmp: self.p.base_builder.build(tmp, name, self.p.clock()))

    def _install(self, name: str, build: Callable[[str], tuple[str, JsonDict]]) -> Image:
        """build(tmp) -> (id, manifest); the result is moved into the store and registered, and
        older builds of the name go, unless a container or image still uses them."""
        tmp = os.path.join(self.layout.bases, f".{name}.building.aimg")
        try:
            image_id, manifest = build(tmp)
            image = Image(id=image_id, manifest=Manifest.from_dict(manifest), kind="base")
            self.p.fs.move(tmp, self.layout.image_file(image_id, "base"))
        finally:
            self.p.fs.remove_file(tmp)
        with self.p.repo.transaction() as state:
            state.images[image.id] = image
            replaced = [i for i in state.images.values() if i.kind == "base" and i.name == name
                        and i.id != image.id and not state.users_of(i.id)]
            for old in replaced:
                del state.images[old.id]
        for old in replaced:
            self.p.fs.remove_file(self.layout.image_file(old.id, "base"))
        return image

    @host_errors("preparing the base image")
    def resolve(self, name: str | None) -> Image:
        """A base by name (None: the default, built if needed)."""
        if name is None or name == self.p.settings.default_base:
            return self.ensure_default()
        image = self.find(name)
        if image is None:
            raise UnknownImage(f"base {name}")
        return image

    # ---- built on request ---------------------------------------------------------------
    def _current(self, name: str, key: str) -> Image | None:
        """The base name if it was built from key and its file is there."""
        current = self.find(name)
        if current and current.manifest.build_key == key and self.p.fs.exists(
                self.layout.image_file(current.id, "base")):
            return current
        return None

    @host_errors("building the base image")
    def build(self, kind: str = "debian", suite: str = "bookworm", include: Iterable[str] = (),
              name: str | None = None, force: bool = False,
              progress: Callable[[str], None] | None = None) -> Image:
        """A base of kind (debian) for suite with the packages include, named name (default
        debian-SUITE). Built once: the same inputs and name return the stored image, unless force."""
        if kind not in BUILDABLE:
            raise InvalidValue(f"unknown base kind {kind!r}: buildable kinds are {', '.join(BUILDABLE)}")
        builder = self.p.debian_builder
        if builder is None:
            raise InvalidValue("no Debian base builder is configured")
        key = builder.key(suite, include)  # validates suite and package names first
        name = validate_image_name(name or f"{kind}-{suite}")
        if name == self.p.settings.default_base:
            raise InvalidValue(f"{name!r} is the default base's name: pick another")
        if not force and (current := self._current(name, key)):
            return current
        self.p.fs.make_dirs(self.layout.bases)
        with self.p.fs.lock(os.path.join(self.layout.bases, f".build-{name}.lock")):
            current = self.find(name)  # another process may have built it meanwhile
            if current and not force:
                if (same := self._current(name, key)):
                    return same
                if current.manifest.build_key != key:
                    raise BaseNameTaken(name, current.id)
            return self._install(name, lambda tmp: builder.build(
                tmp, name, self.p.clock(), suite=suite, include=include, progress=progress))

    def remove(self, name: str) -> builtins.list[Image]:
        """Remove the base name (every stored build of it, or one given by id); refused (InUse),
        with nothing removed, while a container or image uses any of them."""
        validate_image_name(name)  # it names a lock file too
        self.p.fs.make_dirs(self.layout.bases)
        with self.p.fs.lock(os.path.join(self.layout.bases, f".build-{name}.lock")):
            with self.p.repo.transaction() as state:
                targets = [i for i in state.images.values()
                           if i.kind == "base" and (i.name == name or i.id == name)]
                if not targets:
                    raise UnknownImage(f"base {name}")
                users = [u for t in targets for u in state.users_of(t.id)]
                if users:
                    raise InUse(f"base {name} is used by {', '.join(users)}: remove them first")
                for t in targets:
                    del state.images[t.id]
            for t in targets:
                self.p.fs.remove_file(self.layout.image_file(t.id, "base"))
        return targets
