"""cp of a tree into a real (unprivileged) container and back: contents, modes and symlinks
kept (setuid/setgid dropped), as seen from inside too."""
from __future__ import annotations

from tests.unit.test_cp_modes import listing, stripped, tree  # noqa: F401 (tree: a fixture)


def test_tree_round_trip_through_a_container(container, tree, tmp_path):  # noqa: F811
    """A host tree copied in shows the same modes inside; copied back out it equals the source
    by hash and mode (setuid/setgid dropped), symlinks as symlinks."""
    container.start()
    container.copy_in(str(tree), "/srv/app")
    inside = container.run(["sh", "-c", "cd /srv/app && stat -c '%n %a %F' . run.sh secret ro private/deep/key "
                                        "suid private/sgid link"])
    modes = dict(line.split(" ", 1) for line in inside.stdout.splitlines())
    assert modes == {".": "751 directory", "run.sh": "755 regular file", "secret": "600 regular file",
                     "ro": "555 directory", "private/deep/key": "400 regular file", "suid": "755 regular file",
                     "private/sgid": "750 regular file", "link": "777 symbolic link"}, inside
    container.copy_out("/srv/app", str(tmp_path / "back"))
    assert listing(str(tmp_path / "back")) == stripped(listing(str(tree)))
