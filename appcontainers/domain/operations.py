"""Operations in progress: frozen records of the multi-step work a process may die in.

Each record is written to the state before its first step and removed after its last, so
reconcile finds the record of a process that is gone and undoes what it left. A record names
its temp files; how it is undone (it needs the ports) lives in services/undo.py, keyed by type.
Provision and destroy carry their state in the Reservation itself (status and owner).

The stored form is the dict the older versions wrote ({"kind": ..., "owner": ..., ...}),
so a state file stays readable both ways.
"""
from __future__ import annotations

import os
from typing import Any, ClassVar, Union

import attrs

from .exceptions import InvalidValue


def codec_temp_affixes(dest: str) -> tuple[str, str]:
    """(prefix, suffix) of the temp file the image codec writes next to dest before renaming it."""
    return f".{os.path.basename(dest)}.", ".tmp"


def is_codec_temp(dest: str, file_name: str) -> bool:
    """Whether file_name (in dest's directory) is a codec temp file for dest."""
    prefix, suffix = codec_temp_affixes(dest)
    return (file_name.startswith(prefix) and file_name.endswith(suffix)
            and len(file_name) > len(prefix) + len(suffix))


@attrs.frozen
class ImportStaging:
    """The temp file an image is verified in before it enters the store: its name carries
    the owner, so reconcile can tell a dead load's file from a live one's."""

    image_id: str
    owner: str  # the hostproc token of the loading process
    rand: str  # 8 hex digits

    PREFIX: ClassVar[str] = ".import-"
    SUFFIX: ClassVar[str] = ".tmp"

    def file_name(self) -> str:
        owner = self.owner.replace(":", "+")  # ':' is awkward in a file name
        return f"{self.PREFIX}{self.image_id[:16]}@{owner}.{self.rand}{self.SUFFIX}"

    @classmethod
    def parse(cls, file_name: str) -> "ImportStaging | None":
        """The staging a file name stands for, or None if it is not one."""
        if not (file_name.startswith(cls.PREFIX) and file_name.endswith(cls.SUFFIX) and "@" in file_name):
            return None
        image, rest = file_name[len(cls.PREFIX):-len(cls.SUFFIX)].split("@", 1)
        owner, _, rand = rest.partition(".")
        return cls(image_id=image, owner=owner.replace("+", ":"), rand=rand)


@attrs.frozen
class SaveOp:
    """A save: the container may be frozen, a view mounted, codec temp files next to dest."""

    id: str
    owner: str
    container: str
    dest: str
    frozen: bool

    KIND: ClassVar[str] = "save"

    def is_temp_file(self, file_name: str) -> bool:
        """Whether file_name, in dest's directory, is a temp file this save may have left."""
        return is_codec_temp(self.dest, file_name)

    def keeps(self, path: str) -> bool:
        return False

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.KIND, "id": self.id, "owner": self.owner, "container": self.container,
                "dest": self.dest, "frozen": self.frozen}

    @classmethod
    def from_dict(cls, op_id: str, data: dict[str, Any]) -> "SaveOp":
        return cls(id=op_id, owner=str(data.get("owner") or ""), container=str(data.get("container") or ""),
                   dest=str(data.get("dest") or ""), frozen=bool(data.get("frozen")))


@attrs.frozen
class LoadMoveOp:
    """A load that moves the caller's file into the store: staged is where it went (an
    ImportStaging file), restore where it came from, file_owner (uid, gid, mode) what it
    had there. Undone, the file goes back unless a container uses the image already."""

    id: str
    owner: str
    staged: str
    restore: str
    image: str
    file_owner: tuple[int, int, int] | None = None

    KIND: ClassVar[str] = "load-move"

    @classmethod
    def for_staging(cls, owner: str, staged: str, restore: str, image: str) -> "LoadMoveOp":
        """The record of moving restore to staged (an ImportStaging path); its id follows the name."""
        found = ImportStaging.parse(os.path.basename(staged))
        if found is None:
            raise InvalidValue(f"{staged} is not an import staging file")
        return cls(id=f"move-{found.rand}", owner=owner, staged=staged, restore=restore, image=image)

    def keeps(self, path: str) -> bool:
        """The caller's own file, staged: its undo puts it back, no temp-file sweep removes it."""
        return path == self.staged

    def owner_of_file(self) -> tuple[int, int, int]:
        # Unknown (a crash right after the move): root's and private rather than world-readable.
        return self.file_owner or (0, 0, 0o600)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.KIND, "id": self.id, "owner": self.owner, "staged": self.staged,
                                "restore": self.restore, "image": self.image}
        if self.file_owner is not None:
            data["file_owner"] = list(self.file_owner)
        return data

    @classmethod
    def from_dict(cls, op_id: str, data: dict[str, Any]) -> "LoadMoveOp":
        fo = data.get("file_owner")
        file_owner = (int(fo[0]), int(fo[1]), int(fo[2])) if fo else None
        return cls(id=op_id, owner=str(data.get("owner") or ""), staged=str(data.get("staged") or ""),
                   restore=str(data.get("restore") or ""), image=str(data.get("image") or ""),
                   file_owner=file_owner)


@attrs.frozen
class ImportOp:
    """An OCI import (services/oci_import.py): its work directory (under the store's directory,
    hidden) holds a skopeo copy of the source and the layers converted so far. Undone, the
    directory goes; nothing enters the store before the last layer is converted."""

    id: str
    owner: str
    work_dir: str

    KIND: ClassVar[str] = "import"

    def keeps(self, path: str) -> bool:
        return False

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.KIND, "id": self.id, "owner": self.owner, "work_dir": self.work_dir}

    @classmethod
    def from_dict(cls, op_id: str, data: dict[str, Any]) -> "ImportOp":
        return cls(id=op_id, owner=str(data.get("owner") or ""), work_dir=str(data.get("work_dir") or ""))


@attrs.frozen
class UnknownOp:
    """A record of a kind this version does not know (a newer appcontainers wrote it): kept as
    it was; once its owner is gone it is only forgotten."""

    id: str
    owner: str
    raw: dict[str, Any]

    @property
    def KIND(self) -> str:  # noqa: N802 (reads like the class constant of the known kinds)
        return str(self.raw.get("kind"))

    def keeps(self, path: str) -> bool:
        return False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.raw)

    @classmethod
    def from_dict(cls, op_id: str, data: dict[str, Any]) -> "UnknownOp":
        return cls(id=op_id, owner=str(data.get("owner") or ""), raw=dict(data))


Operation = Union[SaveOp, LoadMoveOp, ImportOp, UnknownOp]

_KINDS: dict[str, type[SaveOp] | type[LoadMoveOp] | type[ImportOp]] = {
    SaveOp.KIND: SaveOp, LoadMoveOp.KIND: LoadMoveOp, ImportOp.KIND: ImportOp}


def operation_from_dict(op_id: str, data: dict[str, Any]) -> Operation:
    """The record stored under op_id in the state file."""
    if not isinstance(data, dict):
        raise InvalidValue(f"operation {op_id!r} is not an object")
    kind = _KINDS.get(str(data.get("kind")))
    if kind is None:
        return UnknownOp.from_dict(op_id, data)
    return kind.from_dict(op_id, data)
