"""How each kind of operation in progress is undone once its process is gone, keyed by record type.

An undo is idempotent: it may run again after a crash in the middle of it, since the record
is forgotten only once it is done.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from ..domain.operations import ImportOp, LoadMoveOp, Operation, SaveOp, UnknownOp

if TYPE_CHECKING:
    from .containers import ContainerService
    from .ports import Ports

Op = TypeVar("Op", SaveOp, LoadMoveOp, ImportOp, UnknownOp)
Undo = Callable[[Any, "Ports", "ContainerService"], None]

_UNDO: dict[type, Undo] = {}


def undoes(kind: type[Op]) -> Callable[[Callable[[Op, "Ports", "ContainerService"], None]],
                                       Callable[[Op, "Ports", "ContainerService"], None]]:
    def register(fn: Callable[[Op, Ports, ContainerService], None]) -> Callable[[Op, Ports, ContainerService], None]:
        _UNDO[kind] = fn
        return fn
    return register


def undo(op: Operation, ports: Ports, containers: ContainerService) -> None:
    """Undo what op's dead process left, then forget the record."""
    _UNDO[type(op)](op, ports, containers)
    # Forgotten only once undone, so a crash here leaves it for the next reconcile.
    with ports.repo.transaction() as state:
        state.end(op.id)


@undoes(SaveOp)
def _undo_save(op: SaveOp, p: Ports, containers: ContainerService) -> None:
    """Remove the codec's temp files, thaw the container, unmount the save's view."""
    directory = os.path.dirname(op.dest)
    for f in p.fs.list_dir(directory):
        if op.is_temp_file(f):
            p.fs.remove_file(os.path.join(directory, f))
    with containers.locked(op.container, wait=False):  # not under a live save's feet
        # Killed inside lxc-freeze, a container can stay FREEZING (a task that cannot freeze
        # yet, or cgroup v2's monitor state) as well as FROZEN: either way it is thawed.
        if op.frozen and p.driver.state(op.container) in ("FREEZING", "FROZEN"):
            p.driver.unfreeze(op.container)
        containers.unmount_view(op.container)


@undoes(LoadMoveOp)
def _undo_load_move(op: LoadMoveOp, p: Ports, containers: ContainerService) -> None:
    """The caller's file goes back where it was, unless the load got far enough that a
    container uses it."""
    fs = p.fs
    if op.staged and fs.exists(op.staged):
        if not fs.exists(op.restore):
            fs.put_back(op.staged, op.restore, op.owner_of_file())
        return
    if not op.image:
        return
    with p.repo.transaction() as state:
        unused = not state.users_of(op.image)
        if unused:
            state.images.pop(op.image, None)
    stored = p.settings.layout.image_file(op.image, "user")
    if unused and fs.exists(stored) and not fs.exists(op.restore):
        fs.put_back(stored, op.restore, op.owner_of_file())


@undoes(ImportOp)
def _undo_import(op: ImportOp, p: Ports, containers: ContainerService) -> None:
    """Remove the import's work directory (its source copy and converted layers); only one
    that is where the store keeps such directories, as the record says."""
    store = p.settings.layout.user_images
    if op.work_dir and os.path.dirname(op.work_dir) == store and os.path.basename(op.work_dir).startswith(".oci-import."):
        p.fs.remove_tree(op.work_dir)


@undoes(UnknownOp)
def _undo_unknown(op: UnknownOp, p: Ports, containers: ContainerService) -> None:
    """Nothing this version knows how to undo: the record is only forgotten."""
