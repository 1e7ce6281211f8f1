"""Reservation, Manifest and Image: validation, serialization, lineage."""
import json
import re

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from appcontainers.domain.exceptions import InvalidName, InvalidValue, UnknownImage
from appcontainers.domain.image import FORMAT_VERSION, Image, Manifest, lineage, validate_image_name
from appcontainers.domain.reservation import NAME_MAX, Reservation, validate_name
from tests.strategies import image_ids, images, manifests, names, reservations

ID_A, ID_B, ID_C = "a" * 64, "b" * 64, "c" * 64
GOOD = dict(name="web-1", ip="10.0.0.2", mac="02:00:00:00:00:01", image=ID_A)
MANIFEST = {"format_version": 1, "name": "base", "created": 1700000000.0}


def json_trip(d):
    return json.loads(json.dumps(d))


class TestContainerName:
    @given(names)
    def test_valid_names_accepted(self, name):
        """Every DNS-label-like name up to NAME_MAX is returned unchanged."""
        assert validate_name(name) == name

    @pytest.mark.parametrize("bad", [
        "", "a" * (NAME_MAX + 1), "../x", "a/b", "a;b", "a b", " a", "a ", "Web", "WEB",
        "web-", "-web", "a_b", "a.b", "\u0430bc", "w\u0435b", "caf\u00e9", "\uff41", "web\n", "web\x00",
        None, 5, b"web", ["web"],
    ])
    def test_bad_names_refused(self, bad):
        """Empty, too long, path-like, shell-like, uppercase, look-alike, edged-with-'-' or non-str names raise InvalidName."""
        with pytest.raises(InvalidName) as exc:
            validate_name(bad)
        assert exc.value.name == bad
        with pytest.raises(InvalidName):
            Reservation(**{**GOOD, "name": bad})

    @given(st.text(max_size=NAME_MAX + 5))
    def test_anything_outside_the_charset_refused(self, text):
        """A string is accepted exactly when it is a lowercase DNS label of at most NAME_MAX."""
        ok = bool(re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", text, re.ASCII)) and len(text) <= NAME_MAX
        if ok:
            assert validate_name(text) == text
        else:
            with pytest.raises(InvalidName):
                validate_name(text)

    def test_longest_name_accepted(self):
        """A name of exactly NAME_MAX characters is fine."""
        assert validate_name("a" * NAME_MAX) == "a" * NAME_MAX


class TestReservation:
    @given(reservations)
    def test_dict_round_trip(self, r):
        """from_dict(to_dict()) through JSON gives an equal reservation."""
        assert Reservation.from_dict(json_trip(r.to_dict())) == r

    def test_defaults_from_dict(self):
        """A minimal record gets the documented defaults."""
        r = Reservation.from_dict(GOOD)
        assert (r.ephemeral, r.startup_commands, r.status, r.mounter) == (False, (), "ready", "kernel")

    def test_mac_normalized(self):
        """Uppercase and dash-separated MACs are stored lowercase with colons."""
        assert Reservation(**{**GOOD, "mac": " 02-AB-CD-EF-01-23 "}).mac == "02:ab:cd:ef:01:23"

    @pytest.mark.parametrize("bad", ["10.0.0.256", "10.0.0", "", "fd00::1", "010.0.0.1", "10.0.0.1/24",
                                     "localhost", 167772162, b"\n\x00\x00\x01", None])
    def test_bad_ip_refused(self, bad):
        """A malformed or non-string address raises InvalidValue naming it."""
        with pytest.raises(InvalidValue, match="invalid IPv4 address"):
            Reservation(**{**GOOD, "ip": bad})

    @pytest.mark.parametrize("bad", ["02:00:00:00:00", "02:00:00:00:00:0g", "0200.0000.0001", "",
                                     "02:00:00:00:00:00:00", "2:0:0:0:0:1", None, 5])
    def test_bad_mac_refused(self, bad):
        """A malformed MAC raises InvalidValue."""
        with pytest.raises(InvalidValue, match="invalid MAC"):
            Reservation(**{**GOOD, "mac": bad})

    @pytest.mark.parametrize("bad, message", [
        ("echo hi", "not one string"), (b"echo hi", "not one string"), (5, "list of strings"),
        (["ok", ""], "non-empty"), (["  "], "non-empty"), (["a\x00b"], "NUL"), ([3], "non-empty"),
    ])
    def test_bad_startup_commands_refused(self, bad, message):
        """A lone string, a non-list or an empty/NUL/non-str command raises InvalidValue."""
        with pytest.raises(InvalidValue, match=message):
            Reservation(**{**GOOD, "startup_commands": bad})

    @pytest.mark.parametrize("field, bad", [
        ("status", "running"), ("mounter", "nfs"), ("ephemeral", "yes"), ("ephemeral", 1), ("image", None),
    ])
    def test_bad_fields_refused(self, field, bad):
        """Unknown status/mounter and wrongly typed fields raise InvalidValue naming the field."""
        with pytest.raises(InvalidValue, match=field):
            Reservation(**{**GOOD, field: bad})

    @pytest.mark.parametrize("missing", ["name", "ip", "mac", "image"])
    def test_from_dict_names_missing_field(self, missing):
        """A record without a required field raises InvalidValue naming it."""
        record = {k: v for k, v in GOOD.items() if k != missing}
        with pytest.raises(InvalidValue, match=repr(missing)):
            Reservation.from_dict(record)

    @pytest.mark.parametrize("record", [None, [], "web", {**GOOD, "created": None},
                                        {**GOOD, "created": "yesterday"}, {**GOOD, "status": "x"}])
    def test_from_dict_refuses_malformed(self, record):
        """A non-object or badly typed record raises InvalidValue, never TypeError/ValueError."""
        with pytest.raises(InvalidValue):
            Reservation.from_dict(record)

    def test_frozen(self):
        """A reservation cannot be changed in place; evolve validates the copy."""
        r = Reservation(**GOOD)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            r.ip = "10.0.0.3"
        with pytest.raises(InvalidValue):
            attrs.evolve(r, ip="10.0.0.300")


class TestManifest:
    @given(manifests)
    def test_dict_round_trip(self, m):
        """from_dict(to_dict()) through JSON gives an equal manifest."""
        assert Manifest.from_dict(json_trip(m.to_dict())) == m

    def test_defaults(self):
        """A minimal manifest has the current format version and empty collections."""
        m = Manifest.from_dict(MANIFEST)
        assert (m.parent, m.startup_commands, m.environment, m.host_binds, m.init) == (None, (), {}, (), ())
        assert m.format_version == FORMAT_VERSION

    @pytest.mark.parametrize("created", ["nan", "inf", "-inf", -1, float("nan")])
    def test_creation_time_is_a_finite_time(self, created):
        """created NaN, infinite or negative is refused (it would reach resources.json as NaN)."""
        with pytest.raises(InvalidValue, match="creation time"):
            Manifest.from_dict({**MANIFEST, "created": created})

    def test_run_config_default_command(self):
        """An image's default command is entrypoint + cmd; a manifest without config says none."""
        m = Manifest.from_dict({**MANIFEST, "config": {"entrypoint": ["/bin/app"], "cmd": ["--port", "80"]}})
        assert m.config is not None and m.config.default_command == ("/bin/app", "--port", "80")
        assert Manifest.from_dict(MANIFEST).config is None

    @pytest.mark.parametrize("bad, what", [
        ({"diff_id": "sha256:XYZ"}, "diff_id"),
        ({"diff_id": "a" * 64}, "diff_id"),
        ({"config": "sh"}, "run config"),
        ({"config": {"workdir": "relative"}}, "workdir"),
        ({"config": {"user": "a\nb"}}, "user"),
        ({"config": {"exposed_ports": ["80"]}}, "exposed port"),
        ({"config": {"exposed_ports": ["70000/tcp"]}}, "exposed port"),
        ({"config": {"cmd": "echo hi"}}, "list of strings"),
        ({"config": {"env": {"1BAD": "x"}}}, "environment variable"),
        ({"config": {"labels": {"k": 1}}}, "label"),
    ])
    def test_oci_fields_checked(self, bad, what):
        """A malformed diff_id or run config is refused with a message naming the field."""
        with pytest.raises(InvalidValue, match=what):
            Manifest.from_dict({**MANIFEST, **bad})

    @pytest.mark.parametrize("version", [FORMAT_VERSION + 1, 99])
    def test_future_format_version_refused(self, version):
        """A newer format version raises InvalidValue telling to upgrade."""
        with pytest.raises(InvalidValue, match=rf"format version {version} is newer.*upgrade"):
            Manifest.from_dict({**MANIFEST, "format_version": version})

    @pytest.mark.parametrize("version", [0, -1, "1", 1.0, True, None])
    def test_bad_format_version_refused(self, version):
        """A non-positive or non-integer format version raises InvalidValue."""
        with pytest.raises(InvalidValue, match="format version"):
            Manifest.from_dict({**MANIFEST, "format_version": version})

    @pytest.mark.parametrize("missing", ["format_version", "name", "created"])
    def test_missing_field_named(self, missing):
        """A manifest without a required field raises InvalidValue naming it."""
        with pytest.raises(InvalidValue, match=f"lacks {missing}"):
            Manifest.from_dict({k: v for k, v in MANIFEST.items() if k != missing})

    def test_all_missing_fields_named(self):
        """An empty manifest names every missing field."""
        with pytest.raises(InvalidValue, match="lacks format_version, name, created"):
            Manifest.from_dict({})

    @pytest.mark.parametrize("record", [None, [], "manifest"])
    def test_non_object_refused(self, record):
        """A manifest that is not a JSON object raises InvalidValue."""
        with pytest.raises(InvalidValue, match="not a JSON object"):
            Manifest.from_dict(record)

    @pytest.mark.parametrize("field, bad, message", [
        ("name", "", "invalid image name"), ("name", "../x", "invalid image name"),
        ("name", "a..b", "invalid image name"), ("name", "-x", "invalid image name"),
        ("name", "x" * 65, "invalid image name"), ("name", "x\n", "invalid image name"),
        ("name", "a b", "invalid image name"), ("name", 5, "invalid image name"),
        ("created", "yesterday", "malformed manifest"), ("created", None, "malformed manifest"),
        ("parent", "abc", "invalid image id"), ("parent", "A" * 64, "invalid image id"),
        ("startup_commands", "echo hi", "not one string"),
        ("environment", {"1X": "v"}, "environment variable name"),
        ("environment", {"A-B": "v"}, "environment variable name"),
        ("environment", {"A": 1}, "environment variable 'A'"),
        ("environment", {"A": "a\x00"}, "environment variable 'A'"),
        ("environment", "A=1", "malformed manifest"),
        ("host_binds", ["usr"], "host bind path"), ("host_binds", ["/usr/../etc"], "host bind path"),
        ("host_binds", ["/usr/.."], "host bind path"), ("host_binds", "/usr", "not one string"),
        ("init", "/sbin/init", "not one string"),
    ])
    def test_bad_fields_refused(self, field, bad, message):
        """Each malformed field raises InvalidValue with a message naming the problem."""
        with pytest.raises(InvalidValue, match=re.escape(message)):
            Manifest.from_dict({**MANIFEST, field: bad})

    @given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True))
    def test_image_name_charset(self, name):
        """An image name is accepted exactly when it matches the tag charset without '..'."""
        if ".." in name:
            with pytest.raises(InvalidValue):
                validate_image_name(name)
        else:
            assert validate_image_name(name) == name


class TestImage:
    @given(images)
    def test_dict_round_trip(self, img):
        """from_dict(to_dict()) through JSON gives an equal image."""
        assert Image.from_dict(json_trip(img.to_dict())) == img

    @given(images)
    def test_properties_come_from_manifest(self, img):
        """name, parent, created, commands, environment and version are the manifest's."""
        m = img.manifest
        assert (img.name, img.parent, img.created, img.startup_commands, img.environment,
                img.format_version) == (m.name, m.parent, m.created, m.startup_commands,
                                        m.environment, m.format_version)

    @pytest.mark.parametrize("bad", ["a" * 63, "a" * 65, "A" * 64, "g" * 64, "a" * 64 + "\n", None, 5])
    def test_bad_id_refused(self, bad):
        """An id that is not 64 lowercase hex digits raises InvalidValue."""
        with pytest.raises(InvalidValue, match="invalid image id"):
            Image(id=bad, manifest=Manifest.from_dict(MANIFEST))

    def test_bad_kind_refused(self):
        """An unknown kind raises InvalidValue naming the field."""
        with pytest.raises(InvalidValue, match="kind"):
            Image.from_dict({"id": ID_A, "kind": "system", "manifest": MANIFEST})

    @pytest.mark.parametrize("missing", ["id", "manifest"])
    def test_missing_field_named(self, missing):
        """A record without id or manifest raises InvalidValue naming it."""
        record = {k: v for k, v in {"id": ID_A, "manifest": MANIFEST}.items() if k != missing}
        with pytest.raises(InvalidValue, match=repr(missing)):
            Image.from_dict(record)

    @pytest.mark.parametrize("record", [None, [], {"id": ID_A, "manifest": None}])
    def test_malformed_record_refused(self, record):
        """A non-object record or manifest raises InvalidValue."""
        with pytest.raises(InvalidValue):
            Image.from_dict(record)


def _image(image_id, parent=None, name="img"):
    return Image(id=image_id, manifest=Manifest(name=name, created=0, parent=parent))


class TestLineage:
    @given(st.lists(image_ids, min_size=1, max_size=8, unique=True), st.lists(image_ids, max_size=4))
    def test_chain_top_first(self, chain, strangers):
        """lineage() walks parent links from the image to its base, top first, and nothing else."""
        imgs = {}
        parent = None
        for image_id in chain:  # chain[0] is the base, chain[-1] the top
            imgs[image_id] = _image(image_id, parent)
            parent = image_id
        for s in strangers:
            imgs.setdefault(s, _image(s, None, name="stranger"))
        assert [i.id for i in lineage(imgs, chain[-1])] == chain[::-1]
        assert [i.id for i in lineage(imgs, chain[0])] == [chain[0]]

    def test_missing_parent(self):
        """A parent absent from the store raises UnknownImage naming it."""
        imgs = {ID_A: _image(ID_A, parent=ID_B)}
        with pytest.raises(UnknownImage) as exc:
            lineage(imgs, ID_A)
        assert exc.value.ref == ID_B

    def test_missing_start(self):
        """An unknown starting id raises UnknownImage naming it."""
        with pytest.raises(UnknownImage) as exc:
            lineage({ID_A: _image(ID_A)}, ID_C)
        assert exc.value.ref == ID_C

    @pytest.mark.parametrize("links", [{ID_A: ID_A}, {ID_A: ID_B, ID_B: ID_A}, {ID_A: ID_B, ID_B: ID_C, ID_C: ID_B}])
    def test_parent_loop_refused(self, links):
        """A parent loop raises InvalidValue instead of looping forever."""
        imgs = {i: _image(i, p) for i, p in links.items()}
        with pytest.raises(InvalidValue, match="parent loop"):
            lineage(imgs, ID_A)


class TestManifestInjection:
    """Manifest values end up in LXC config lines: none may carry a line break or a space."""

    import pytest as _pytest

    @_pytest.mark.parametrize("init", [["/sbin/init\nlxc.hook.start-host = /bin/id"], ["/sbin/init", "a b"],
                                       ["relative/init"], ["/sbin/init", "x\ny"], ["/bin/sh", "-c", "id;id"]])
    def test_init_with_separators_is_refused(self, init):
        """An init carrying a newline, space or shell metacharacter is refused."""
        from appcontainers.domain.exceptions import InvalidValue
        from appcontainers.domain.image import Manifest
        with self._pytest.raises(InvalidValue, match="init"):
            Manifest(name="x", created=0.0, init=init)

    @_pytest.mark.parametrize("path", ["/etc\nlxc.hook.start-host = /bin/id", "/a b", "/a/../etc", "/", "//",
                                       "/x/./y", "relative"])
    def test_host_bind_with_separators_is_refused(self, path):
        """A host bind path with a line break, space, '..' or '.', or the root itself, is refused."""
        from appcontainers.domain.exceptions import InvalidValue
        from appcontainers.domain.image import Manifest
        with self._pytest.raises(InvalidValue, match="bind"):
            Manifest(name="x", created=0.0, host_binds=[path])
