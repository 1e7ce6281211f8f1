"""Operations in progress as records: their stored form, and the temp-file names they own."""
from __future__ import annotations

from hypothesis import given, strategies as st

from appcontainers.domain.operations import (ImportStaging, LoadMoveOp, SaveOp, UnknownOp, codec_temp_affixes,
                                             is_codec_temp, operation_from_dict)
from appcontainers.domain.state import State

names = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=20)
saves = st.builds(SaveOp, id=names, owner=names, container=names, dest=names, frozen=st.booleans())
moves = st.builds(LoadMoveOp, id=names, owner=names, staged=names, restore=names, image=names,
                  file_owner=st.none() | st.tuples(st.integers(0, 2**31), st.integers(0, 2**31),
                                                   st.integers(0, 0o7777)))


class TestOperationRecords:
    @given(saves | moves)
    def test_round_trip(self, op):
        """Every record reads back from its stored form as the same record."""
        assert operation_from_dict(op.id, op.to_dict()) == op

    def test_the_older_stored_form_is_read(self):
        """The dicts an older appcontainers wrote (no id in a save) read as records."""
        state = State.from_dict({
            "schema_version": 1, "pool": State.empty("10.0.0.0/24").pool.to_dict(),
            "operations": {
                "save-1": {"kind": "save", "owner": "1:2:b", "container": "web", "frozen": True,
                           "dest": "/out/web.aimg"},
                "move-0a": {"kind": "load-move", "owner": "1:2:b", "staged": "/s/.import-x@1+2+b.0a.tmp",
                            "restore": "/home/u/a.aimg", "image": "f" * 64, "id": "move-0a",
                            "file_owner": [1000, 1000, 0o640]},
            }})
        assert state.operations == {
            "save-1": SaveOp(id="save-1", owner="1:2:b", container="web", dest="/out/web.aimg", frozen=True),
            "move-0a": LoadMoveOp(id="move-0a", owner="1:2:b", staged="/s/.import-x@1+2+b.0a.tmp",
                                  restore="/home/u/a.aimg", image="f" * 64, file_owner=(1000, 1000, 0o640)),
        }
        assert State.from_dict(state.to_dict()) == state

    def test_a_kind_this_version_does_not_know_is_kept_as_it_was(self):
        """A record of an unknown kind is kept unchanged (an older or newer version wrote it)."""
        raw = {"kind": "fleet-sync", "owner": "1:2:b", "whatever": [1, 2]}
        op = operation_from_dict("x", raw)
        assert isinstance(op, UnknownOp) and op.KIND == "fleet-sync" and op.owner == "1:2:b"
        assert op.to_dict() == raw


class TestTempFileNames:
    @given(st.text("0123456789abcdef", min_size=64, max_size=64), st.from_regex(r"[0-9]{1,7}:[0-9]{1,9}:[a-f0-9-]{1,36}",
                                                                              fullmatch=True),
           st.text("0123456789abcdef", min_size=8, max_size=8))
    def test_import_staging_name_round_trip(self, image_id, owner, rand):
        """An import staging file's name gives back its owner (a hostproc token) and its random part."""
        staging = ImportStaging(image_id=image_id, owner=owner, rand=rand)
        name = staging.file_name()
        assert ":" not in name and name.startswith(".import-") and name.endswith(".tmp")
        assert ImportStaging.parse(name) == ImportStaging(image_id=image_id[:16], owner=owner, rand=rand)

    def test_other_names_are_not_staging_files(self):
        """Store files, codec temp files and the state file's temp files are not import staging."""
        for name in ("abc.aimg", ".abc.aimg.x1y2.tmp", ".resources.123.tmp", ".import-abc.tmp"):
            assert ImportStaging.parse(name) is None

    def test_load_move_id_follows_its_staging_file(self):
        """A load-move record's id is taken from its staging file's random part."""
        staged = "/store/" + ImportStaging(image_id="e" * 64, owner="1:2:b", rand="0badf00d").file_name()
        op = LoadMoveOp.for_staging(owner="1:2:b", staged=staged, restore="/home/u/a.aimg", image="e" * 64)
        assert op.id == "move-0badf00d" and op.keeps(staged) and not op.keeps("/home/u/a.aimg")

    def test_codec_temp_files_of_a_save(self):
        """A save owns the codec's temp files for its destination, and no other file there."""
        prefix, suffix = codec_temp_affixes("/out/web.aimg")
        op = SaveOp(id="s", owner="o", container="web", dest="/out/web.aimg", frozen=False)
        assert op.is_temp_file(f"{prefix}k3j_x9{suffix}")
        assert not op.is_temp_file("web.aimg") and not op.is_temp_file(".web.aimg.tmp")
        assert not op.is_temp_file(".db.aimg.k3j_x9.tmp")
        assert is_codec_temp("/out/[x].aimg", ".[x].aimg.abc.tmp")
