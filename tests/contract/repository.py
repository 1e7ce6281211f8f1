"""ResourceRepository: transactions commit on a clean exit only; reads are snapshots."""
from __future__ import annotations

import pytest

from appcontainers.domain.image import Image, Manifest
from appcontainers.domain.reservation import Reservation

NETWORK = "10.0.50.0/24"
IMAGE = Image(id="a" * 64, manifest=Manifest(name="base", created=1.0), kind="base")


def reserve(state, name: str) -> Reservation:
    r = Reservation(name=name, ip=state.pool.allocate(name), mac=f"02:00:00:00:00:{len(state.reservations) + 1:02x}",
                    image=IMAGE.id)
    state.add(r)
    return r


class ResourceRepositoryContract:
    """Fixture `repo`: a new, empty repository for NETWORK."""

    def test_new_is_empty(self, repo):
        """A new repository reads as the empty state of its network."""
        state = repo.read()
        assert (state.reservations, state.images, state.pool.allocations()) == ({}, {}, {})
        assert state.pool.network == NETWORK

    def test_commit_on_clean_exit(self, repo):
        """What a transaction changed is there for the next read and the next transaction."""
        with repo.transaction() as state:
            state.images[IMAGE.id] = IMAGE
            r = reserve(state, "web")
        assert repo.read().reservations == {"web": r}
        with repo.transaction() as state:
            assert state.images == {IMAGE.id: IMAGE}
            reserve(state, "db")
        assert sorted(repo.read().reservations) == ["db", "web"]
        assert repo.read().pool.allocations() == {"web": "10.0.50.2", "db": "10.0.50.3"}

    def test_dropped_on_error(self, repo):
        """An error inside a transaction leaves the stored state as it was, and goes on up."""
        with repo.transaction() as state:
            state.images[IMAGE.id] = IMAGE
        with pytest.raises(KeyError):
            with repo.transaction() as state:
                reserve(state, "web")
                del state.images[IMAGE.id]
                raise KeyError("boom")
        assert repo.read().reservations == {} and IMAGE.id in repo.read().images
        assert repo.read().pool.allocations() == {}

    def test_read_is_a_snapshot(self, repo):
        """Changing what read() returned changes nothing stored."""
        snapshot = repo.read()
        snapshot.images[IMAGE.id] = IMAGE
        snapshot.pool.allocate("ghost")
        assert repo.read().images == {} and repo.read().pool.allocations() == {}
