"""RootfsMounter and the extra powers: Binder (kernel), ViewMounter (both), shifted ids (FUSE)."""
from __future__ import annotations

import os


def layout(where: str, n: int) -> tuple[list[str], str, str, str]:
    """(lower mount points, upper, work, target) under where, as the services lay them out."""
    return ([os.path.join(where, "layers", str(i)) for i in range(n)], os.path.join(where, "upper"),
            os.path.join(where, "work"), os.path.join(where, "rootfs"))


class RootfsMounterContract:
    """Fixtures: `mounter`, `layers` (two image files, top first), `where` (a fresh directory to
    mount under; whatever is left mounted there is unmounted after the test)."""

    def test_available(self, mounter):
        """The mounter under test says it can work here."""
        assert mounter.available()

    def test_mount_then_unmount(self, mounter, layers, where):
        """mount() shows the target and each lower point mounted; unmount() leaves nothing."""
        lowers, upper, work, target = layout(where, len(layers))
        mounter.mount(layers, lowers, upper, work, target)
        assert mounter.is_mounted(target) and all(mounter.is_mounted(p) for p in lowers)
        assert sorted(mounter.mounted(where)) == sorted([target, *lowers])
        mounter.unmount(target, lowers[::-1])
        assert not mounter.is_mounted(target) and not any(mounter.is_mounted(p) for p in lowers)
        assert mounter.mounted(where) == []

    def test_mounted_lists_only_under_prefix(self, mounter, layers, where):
        """mounted(prefix) names the mount points under prefix, none elsewhere."""
        lowers, upper, work, target = layout(os.path.join(where, "a"), len(layers))
        mounter.mount(layers, lowers, upper, work, target)
        try:
            assert mounter.mounted(os.path.join(where, "b")) == []
            assert target in mounter.mounted(os.path.join(where, "a"))
            assert mounter.mounted(os.path.join(where, "a", "rootfs")) == []  # strictly below
        finally:
            mounter.unmount(target, lowers[::-1])

    def test_unmount_of_nothing_is_no_error(self, mounter, where):
        """Unmounting what is not mounted does nothing (a teardown after a crash does that)."""
        lowers, _upper, _work, target = layout(where, 2)
        mounter.unmount(target, lowers)
        assert not mounter.is_mounted(target) and mounter.mounted(where) == []


class BinderContract:
    """Fixtures: `binder` (a KernelMounterPort), `source` (a host directory), `layers`, `where`."""

    def test_bind_ro_then_unmount(self, binder, source, where):
        """bind_ro() mounts the source at target, once; unmount(target, []) undoes it."""
        target = os.path.join(where, "binds", "x")
        binder.bind_ro(source, target)
        binder.bind_ro(source, target)  # already there: nothing more
        assert binder.is_mounted(target)
        binder.unmount(target, [])
        assert not binder.is_mounted(target)

    def test_binds_are_bind_points_not_rootfs_mounts(self, binder, source, where):
        """A bind is among bind_points(), not among the rootfs mounts (its kind is the source's
        filesystem); unmounted, it is in neither."""
        target = os.path.join(where, "binds", "x")
        binder.bind_ro(source, target)
        try:
            assert binder.bind_points(where) == [target] and binder.mounted(where) == []
            assert binder.bind_points(os.path.join(where, "elsewhere")) == []
        finally:
            binder.unmount(target, [])
        assert binder.bind_points(where) == []

    def test_rootfs_mounts_are_not_bind_points(self, binder, layers, where):
        """A rootfs mount's points are never among bind_points()."""
        lowers, upper, work, target = layout(where, len(layers))
        binder.mount(layers, lowers, upper, work, target)
        try:
            assert binder.bind_points(where) == []
        finally:
            binder.unmount(target, lowers[::-1])


class FuseMounterContract:
    """The FUSE power of shifted ids. Fixtures: `fuse`, `layers`, `where`."""

    def test_mount_with_idmap(self, fuse, layers, where):
        """mount(idmap=) mounts like mount(); unmount() leaves nothing."""
        lowers, upper, work, target = layout(where, len(layers))
        fuse.mount(layers, lowers, upper, work, target, idmap=(100000, 65536))
        try:
            assert fuse.is_mounted(target)
            assert sorted(fuse.mounted(where)) == sorted([target, *lowers])
        finally:
            fuse.unmount(target, lowers[::-1])
        assert fuse.mounted(where) == []


class ViewMounterContract:
    """Read-only merged views. Fixtures: `view_mounter`, `view_dirs` (two directories), `where`."""

    def test_view(self, view_mounter, view_dirs, where):
        """mount_view() mounts a view at target, listed by mounted(); unmount_view() removes it."""
        target = os.path.join(where, ".views", "c", "rootfs")
        view_mounter.mount_view(view_dirs, target)
        try:
            assert view_mounter.is_mounted(target) and view_mounter.mounted(where) == [target]
        finally:
            view_mounter.unmount_view(target)
        assert not view_mounter.is_mounted(target) and view_mounter.mounted(where) == []

    def test_unmount_view_of_nothing_is_no_error(self, view_mounter, where):
        """unmount_view() of a view that is not there does nothing (teardown after a crash)."""
        target = os.path.join(where, ".views", "c", "rootfs")
        view_mounter.unmount_view(target)
        assert not view_mounter.is_mounted(target)
