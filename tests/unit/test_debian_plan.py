"""The Debian base plan as data: packages, mmdebstrap argv, trim list, cache key, apt sources."""
from __future__ import annotations

import pytest

from appcontainers.adapters.bases import debian_plan as dp
from appcontainers.domain.exceptions import InvalidValue

MIRROR = "http://archive.invalid/debian"
SECURITY = "http://archive.invalid/debian-security"


def make(suite="bookworm", include=(), agent="a" * 64, builder="b" * 64, stage="/srv/ac/tmp/debian-1-x"):
    return dp.plan(suite, include, agent_hash=agent, builder_hash=builder, stage=stage)


def opts(argv, prefix):
    return [a[len(prefix):] for a in argv if a.startswith(prefix)]


class TestPackages:
    def test_required_packages_are_always_there_sorted_and_unique(self):
        """The agent's needs are always included; extras merge in; the list is sorted, without repeats."""
        assert dp.packages() == ("iproute2", "python3", "python3-cffi-backend", "python3-zmq")
        assert dp.packages(["curl", "python3", "curl"]) == (
            "curl", "iproute2", "python3", "python3-cffi-backend", "python3-zmq")

    def test_comma_separated_items_are_split(self):
        """'a,b' items (as the CLI passes them) and a lone string both work; blanks are ignored."""
        assert set(dp.packages(["less,curl", " vim , "])) >= {"less", "curl", "vim"}
        assert "less" in dp.packages("less")

    @pytest.mark.parametrize("bad", ["Curl", "a", "-rf", "-", "x;y", "../x", "pkg name", 3])
    def test_invalid_package_names_are_refused(self, bad):
        """Only Debian package names pass (nothing that could become an option or a path)."""
        with pytest.raises(InvalidValue):
            dp.packages([bad])

    @pytest.mark.parametrize("bad", ["", "Bookworm", "-x", "book worm", "a/b", "x" * 41, None])
    def test_invalid_suites_are_refused(self, bad):
        """A suite is a lower-case release name."""
        with pytest.raises(InvalidValue):
            dp.validate_suite(bad)


class TestArgv:
    def test_variant_mode_format_and_includes(self):
        """Essential variant, unshare mode (private mounts), a directory, the package list."""
        p = make(include=["less"])
        assert p.argv[0] == "mmdebstrap"
        assert "--variant=essential" in p.argv and "--mode=unshare" in p.argv
        assert "--format=directory" in p.argv
        assert opts(p.argv, "--include=") == [",".join(p.packages)]
        assert "less" in p.packages

    def test_merged_usr_hook_and_no_docs(self):
        """merged-/usr via the mmdebstrap hook; docs, man pages and locales excluded by dpkg (copyright kept)."""
        p = make()
        assert opts(p.argv, "--hook-dir=") == [dp.MERGED_USR_HOOKS]
        dpkg = opts(p.argv, "--dpkgopt=")
        for path in ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*"):
            assert f"path-exclude={path}" in dpkg
        assert dpkg.index("path-include=/usr/share/doc/*/copyright") > dpkg.index("path-exclude=/usr/share/doc/*")

    def test_positionals_come_last_after_a_double_dash_with_the_stage_paths(self):
        """SUITE TARGET MIRROR-FILE end the argv; the mirror is a file we write, never a host name."""
        p = make(suite="trixie", stage="/d/st")
        assert p.argv[-4:] == ("--", "trixie", "/d/st/rootfs", "/d/st/debian.sources")
        assert (p.rootfs, p.sources_file, p.inject_dir) == ("/d/st/rootfs", "/d/st/debian.sources", "/d/st/inject")
        assert not any("://" in a for a in p.argv)

    def test_agent_init_and_placeholders_are_copied_in_by_special_hooks(self):
        """copy-in hooks (no shell) bring the agent to /opt, the init to /usr/sbin (not the /sbin symlink)."""
        hooks = opts(make(stage="/d/st").argv, "--customize-hook=")
        assert "copy-in /d/st/inject/opt/appcontainers-tools /opt" in hooks
        assert "copy-in /d/st/inject/usr/sbin/appcontainers-init /usr/sbin" in hooks
        assert all(h.startswith("copy-in ") for h in hooks)
        assert all(rel in dict(dp.INJECT) for rel in dp.INJECT_FILES)

    def test_a_stage_path_with_whitespace_is_refused(self):
        """mmdebstrap splits hook arguments on whitespace."""
        with pytest.raises(InvalidValue):
            make(stage="/d/my stage")

    def test_trim_list_drops_apt_lists_caches_logs(self):
        """What the squashfs leaves out, as relative wildcards."""
        p = make()
        for pattern in ("var/lib/apt/lists/*", "var/cache/apt/*", "var/log/*"):
            assert pattern in p.trim
        assert not any(t.startswith("/") or ".." in t for t in p.trim)

    def test_resolv_conf_is_kept_as_an_empty_placeholder(self):
        """/etc/resolv.conf is emptied, not trimmed: the container's skeleton file needs it to bind on."""
        assert "etc/resolv.conf" not in make().trim
        assert dp.EMPTY_FILES == ("etc/resolv.conf",)


class TestInit:
    def test_init_runs_the_agent_with_debians_python(self):
        """The init execs /usr/bin/python3 -m appcontainers_agent, with the tools dir on its path."""
        text = dp.init_script()
        assert text.startswith("#!/bin/sh\n")
        assert "exec /usr/bin/python3 -m appcontainers_agent" in text
        assert f"PYTHONPATH={dp.TOOLS_DIR}" in text
        assert dp.INJECT_FILES["usr/sbin/appcontainers-init"] == (text, 0o755)
        assert dp.INIT == "/sbin/appcontainers-init"


class TestKey:
    def test_same_inputs_same_key_whatever_the_order_or_stage(self):
        """The key depends on the package set, not on its order or where the build is staged."""
        assert make(include=["b-pkg", "a-pkg"]).key == make(include=["a-pkg,b-pkg"], stage="/x").key

    @pytest.mark.parametrize("change", [{"suite": "trixie"}, {"include": ["less"]},
                                        {"agent": "c" * 64}, {"builder": "d" * 64}])
    def test_every_input_changes_the_key(self, change):
        """Suite, packages, agent source and builder source each change the key."""
        assert make(**change).key != make().key

    def test_key_is_a_sha256_hex(self):
        """The key is what the manifest's build_key stores: 64 hex digits."""
        key = make().key
        assert len(key) == 64 and int(key, 16) >= 0


DEB822 = f"""Types: deb
# a comment
URIs: {MIRROR}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: {SECURITY}
Suites: bookworm-security
Components: main

Types: deb deb-src
URIs: http://other.invalid/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb
URIs: http://vendor.invalid/apt
Suites: nodistro
Components: main
"""

ONE_LINE = f"""# comment line
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {MIRROR} bookworm main contrib
deb-src {MIRROR} bookworm main
deb {SECURITY} bookworm-security main # trailing comment
deb https://vendor.invalid/repo bookworm stable
"""


class TestSources:
    def test_deb822_entries_without_disabled_ones(self):
        """Fields are read, comments skipped, Enabled: no left out, other fields kept as options."""
        entries = dp.parse_deb822(DEB822)
        assert [e.uris for e in entries] == [(MIRROR,), (SECURITY,), ("http://vendor.invalid/apt",)]
        assert entries[0].suites == ("bookworm", "bookworm-updates")
        assert entries[0].options == (("Signed-By", "/usr/share/keyrings/debian-archive-keyring.gpg"),)

    def test_one_line_entries_with_options(self):
        """`deb [opts] uri suite comps`: options become deb822 fields; comments are dropped."""
        entries = dp.parse_one_line(ONE_LINE)
        assert len(entries) == 4
        first = entries[0]
        assert (first.types, first.uris, first.suites, first.components) == (
            ("deb",), (MIRROR,), ("bookworm",), ("main", "contrib"))
        assert dict(first.options) == {"Architectures": "amd64",
                                       "Signed-By": "/usr/share/keyrings/debian-archive-keyring.gpg"}
        assert entries[2].suites == ("bookworm-security",) and entries[2].components == ("main",)

    def test_mirror_for_the_same_suite_keeps_updates_and_security(self):
        """The host's Debian entries, binary only; third-party repositories are left out."""
        found = dp.mirror_sources(dp.parse_deb822(DEB822), "bookworm", "bookworm")
        assert [(e.uris, e.suites) for e in found] == [((MIRROR,), ("bookworm", "bookworm-updates")),
                                                       ((SECURITY,), ("bookworm-security",))]

    def test_mirror_for_another_suite_renames_the_suites(self):
        """Asking for trixie on a bookworm host points the same mirror at trixie, -updates, -security."""
        found = dp.mirror_sources(dp.parse_one_line(ONE_LINE), "bookworm", "trixie")
        assert [(e.types, e.uris, e.suites) for e in found] == [
            (("deb",), (MIRROR,), ("trixie",)), (("deb",), (SECURITY,), ("trixie-security",))]

    def test_unstable_has_no_companion_suites(self):
        """sid has no -updates or -security: only the main suite is asked for."""
        found = dp.mirror_sources(dp.parse_deb822(DEB822), "bookworm", "sid")
        assert [(e.uris, e.suites) for e in found] == [((MIRROR,), ("sid",))]

    def test_no_debian_entry_means_nothing(self):
        """Only third-party or source entries: no mirror (the builder then refuses clearly)."""
        assert dp.mirror_sources(dp.parse_one_line("deb-src http://a.invalid/d bookworm main\n"),
                                 "bookworm", "bookworm") == []

    def test_codename_from_os_release_or_from_the_entries(self):
        """os-release's VERSION_CODENAME wins; otherwise the suite Debian entries name most."""
        entries = dp.parse_deb822(DEB822)
        release = dp.parse_os_release('NAME="Debian GNU/Linux"\nVERSION_CODENAME=bookworm\n')
        assert dp.host_codename(entries, release) == "bookworm"
        assert dp.host_codename(entries, {}) == "bookworm"
        assert dp.host_codename([], {}) is None

    def test_render_parses_back(self):
        """The deb822 text written for mmdebstrap reads back as the same entries."""
        found = dp.mirror_sources(dp.parse_deb822(DEB822) + dp.parse_one_line(ONE_LINE), "bookworm", "trixie")
        assert dp.parse_deb822(dp.render_deb822(found)) == found

    def test_multi_line_field_survives(self):
        """A multi-line field (an inline key) keeps its lines, empty ones as ' .'."""
        text = (f"Types: deb\nURIs: {MIRROR}\nSuites: bookworm\nComponents: main\n"
                "Signed-By:\n -----BEGIN\n .\n end\n")
        entries = dp.parse_deb822(text)
        rendered = dp.render_deb822(entries)
        assert " -----BEGIN\n .\n end\n" in rendered
        assert dp.parse_deb822(rendered) == entries


class TestFailureReason:
    def test_unreachable_mirror_is_a_network_error(self):
        """Connection failures are told apart; mmdebstrap's generic summary lines are skipped."""
        out = ("I: running apt-get update...\n"
               "E: Failed to fetch http://127.0.0.1:9/debian/dists/bookworm/InRelease  Could not connect "
               "to 127.0.0.1:9 (127.0.0.1). - connect (111: Connection refused)\n"
               "E: Some index files failed to download. They have been ignored, or old ones used instead.\n"
               "E: apt-get update --error-on=any -oAPT::Status-Fd=<$fd> -oDpkg::Use-Pty=false failed\n"
               "E: mmdebstrap failed to run\n")
        network, lines = dp.failure_reason(out)
        assert network and len(lines) == 1 and "Could not connect" in lines[0]

    def test_unknown_package_is_surfaced(self):
        """apt's own line about the package is what the error shows."""
        out = ("Building dependency tree...\nE: Unable to locate package nosuchpkg\n"
               "E: setup failed: E: apt-get --yes install nosuchpkg failed\nE: mmdebstrap failed to run\n")
        assert dp.failure_reason(out) == (False, ["E: Unable to locate package nosuchpkg"])

    def test_unknown_suite_is_surfaced(self):
        """A missing Release file names the suite."""
        out = "E: The repository 'http://x.invalid/debian nosuch Release' does not have a Release file.\n"
        network, lines = dp.failure_reason(out)
        assert not network and "nosuch Release" in lines[0]

    def test_without_error_lines_the_last_lines_are_kept(self):
        assert dp.failure_reason("a\nb\nc\nd\n") == (False, ["b", "c", "d"])


class TestPlaceholders:
    @pytest.mark.parametrize("present", ["file", "symlink", "none"])
    def test_resolv_conf_becomes_an_empty_regular_file(self, tmp_path, present):
        """Whatever the build left at etc/resolv.conf (the host's copy, a symlink, nothing) becomes an
        empty regular 0644 file; a symlink's target is never written."""
        from appcontainers.adapters.bases.debian_base import empty_placeholders

        etc = tmp_path / "rootfs" / "etc"
        etc.mkdir(parents=True)
        target = tmp_path / "host-resolv.conf"
        target.write_text("nameserver 192.0.2.1\n")
        if present == "file":
            (etc / "resolv.conf").write_text("nameserver 192.0.2.1\n")
        elif present == "symlink":
            (etc / "resolv.conf").symlink_to(target)
        empty_placeholders(str(tmp_path / "rootfs"))
        placed = etc / "resolv.conf"
        assert placed.is_file() and not placed.is_symlink() and placed.read_bytes() == b""
        assert placed.stat().st_mode & 0o7777 == 0o644
        assert target.read_text() == "nameserver 192.0.2.1\n"
