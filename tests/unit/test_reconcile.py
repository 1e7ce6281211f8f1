"""Reconcile over the fakes: what it repairs, and what it must leave alone."""
from __future__ import annotations

import logging

import attrs

from appcontainers.domain.operations import ImportStaging, LoadMoveOp, SaveOp, operation_from_dict
from tests.fakes import make_service


def _evolve(svc, name, **changes):
    with svc.ports.repo.transaction() as state:
        state.put(attrs.evolve(state.get(name), **changes))


class TestReconcile:
    def test_healthy_state_needs_nothing(self):
        """A provisioned, running container is left alone."""
        svc = make_service()
        c = svc.provision(name="web")
        c.start()
        assert svc.reconcile(dry_run=True) == []
        assert svc.reconcile() == []
        assert svc.get("web").state == "RUNNING"

    def test_provisioning_by_a_live_process_is_left_alone(self):
        """Another process still provisioning (owner alive) is not a leftover."""
        svc = make_service()
        svc.provision(name="busy")
        svc.ports.procs.alive_tokens.add("other")
        _evolve(svc, "busy", status="provisioning", owner="other")
        assert svc.reconcile() == []
        assert [c.name for c in svc.list_containers()] == ["busy"]

    def test_provisioning_by_a_dead_process_is_undone(self):
        """A reservation left 'provisioning' by a dead process is removed with its mounts and IP."""
        svc = make_service()
        c = svc.provision(name="half")
        ip = c.ip
        _evolve(svc, "half", status="provisioning", owner="dead")
        done = svc.reconcile()
        assert any("half" in d for d in done)
        assert svc.list_containers() == []
        assert svc.ports.mounters.kernel.mounts == {}
        assert svc.provision(name="next").ip == ip

    def test_dry_run_changes_nothing(self):
        """--dry-run reports the same repair but leaves the state as it was."""
        svc = make_service()
        svc.provision(name="half")
        _evolve(svc, "half", status="destroying", owner="dead")
        before = svc.ports.repo.read().to_dict()
        assert svc.reconcile(dry_run=True)
        assert svc.ports.repo.read().to_dict() == before

    def test_ephemeral_from_an_earlier_boot_is_removed(self):
        """An ephemeral container reserved in an earlier boot is a leftover of a host crash."""
        svc = make_service()
        svc.provision(name="eph")
        _evolve(svc, "eph", ephemeral=True, boot="boot-0")
        svc.reconcile()
        assert svc.list_containers() == []

    def test_ephemeral_that_stopped_on_its_own_is_removed_but_not_a_fresh_one(self):
        """A started ephemeral container found stopped is removed; a never-started one is kept."""
        svc = make_service()
        svc.provision(name="ran")
        svc.provision(name="fresh")
        _evolve(svc, "ran", ephemeral=True, boot="boot-1", started=True)
        _evolve(svc, "fresh", ephemeral=True, boot="boot-1")
        svc.reconcile()
        assert [c.name for c in svc.list_containers()] == ["fresh"]

    def test_lxc_container_without_reservation_is_removed(self):
        """An LXC container under our lxcpath that no reservation explains is destroyed."""
        svc = make_service()
        svc.ports.driver.containers["stray"] = "RUNNING"
        svc.reconcile()
        assert "stray" not in svc.ports.driver.containers

    def test_dead_save_operation_is_undone(self):
        """A save operation whose process died is dropped and its temp file removed."""
        svc = make_service()
        svc.provision(name="web")
        with svc.ports.repo.transaction() as state:
            state.begin(SaveOp(id="save-1", owner="dead", container="web", frozen=False, dest="/out/web.aimg"))
        svc.ports.fs.files["/out/.web.aimg.abc.tmp"] = b"partial"
        svc.ports.fs.dirs.add("/out")
        svc.reconcile()
        assert svc.ports.repo.read().operations == {}
        assert "/out/.web.aimg.abc.tmp" not in svc.ports.fs.files

    def test_a_dead_save_thaws_a_container_left_freezing_or_frozen(self):
        """A save killed while freezing leaves FREEZING (or FROZEN): reconcile thaws either."""
        for left in ("FREEZING", "FROZEN"):
            svc = make_service()
            svc.provision(name="web").start()
            svc.ports.driver.containers["web"] = left
            with svc.ports.repo.transaction() as state:
                state.begin(SaveOp(id="save-1", owner="dead", container="web", frozen=True, dest="/out/web.aimg"))
            svc.reconcile()
            assert svc.ports.driver.containers["web"] == "RUNNING", left
            assert svc.ports.repo.read().operations == {}

    def test_a_stale_plan_does_not_remove_a_container_made_meanwhile(self):
        """Leftovers seen without a reservation are not removed if a container of that name
        was made between the look and the repair."""
        from appcontainers.services.reconcile import Reconciler
        svc = make_service()
        svc.ports.driver.containers["web"] = "STOPPED"  # a leftover: no reservation
        rec = Reconciler(svc.ports, svc.containers)
        plan = rec.plan()
        assert any("web" in d for d, _, _ in plan)
        del svc.ports.driver.containers["web"]
        svc.provision(name="web")  # another process makes a new 'web'
        rec._apply(plan, dry_run=False)
        assert [c.name for c in svc.list_containers()] == ["web"]
        assert "web" in svc.ports.driver.containers

    def test_destroy_refuses_a_container_another_live_process_is_provisioning(self):
        """destroy() of a container still being provisioned by a live process is refused."""
        from appcontainers.domain.exceptions import ContainerStateError
        import pytest
        svc = make_service()
        svc.provision(name="busy")
        svc.ports.procs.alive_tokens.add("other")
        _evolve(svc, "busy", status="provisioning", owner="other")
        with pytest.raises(ContainerStateError):
            svc.get("busy").destroy()
        assert [c.name for c in svc.list_containers()] == ["busy"]

    def test_restarted_ephemeral_container_is_spared(self):
        """An ephemeral container seen stopped, then started again before the repair, stays."""
        from appcontainers.services.reconcile import Reconciler
        svc = make_service()
        svc.provision(name="eph")
        _evolve(svc, "eph", ephemeral=True, boot="boot-1", started=True)
        rec = Reconciler(svc.ports, svc.containers)
        plan = rec.plan()
        assert plan
        svc.ports.driver.containers["eph"] = "RUNNING"  # started meanwhile
        rec._apply(plan, dry_run=False)
        assert [c.name for c in svc.list_containers()] == ["eph"]

    def test_teardown_leaves_a_reservation_it_did_not_mark(self):
        """A teardown of leftovers never removes a reservation made meanwhile under that name."""
        svc = make_service()
        svc.ports.driver.containers["web"] = "STOPPED"
        svc.provision(name="web")  # made after the leftover was seen
        svc.containers._teardown("web", None)  # the leftover's teardown, which saw no reservation
        assert [c.name for c in svc.list_containers()] == ["web"]

    def test_old_store_file_without_record_is_removed_but_a_fresh_one_kept(self):
        """An .aimg in the store with no record goes once it is old; a just-moved one stays."""
        svc = make_service()
        svc.provision(name="web")  # builds the default base (file and record)
        L = svc.settings.layout
        old, fresh = L.image_file("a" * 64, "user"), L.image_file("b" * 64, "user")
        for path in (old, fresh):
            svc.ports.fs.files[path] = b"x"
        svc.ports.fs.dirs.add(L.user_images)
        svc.ports.fs.files[L.resources] = b"(the state file exists)"
        now = svc.ports.clock.now
        svc.ports.fs.mtimes.update({old: now - 3600, fresh: now})
        svc.reconcile()
        assert old not in svc.ports.fs.files and fresh in svc.ports.fs.files
        assert svc.list_containers()[0].name == "web"

    def test_no_store_file_is_judged_without_a_state_file(self):
        """Without resources.json (lost, or another root) no image file counts as an orphan."""
        svc = make_service()
        L = svc.settings.layout
        path = L.image_file("c" * 64, "user")
        svc.ports.fs.files[path] = b"x"
        svc.ports.fs.dirs.add(L.user_images)
        svc.ports.fs.mtimes[path] = 0.0
        svc.reconcile()
        assert path in svc.ports.fs.files


class TestReconcileOperations:
    def _staged(self, svc, owner):
        L = svc.settings.layout
        svc.ports.fs.dirs.add(L.user_images)
        path = f"{L.user_images}/" + ImportStaging(image_id="d" * 64, owner=owner, rand="0000abcd").file_name()
        svc.ports.fs.files[path] = b"image"
        return path

    def test_dead_load_move_puts_the_callers_file_back(self):
        """A load that moved the caller's file into the store and died: the file goes back."""
        svc = make_service()
        staged = self._staged(svc, "dead")
        with svc.ports.repo.transaction() as state:
            state.begin(LoadMoveOp.for_staging(owner="dead", staged=staged, restore="/home/u/a.aimg", image="d" * 64))
        svc.reconcile()
        assert svc.ports.fs.files.get("/home/u/a.aimg") == b"image" and staged not in svc.ports.fs.files
        assert svc.ports.repo.read().operations == {}

    def test_a_live_load_moves_staged_file_is_kept(self):
        """The caller's file staged by a live load is neither put back nor swept as a temp file."""
        svc = make_service()
        staged = self._staged(svc, "dead")  # even if the name's owner were gone
        with svc.ports.repo.transaction() as state:
            state.begin(LoadMoveOp.for_staging(owner="me", staged=staged, restore="/home/u/a.aimg", image="d" * 64))
        assert svc.reconcile() == []
        assert staged in svc.ports.fs.files

    def test_import_temp_file_of_a_dead_load_goes_a_live_ones_stays(self):
        """An import staging file is removed once the process its name names is gone."""
        svc = make_service()
        dead, live = self._staged(svc, "dead:1:b"), self._staged(svc, "me")
        svc.ports.procs.alive_tokens.add("me")
        svc.reconcile()
        assert dead not in svc.ports.fs.files and live in svc.ports.fs.files

    def test_unknown_operation_of_a_dead_process_is_forgotten(self):
        """A record of a kind this version does not know is only dropped once its owner is gone."""
        svc = make_service()
        with svc.ports.repo.transaction() as state:
            state.begin(operation_from_dict("x-1", {"kind": "newer", "owner": "dead"}))
            state.begin(operation_from_dict("x-2", {"kind": "newer", "owner": "me"}))
        assert svc.reconcile() == ["newer x-1 of a process that is gone: undoing it"]
        assert list(svc.ports.repo.read().operations) == ["x-2"]

    def test_every_action_is_logged_at_info(self, caplog):
        """Each repair is logged at info on the appcontainers.reconcile logger."""
        svc = make_service()
        svc.ports.driver.containers["stray"] = "RUNNING"
        with caplog.at_level(logging.INFO, logger="appcontainers.reconcile"):
            done = svc.reconcile()
        assert done and [r.getMessage() for r in caplog.records if r.name == "appcontainers.reconcile"] == done
