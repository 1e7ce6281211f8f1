"""Concurrency, crash safety and reconcile on real LXC."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from appcontainers.adapters.mounts.mountinfo import mounted_under

WORKER = textwrap.dedent("""
    import json, sys, appcontainers
    settings = json.loads(sys.argv[1]); action = sys.argv[2]; names = sys.argv[3:]
    svc = appcontainers.setup_service(**settings)
    if action == "provision":
        out = []
        for _ in range(int(names[0])):
            c = svc.provision()
            out.append([c.name, c.ip, c.mac])
        print(json.dumps(out))
    elif action == "destroy":
        for n in names:
            svc.get(n).destroy()
    elif action == "op":
        import appcontainers.services.faults  # the fault env var is read at each checkpoint
        op = names[0]
        if op == "provision":
            svc.provision(name=names[1])
        elif op == "load":
            svc.load_image(names[2], name=names[1], ephemeral=names[3] == "1")
        elif op == "load-move":
            svc.load_image(names[2], name=names[1], move=True)
        elif op == "save":
            svc.get(names[1]).save_image(names[2])
        elif op == "destroy":
            svc.get(names[1]).destroy()
""")


def _worker(settings, *args, env=None):
    return subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(settings), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def _assert_clean(svc, data_root):
    """State matches reality: nothing of ours exists without a reservation, and vice versa."""
    names = {c.name for c in svc.list_containers()}
    state = svc.ports.repo.read()
    assert all(r.status == "ready" for r in state.reservations.values())
    mounts = {os.path.relpath(p, os.path.join(data_root, "mnt")).split("/")[0]
              for p in mounted_under(os.path.join(data_root, "mnt"))}
    # The host path re-binds serve every unprivileged container: mounted only while one exists.
    shared = {".binds"} if any(r.idmap for r in state.reservations.values()) else set()
    assert mounts <= names | shared, mounts - names - shared
    for sub in ("mnt", "run", "overlays/image", "overlays/tmp", "containers"):
        d = os.path.join(data_root, sub)
        present = {n for n in os.listdir(d) if not n.startswith(".")} if os.path.isdir(d) else set()
        assert present <= names, (sub, present - names)
    tmp = [f for d in ("images/user", "images/bases") for f in os.listdir(os.path.join(data_root, d))
           if f.endswith(".tmp")] if os.path.isdir(os.path.join(data_root, "images/user")) else []
    assert tmp == []
    from appcontainers.services.plans import veth_name
    bridge = svc.settings.bridge
    veths = set(os.listdir(f"/sys/class/net/{bridge}/brif")) if os.path.isdir(f"/sys/class/net/{bridge}/brif") else set()
    assert veths <= {veth_name(svc.settings.root_id, n) for n in names}
    assert svc.reconcile(dry_run=True) == []


class TestConcurrency:
    def test_eight_processes_provision_then_destroy_eighty(self, svc, settings, data_root):
        """8 processes x 10 provisions at once: 80 distinct IPs and MACs, valid state; then all destroyed."""
        procs = [_worker(settings, "provision", "10") for _ in range(8)]
        results = []
        for p in procs:
            out, err = p.communicate(timeout=600)
            assert p.returncode == 0, err[-2000:]
            results += json.loads(out)
        try:
            assert len(results) == 80
            assert len({r[1] for r in results}) == 80 and len({r[2] for r in results}) == 80
            state = svc.ports.repo.read()
            for name, ip, mac in results:
                assert state.reservations[name].ip == ip and state.reservations[name].mac == mac
        finally:
            names = [r[0] for r in results]
            procs = [_worker(settings, "destroy", *names[i::8]) for i in range(8)]
            for p in procs:
                _, err = p.communicate(timeout=600)
                assert p.returncode == 0, err[-2000:]
        left = {c.name for c in svc.list_containers()} & set(names)
        assert left == set()
        _assert_clean(svc, data_root)


@pytest.fixture(scope="module")
def image_file(svc, tmp_path_factory):
    c = svc.provision()
    try:
        c.run("echo from-image > /root/f")
        c.stop()
        path = str(tmp_path_factory.mktemp("rel") / "r.aimg")
        c.save_image(path)
        return path
    finally:
        c.destroy()


FAULTS = [
    ("provision", "provision.reserved"), ("provision", "mount.done"), ("provision", "provision.materialized"),
    ("load", "load.staged"), ("load", "load.reserved"), ("load", "load.imported"), ("load-eph", "mount.done"),
    ("load-move", "load.staged"), ("load-move", "load.reserved"), ("load-move", "load.imported"),
    ("save", "save.recorded"), ("save", "save.packed"),
    ("destroy", "destroy.marked"), ("destroy", "destroy.stopped"), ("destroy", "destroy.unmounted"),
]


class TestCrashes:
    @pytest.mark.parametrize("op,step", FAULTS, ids=[f"{o}@{s}" for o, s in FAULTS])
    def test_kill_at_each_step_then_gc_leaves_nothing(self, svc, settings, data_root, image_file, tmp_path, op, step):
        """SIGKILL at a named step; gc then leaves no container, mount, veth, upper or temp file."""
        name = "crash-" + step.replace(".", "-")[:20]
        target = None
        if op in ("save", "destroy"):
            target = svc.provision(name=name)
            target.start()
        moving = None
        if op == "load-move":  # a private copy the load moves into the store (same filesystem)
            moving = str(tmp_path / "moving.aimg")
            with open(image_file, "rb") as src, open(moving, "wb") as dst:
                dst.write(src.read())
            svc.reconcile()
            for img in svc.list_images():  # so that it is imported, not found in the store
                if img.kind == "user" and not img.manifest.parent:
                    try:
                        svc.remove_image(img.id)
                    except Exception:
                        pass
        args = {"provision": ["provision", name], "load": ["load", name, image_file, "0"],
                "load-move": ["load-move", name, moving],
                "load-eph": ["load", name, image_file, "1"], "save": ["save", name, str(tmp_path / "s.aimg")],
                "destroy": ["destroy", name]}[op]
        p = _worker(settings, "op", *args, env={"APPCONTAINERS_FAULT": step})
        _, err = p.communicate(timeout=120)
        assert p.returncode == -9, f"the worker was not killed at {step}: rc {p.returncode} {err[-1000:]}"
        if moving is not None:
            assert not os.path.exists(moving), "the load did not move the file (nothing to put back)"
        try:
            done = svc.reconcile()
            if op in ("provision", "load", "load-eph", "load-move", "destroy"):
                assert done, "reconcile found nothing to repair after a crash"
                assert name not in {c.name for c in svc.list_containers()}
            if op == "load-move":  # the caller's file is back, byte for byte
                with open(image_file, "rb") as a, open(moving, "rb") as b:
                    assert a.read() == b.read()
            if op == "save":
                assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []
                assert svc.get(name).state == "RUNNING"  # thawed
            _assert_clean(svc, data_root)
        finally:
            if target is not None and name in {c.name for c in svc.list_containers()}:
                target.destroy()
