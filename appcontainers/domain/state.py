"""The whole persisted state: reservations, the address pool and the images."""
from __future__ import annotations

from typing import Any

import attrs

from .exceptions import AppContainersError, InvalidValue, NameTaken, UnknownContainer
from .image import Image
from .network import AddressPool
from .reservation import Reservation

SCHEMA_VERSION = 1


@attrs.define
class State:
    pool: AddressPool
    reservations: dict[str, Reservation] = attrs.Factory(dict)
    images: dict[str, Image] = attrs.Factory(dict)
    # Unfinished multi-step operations other than provision/destroy (e.g. a save), by id:
    # {"kind": ..., "owner": hostproc token, ...details}; reconcile finishes or undoes them.
    operations: dict[str, dict[str, Any]] = attrs.Factory(dict)

    @classmethod
    def empty(cls, network: str) -> "State":
        return cls(pool=AddressPool(network))

    def copy(self) -> "State":
        """An independent copy (the records are immutable; the containers are not)."""
        return State(pool=self.pool.copy(), reservations=dict(self.reservations), images=dict(self.images),
                     operations={k: dict(v) for k, v in self.operations.items()})

    def macs(self) -> set[str]:
        return {r.mac for r in self.reservations.values()}

    def get(self, name: str) -> Reservation:
        try:
            return self.reservations[name]
        except KeyError:
            raise UnknownContainer(name) from None

    def add(self, reservation: Reservation) -> None:
        if reservation.name in self.reservations:
            raise NameTaken(reservation.name)
        holder = self.pool.holder_of(reservation.ip)
        if holder != reservation.name:
            raise InvalidValue(f"address {reservation.ip} is not allocated to {reservation.name!r}")
        if reservation.mac in self.macs():
            raise InvalidValue(f"MAC {reservation.mac} is already held")
        self.reservations[reservation.name] = reservation

    def put(self, reservation: Reservation) -> None:
        """Replace an existing reservation (an evolved copy of it)."""
        self.get(reservation.name)
        self.reservations[reservation.name] = reservation

    def remove(self, name: str) -> Reservation | None:
        r = self.reservations.pop(name, None)
        self.pool.release(name)
        return r

    def users_of(self, image_id: str) -> list[str]:
        """Containers whose layers include the image, and images whose parent it is."""
        from .image import lineage

        users = []
        for r in self.reservations.values():
            try:
                chain = {i.id for i in lineage(self.images, r.image)}
            except AppContainersError:
                chain = set()
            if r.image == image_id or image_id in chain:
                users.append(f"container {r.name}")
        users += [f"image {i.id[:12]} ({i.name})" for i in self.images.values() if i.parent == image_id]
        return users

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "pool": self.pool.to_dict(),
            "reservations": {n: r.to_dict() for n, r in sorted(self.reservations.items())},
            "images": {i: img.to_dict() for i, img in sorted(self.images.items())},
            "operations": {k: dict(v) for k, v in sorted(self.operations.items())},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "State":
        if not isinstance(data, dict):
            raise InvalidValue("state is not a JSON object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise InvalidValue(f"state schema version {version!r} is not {SCHEMA_VERSION}")
        try:
            pool = AddressPool.from_dict(data["pool"])
            res = {n: Reservation.from_dict(r) for n, r in data.get("reservations", {}).items()}
            imgs = {i: Image.from_dict(d) for i, d in data.get("images", {}).items()}
        except (KeyError, AttributeError, TypeError, ValueError) as e:
            raise InvalidValue(f"malformed state: {e!r}") from None
        macs = set()
        for n, r in res.items():
            if r.name != n or pool.address_of(n) != r.ip:
                raise InvalidValue(f"reservation {n!r} disagrees with the address pool")
            if r.mac in macs:
                raise InvalidValue(f"MAC {r.mac} is held by two reservations")
            macs.add(r.mac)
        ops = data.get("operations", {})
        if not isinstance(ops, dict) or not all(isinstance(v, dict) for v in ops.values()):
            raise InvalidValue("malformed operations record")
        return cls(pool=pool, reservations=res, images=imgs, operations={str(k): dict(v) for k, v in ops.items()})
