"""The sandbox's defaults as data: unprivileged reservations, capabilities, pids, subordinate ids."""
import pytest

from appcontainers.adapters.host.subids import covers, ensure_range
from appcontainers.domain.capabilities import DEFAULT, kept, validate_caps
from appcontainers.domain.exceptions import InvalidValue, UnsafeHost
from appcontainers.domain.reservation import Reservation
from tests.fakes import make_service


@pytest.fixture
def svc():
    return make_service()


class TestCapabilities:
    def test_default_set_is_docker_like(self):
        """The default keeps what an app needs and none of sys_admin, net_admin, net_raw, mknod, sys_module."""
        assert set(DEFAULT) == {"chown", "dac_override", "fowner", "fsetid", "kill", "setgid", "setuid",
                                "setpcap", "net_bind_service", "sys_chroot", "audit_write"}

    @pytest.mark.parametrize("bad", [["cap_net_admin"], ["NET_ADMIN"], ["net-admin"], ["nope"], "net_admin",
                                     [1], None])
    def test_unknown_names_are_refused(self, bad):
        """Names must be capabilities(7) names, lowercase, without cap_, in a list."""
        with pytest.raises(InvalidValue):
            validate_caps(bad)

    def test_added_caps_are_sorted_unique_and_kept(self):
        """caps_add is stored sorted and unique; kept() is the default set then the additions."""
        assert validate_caps(["net_raw", "net_admin", "net_raw"]) == ("net_admin", "net_raw")
        assert kept(("net_admin", "chown")) == (*DEFAULT, "net_admin")


class TestReservationFields:
    def test_round_trip_with_caps_pids_and_idmap(self):
        """caps_add, pids and idmap survive to_dict/from_dict."""
        r = Reservation(name="a", ip="10.0.0.2", mac="02:00:00:00:00:01", image="x", idmap=(100000, 65536),
                        caps_add=["net_admin"], pids=64)
        assert Reservation.from_dict(r.to_dict()) == r
        assert r.to_dict()["caps_add"] == ["net_admin"]

    def test_an_old_record_gets_the_default_pids_limit(self):
        """A record from before pids existed reads with the default limit and no added caps."""
        r = Reservation.from_dict({"name": "a", "ip": "10.0.0.2", "mac": "02:00:00:00:00:01", "image": "x"})
        assert (r.pids, r.caps_add, r.idmap) == (4096, (), None)

    @pytest.mark.parametrize("pids", [0, -1, True, "10", 2 ** 23])
    def test_bad_pids_refused(self, pids):
        with pytest.raises(InvalidValue):
            Reservation(name="a", ip="10.0.0.2", mac="02:00:00:00:00:01", image="x", pids=pids)


def _config(svc, r, tmp_path) -> str:
    """The LXC config the package's own skeleton renders for r (pure: a template and a context)."""
    from appcontainers.adapters.lxc.skeletons import Skeletons
    from appcontainers.services import plans

    state = svc.ports.repo.read()
    chain = svc.containers._layers(r, state.images)
    context = plans.context(r, svc.settings.layout, svc.settings, state.pool, chain)
    return Skeletons(str(tmp_path / "no-overrides")).render_config(context)


class TestProvisionDefaults:
    def test_default_is_unprivileged_with_the_map_and_limits(self, svc, tmp_path):
        """A container with no options: id map (100000, 65536), pids 4096, nothing added; rendered so."""
        c = svc.provision("web")
        r = svc.containers.get("web")
        assert (r.idmap, r.pids, r.caps_add) == ((100000, 65536), 4096, ())
        assert svc.ports.mounters.kernel.idmaps[svc.settings.layout.rootfs("web")] == (100000, 65536)
        config = _config(svc, r, tmp_path)
        assert "lxc.idmap = u 0 100000 65536" in config and "lxc.idmap = g 0 100000 65536" in config
        assert f"lxc.cap.keep = {' '.join(DEFAULT)}\n" in config and "lxc.cap.drop" not in config
        assert "lxc.cgroup2.pids.max = 4096" in config and "lxc.cgroup.pids.max = 4096" in config
        assert c.info()["privileged"] is False

    def test_privileged_opt_out_and_options(self, svc, tmp_path):
        """privileged=True has no id map; caps_add and pids reach the config."""
        svc.provision("old", privileged=True, caps_add=["net_admin"], pids=100)
        r = svc.containers.get("old")
        config = _config(svc, r, tmp_path)
        assert r.idmap is None and "lxc.idmap" not in config
        assert f"lxc.cap.keep = {' '.join(DEFAULT)} net_admin\n" in config
        assert "lxc.cgroup2.pids.max = 100" in config

    def test_unprivileged_false_is_refused(self, svc):
        """unprivileged=False no longer means anything safe: it is refused, naming privileged=True."""
        with pytest.raises(InvalidValue, match="privileged=True"):
            svc.provision("x", unprivileged=False)
        assert svc.list_containers() == []

    def test_privileged_and_unprivileged_is_refused(self, svc):
        """privileged=True with unprivileged=True contradict each other: refused, nothing reserved."""
        with pytest.raises(InvalidValue, match="contradict"):
            svc.provision("x", privileged=True, unprivileged=True)
        assert svc.list_containers() == [] and svc.ports.repo.read().macs() == set()

    def test_load_takes_caps_and_limits(self, svc):
        """load_image sets caps_add, pids, memory, cpus and disk as provision does, in the config too."""
        from tests.unit.test_services import put_image
        put_image(svc, "/in/app.aimg")
        svc.load_image("/in/app.aimg", name="app", caps_add=["net_admin"], pids=100, memory="256M", cpus=0.5,
                       disk="1G")
        r = svc.containers.get("app")
        assert (r.caps_add, r.pids, r.memory, r.cpus, r.disk) == (("net_admin",), 100, "256M", 0.5, 1 << 30)
        assert r.idmap is not None
        config = svc.ports.driver.configs["app"]
        assert f"lxc.cap.keep = {' '.join(DEFAULT)} net_admin\n" in config
        assert "lxc.cgroup2.pids.max = 100" in config

    def test_bad_caps_reserve_nothing(self, svc):
        """An unknown capability is refused and no address is held."""
        with pytest.raises(InvalidValue, match="cap_"):
            svc.provision("x", caps_add=["cap_net_admin"])
        assert svc.list_containers() == [] and svc.ports.repo.read().macs() == set()


class TestSubordinateIds:
    @pytest.mark.parametrize("text, ok", [
        ("", False), ("root:100000:65536\n", True), ("root:0:4294967295\n", True),
        ("root:100000:65535\n", False), ("0:100000:65536", True), ("alice:100000:65536\n", False),
        ("root:100001:65536\n", False), ("garbage\nroot:x:y\nroot:90000:100000\n", True),
    ])
    def test_covers(self, text, ok):
        """A root (or uid 0) range holding 100000..165535 covers the map; anything else does not."""
        assert covers(text, 100000, 65536) is ok

    def test_ensure_range_appends_once(self, tmp_path):
        """A missing range is appended (a file without one is created); a second call changes nothing."""
        uid, gid = tmp_path / "subuid", tmp_path / "subgid"
        uid.write_text("alice:165536:65536")
        assert ensure_range(100000, 65536, files=(str(uid), str(gid))) == [str(uid), str(gid)]
        assert uid.read_text() == "alice:165536:65536\nroot:100000:65536\n"
        assert gid.read_text() == "root:100000:65536\n"
        assert ensure_range(100000, 65536, files=(str(uid), str(gid))) == []

    @pytest.mark.parametrize("line", ["alice:100000:65536", "bob:165535:10", "1000:90000:10001"])
    def test_another_owner_of_the_maps_ids_is_refused(self, tmp_path, line):
        """A user given ids of the map (useradd's first range on Debian) could become the
        containers' root through newuidmap: refused, naming the line, and nothing appended."""
        uid, gid = tmp_path / "subuid", tmp_path / "subgid"
        uid.write_text(f"root:100000:65536\n{line}\n")
        with pytest.raises(UnsafeHost, match=line):
            ensure_range(100000, 65536, files=(str(uid), str(gid)))
        assert uid.read_text() == f"root:100000:65536\n{line}\n"

    def test_neighbouring_ranges_are_fine(self, tmp_path):
        """Ranges just below and just above the map do not overlap it."""
        uid = tmp_path / "subuid"
        uid.write_text("alice:34464:65536\nbob:165536:65536\n")
        assert ensure_range(100000, 65536, files=(str(uid),)) == [str(uid)]

    def test_unwritable_file_is_a_clear_error(self, tmp_path):
        """When the file cannot be written, the error names it and the line to add."""
        missing_dir = tmp_path / "no-such-dir" / "subuid"
        with pytest.raises(UnsafeHost, match=r"root:100000:65536 to .*no-such-dir/subuid"):
            ensure_range(100000, 65536, files=(str(missing_dir),))


class TestHostBinds:
    def test_last_unprivileged_destroy_unbinds_the_host_paths(self, svc):
        """The host path re-binds stay while an unprivileged container exists; the last destroy unmounts them."""
        svc.ports.base_builder.host_binds = ["/opt/python"]
        binds = svc.settings.layout.mnt("") + ".binds"
        a, b = svc.provision("a"), svc.provision("b")
        kernel = svc.ports.mounters.kernel
        assert kernel.bind_points(binds) == [svc.settings.layout.host_bind("/opt/python")]
        a.destroy()
        assert kernel.bind_points(binds)
        b.destroy()
        assert kernel.bind_points(binds) == []
